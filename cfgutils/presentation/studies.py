"""Tables and computed conclusions of the two ablation studies (notebook 07-ablations; ``experiment collapse |
label-dropout``).

The rows come from :func:`cfgutils.workflows.ablations.run_study`: one per configuration and w, every metric
with its 95% interval. A configuration's accuracy "collapsed" only when its whole interval lies below
:data:`COLLAPSED_BELOW`, and is "intact" only when its whole interval lies at or above it; otherwise the
verdict is "undecided". A factor turns the collapse off (or on) only where the verdict flips between two
decided configurations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.metrics import paired_verdict
from ..plumbing import paths
from .report import _signed, _triple, best_or_tied, markdown, reference_accuracy, separated, with_interval

#: accuracy under this, with the whole 95% interval, is a collapse (the reference study: 0.385 at w = 10)
COLLAPSED_BELOW = 0.9


@dataclass
class CommittedStudies:
    """The committed full studies notebook 07 reads beside its live run (written by ``experiment reproduce``,
    ``collapse`` and ``label-dropout``; commands in benchmarks/README.md)."""

    folder: Path
    reproduction: pd.DataFrame  # one row per network and w
    strips: dict[float, torch.Tensor]  # w -> the first sample of every class (class x 1 x H x W)
    cross: dict[str, pd.DataFrame]  # sampler -> rows of the cross check at w = 0 ("ancestral", "ddpm")
    ladder: list[dict]  # the collapse ladder, one row per configuration, network and w
    dropout: list[dict]  # the label-dropout study, one row per rate and w
    no_dropout_figure: Path  # what a model trained without label dropout samples


def committed_studies(folder=None) -> CommittedStudies:
    """Read the committed studies under ``folder`` (None: benchmarks/)."""
    folder = Path(folder) if folder is not None else paths.BENCHMARKS_DIR
    reproduction = pd.read_csv(folder / "reproduction" / "results.csv")
    strips = np.load(folder / "reproduction" / "strips.npz")
    cross_dir = folder / "reproduction-cross"
    cross = {"ancestral": pd.concat([reproduction[reproduction["network"] == "seed0"],
                                     pd.read_csv(cross_dir / "ancestral" / "results.csv")]),
             "ddpm": pd.read_csv(cross_dir / "ddpm" / "results.csv")}
    ladder = pd.read_csv(folder / "ablations" / "collapse" / "results.csv",
                         dtype={"correct_bits": str}).to_dict("records")  # outcome bits keep leading zeros
    dropout = folder / "ablations" / "label-dropout"
    return CommittedStudies(folder, reproduction,
                            {float(k.split("=")[1]): torch.from_numpy(strips[k]) for k in strips.files}, cross,
                            ladder, pd.read_csv(dropout / "results.csv").to_dict("records"), dropout / "no-dropout.png")


def verdict(row, threshold: float = COLLAPSED_BELOW) -> str:
    """"collapsed", "intact" or "undecided": where the accuracy interval lies against ``threshold``."""
    if row["accuracy_high"] < threshold:
        return "collapsed"
    if row["accuracy_low"] >= threshold:
        return "intact"
    return "undecided"


def _bits(row) -> torch.Tensor | None:
    """A row's per-sample outcomes (``correct_bits``), or None where the row kept none."""
    bits = row.get("correct_bits") if hasattr(row, "get") else None
    if isinstance(bits, int) and not isinstance(bits, bool):  # read back as a number: its leading zeros are lost
        bits = str(bits)
    if not isinstance(bits, str) or not bits or set(bits) - {"0", "1"}:
        return None
    size = int(row["n"] * row["seeds"]) if "n" in row and "seeds" in row else len(bits)
    return torch.tensor([c == "1" for c in bits.zfill(size)])


def paired_change(row, previous) -> list[float] | None:
    """[accuracy of ``row`` - of ``previous``, low, high] from their per-sample outcomes (Newcombe's paired
    interval), where both kept them for the same samples (same count: the same noise and labels); else None."""
    from ..core.metrics import paired_proportion_difference

    mine, theirs = _bits(row), _bits(previous) if previous is not None else None
    if mine is None or theirs is None or mine.shape != theirs.shape:
        return None
    return list(paired_proportion_difference(mine, theirs))


def previous_configurations(rows: list[dict]) -> list[dict | None]:
    """For every row, the row of the configuration before it in the ladder at the same w and training seed (and
    the same clipping arm), or None for the first."""
    seen: dict[tuple, dict] = {}
    found = []
    for row in rows:
        key = (round(float(row["w"]), 6), row.get("train_seed", 0), " +clip" in str(row["configuration"]))
        found.append(seen.get(key))
        seen[key] = row
    return found


def factor_table(rows: list[dict]) -> pd.DataFrame:
    """One row per configuration and w: accuracy, its paired change from the configuration above (same w and
    training seed, the same samples' noise and labels), Fréchet distance (and the real-data floor at the same
    sample count), recall and the fraction of predicted-x0 pixels outside [-1, 1], each with its 95% interval.
    The set statistics live in the scoring classifier's features: compare them only between rows of the same
    scorer."""
    records = []
    for row, previous in zip(rows, previous_configurations(rows)):
        change = paired_change(row, previous)
        records.append({"configuration": row["configuration"], "w": f"{row['w']:g}", "s": f"{row['s']:g}",
                        "scored by": row.get("scorer", "ours"),
                        "samples": int(row["n"] * row["seeds"]), "accuracy": with_interval(row, "accuracy"),
                        "change from the row above (paired)": "" if change is None else _signed(change, 3),
                        "verdict": verdict(row), "Fréchet": with_interval(row, "frechet_distance", 1),
                        "floor": f"{row['floor_frechet_distance']:.1f}", "recall": with_interval(row, "recall", 2),
                        "x0 outside [-1, 1]": with_interval(row, "x0_outside", 3)})
    return pd.DataFrame(records)


def reproduction_table(rows: list[dict], configuration: str = "reference") -> pd.DataFrame:
    """The published accuracy curve beside ``configuration``'s accuracy, by w (both conventions)."""
    frame = pd.DataFrame(rows)
    part = frame[frame["configuration"] == configuration]
    return pd.DataFrame([{"w": f"{row['w']:g}", "s": f"{row['s']:g}",
                          "published accuracy": "" if reference_accuracy(row["w"]) is None
                          else f"{reference_accuracy(row['w']):.3f}",
                          f"ours ({configuration})": with_interval(row, "accuracy"), "samples": int(row["n"] * row["seeds"])}
                         for _, row in part.iterrows()])


def factor_changes(rows: list[dict], w: float = 10.0) -> list[dict]:
    """Walk the ladder's configurations in order (per training seed) and record every decided flip of the
    verdict at ``w``."""
    frame = pd.DataFrame(rows)
    frame = frame[(frame["w"] - w).abs() < 1e-9]
    if "train_seed" not in frame:
        frame = frame.assign(train_seed=0)
    changes = []
    for seed, ladder in frame.groupby("train_seed", sort=True):
        decided = [(row["rung"], row["changed"], verdict(row), row) for _, row in ladder.iterrows()]
        for (name, _, before, old), (next_name, changed, after, new) in zip(decided, decided[1:]):
            if before != after and "undecided" not in (before, after):
                changes.append({"train_seed": int(seed), "seeds": frame["train_seed"].nunique(), "from": name,
                                "to": next_name, "changed": changed, "before": before, "after": after, "old": old,
                                "new": new})
    return changes


def collapse_lines(rows: list[dict], w: float = 10.0) -> list[str]:
    """Sentences: which configurations collapse at ``w`` and which factor turns the collapse off or on."""
    frame = pd.DataFrame(rows)
    at_w = frame[(frame["w"] - w).abs() < 1e-9]
    lines = []
    for label, name in (("collapsed", "collapse"), ("intact", "keep their accuracy"), ("undecided", "undecided")):
        chosen = [row["configuration"] for _, row in at_w.iterrows() if verdict(row) == label]
        if chosen:
            what = "are undecided (the interval straddles" if label == "undecided" else name
            tail = f" {COLLAPSED_BELOW:g})" if label == "undecided" else ""
            lines.append(f"At w = {w:g}, {', '.join(chosen)} {what}{tail}.")
    for change in factor_changes(rows, w):
        network = f" (training seed {change['train_seed']})" if change["seeds"] > 1 else ""
        turn = "turns the collapse off" if change["after"] == "intact" else "turns the collapse on"
        paired = paired_change(change["new"], change["old"])
        difference = "" if paired is None else f", a paired change of {_signed(paired, 3)}"
        lines.append(f"{change['to']} ({change['changed']}) {turn}{network}: accuracy "
                     f"{with_interval(change['old'], 'accuracy')} -> {with_interval(change['new'], 'accuracy')}"
                     f"{difference}.")
    if "clip_x0" in at_w and at_w["clip_x0"].nunique() == 2:
        for rung, pair in at_w.groupby("rung", sort=False):
            verdicts = {bool(row["clip_x0"]): verdict(row) for _, row in pair.iterrows()}
            if verdicts.get(False) == "collapsed" and verdicts.get(True) == "intact":
                lines.append(f"Clipping x0 turns the collapse off for {rung}.")
    if not any(verdict(row) == "collapsed" for _, row in at_w.iterrows()):
        lines.append(f"No configuration collapses at w = {w:g}.")
    return lines


def _without_seed(configuration) -> str:
    """A configuration's name without the training seed a study with several seeds appends ("ddpm #1" -> "ddpm")."""
    return str(configuration).split(" #")[0]


def ladder_changes(rows: list[dict]) -> list[dict]:
    """Per configuration after the first and per w: its paired accuracy change from the configuration above for
    every training seed that kept per-sample outcomes, and, where two or more trained networks have one, the mean
    change with its Student-t 95% interval over networks (which covers training as well as sampling)."""
    from ..core.metrics import seed_interval

    found: dict[tuple, dict] = {}
    for row, previous in zip(rows, previous_configurations(rows)):
        change = paired_change(row, previous)
        if change is None:
            continue
        name = _without_seed(row["configuration"])
        entry = found.setdefault((name, round(float(row["w"]), 6)), {
            "configuration": name, "changed": row.get("changed", ""), "w": float(row["w"]),
            "from": _without_seed(previous["configuration"]), "per_network": {}})
        entry["per_network"][int(row.get("train_seed", 0))] = change
    for entry in found.values():
        means = [change[0] for change in entry["per_network"].values()]
        entry["mean"] = seed_interval(means) if len(means) > 1 else None
    return list(found.values())


def ladder_networks_table(rows: list[dict]) -> pd.DataFrame:
    """:func:`ladder_changes` as a table: each training seed's paired change (sampling interval) and the mean over
    networks (training and sampling interval) with its reading; one row per configuration and w."""
    changes = ladder_changes(rows)
    seeds = sorted({seed for entry in changes for seed in entry["per_network"]})
    records = []
    for entry in changes:
        mean = entry["mean"]
        records.append({"configuration": entry["configuration"], "w": f"{entry['w']:g}", "s": f"{entry['w'] + 1:g}",
                        **{f"network {seed}": _signed(entry["per_network"][seed], 3) if seed in entry["per_network"]
                           else "" for seed in seeds},
                        "mean over networks": "" if mean is None else _signed(mean, 3),
                        "reading": "one network" if mean is None else _reading(mean)})
    return pd.DataFrame(records)


def ladder_table(rows: list[dict], w: float = 10.0) -> pd.DataFrame:
    """One row per configuration at ``w``, in ladder order: each trained network's accuracy and the change from
    the configuration above, the mean paired change over the networks where several have it (Student-t interval
    over networks), else the one network's paired change (07)."""
    changes = {e["configuration"]: e for e in ladder_changes(rows) if abs(e["w"] - w) < 1e-9}
    frame = pd.DataFrame([row for row in rows if abs(float(row["w"]) - w) < 1e-9])
    records = []
    for name, part in frame.groupby(frame["configuration"].map(_without_seed), sort=False):
        entry = changes.get(name)
        change = None if entry is None else entry["mean"] or next(iter(entry["per_network"].values()))
        reading = "" if change is None else _reading(change) + (
            f" (over {len(entry['per_network'])} networks)" if entry["mean"] else " (one network)")
        records.append({"configuration": name, "scored by": part["scorer"].iloc[0] if "scorer" in part else "ours",
                        "networks": len(part),
                        "samples per network": int(part["n"].iloc[0] * part["seeds"].iloc[0]),
                        "accuracy per network": ", ".join(f"{a:.3f}" for a in part["accuracy"]),
                        "change from the row above": "" if change is None else _signed(change, 3),
                        "reading": reading})
    return pd.DataFrame(records)


#: how a paired accuracy change reads (:func:`~cfgutils.core.metrics.paired_verdict`) in the ladder's words
READINGS = {"higher": "raises accuracy", "lower": "lowers accuracy",
            "not distinguishable": "not distinguishable at this sample size"}


def _reading(difference) -> str:
    return READINGS[paired_verdict(difference)]


def ladder_network_lines(rows: list[dict], w: float = 10.0) -> list[str]:
    """One sentence per configuration at ``w``: what its change does to accuracy over the trained networks that
    have it (mean paired change, Student-t interval over networks), or that it rests on one network."""
    lines = []
    for entry in [e for e in ladder_changes(rows) if abs(e["w"] - w) < 1e-9]:
        mean, count = entry["mean"], len(entry["per_network"])
        if mean is None:
            seed, change = next(iter(entry["per_network"].items()))
            lines.append(f"{entry['configuration']} against {entry['from']} at w = {w:g} rests on one trained network "
                         f"(seed {seed}): {_reading(change)} ({_signed(change, 3)}, paired over samples).")
            continue
        verdict = _reading(mean)
        said = f"{verdict} by {_signed(mean, 3)}" if verdict != "not distinguishable at this sample size" else \
            f"is {verdict} (difference {_signed(mean, 3)})"
        lines.append(f"{entry['configuration']} against {entry['from']} at w = {w:g}, over {count} trained networks: "
                     f"{said}.")
    return lines


def dropout_table(rows: list[dict]) -> pd.DataFrame:
    """One row per label-dropout rate: Fréchet distance of the unconditional branch (s = 0), the best accuracy
    and the best Fréchet distance with the weights where they occur (or every weight whose interval overlaps the
    best one's: not distinguishable at this sample size)."""
    frame = pd.DataFrame(rows)
    records = []
    for rate, part in frame.groupby("p_uncond", sort=True):
        part = part.reset_index(drop=True)
        unconditional = part[part["s"] == 0.0]
        accuracy = paired_best_accuracy(part)
        accuracy = accuracy if accuracy is not None else best_or_tied(part, "accuracy")
        frechet = best_or_tied(part, "frechet_distance", False)
        records.append({
            "p_uncond": f"{rate:g}",
            "Fréchet at s = 0 (w = -1)": "no unconditional model" if unconditional.empty
            else with_interval(unconditional.iloc[0], "frechet_distance", 1),
            "best accuracy": with_interval(part.loc[part["accuracy"].idxmax()], "accuracy"),
            "at w": _where(accuracy), "best Fréchet": with_interval(part.loc[part["frechet_distance"].idxmin()],
                                                                    "frechet_distance", 1),
            "at w ": _where(frechet)})
    return pd.DataFrame(records)


def paired_best_accuracy(part: pd.DataFrame) -> dict | None:
    """The weight with the highest accuracy among one configuration's guided rows (s > 0) and the weights whose
    *paired* difference from it contains 0 (the rows share their samples' noise and labels); None where the rows
    kept no per-sample outcomes (07)."""
    from ..core.metrics import rank_by_differences

    guided = part[part["s"] > 0].reset_index(drop=True)
    if guided.empty or any(_bits(row) is None for _, row in guided.iterrows()):
        return None
    best = guided.loc[guided["accuracy"].idxmax()]
    differences = {row["w"]: paired_change(row, best) for _, row in guided.iterrows() if row["w"] != best["w"]}
    if any(difference is None for difference in differences.values()):
        return None
    found = rank_by_differences(best["w"], [best["accuracy"], best["accuracy_low"], best["accuracy_high"]], differences)
    return {**found, "tied": found["not_distinguishable"], "paired": True}


def _where(found: dict) -> str:
    if found["winner"] is not None:
        return f"{found['winner']:g}"
    if found.get("paired"):
        return (f"{found['best']:g} (not distinguishable at this sample size, paired: "
                f"{', '.join(f'{w:g}' for w in found['tied'][1:])})")
    return f"{found['best']:g} (overlapping: {', '.join(f'{w:g}' for w in found['tied'])})"


def study_markdown(study: str, rows: list[dict], dataset: str = "mnist") -> str:
    """Everything a study's ``table.md`` holds: its tables and, for the collapse study, the computed conclusions.

    The reference study published MNIST numbers only, so other datasets get no reproduction table.
    """
    if study == "collapse":
        reproduction = (["## The reference recipe beside the published curve", markdown(reproduction_table(rows))]
                        if dataset == "mnist" else [])
        parts = [*reproduction, "## One factor at a time",
                 markdown(factor_table(rows)), "## What the intervals show",
                 "\n".join(f"- {line}" for line in collapse_lines(rows))]
        if len({row.get("train_seed", 0) for row in rows}) > 1:
            parts += ["## Over trained networks (mean paired change from the configuration above)",
                      markdown(ladder_networks_table(rows)),
                      "\n".join(f"- {line}" for line in ladder_network_lines(rows))]
    else:
        parts = ["## How much label dropout is enough", markdown(dropout_table(rows)), "## Every cell",
                 markdown(factor_table(rows))]
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------- the reproduction
#: how each scoring of the reproduction is named in tables and figures
SCORING_LABELS = {"published": "reference classifier, unclamped (as published)",
                  "clamped": "reference classifier, clamped to [-1, 1]",
                  "ours": "cfgutils' classifier, clamped"}


def pooled_reproduction(results: pd.DataFrame) -> pd.DataFrame:
    """Per w: each scoring's accuracy pooled over the trained networks (exact 95% interval on all their samples)
    and each network's own accuracy, beside the published number (07)."""
    from ..core.metrics import proportion_interval
    from ..workflows.reproduction import paired_difference

    records = []
    for w, part in results.groupby("w", sort=True):
        record = {"w": w, "s": w + 1, "published": part["published_accuracy"].iloc[0], "networks": len(part),
                  "samples": int(part["n"].sum())}
        for name in SCORING_LABELS:
            correct, n = int(part[f"correct_{name}"].sum()), int(part["n"].sum())
            low, high = proportion_interval(correct, n)
            record.update({f"accuracy_{name}": correct / n, f"accuracy_{name}_low": low,
                           f"accuracy_{name}_high": high,
                           f"per_network_{name}": ", ".join(f"{a:.3f}" for a in part[f"accuracy_{name}"])})
        for name in ("clamped", "ours"):  # the paired change from the scoring before (same samples)
            if f"gained_{name}" in part:
                change, low, high = paired_difference(int(part[f"gained_{name}"].sum()), int(part[f"lost_{name}"].sum()),
                                                      int(part["n"].sum()))
                record.update({f"change_{name}": change, f"change_{name}_low": low, f"change_{name}_high": high})
        record.update({"outside_fraction": part["outside_fraction"].mean(), "max_abs": part["max_abs"].max()})
        records.append(record)
    return pd.DataFrame(records)


def reproduction_markdown_table(pooled: pd.DataFrame) -> pd.DataFrame:
    """The reproduction table as text: published beside the three scorings, pooled and per network (07)."""
    rows = []
    for _, row in pooled.iterrows():
        record = {"w": f"{row['w']:g}", "s": f"{row['s']:g}",
                  "published": "" if pd.isna(row["published"]) else f"{row['published']:.3f}",
                  "samples": int(row["samples"])}
        for name, label in (("published", "as published"), ("clamped", "clamped"), ("ours", "our classifier")):
            record[label] = with_interval(row, f"accuracy_{name}")
            record[f"{label}, per network"] = row[f"per_network_{name}"]
        record.update({"pixels outside [-1, 1]": f"{row['outside_fraction']:.3f}", "max |x|": f"{row['max_abs']:.1f}"})
        rows.append(record)
    return pd.DataFrame(rows)


def trajectory_table(results: pd.DataFrame, steps=(0, 1, 2, 3, 5, 10, 19)) -> pd.DataFrame:
    """Mean per-sample norm of x_t at the first steps of the reference sampler and of the final samples, by w,
    averaged over the networks (a pure-noise 28x28 image has norm about 28) (07)."""
    rows = []
    for w, part in results.groupby("w", sort=True):
        record = {"w": f"{w:g}"}
        record.update({f"step {i + 1} (t = {999 - i})": f"{part[f'norm_step_{i:02d}'].mean():.1f}" for i in steps
                       if f"norm_step_{i:02d}" in part})
        record["final"] = f"{part['norm_final'].mean():.1f}"
        rows.append(record)
    return pd.DataFrame(rows)


def mechanism_table(rows: list[dict]) -> pd.DataFrame:
    """Per network and t: the mean squared error of the noise prediction on held-out images, with its interval,
    and the factor 1/sqrt(alpha_t) by which the ancestral step multiplies x_t at that t (07)."""
    frame = pd.DataFrame(rows)
    networks = list(dict.fromkeys(frame["network"]))
    records = []
    for t, part in frame.groupby("t", sort=False):
        record = {"t": int(t), "1/sqrt(alpha_t)": f"{part['step_gain'].iloc[0]:.2f}"}
        for name in networks:
            row = part[part["network"] == name].iloc[0]
            record[name] = f"{row['eps_mse']:.4f} [{row['eps_mse_low']:.4f}, {row['eps_mse_high']:.4f}]"
        records.append(record)
    return pd.DataFrame(records)


def _at(frame: pd.DataFrame, w: float) -> pd.Series:
    return frame[(frame["w"] - w).abs() < 1e-9].iloc[0]


def _falls(pooled: pd.DataFrame, scoring: str) -> tuple[bool, pd.Series, pd.Series]:
    """Whether ``scoring``'s accuracy at the highest weight lies below its best, with separated intervals."""
    metric = f"accuracy_{scoring}"
    best, last = pooled.loc[pooled[metric].idxmax()], pooled.loc[pooled["w"].idxmax()]
    return separated(last[f"{metric}_low"], last[f"{metric}_high"], best[f"{metric}_low"], best[f"{metric}_high"]) \
        and last[metric] < best[metric], best, last


def _change(row: pd.Series, name: str) -> str:
    if f"change_{name}" not in row:
        return ""
    text = f"{row[f'change_{name}']:+.3f} [{row[f'change_{name}_low']:+.3f}, {row[f'change_{name}_high']:+.3f}]"
    decided = paired_decided([row[f"change_{name}"], row[f"change_{name}_low"], row[f"change_{name}_high"]])
    return text if decided else f"{text}, not distinguishable from 0 at this sample size"


def _scoring_lines(pooled: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """What clamping and our classifier change on the same samples (paired), and where the fall lives."""
    hi = pooled["w"].max()
    last = _at(pooled, hi)
    lines = []
    changed = (results["gained_clamped"] + results["lost_clamped"]) if "gained_clamped" in results else None
    if changed is not None and changed[(results["w"] - hi).abs() < 1e-9].sum() == 0:
        lines.append(f"Clamping the samples to [-1, 1] changes none of the study's classifier's predictions at "
                     f"w = {hi:g}, and at most {int(changed.max())} of {int(results['n'].max())} at any weight: the "
                     "raw pixel values are not what it misreads.")
    elif _change(last, "clamped"):
        lines.append(f"Clamping the same samples to [-1, 1] before the study's classifier reads them changes the "
                     f"accuracy at w = {hi:g} by {_change(last, 'clamped')} (paired, same samples).")
    if _change(last, "ours"):
        lines.append(f"Our classifier instead of the study's, on the same clamped samples, changes the accuracy at "
                     f"w = {hi:g} by {_change(last, 'ours')} (paired).")
    falls = {name: _falls(pooled, name) for name in ("published", "clamped", "ours")}
    if not falls["published"][0]:
        lines.append(f"As published, the accuracy at w = {hi:g} is not below its best with separated intervals: the "
                     "rebuild does not show a fall.")
    elif falls["ours"][0]:
        lines.append(f"The fall lives at least partly in the samples: read by our classifier too, accuracy at "
                     f"w = {hi:g} "
                     f"({with_interval(last, 'accuracy_ours')}) lies below its best "
                     f"({with_interval(falls['ours'][1], 'accuracy_ours')} at w = {falls['ours'][1]['w']:g}).")
    else:
        best = falls["ours"][1]
        lines.append(f"The fall lives in the measurement: on the same samples our classifier reads "
                     f"{with_interval(last, 'accuracy_ours')} at w = {hi:g}, not distinguishable at this sample size "
                     f"from its best ({with_interval(best, 'accuracy_ours')} at w = {best['w']:g}); the study's "
                     "8,118-parameter classifier is what loses the high-weight digits.")
    return lines


def reproduction_lines(pooled: pd.DataFrame, results: pd.DataFrame, mechanism: list[dict]) -> list[str]:
    """Plain-word conclusions of the reproduction, each read off the numbers: the curve as published against the
    published one, what clamping and our classifier change (paired intervals on the same samples), where the fall
    lives, what the pixels and the trajectory do, and the noise-prediction errors behind it (07)."""
    lo, hi = pooled["w"].min(), pooled["w"].max()
    best, first, last = pooled.loc[pooled["accuracy_published"].idxmax()], _at(pooled, lo), _at(pooled, hi)
    inside = [r["w"] for _, r in pooled.iterrows() if not pd.isna(r["published"])
              and r["accuracy_published_low"] <= r["published"] <= r["accuracy_published_high"]]
    outside = [f"{r['w']:g}" for _, r in pooled.iterrows() if not pd.isna(r["published"]) and r["w"] not in inside]
    lines = [f"Scored as the study scored it (its classifier on the raw samples; {int(first['samples'])} samples per "
             f"weight from {int(first['networks'])} network(s)), accuracy is {with_interval(first, 'accuracy_published')}"
             f" at w = {lo:g} (published {first['published']:.3f}), highest at w = {best['w']:g} "
             f"({with_interval(best, 'accuracy_published')}; published {best['published']:.3f}) and "
             f"{with_interval(last, 'accuracy_published')} at w = {hi:g} (published {last['published']:.3f}).",
             f"The published accuracy lies inside our 95% interval at {len(inside)} of {len(inside) + len(outside)} "
             f"weights" + (f"; outside it at w = {', '.join(outside)}." if outside else "."),
             *_scoring_lines(pooled, results)]
    norms = results.groupby("w")[[c for c in results if c.startswith("norm_step_")] + ["norm_final"]].mean()
    early = norms.drop(columns="norm_final").max(axis=1)
    lines.append(f"The samples do run away: at w = {hi:g}, {last['outside_fraction']:.1%} of the final pixels lie "
                 f"outside [-1, 1] (largest |x| {last['max_abs']:.1f}; at w = {lo:g}: {first['outside_fraction']:.1%}, "
                 f"largest {first['max_abs']:.1f}). The norm of x_t, 28 for pure noise, peaks at {early[hi]:.1f} in "
                 f"the first steps at w = {hi:g} ({early[lo]:.1f} at w = {lo:g}) and the final samples keep "
                 f"{norms.loc[hi, 'norm_final']:.1f} ({norms.loc[lo, 'norm_final']:.1f} at w = {lo:g}).")
    errors = pd.DataFrame(mechanism)
    at_top = errors[errors["t"] == errors["t"].max()]
    lines.append(f"At t = {int(errors['t'].max())}, where the first step multiplies x_t by "
                 f"{at_top['step_gain'].iloc[0]:.1f}, the noise-prediction error (mean squared) is "
                 + "; ".join(f"{row['eps_mse']:.4f} [{row['eps_mse_low']:.4f}, {row['eps_mse_high']:.4f}] for "
                             f"{row['network']}" for _, row in at_top.iterrows()) + ".")
    return lines


def cross_table(results_by_sampler: dict[str, pd.DataFrame], w: float = 0.0) -> pd.DataFrame:
    """Network x sampler at weight ``w``: which of the two makes samples the classifiers can read (07).

    ``results_by_sampler`` maps a sampler name to reproduction rows (``experiment reproduce``, any networks)."""
    records = []
    for sampler, frame in results_by_sampler.items():
        for _, row in frame[(frame["w"] - w).abs() < 1e-9].iterrows():
            records.append({"network": row["network"], "sampler": sampler, "samples": int(row["n"]),
                            "study's classifier, raw": with_interval(row, "accuracy_published"),
                            "our classifier, clamped": with_interval(row, "accuracy_ours"),
                            "pixels outside [-1, 1]": f"{row['outside_fraction']:.3f}",
                            "max |x|": f"{row['max_abs']:.3g}"})
    return pd.DataFrame(records)


def cross_lines(results_by_sampler: dict[str, pd.DataFrame], w: float = 0.0) -> list[str]:
    """Whether the network or the sampler decides, read off :func:`cross_table`'s cells (study's classifier, raw) (07)."""
    cells, samplers, networks = _cross_cells(results_by_sampler, w)
    lines = [f"With the {sampler} sampler at w = {w:g}: " + "; ".join(
        f"{network} {with_interval(cells[(sampler, network)], 'accuracy_published')}" for network in networks
        if (sampler, network) in cells) + "." for sampler in samplers]
    decides = what_decides(results_by_sampler, w)
    if decides == "network":
        lines.append("The network decides, not the sampler: each network gives accuracies not distinguishable "
                     "between the two samplers, and the two networks' intervals separate under both.")
    elif decides == "sampler":
        lines.append("The sampler matters: at least one network's accuracy separates between the two samplers.")
    return lines


def _cross_cells(results_by_sampler: dict[str, pd.DataFrame], w: float) -> tuple[dict, list, list]:
    """({(sampler, network): row} at weight ``w``, the samplers, the networks in order of appearance)."""
    cells = {(sampler, row["network"]): row for sampler, frame in results_by_sampler.items()
             for _, row in frame[(frame["w"] - w).abs() < 1e-9].iterrows()}
    return cells, list(results_by_sampler), list(dict.fromkeys(network for _, network in cells))


def what_decides(results_by_sampler: dict[str, pd.DataFrame], w: float = 0.0) -> str | None:
    """"network", "sampler" or None (undecided, or not two networks under two samplers) in :func:`cross_table`'s
    cells, read from the study's classifier on the raw samples."""
    cells, samplers, networks = _cross_cells(results_by_sampler, w)
    if not (all((s, n) in cells for s in samplers for n in networks) and len(networks) == len(samplers) == 2):
        return None

    def apart(a, b):
        return separated(a["accuracy_published_low"], a["accuracy_published_high"], b["accuracy_published_low"],
                         b["accuracy_published_high"])

    if any(apart(cells[(samplers[0], n)], cells[(samplers[1], n)]) for n in networks):
        return "sampler"
    if all(apart(cells[(s, networks[0])], cells[(s, networks[1])]) for s in samplers):
        return "network"
    return None


def _where_it_lives(pooled: pd.DataFrame) -> str:
    """The sentence on samples against measurement, at the reproduction's highest weight."""
    hi = pooled["w"].max()
    last = _at(pooled, hi)
    clamp = [last["change_clamped"], last["change_clamped_low"], last["change_clamped_high"]]
    ours = [last["change_ours"], last["change_ours_low"], last["change_ours_high"]]
    ours_falls, best, _ = _falls(pooled, "ours")
    text = (f"Its samples' pixels do run away (largest |x| {last['max_abs']:.0f} at w = {hi:g}), yet clamping them "
            f"to [-1, 1] {'changes' if paired_decided(clamp) else 'does not change'} what its classifier reads "
            f"({_signed(clamp, 3)}): the raw pixel values are {'' if paired_decided(clamp) else 'not '}what it "
            f"misreads. On the same samples our classifier's accuracy at w = {hi:g} is "
            f"{with_interval(last, 'accuracy_ours')}, a paired change of {_signed(ours, 3)} from the study's, so ")
    if not paired_decided(ours) or ours[0] < 0:
        return text + "the study's classifier is not what makes the fall."
    if ours_falls:
        return text + (f"part of the fall lives in the measurement (the study's 8,118-parameter classifier) and "
                       f"part in the samples: read by ours too, accuracy at w = {hi:g} lies below its best "
                       f"({with_interval(best, 'accuracy_ours')} at w = {best['w']:g}).")
    return text + ("the fall lives in the measurement: read by our classifier, accuracy at the highest weight is "
                   f"not distinguishable at this sample size from its best ({with_interval(best, 'accuracy_ours')} "
                   f"at w = {best['w']:g}).")


def paired_decided(difference) -> bool:
    """Does a (difference, low, high) interval exclude 0?"""
    return paired_verdict(difference) != "not distinguishable"


def cause_in_plain_words(pooled: pd.DataFrame, mechanism: list[dict], cross: dict[str, pd.DataFrame],
                         ladder_rows: list[dict], w: float = 10.0) -> str:
    """07's answer to its title question in one paragraph, every clause read off the numbers: whether the rebuild
    falls as published, whether the fall lives in the samples or the measurement, why cfgutils' UNet at the
    study's recipe failed at s = 1, and which rungs of the ladder move accuracy at ``w`` over trained networks."""
    hi = pooled["w"].max()
    last = _at(pooled, hi)
    reproduced = ("falls as published" if last["accuracy_published_low"] <= last["published"]
                  <= last["accuracy_published_high"] else "does not fall as far as published"
                  if last["published"] < last["accuracy_published_low"] else "falls further than published")
    sentences = [f"Rebuilt from its published facts and trained on our digits ({int(last['networks'])} networks, "
                 f"{int(last['samples'])} samples per weight), the reference study's system "
                 f"{reproduced}: scored its way, "
                 f"accuracy at w = {hi:g} (s = {hi + 1:g}) is {with_interval(last, 'accuracy_published')} against "
                 f"the published {last['published']:.3f}.", _where_it_lives(pooled)]
    errors = pd.DataFrame(mechanism)
    top = errors[errors["t"] == errors["t"].max()].set_index("network")["eps_mse"]
    if "reference-recipe" in top and what_decides(cross) == "network":
        others = top.drop("reference-recipe")
        sentences.append(f"cfgutils' UNet trained with the study's recipe made noise already at s = 1 because of the "
                         f"network, not the sampler (each network's accuracy is not distinguishable between the two "
                         f"samplers); it predicts "
                         f"the noise at t = {int(errors['t'].max())}, where the first step multiplies the error by "
                         f"{errors['step_gain'].max():.1f}, with a mean squared error of {top['reference-recipe']:.4f} "
                         f"against {others.min():.4f} to {others.max():.4f} for the study's networks.")
    moved = [e for e in ladder_changes(ladder_rows) if abs(e["w"] - w) < 1e-9 and e["mean"] is not None]
    if moved:
        decided = [f"{e['configuration']} {_signed(e['mean'], 3)}" for e in moved if paired_decided(e["mean"])]
        sentences.append(f"Along the ladder at w = {w:g}, over {max(len(e['per_network']) for e in moved)} trained "
                         f"networks, " + (f"the changes that move accuracy are {', '.join(decided)}; every other "
                                          "change is not distinguishable at this sample size." if decided else
                                          "no change of accuracy is distinguishable from 0 at this sample size "
                                          "(each mean paired change's interval over networks contains 0)."))
    return " ".join(sentences)


def across_networks(summaries: dict[str, pd.DataFrame], metrics=("accuracy", "kid", "frechet_distance")) -> pd.DataFrame:
    """One recipe, several trained networks: each network's value (with its sampling interval) at every weight
    the runs share, and the mean over networks with its Student-t 95% interval, which covers training seeds (05).

    ``summaries``: network name -> the ``summary.csv`` of its ``experiment classifier`` run (floor row ignored).
    """
    from ..core.metrics import seed_interval

    frames = {}
    for name, frame in summaries.items():
        generated = frame[frame["set"] == "generated"]
        frames[name] = generated.set_index(generated["w"].round(6))
    weights = sorted(set.intersection(*(set(frame.index) for frame in frames.values())))
    if len(frames) < 2 or not weights:
        raise ValueError("needs two or more runs that share a weight")
    records = []
    for w in weights:
        for metric in metrics:
            digits = 3 if metric == "accuracy" else 1
            values = [float(frame.loc[w, metric]) for frame in frames.values()]
            mean, low, high = seed_interval(values)
            if metric == "accuracy":  # a proportion's interval stays inside [0, 1]
                low, high = max(low, 0.0), min(high, 1.0)
            records.append({"w": f"{w:g}", "s": f"{w + 1:g}", "metric": metric,
                            **{name: with_interval(frame.loc[w], metric, digits) for name, frame in frames.items()},
                            f"mean over {len(frames)} networks": with_interval(
                                {metric: mean, f"{metric}_low": low, f"{metric}_high": high}, metric, digits)})
    return pd.DataFrame(records)


#: how each compared metric is named in sentences
METRIC_WORDS = {"accuracy": "accuracy", "kid": "KID", "frechet_distance": "Fréchet distance"}


def paired_networks_table(rows: list[dict], label_a: str, label_b: str) -> pd.DataFrame:
    """The rows of :func:`cfgutils.workflows.networks.compare_networks` as a table: per metric each network pair,
    then the mean over networks; both arms, their paired difference and its reading."""
    from ..workflows.networks import COMPARED

    return pd.DataFrame([{
        "metric": METRIC_WORDS[row["metric"]], "networks": row["network"],
        label_a: _triple(row["a"], COMPARED[row["metric"]]), label_b: _triple(row["b"], COMPARED[row["metric"]]),
        f"{label_a} - {label_b}": _signed(row["difference"], COMPARED[row["metric"]]),
        "reading": row["verdict"], "interval covers": row["covers"]} for row in rows])


def paired_networks_conclusions(rows: list[dict], label_a: str, label_b: str) -> list[str]:
    """One sentence per metric from the mean over networks (the interval that covers training), or from the one
    network where only one pair was given, in the series' words for a paired comparison."""
    from ..workflows.networks import COMPARED
    from .report import difference_words

    lines = []
    for metric, digits in COMPARED.items():
        found = [row for row in rows if row["metric"] == metric]
        summary = next((row for row in found if row["covers"] == "training and sampling"), found[-1])
        over = (summary["network"] if summary["covers"] == "training and sampling"
                else f"one network ({summary['network']}; the interval covers sampling only)")
        lines.append(f"- {METRIC_WORDS[metric]}, {over}: {label_a} {_triple(summary['a'], digits)}, {label_b} "
                     f"{_triple(summary['b'], digits)}; {label_a} is "
                     f"{difference_words(summary['difference'], digits, than=label_b)}.")
    return lines
