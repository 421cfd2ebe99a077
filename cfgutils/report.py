"""Tables and figures of a guidance sweep (notebook 05-classifier-eval; reused by 06 and the CLI).

Metric columns (see :mod:`cfgutils.metrics`): ``accuracy`` with ``accuracy_ci_low/high``,
``frechet_distance``, ``precision``, ``recall``, ``inception_score``, ``diversity``,
``confidence``, ``saturation``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .evaluation import REFERENCE_ACCURACY, SweepResult

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
def _log_w_axis(ax, frame: pd.DataFrame, upto: float | None = None) -> None:
    """x axis: w on a symlog scale (so 0..1 and 5..20 are both readable)."""
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("guidance weight w  (s = w + 1; w = -1 is unconditional)")
    highest = max(frame["w"].max(), upto if upto is not None else frame["w"].max())
    ticks = [w for w in (-1, 0, 0.5, 1, 2, 3, 5, 10, 20) if frame["w"].min() <= w <= highest]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])


def plot_accuracy(result: SweepResult, ax=None, label: str = "cfgutils (this model)"):
    """Accuracy vs w with its 95% interval, the real-data floor and the reference study's curve (05-classifier-eval)."""
    import matplotlib.pyplot as plt

    frame = sweep_frame(result)
    ax = ax or plt.subplots(figsize=(7, 3.8))[1]
    ax.fill_between(frame["w"], frame["accuracy_ci_low"], frame["accuracy_ci_high"], alpha=0.25)
    ax.plot(frame["w"], frame["accuracy"], "o-", label=label)
    ref_w, ref_acc = zip(*sorted(REFERENCE_ACCURACY.items()))
    ax.plot(ref_w, ref_acc, "s--", color="gray", label="reference study (published, 200 samples/scale)")
    ax.axhline(result.floor["accuracy"], color="green", ls=":", label="real test digits")
    ax.set_ylabel("classifier accuracy")
    ax.set_ylim(0, 1.02)
    _log_w_axis(ax, frame, upto=max(REFERENCE_ACCURACY))
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Does the sample show the digit asked for?")
    return ax


def plot_metric(result: SweepResult, metric: str, ax=None, floor: bool = True):
    """One metric vs w with the real-data floor as a dotted line."""
    import matplotlib.pyplot as plt

    frame = sweep_frame(result)
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    ax.plot(frame["w"], frame[metric], "o-")
    if floor and result.floor.get(metric) is not None:
        ax.axhline(result.floor[metric], color="green", ls=":", label="real test digits")
        ax.legend(fontsize=8)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    _log_w_axis(ax, frame)
    return ax


def plot_precision_recall(result: SweepResult, ax=None):
    """Precision and recall vs w (fidelity vs coverage)."""
    import matplotlib.pyplot as plt

    frame = sweep_frame(result)
    ax = ax or plt.subplots(figsize=(6, 3.4))[1]
    for metric, marker in (("precision", "o-"), ("recall", "s-")):
        ax.plot(frame["w"], frame[metric], marker, label=metric)
        ax.axhline(result.floor[metric], ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("k-NN precision / recall (k = 3)")
    _log_w_axis(ax, frame)
    ax.legend(fontsize=8)
    ax.set_title("Fidelity (precision) vs coverage (recall); dotted: real digits")
    return ax


def plot_frontier(results: dict[str, SweepResult], ax=None, x: str = "recall", y: str = "accuracy"):
    """The fidelity-diversity frontier: one curve per sweep, points labelled by w (05, 06)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for name, result in results.items():
        frame = sweep_frame(result)
        ax.plot(frame[x], frame[y], "o-", label=name, alpha=0.85)
        for _, row in frame.iterrows():
            if row["w"] in (-1, 0, 1, 2, 5, 10, 20):
                ax.annotate(f"w={row['w']:g}", (row[x], row[y]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    first = next(iter(results.values()))
    ax.plot(first.floor[x], first.floor[y], "*", ms=12, color="green", label="real test digits")
    ax.set_xlabel(METRIC_LABELS.get(x, x) + "  (diversity →)")
    ax.set_ylabel(METRIC_LABELS.get(y, y) + "  (fidelity →)")
    ax.legend(fontsize=8)
    ax.set_title("Fidelity–diversity frontier")
    return ax


def plot_per_class(result: SweepResult, ax=None):
    """Heatmap of accuracy per digit (rows) and w (columns)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    scales = sorted(result.per_class)
    matrix = pd.DataFrame(np.array([result.per_class[s] for s in scales]).T,
                          columns=[f"{s - 1:g}" for s in scales], index=range(10))
    ax = ax or plt.subplots(figsize=(min(1 + 0.55 * len(scales), 12), 4.2))[1]
    sns.heatmap(matrix, vmin=0, vmax=1, cmap="viridis", annot=len(scales) <= 20, fmt=".2f",
                annot_kws={"fontsize": 6}, cbar_kws={"label": "accuracy"}, ax=ax)
    ax.set_xlabel("guidance weight w (s = w + 1)")
    ax.set_ylabel("digit")
    ax.set_title("Accuracy per digit and guidance weight")
    return ax


def plot_strips(result: SweepResult, weights=(0, 2, 5, 10, 20), digits=range(10), per_digit: int = 1):
    """Sample strips at chosen w: rows = w, columns = digits (``per_digit`` each); returns the figure."""
    import matplotlib.pyplot as plt

    from .plotting import image_grid

    available = sorted(result.strips)
    chosen = [min(available, key=lambda s: abs(s - (w + 1))) for w in weights]
    chosen = list(dict.fromkeys(chosen))
    rows = [result.strips[s][list(digits), :per_digit].reshape(-1, 1, 28, 28) for s in chosen]
    fig, ax = plt.subplots(figsize=(0.42 * len(list(digits)) * per_digit + 1.4, 0.5 * len(chosen) + 0.8))
    image_grid(np.concatenate([r.numpy() for r in rows]), nrow=len(list(digits)) * per_digit, ax=ax,
               row_labels=[f"w={s - 1:g}" for s in chosen], title="Samples at chosen guidance weights")
    fig.tight_layout()
    return fig


def save_sweep_figures(result: SweepResult, figures_dir: str | Path, prefix: str = "05-classifier-eval") -> list[Path]:
    """Save every sweep figure as ``<prefix>-*.png`` into ``figures_dir``; returns the paths."""
    import matplotlib.pyplot as plt

    from .plotting import save_figure

    paths = []
    for name, draw in (("accuracy", lambda: plot_accuracy(result)),
                       ("frechet", lambda: plot_metric(result, "frechet_distance")),
                       ("precision-recall", lambda: plot_precision_recall(result)),
                       ("frontier", lambda: plot_frontier({"plain CFG": result})),
                       ("per-class", lambda: plot_per_class(result))):
        ax = draw()
        ax.figure.tight_layout()
        paths.append(save_figure(ax.figure, f"{prefix}-{name}.png", figures_dir))
        plt.close(ax.figure)
    fig = plot_strips(result)
    paths.append(save_figure(fig, f"{prefix}-strips.png", figures_dir))
    plt.close(fig)
    return paths


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


def plot_variants(results: dict[str, SweepResult], metric: str, ax=None, floor: bool = True):
    """One metric vs w, one line per guidance rule, the real-data floor dotted (06-guidance-variants)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5.5, 3.4))[1]
    frame = variants_frame(results)
    for name, group in frame.groupby("variant", sort=False):
        ax.plot(group["w"], group[metric], "o-", ms=3, label=name)
    first = next(iter(results.values()))
    if floor and first.floor.get(metric) is not None:
        ax.axhline(first.floor[metric], color="green", ls=":", label="real test digits")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    _log_w_axis(ax, frame)
    ax.legend(fontsize=7)
    return ax


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

