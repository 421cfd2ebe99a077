"""Tables and computed conclusions of a guidance sweep (notebook 05-classifier-eval; reused by 06 and the CLI).

The figures of a sweep are in :mod:`cfgutils.presentation.plots`. Metric columns (see
:mod:`cfgutils.core.metrics`): ``accuracy``,
``frechet_distance``, ``kid``, ``precision``, ``recall``, ``inception_score``, ``diversity``,
``confidence``, ``saturation``, ``near_copy_pixels``; each with ``<metric>_low/high``, its 95% interval.
A weight or rule is called best only where its interval separates from the others' (:func:`best_or_tied`).
"""

from __future__ import annotations


import pandas as pd

from ..plumbing import paths
from ..workflows.experiments import REFERENCE_ACCURACY, SweepResult, floor_difference, paired_ranking, scale_summaries
from ..core.metrics import paired_verdict, triple

METRIC_LABELS = {
    "accuracy": "classifier accuracy",
    "frechet_distance": "Fréchet distance (classifier features)",
    "kid": "KID (classifier features)",
    "precision": "precision (k=3)",
    "recall": "recall (k=3)",
    "inception_score": "IS analogue",
    "diversity": "intra-class diversity",
    "confidence": "mean confidence",
    "intended_log_probability": "mean log p(intended class)",
    "saturation": "saturated pixels",
    "near_copy_pixels": "near copies (pixels)",
    "near_copy_features": "near copies (features)",
    "nearest_training_pixels": "distance to nearest training digit (pixels)",
    "x0_outside": "predicted x0 pixels outside [-1, 1]",
}


def sweep_frame(result: SweepResult) -> pd.DataFrame:
    """One row per scale, each metric with its 95% interval over seeds (``<metric>_low/high``), sorted by s (05).

    The intervals come from :func:`cfgutils.workflows.experiments.scale_summaries`.
    """
    return pd.DataFrame(scale_summaries(result))


def summary_frame(result: SweepResult) -> pd.DataFrame:
    """:func:`sweep_frame` and a last row for the real-data floor (``set`` says which is which) (05, the CLI).

    The floor's KID and Fréchet distance are measured on as many real images as each scale has samples.
    """
    frame = sweep_frame(result).assign(set="generated")
    floor = pd.DataFrame([{**result.floor, "set": "real data floor"}])
    return pd.concat([frame, floor], ignore_index=True)


def interval_widths(live: pd.DataFrame, committed: pd.DataFrame, metrics=("accuracy", "kid", "frechet_distance"),
                    ) -> pd.DataFrame:
    """How much wider a live run's 95% intervals are than a committed run's, at the weights both measured (05).

    ``live`` and ``committed``: :func:`summary_frame`-like frames (the committed one read from its summary.csv).
    """
    def by_w(frame):
        frame = frame[frame["set"] == "generated"] if "set" in frame else frame
        return frame.set_index(frame["w"].astype(float).round(6))

    live, committed = by_w(live), by_w(committed)
    shared = [w for w in live.index if w in committed.index]
    records = []
    for w in shared:
        record = {"w": f"{w:g}", "samples (live / committed)": f"{int(live.loc[w, 'n_set'])} / "
                                                                f"{int(committed.loc[w, 'n_set'])}"}
        for metric in metrics:
            widths = [frame.loc[w, f"{metric}_high"] - frame.loc[w, f"{metric}_low"] for frame in (live, committed)]
            record[f"{METRIC_LABELS.get(metric, metric)}: width live / committed"] = (
                f"{widths[0]:.3g} / {widths[1]:.3g} ({widths[0] / widths[1]:.1f}x)")
        records.append(record)
    return pd.DataFrame(records).set_index("w")


def variant_interval_widths(live: pd.DataFrame, committed: pd.DataFrame) -> pd.DataFrame:
    """:func:`interval_widths` per guidance rule, for the rules both runs measured (06): ``live`` a
    :func:`variants_frame`, ``committed`` the variants.csv of a committed ``experiment variants`` run."""
    rules = [rule for rule in live["variant"].unique() if rule in set(committed["variant"])]
    if not rules:
        raise ValueError("the two runs share no rule")
    return pd.concat({rule: interval_widths(live[live["variant"] == rule], committed[committed["variant"] == rule])
                      for rule in rules}, names=["rule"])


def widths_beside_committed(live: pd.DataFrame, study: str, dataset: str):
    """The interval widths of a live run beside the committed full run of the same study and dataset: 05's
    ``classifier-eval`` (``live`` a :func:`summary_frame`) or 06's ``guidance-variants`` (a
    :func:`variants_frame`); a one-line note where no run is committed."""
    folder, file, widths = {"classifier-eval": (paths.COMMITTED_EVALUATION, "summary.csv", interval_widths),
                            "guidance-variants": (paths.COMMITTED_VARIANTS, "variants.csv", variant_interval_widths)
                            }[study]
    committed = folder / dataset / file
    if not committed.is_file():
        return f"no committed run for {dataset} at {committed}"
    return widths(live, pd.read_csv(committed))


def committed_conclusions(comparison) -> str:
    """The heading and the conclusions (its bullet lines) of a committed ``experiment paired`` comparison, as
    Markdown, for a notebook to show beside its live run (05-08); a one-line note where it is not committed.

    ``comparison``: its name under ``benchmarks/training-seeds/compare/`` ("w1-vs-w0"), or its folder.
    """
    from pathlib import Path

    folder = Path(comparison)
    if len(folder.parts) == 1:
        folder = paths.COMMITTED_NETWORKS / folder
    table = folder / "table.md"
    if not table.is_file():
        return f"(no committed comparison at {table})"
    lines = table.read_text().splitlines()
    return "\n".join([f"**{lines[0]}** ({table.parent.name}):", "", *(l for l in lines if l.startswith("- "))])


def reference_accuracy(w: float) -> float | None:
    """The reference study's published accuracy at w, or None where it has no number."""
    for key, value in REFERENCE_ACCURACY.items():
        if abs(key - w) < 1e-9:
            return value
    return None


def with_interval(row, metric: str, digits: int = 3) -> str:
    """"0.997 [0.988, 1.000]": a metric and its 95% interval; "(one seed: no interval)" where it has none."""
    value, low, high = row[metric], row.get(f"{metric}_low"), row.get(f"{metric}_high")  # a dict or a frame row
    if low is None or pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f} (one seed: no interval)"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


#: the columns of the headline table and the digits each is printed with
TABLE_METRICS = {"accuracy": 3, "kid": 1, "frechet_distance": 1, "precision": 3, "recall": 3, "near_copy_pixels": 3}


def results_table(result: SweepResult) -> pd.DataFrame:
    """The headline table: w, s, each metric with its 95% interval, the reference study's accuracy (MNIST) (05)."""
    frame = sweep_frame(result)
    records = [{"w": f"{row['w']:g}", "s": f"{row['s']:g}",
                "reference accuracy": "" if reference_accuracy(row["w"]) is None
                else f"{reference_accuracy(row['w']):.3f}",
                **{METRIC_LABELS.get(m, m): with_interval(row, m, d) for m, d in TABLE_METRICS.items() if m in row}}
               for _, row in frame.iterrows()]
    floor = result.floor
    records.append({"w": "real", "s": "data", "reference accuracy": "",
                    **{METRIC_LABELS.get(m, m): with_interval(floor, m, d) for m, d in TABLE_METRICS.items()
                       if m in floor}})
    table = pd.DataFrame(records, index=[f"w={r['w']}" for r in records[:-1]] + ["real data"])
    # the reference study published MNIST numbers only
    return table if result.dataset == "mnist" else table.drop(columns="reference accuracy")


def format_table(result: SweepResult) -> str:
    """The headline table as Markdown (for RESULTS.md and the CLI)."""
    return markdown(results_table(result))


def show(text):
    """Computed prose rendered on a notebook's page: a string as Markdown, or lines as a bulleted list."""
    from IPython.display import Markdown

    if not isinstance(text, str):
        text = "\n".join(line if line.startswith("- ") else f"- {line}" for line in text)
    return Markdown(text)


def markdown(frame: pd.DataFrame) -> str:
    """A frame as a Markdown table (every cell as text)."""
    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- conclusions
def separated(a_low: float, a_high: float, b_low: float, b_high: float) -> bool:
    """Do two intervals not overlap? False where either is unknown (NaN): no interval, no claim."""
    if any(pd.isna(v) for v in (a_low, a_high, b_low, b_high)):
        return False
    return a_high < b_low or b_high < a_low


def best_or_tied(frame: pd.DataFrame, metric: str, higher_is_better: bool = True, key: str = "w") -> dict:
    """The best row by ``metric`` and every row whose interval overlaps the best one's (05, 06).

    ``winner`` is the best row's ``key`` only when its interval separates from every other row's; otherwise it
    is None and ``tied`` lists every ``key`` whose interval overlaps the best one (the best included).
    """
    if frame.empty:
        raise ValueError("no rows to compare")
    best = frame.loc[frame[metric].idxmax() if higher_is_better else frame[metric].idxmin()]
    low, high = best[f"{metric}_low"], best[f"{metric}_high"]
    tied = [row[key] for _, row in frame.iterrows()
            if not separated(row[f"{metric}_low"], row[f"{metric}_high"], low, high)]
    return {"winner": best[key] if len(tied) == 1 else None, "best": best[key], "tied": tied,
            "value": float(best[metric]), "low": float(low), "high": float(high)}


def conclusions(result: SweepResult, accuracy_floor: float = 0.90) -> dict:
    """Findings that the intervals support, as numbers and as sentences (``lines``) (05-classifier-eval).

    Weights are ranked by paired differences (:func:`~cfgutils.workflows.experiments.paired_ranking`): a
    weight is named best only where its difference from every other weight excludes 0; otherwise the
    weights it cannot be told from are listed with their differences. Accuracy "falls below"
    ``accuracy_floor`` only where the whole interval lies below it.
    """
    frame = sweep_frame(result)
    guided = frame[frame["s"] > 0].reset_index(drop=True)
    floor = result.floor
    ranked = {metric: paired_ranking(result, metric) for metric in ("accuracy", "kid", "frechet_distance")}
    best_distance_s = ranked["frechet_distance"]["best_s"]
    past_best = guided[guided["w"] > max(ranked["accuracy"]["not_distinguishable"])]
    below = past_best[past_best["accuracy_high"] < accuracy_floor]
    first, last = guided.iloc[0], guided.iloc[-1]
    unconditional = frame[frame["s"] == 0]
    found = {
        **ranked,
        "frechet_floor": triple(floor, "frechet_distance"), "kid_floor": triple(floor, "kid"),
        "best_frechet_minus_floor": floor_difference(result, best_distance_s, "frechet_distance"),
        "first_w_clearly_below_accuracy_floor": float(below["w"].iloc[0]) if len(below) else None,
        "accuracy_floor": accuracy_floor,
        "unconditional_accuracy": None if unconditional.empty else
        [float(unconditional.iloc[0][k]) for k in ("accuracy", "accuracy_low", "accuracy_high")],
        "real_accuracy": [floor["accuracy"], floor["accuracy_low"], floor["accuracy_high"]],
        "recall_lowest_w": [float(first[k]) for k in ("w", "recall", "recall_low", "recall_high")],
        "recall_highest_w": [float(last[k]) for k in ("w", "recall", "recall_low", "recall_high")],
        "recall_falls": bool(last["recall_high"] < first["recall_low"]),
    }
    found["lines"] = conclusion_lines(found)
    return found


def _triple(values, digits: int = 3) -> str:
    """"0.997 [0.988, 1.000]" from (value, low, high); "(one seed: no interval)" where the interval is NaN."""
    return with_interval({"v": values[0], "v_low": values[1], "v_high": values[2]}, "v", digits)


def _signed(values, digits: int) -> str:
    """"+0.012 [-0.004, +0.030]": a difference and its interval."""
    return f"{values[0]:+.{digits}f} [{values[1]:+.{digits}f}, {values[2]:+.{digits}f}]"


def difference_words(difference, digits: int, than: str = "") -> str:
    """"higher [than X] by ..." / "lower [than X] by ..." where the interval excludes 0, else "not
    distinguishable [from X] at this sample size (difference ...)": the series' one way of stating a
    comparison (05-08)."""
    verdict = paired_verdict(difference)
    if verdict != "not distinguishable":
        return f"{verdict}{' than ' + than if than else ''} by {_signed(difference, digits)}"
    return (f"not distinguishable{' from ' + than if than else ''} at this sample size "
            f"(difference {_signed(difference, digits)})")


def ranked_sentence(found: dict, what: str, extreme: str, digits: int, unit: str = "w = ") -> str:
    """One sentence on a :func:`~cfgutils.workflows.experiments.paired_ranking`: the best and its paired
    differences from the others (05; 08 ranks rules, with ``unit`` "")."""
    def name(key) -> str:
        return f"{unit}{key:g}" if isinstance(key, (int, float)) else f"{unit}{key}"

    value = _triple(found["value"], digits)
    best = name(found["best"])
    if found["winner"] is not None:
        closest = min(found["differences"].items(), key=lambda item: abs(item[1][0]))
        return (f"{what} is {extreme} at {best} ({value}); every other paired difference from it excludes 0 "
                f"(the closest: {name(closest[0])}, {_signed(closest[1], digits)}).")
    if not found["differences"]:
        return f"{what} at {best}: {value}."
    others = ", ".join(f"{name(key)} ({_signed(found['differences'][key], digits)})"
                       for key in found["not_distinguishable"][1:])
    return (f"{what} is {extreme} at {best} ({value}), but not distinguishable at this sample size from "
            f"{others} (paired differences from {best}).")


def conclusion_lines(found: dict) -> list[str]:
    """The sentences of :func:`conclusions`, one Markdown bullet each (05-classifier-eval)."""
    lines = [f"- {ranked_sentence(found['accuracy'], 'Accuracy', 'highest', 3)} Real test images: "
             f"{_triple(found['real_accuracy'])}"
             + (f"; without guidance (s = 0): {_triple(found['unconditional_accuracy'])}."
                if found["unconditional_accuracy"] else ".")]
    lines.append(f"- {ranked_sentence(found['kid'], 'KID', 'lowest', 1)} Real test images at the same N: "
                 f"{_triple(found['kid_floor'], 1)}.")
    distance = found["frechet_distance"]
    lines.append(f"- {ranked_sentence(distance, 'Fréchet distance', 'lowest', 1)} At w = {distance['best']:g} it "
                 f"is {difference_words(found['best_frechet_minus_floor'], 1, 'the real-data floor')} "
                 f"(floor at the same N: {_triple(found['frechet_floor'], 1)}).")
    first_below = found["first_w_clearly_below_accuracy_floor"]
    lines.append(f"- Past the best weights, accuracy is below {found['accuracy_floor']:.0%} (its whole interval) "
                 f"from w = {first_below:g}." if first_below is not None else
                 f"- No weight past the best has an accuracy interval wholly below {found['accuracy_floor']:.0%}.")
    low, high = found["recall_lowest_w"], found["recall_highest_w"]
    verb = "falls" if found["recall_falls"] else "does not fall beyond its intervals"
    lines.append(f"- Recall (coverage of real variety) {verb}: {_triple(low[1:])} at w = {low[0]:g}, "
                 f"{_triple(high[1:])} at w = {high[0]:g}.")
    return lines


# --------------------------------------------------------------------------------------------- figures


# --------------------------------------------------------------------------------------------- variants (06)
def variants_frame(results: dict[str, SweepResult]) -> pd.DataFrame:
    """One row per (variant, scale): the sweep frames of several guidance rules stacked (06-guidance-variants)."""
    return pd.concat([sweep_frame(result).assign(variant=name) for name, result in results.items()],
                     ignore_index=True)


def variants_table(results: dict[str, SweepResult], weights=(2, 5, 10, 20)) -> pd.DataFrame:
    """Accuracy, Fréchet distance, precision, recall and saturation with 95% intervals per variant and w (06)."""
    frame = variants_frame(results)
    frame = frame[frame["w"].round(6).isin([round(float(w), 6) for w in weights])]
    metrics = {m: d for m, d in (*TABLE_METRICS.items(), ("saturation", 3)) if m in frame and m != "near_copy_pixels"}
    records = [{"variant": row["variant"], "w": row["w"], "s": row["s"],
                **{METRIC_LABELS.get(m, m): with_interval(row, m, d) for m, d in metrics.items()}}
               for _, row in frame.iterrows()]
    return pd.DataFrame(records).set_index(["variant", "w"])


def compare(row, base, metric: str) -> str:
    """"lower", "higher" or "not distinguishable": ``row``'s interval of ``metric`` against ``base``'s, for
    results that kept no per-sample data (:func:`~cfgutils.core.metrics.paired_verdict` reads the paired
    differences of those that did)."""
    if not separated(row[f"{metric}_low"], row[f"{metric}_high"], base[f"{metric}_low"], base[f"{metric}_high"]):
        return "not distinguishable"
    return "lower" if row[metric] < base[metric] else "higher"


def paired_difference(result: SweepResult, base: SweepResult, scale: float, metric: str) -> list[float] | None:
    """[result - base, low, high] of KID or the Fréchet distance at ``scale``, paired over samples drawn from the
    same noise and labels (06); None where either result kept no features for that scale."""
    features, baseline = _at_scale(result.features, scale), _at_scale(base.features, scale)
    if features is None or baseline is None or base.reference is None or features.shape != baseline.shape:
        return None
    return triple(base.reference.distances.difference(features, baseline, base.labels), f"{metric}_difference")


def _at_scale(by_scale: dict, scale: float):
    """The entry of ``by_scale`` at ``scale`` (scales found from w may differ from the keys by rounding)."""
    for key, value in by_scale.items():
        if abs(key - scale) < 1e-9:
            return value
    return None


