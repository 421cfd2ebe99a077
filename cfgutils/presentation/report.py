"""Tables and computed conclusions of a guidance sweep (notebook 05-classifier-eval; reused by 06 and the CLI).

The figures of a sweep are in :mod:`cfgutils.presentation.plots`. Metric columns (see
:mod:`cfgutils.workflows.metrics`): ``accuracy`` with ``accuracy_ci_low/high``,
``frechet_distance``, ``precision``, ``recall``, ``inception_score``, ``diversity``,
``confidence``, ``saturation``.
"""

from __future__ import annotations


import pandas as pd

from ..workflows.experiments import REFERENCE_ACCURACY, SweepResult

METRIC_LABELS = {
    "accuracy": "classifier accuracy",
    "frechet_distance": "Fréchet distance (classifier features)",
    "precision": "precision (k=3)",
    "recall": "recall (k=3)",
    "inception_score": "IS analogue",
    "diversity": "intra-class diversity",
    "confidence": "mean confidence",
    "saturation": "saturated pixels",
}


def sweep_frame(result: SweepResult) -> pd.DataFrame:
    """One row per scale (metrics averaged over seeds), sorted by s, with both conventions (05-classifier-eval)."""
    frame = pd.DataFrame(result.rows)
    numeric = [c for c in frame.columns if c not in ("sampler", "guidance") and pd.api.types.is_numeric_dtype(frame[c])]
    grouped = frame[numeric].groupby("s", as_index=False).mean()
    grouped["seeds"] = frame.groupby("s")["seed"].nunique().values
    grouped["w"] = grouped["s"] - 1
    return grouped.drop(columns=["seed"]).sort_values("s").reset_index(drop=True)


def reference_accuracy(w: float) -> float | None:
    """The reference study's published accuracy at w, or None where it has no number."""
    for key, value in REFERENCE_ACCURACY.items():
        if abs(key - w) < 1e-9:
            return value
    return None


def results_table(result: SweepResult) -> pd.DataFrame:
    """The headline table: w, s, accuracy (95% CI), reference accuracy, Fréchet, precision, recall (05-classifier-eval)."""
    frame = sweep_frame(result)
    table = pd.DataFrame({
        "w": frame["w"], "s": frame["s"],
        "accuracy": frame["accuracy"],
        "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(frame["accuracy_ci_low"], frame["accuracy_ci_high"])],
        "reference accuracy": [reference_accuracy(w) for w in frame["w"]],
        "Fréchet": frame["frechet_distance"],
        "precision": frame["precision"],
        "recall": frame["recall"],
    })
    floor = result.floor
    floor_row = {"w": None, "s": None, "accuracy": floor["accuracy"],
                 "95% CI": f"[{floor['accuracy_ci_low']:.3f}, {floor['accuracy_ci_high']:.3f}]",
                 "reference accuracy": None, "Fréchet": floor["frechet_distance"], "precision": floor["precision"],
                 "recall": floor["recall"]}
    table = pd.concat([table, pd.DataFrame([floor_row], index=["real data"])])
    table.index = [("real data" if i == "real data" else f"w={w:g}") for i, w in zip(table.index, table["w"])]
    return table


def format_table(result: SweepResult) -> str:
    """The headline table as Markdown (for the README and the CLI)."""
    table = results_table(result)
    lines = ["| w | s | accuracy (95% CI) | reference | Fréchet | precision | recall |",
             "|---|---|---|---|---|---|---|"]
    for name, row in table.iterrows():
        w = "real" if name == "real data" else f"{row['w']:g}"
        s = "data" if name == "real data" else f"{row['s']:g}"
        reference = "" if row["reference accuracy"] is None or pd.isna(row["reference accuracy"]) \
            else f"{row['reference accuracy']:.3f}"
        lines.append(f"| {w} | {s} | {row['accuracy']:.3f} {row['95% CI']} | {reference} | {row['Fréchet']:.2f} | "
                     f"{row['precision']:.3f} | {row['recall']:.3f} |")
    return "\n".join(lines)


def conclusions(result: SweepResult) -> dict:
    """Findings computed from the results: best w, where accuracy falls below 90%, Fréchet vs floor (05-classifier-eval)."""
    frame = sweep_frame(result)
    guided = frame[frame["s"] > 0]
    best = guided.loc[guided["accuracy"].idxmax()]
    best_fd = guided.loc[guided["frechet_distance"].idxmin()]
    above_best = guided[guided["w"] > best["w"]]
    below_90 = above_best[above_best["accuracy"] < 0.90]
    floor = result.floor
    unconditional = frame[frame["s"] == 0]
    return {
        "best_w_by_accuracy": float(best["w"]),
        "best_accuracy": float(best["accuracy"]),
        "best_w_by_frechet": float(best_fd["w"]),
        "best_frechet": float(best_fd["frechet_distance"]),
        "frechet_floor": float(floor["frechet_distance"]),
        "frechet_ratio_at_best_frechet": float(best_fd["frechet_distance"] / floor["frechet_distance"])
        if floor["frechet_distance"] > 0 else float("inf"),
        "first_w_below_90_percent": float(below_90["w"].iloc[0]) if len(below_90) else None,
        "unconditional_accuracy": float(unconditional["accuracy"].iloc[0]) if len(unconditional) else None,
        "real_accuracy": float(floor["accuracy"]),
        "recall_at_lowest_w": float(guided["recall"].iloc[0]),
        "recall_at_highest_w": float(guided["recall"].iloc[-1]),
        "highest_w": float(guided["w"].iloc[-1]),
    }


# --------------------------------------------------------------------------------------------- figures


# --------------------------------------------------------------------------------------------- variants (06)
def variants_frame(results: dict[str, SweepResult]) -> pd.DataFrame:
    """One row per (variant, scale): the sweep frames of several guidance rules stacked (06-guidance-variants)."""
    return pd.concat([sweep_frame(result).assign(variant=name) for name, result in results.items()],
                     ignore_index=True)


def variants_table(results: dict[str, SweepResult], weights=(2, 5, 10, 20)) -> pd.DataFrame:
    """Accuracy, Fréchet distance, precision and recall per variant at chosen w (rows: variant, w) (06)."""
    frame = variants_frame(results)
    frame = frame[frame["w"].round(6).isin([round(float(w), 6) for w in weights])]
    columns = [c for c in ("s", "accuracy", "frechet_distance", "precision", "recall", "saturation") if c in frame]
    return frame.set_index(["variant", "w"])[columns]


def variant_conclusions(results: dict[str, SweepResult], baseline: str = "cfg", check_w: float = 10.0,
                        accuracy_target: float = 0.95, high_w: float = 5.0) -> dict:
    """Per variant: accuracy at ``check_w`` and whether its Fréchet distance beats ``baseline`` at every w >= high_w.

    ``passing`` lists the variants that keep accuracy >= ``accuracy_target`` at ``check_w`` and have a lower
    Fréchet distance than the baseline at every w >= ``high_w`` (06-guidance-variants).
    """
    frame = variants_frame(results)
    base = frame[frame["variant"] == baseline].set_index("w")
    found = {}
    for name, group in frame.groupby("variant", sort=False):
        group = group.set_index("w")
        at_check = group["accuracy"].get(check_w)
        high = [w for w in group.index if w >= high_w and w in base.index]
        lower_fd = bool(high) and all(group.loc[w, "frechet_distance"] < base.loc[w, "frechet_distance"] for w in high)
        found[name] = {"accuracy_at_check_w": None if at_check is None else float(at_check),
                       "frechet_at_check_w": None if check_w not in group.index
                       else float(group.loc[check_w, "frechet_distance"]),
                       "lower_frechet_than_baseline_for_high_w": lower_fd if name != baseline else None,
                       "best_frechet": float(group["frechet_distance"].min()),
                       "best_frechet_w": float(group["frechet_distance"].idxmin())}
    passing = [name for name, f in found.items() if name != baseline and f["accuracy_at_check_w"] is not None
               and f["accuracy_at_check_w"] >= accuracy_target and f["lower_frechet_than_baseline_for_high_w"]]
    return {"check_w": check_w, "accuracy_target": accuracy_target, "high_w": high_w, "baseline": baseline,
            "variants": found, "passing": passing}

