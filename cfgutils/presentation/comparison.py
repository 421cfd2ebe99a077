"""Notebook 08's comparison of guidance rules: each rule at matched accuracy, what it costs, the conclusions."""

from __future__ import annotations

import pandas as pd

from ..core.guidance import Guidance
from ..workflows.experiments import SweepResult
from ..workflows.metrics import rank_by_differences, seed_interval, triple
from .report import _at_scale, best_or_tied, markdown, ranked_sentence, sweep_frame, with_interval


def network_calls(rule: Guidance) -> str:
    """Network evaluations per guided step: one batch of 2n through the model, or the model and a guide."""
    return "1 model + 1 guide" if rule.guide is not None else "2 (one batch of 2n)"


def matched_accuracy(results: dict[str, SweepResult], accuracy_floor: float = 0.99) -> pd.DataFrame:
    """Per rule, its cell with the lowest Fréchet distance among those whose accuracy is at least
    ``accuracy_floor``: every rule compared where it is equally faithful to the label (08).

    One row per rule with ``scale`` (its s, or CFG++'s lambda), the metrics and their 95% intervals; a rule
    that never reaches the floor gets a row with ``reached`` False and its most accurate cell.
    """
    rows = []
    for name, result in results.items():
        frame = sweep_frame(result)
        faithful = frame[frame["accuracy"] >= accuracy_floor]
        reached = not faithful.empty
        best = faithful.loc[faithful["frechet_distance"].idxmin()] if reached else frame.loc[frame["accuracy"].idxmax()]
        rows.append({"rule": name, "reached": reached, "scale": float(best["s"]), "w": float(best["w"]),
                     **{key: best[key] for key in best.index if key.split("_")[0] in (
                         "accuracy", "frechet", "precision", "recall")}})
    return pd.DataFrame(rows)


def matched_table(matched: pd.DataFrame, seconds: dict[str, float], rules: dict[str, Guidance]) -> pd.DataFrame:
    """The matched-accuracy rows as text with intervals, and each rule's cost (network calls, seconds per cell)."""
    records = [{
        "rule": row["rule"], "scale (s, or lambda for cfgpp)": f"{row['scale']:g}",
        "accuracy": with_interval(row, "accuracy") + ("" if row["reached"] else " (below the floor)"),
        "Fréchet distance": with_interval(row, "frechet_distance", 1),
        "precision": with_interval(row, "precision"), "recall": with_interval(row, "recall"),
        "network calls per step": network_calls(rules[row["rule"]]),
        "seconds per cell": f"{seconds[row['rule']]:.1f}",
    } for _, row in matched.iterrows()]
    return pd.DataFrame(records).set_index("rule")


def _matched_cells(matched: pd.DataFrame) -> dict[str, float]:
    """rule -> the scale of its matched cell, for the rules that reached the accuracy floor."""
    return {row["rule"]: float(row["scale"]) for _, row in matched[matched["reached"]].iterrows()}


def paired_matched(matched: pd.DataFrame, results: dict[str, SweepResult],
                   metric: str = "frechet_distance") -> dict | None:
    """The rule with the lowest KID or Fréchet distance at matched accuracy and every other rule's *paired*
    difference from it (all rules sample from the same noise and labels, so the cells pair sample by sample) (08).

    None where no rule reached the floor or a result kept no per-sample features. Returns ``best``, ``value`` and
    ``differences`` (rule -> [other - best, low, high]), ``not_distinguishable`` and ``winner`` as
    :func:`~cfgutils.workflows.experiments.paired_ranking` does for weights.
    """
    cells = _matched_cells(matched)
    features = {rule: _at_scale(results[rule].features, scale) for rule, scale in cells.items()}
    if not cells or any(f is None for f in features.values()) or len({f.shape for f in features.values()}) != 1:
        return None
    pooled = {rule: _at_scale(results[rule].pooled, scale) for rule, scale in cells.items()}
    best = min(cells, key=lambda rule: pooled[rule][metric])
    distances, labels = results[best].reference.distances, results[best].labels
    differences = {rule: triple(distances.difference(features[rule], features[best], labels), f"{metric}_difference")
                   for rule in cells if rule != best}
    return {"metric": metric, **rank_by_differences(best, triple(pooled[best], metric), differences)}


def paired_recall(matched: pd.DataFrame, results: dict[str, SweepResult]) -> dict | None:
    """The rule with the highest recall at matched accuracy and every other rule's difference from it, paired by
    seed (recall is measured per seed, on samples that share each seed's noise): a Student-t interval of the
    per-seed differences (08). None where fewer than two seeds were shared."""
    cells = _matched_cells(matched)
    per_seed = {rule: {row["seed"]: row["recall"] for row in results[rule].rows if abs(row["s"] - scale) < 1e-9}
                for rule, scale in cells.items()}
    seeds = sorted(set.intersection(*(set(values) for values in per_seed.values()))) if per_seed else []
    if len(seeds) < 2:
        return None
    best = max(cells, key=lambda rule: sum(per_seed[rule][seed] for seed in seeds))
    differences = {rule: list(seed_interval([per_seed[rule][seed] - per_seed[best][seed] for seed in seeds]))
                   for rule in cells if rule != best}
    return {"metric": "recall", **rank_by_differences(best, list(seed_interval([per_seed[best][s] for s in seeds])),
                                                      differences)}


def matched_conclusions(matched: pd.DataFrame, accuracy_floor: float,
                        results: dict[str, SweepResult] | None = None) -> dict:
    """Which rule has the lowest KID and Fréchet distance and the highest recall at matched accuracy (08): with
    ``results`` (sweeps that kept their samples' features), by paired differences (samples for the distances,
    seeds for recall); otherwise by the rules' intervals. A winner is named only where every comparison
    excludes 0."""
    eligible = matched[matched["reached"]].reset_index(drop=True)
    never = [str(name) for name in matched.loc[~matched["reached"], "rule"]]
    paired = {} if results is None else {
        "kid": paired_matched(matched, results, "kid"), "frechet_distance": paired_matched(matched, results),
        "recall": paired_recall(matched, results)}
    found = {"accuracy_floor": accuracy_floor, "never_reached": never, "paired": paired,
             "paired_frechet": paired.get("frechet_distance"),
             "frechet": best_or_tied(eligible, "frechet_distance", False, key="rule") if len(eligible) else None,
             "recall": best_or_tied(eligible, "recall", True, key="rule") if len(eligible) else None}
    lines = []
    for metric, label, extreme, digits in (("kid", "the KID", "lowest", 1), ("frechet_distance", "the Fréchet distance",
                                                                          "lowest", 1), ("recall", "recall", "highest", 3)):
        if paired.get(metric) is not None:
            lines.append(f"- At accuracy ≥ {accuracy_floor:g}: "
                         + ranked_sentence(paired[metric], label, extreme, digits, unit="").replace(
                             f"is {extreme} at", f"is {extreme} for"))
    for metric, label, extreme in (("frechet", "Fréchet distance", "lowest"), ("recall", "recall", "highest")):
        result = found[metric]
        if result is None or paired.get({"frechet": "frechet_distance"}.get(metric, metric)) is not None:
            continue
        value = f"{result['value']:.3g} [{result['low']:.3g}, {result['high']:.3g}]"
        if result["winner"] is not None:
            lines.append(f"- At accuracy ≥ {accuracy_floor:g}, {result['winner']} has the {extreme} {label} ({value}); "
                         "its interval separates from every other rule's.")
        else:
            lines.append(f"- At accuracy ≥ {accuracy_floor:g}, the {label} of {', '.join(result['tied'])} is not "
                         f"distinguishable at this sample size: their 95% intervals overlap (best observed: "
                         f"{result['best']}, {value}).")
    if never:
        lines.append(f"- Never reached accuracy {accuracy_floor:g} on this grid: {', '.join(never)}.")
    found["lines"] = lines
    return found


def comparison_markdown(table: pd.DataFrame, lines: list[str]) -> str:
    """The matched-accuracy table and its conclusions as Markdown (08's ``table.md``)."""
    return markdown(table.reset_index()) + "\n\n" + "\n".join(lines)
