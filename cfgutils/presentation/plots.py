"""Every figure of the series: image grids, scale grids, the sweep and variant plots, reproducible PNGs.

Importing this module changes no global state: pyplot is imported only inside the
functions that draw, and no rcParams are touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..core.guidance import w_from_s
from ..errors import UserInputError
from ..plumbing import paths
from ..plumbing.data import dataset_info, to_uint8
from ..workflows.experiments import REFERENCE_ACCURACY, SweepResult
from ..workflows.frontier import most_faithful
from .report import METRIC_LABELS, sweep_frame, variants_frame

#: every saved figure uses this resolution, so re-running a notebook gives the same pixels
DPI = 150


def _as_uint8_stack(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) images, uint8 or float in [-1, 1] -> uint8 array (N, H, W)."""
    x = torch.as_tensor(images).detach().cpu()
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise UserInputError(f"image_grid expects (N, 1, H, W) or (N, H, W) grey images, got shape {tuple(x.shape)}.")
    if x.dtype != torch.uint8:
        x = to_uint8(x.float())  # model range [-1, 1]; values outside are clipped for display
    return x.numpy()


def image_grid(images: torch.Tensor | np.ndarray, nrow: int, *, ax=None,
               row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
               title: str | None = None, padding: int = 2, as_array: bool = False):
    """Tile grey images (uint8, or float in [-1, 1]) with ``nrow`` images per row, like torchvision (01-data).

    Returns the uint8 grid (H, W) if ``as_array``, else draws it (into ``ax``, or a new figure sized to
    the grid) with optional ``row_labels``/``col_labels``/``title`` and returns the axes.
    """
    stack = _as_uint8_stack(images)
    if nrow < 1:
        raise UserInputError(f"nrow must be at least 1, got {nrow}.")
    n, height, width = stack.shape
    ncol = min(nrow, n)
    nrows = -(-n // nrow)
    cell_h, cell_w = height + padding, width + padding
    grid = np.full((nrows * cell_h + padding, ncol * cell_w + padding), 255, dtype=np.uint8)  # white gutters
    for i, image in enumerate(stack):
        top, left = padding + (i // nrow) * cell_h, padding + (i % nrow) * cell_w
        grid[top : top + height, left : left + width] = image
    if as_array:
        return grid

    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * ncol + 0.6, 0.45 * nrows + 0.5))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([padding + c * cell_w + width / 2 - 0.5 for c in range(ncol)] if col_labels is not None else [])
    ax.set_yticks([padding + r * cell_h + height / 2 - 0.5 for r in range(nrows)] if row_labels is not None else [])
    if col_labels is not None:
        long_labels = max((len(str(label)) for label in col_labels), default=0) > 3  # class names, not digits
        ax.set_xticklabels(col_labels, rotation=40 if long_labels else 0, ha="left" if long_labels else "center",
                           fontsize=7 if long_labels else None)
        ax.xaxis.tick_top()
    if row_labels is not None:
        ax.set_yticklabels(row_labels)
    ax.tick_params(length=0)
    ax.grid(False)  # a seaborn/matplotlib style with grid lines would draw them across the images
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return ax


def save_figure(fig, name: str, figures_dir: str | Path | None = None) -> Path:
    """Save ``fig`` as ``figures/<name>`` (PNG, fixed dpi, no timestamp or version stamp) and return its path (01-data)."""
    if Path(name).name != name or Path(name).suffix.lower() != ".png":
        raise UserInputError(f"figure name {name!r} must be a plain file name ending in .png.")
    path = paths.figure_path(name, figures_dir)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    return path.resolve()


def scale_label(scale: float) -> str:
    """"s=3 (w=2)": a column label in both conventions (04-cfg-sampling)."""
    return f"s={scale:g}\n(w={w_from_s(scale):g})"


def plot_scale_grid(images: torch.Tensor, scales, row_labels=None, title: str | None = None):
    """Draw a (rows, len(scales), 1, 28, 28) grid with columns labelled in both conventions; returns the figure."""
    import matplotlib.pyplot as plt

    rows, cols = images.shape[:2]
    fig, ax = plt.subplots(figsize=(0.75 * cols + 1.0, 0.62 * rows + 1.3))
    flat = images.reshape(rows * cols, 1, 28, 28)
    image_grid(flat, nrow=cols, ax=ax, col_labels=[scale_label(s) for s in scales], row_labels=row_labels,
               title=title)
    ax.tick_params(axis="x", labelsize=7, length=0)
    ax.tick_params(axis="y", labelsize=8, length=0)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- sweeps (05, 06)
def _log_w_axis(ax, frame: pd.DataFrame, upto: float | None = None) -> None:
    """x axis: w on a symlog scale (so 0..1 and 5..20 are both readable)."""
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("guidance weight w  (s = w + 1; w = -1 is unconditional)")
    highest = max(frame["w"].max(), upto if upto is not None else frame["w"].max())
    ticks = [w for w in (-1, 0, 0.5, 1, 2, 3, 5, 10, 20) if frame["w"].min() <= w <= highest]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])

def _band(ax, frame: pd.DataFrame, metric: str, color, alpha: float = 0.25) -> None:
    """Shade ``metric``'s 95% interval (columns ``<metric>_low/high``) where the frame has one."""
    if f"{metric}_low" in frame and frame[f"{metric}_low"].notna().any():
        ax.fill_between(frame["w"], frame[f"{metric}_low"], frame[f"{metric}_high"], color=color, alpha=alpha, lw=0)


def _item(result: SweepResult) -> str:
    """What one sample of the sweep's dataset is called: "digit" or "garment"."""
    return dataset_info(result.dataset).item


def _real(result: SweepResult) -> str:
    """The real-data floor's label: "real test images" or "real test garments"."""
    return f"real test {_item(result)}s"


def _floor_band(ax, floor: dict, metric: str, color="green", label: str | None = None) -> None:
    """The real-data floor of ``metric``: a dotted line, its 95% interval shaded across the plot."""
    ax.axhline(floor[metric], color=color, ls=":", lw=1, label=label)
    low, high = floor.get(f"{metric}_low"), floor.get(f"{metric}_high")
    if low is not None and not (pd.isna(low) or pd.isna(high)):
        ax.axhspan(low, high, color=color, alpha=0.08, lw=0)


def _error_bars(frame: pd.DataFrame, metric: str):
    """Asymmetric error bars from ``<metric>_low/high``, or None where there are none."""
    if f"{metric}_low" not in frame or frame[f"{metric}_low"].isna().all():
        return None
    return np.vstack([frame[metric] - frame[f"{metric}_low"], frame[f"{metric}_high"] - frame[metric]]).clip(min=0)


def plot_accuracy(result: SweepResult, ax=None, label: str = "cfgutils (this model)"):
    """Accuracy vs w with its exact 95% interval (shaded), the real-data floor and the reference study (05)."""
    import matplotlib.pyplot as plt

    frame = sweep_frame(result)
    ax = ax or plt.subplots(figsize=(7, 3.8))[1]
    line, = ax.plot(frame["w"], frame["accuracy"], "o-", label=label)
    _band(ax, frame, "accuracy", line.get_color())
    if result.dataset == "mnist":  # the reference study measured MNIST only
        ref_w, ref_acc = zip(*sorted(REFERENCE_ACCURACY.items()))
        ax.plot(ref_w, ref_acc, "s--", color="gray", label="reference study (published, 200 samples/scale)")
    _floor_band(ax, result.floor, "accuracy", label=_real(result))
    ax.set_ylabel("classifier accuracy")
    ax.set_ylim(0, 1.02)
    _log_w_axis(ax, frame, upto=max(REFERENCE_ACCURACY))
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"Does the sample show the {_item(result)} asked for? ({dataset_info(result.dataset).title})")
    return ax

def plot_metric(result: SweepResult, metric: str, ax=None, floor: bool = True):
    """One metric vs w with its 95% interval (shaded) and the real-data floor (dotted, its interval shaded)."""
    import matplotlib.pyplot as plt

    frame = sweep_frame(result)
    ax = ax or plt.subplots(figsize=(5, 3.2))[1]
    line, = ax.plot(frame["w"], frame[metric], "o-")
    _band(ax, frame, metric, line.get_color())
    if floor and result.floor.get(metric) is not None:
        _floor_band(ax, result.floor, metric, label=_real(result))
        ax.legend(fontsize=8)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    _log_w_axis(ax, frame)
    return ax

def plot_corruptions(rows: list[dict]):
    """KID (solid, left axis) and Fréchet distance (dashed, right axis) of real images by corruption level,
    one panel per corruption, with 95% intervals (05-classifier-eval; rows of workflows.validation.corruption_study)."""
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(rows)
    kinds = list(dict.fromkeys(frame["corruption"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3.0), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = frame[frame["corruption"] == kind]
        line, = ax.plot(part["level"], part["kid"], "o-", label="KID")
        ax.fill_between(part["level"], part["kid_low"], part["kid_high"], color=line.get_color(), alpha=0.2, lw=0)
        twin = ax.twinx()
        twin.plot(part["level"], part["frechet_distance"], "s--", color="C1", label="Fréchet distance")
        twin.fill_between(part["level"], part["frechet_distance_low"], part["frechet_distance_high"], color="C1",
                          alpha=0.15, lw=0)
        twin.grid(False)
        ax.set_title(kind, fontsize=10)
        ax.set_xlabel("level")
    axes[0][0].set_ylabel("KID (solid)")
    twin.set_ylabel("Fréchet distance (dashed)")
    fig.suptitle("Real test images, corrupted step by step: both distances should grow", fontsize=10)
    fig.tight_layout()
    return fig


def plot_precision_recall(result: SweepResult, ax=None):
    """Precision and recall vs w with their 95% intervals (fidelity vs coverage)."""
    import matplotlib.pyplot as plt

    frame = sweep_frame(result)
    ax = ax or plt.subplots(figsize=(6, 3.4))[1]
    for metric, marker in (("precision", "o-"), ("recall", "s-")):
        line, = ax.plot(frame["w"], frame[metric], marker, label=metric)
        _band(ax, frame, metric, line.get_color())
        _floor_band(ax, result.floor, metric, color=line.get_color(), label=None)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("k-NN precision / recall (k = 3)")
    _log_w_axis(ax, frame)
    ax.legend(fontsize=8)
    ax.set_title(f"Fidelity (precision) vs coverage (recall); dotted: real {_item(result)}s")
    return ax

def plot_frontier(results: dict[str, SweepResult], ax=None, x: str = "recall", y: str = "accuracy"):
    """The fidelity-diversity frontier: one curve per sweep, 95% intervals as error bars, points labelled by w."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for name, result in results.items():
        frame = sweep_frame(result)
        ax.errorbar(frame[x], frame[y], xerr=_error_bars(frame, x), yerr=_error_bars(frame, y), fmt="o-", ms=4,
                    capsize=2, elinewidth=0.8, label=name, alpha=0.85)
        for _, row in frame.iterrows():
            if row["w"] in (-1, 0, 1, 2, 5, 10, 20):
                ax.annotate(f"w={row['w']:g}", (row[x], row[y]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    first = next(iter(results.values()))
    ax.plot(first.floor[x], first.floor[y], "*", ms=12, color="green", label=_real(first))
    ax.set_xlabel(METRIC_LABELS.get(x, x) + "  (diversity →)")
    ax.set_ylabel(METRIC_LABELS.get(y, y) + "  (fidelity →)")
    ax.legend(fontsize=8)
    ax.set_title("Fidelity–diversity frontier")
    return ax

def _scale_text(rule: str, row) -> str:
    return f"λ={row['s']:g}" if rule == "cfgpp" else f"w={row['w']:g}"


def plot_rule_bands(results: dict[str, SweepResult], metric: str, ax=None):
    """``metric`` against the intended class's mean -log p (log scale, more faithful to the right), one line per
    rule with its 95% band shaded up to its most faithful weight (dotted beyond, where it loses fidelity again),
    the real images as a star (06, 08): where one band lies wholly below another, the rules differ there."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for name, result in results.items():
        frame = sweep_frame(result).assign(surprise=lambda f: -f["intended_log_probability"]).sort_values("s")
        peak = most_faithful(frame, "surprise", faithful_high=False)  # past it the rule folds back
        rising = frame.iloc[:peak + 1].sort_values("surprise")
        line, = ax.plot(rising["surprise"], rising[metric], "o-", ms=3, lw=1.2, label=name)
        ax.fill_between(rising["surprise"], rising[f"{metric}_low"], rising[f"{metric}_high"], color=line.get_color(),
                        alpha=0.15, lw=0)
        if peak + 1 < len(frame):
            ax.plot(frame["surprise"].iloc[peak:], frame[metric].iloc[peak:], "o:", ms=3, lw=1, color=line.get_color())
    first = next(iter(results.values()))
    if first.floor.get("intended_log_probability") is not None:
        ax.plot(-first.floor["intended_log_probability"], first.floor[metric], "*", ms=12, color="green",
                label=_real(first))
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("mean -log p(intended class), log scale  (fidelity →)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric) + "  (↓ better)")
    return ax


def frontier_figure(results: dict[str, SweepResult]):
    """The rules' frontiers (06, 08): precision against recall with 95% error bars (labelled by w, or CFG++'s
    lambda), and KID and the Fréchet distance against the intended class's mean -log p with 95% bands. Returns
    the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for name, result in results.items():
        frame = sweep_frame(result)
        axes[0].errorbar(frame["recall"], frame["precision"], xerr=_error_bars(frame, "recall"),
                         yerr=_error_bars(frame, "precision"), fmt="o-", ms=3, capsize=2, elinewidth=0.7, label=name,
                         alpha=0.85)
        for _, row in frame.iloc[[0, -1]].iterrows():
            axes[0].annotate(_scale_text(name, row), (row["recall"], row["precision"]), fontsize=6, xytext=(3, 3),
                             textcoords="offset points")
    first = next(iter(results.values()))
    axes[0].plot(first.floor["recall"], first.floor["precision"], "*", ms=12, color="green", label=_real(first))
    axes[0].set_xlabel("recall: real variety covered (diversity →)")
    axes[0].set_ylabel("precision: samples among real ones (fidelity →)")
    axes[0].set_title("precision against recall", fontsize=10)
    for ax, metric in zip(axes[1:], ("kid", "frechet_distance")):
        plot_rule_bands(results, metric, ax=ax)
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)} against fidelity, 95% bands", fontsize=10)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_per_class(result: SweepResult, ax=None):
    """Heatmap of accuracy per class (rows, by name) and w (columns)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    scales = sorted(result.per_class)
    matrix = pd.DataFrame(np.array([result.per_class[s] for s in scales]).T,
                          columns=[f"{s - 1:g}" for s in scales], index=dataset_info(result.dataset).class_names)
    ax = ax or plt.subplots(figsize=(min(1 + 0.55 * len(scales), 12), 4.2))[1]
    sns.heatmap(matrix, vmin=0, vmax=1, cmap="viridis", annot=len(scales) <= 20, fmt=".2f",
                annot_kws={"fontsize": 6}, cbar_kws={"label": "accuracy"}, ax=ax)
    ax.set_xlabel("guidance weight w (s = w + 1)")
    ax.set_ylabel(_item(result))
    ax.set_title(f"Accuracy per {_item(result)} and guidance weight")
    return ax

def plot_strips(result: SweepResult, weights=(0, 2, 5, 10, 20), digits=range(10), n_per_class: int = 1):
    """Sample strips at chosen w: rows = w, columns = digits (``n_per_class`` each); returns the figure."""
    import matplotlib.pyplot as plt

    available = sorted(result.strips)
    chosen = [min(available, key=lambda s: abs(s - (w + 1))) for w in weights]
    chosen = list(dict.fromkeys(chosen))
    rows = [result.strips[s][list(digits), :n_per_class].reshape(-1, 1, 28, 28) for s in chosen]
    fig, ax = plt.subplots(figsize=(0.42 * len(list(digits)) * n_per_class + 1.4, 0.5 * len(chosen) + 0.8))
    image_grid(np.concatenate([r.numpy() for r in rows]), nrow=len(list(digits)) * n_per_class, ax=ax,
               row_labels=[f"w={s - 1:g}" for s in chosen], title="Samples at chosen guidance weights")
    fig.tight_layout()
    return fig

def save_sweep_figures(result: SweepResult, figures_dir: str | Path, prefix: str = "05-classifier-eval") -> list[Path]:
    """Save every sweep figure as ``<prefix>-*.png`` into ``figures_dir``; returns the paths."""
    import matplotlib.pyplot as plt

    paths = []
    for name, draw in (("accuracy", lambda: plot_accuracy(result)),
                       ("frechet", lambda: plot_metric(result, "frechet_distance")),
                       ("precision-recall", lambda: plot_precision_recall(result)),
                       ("frontier", lambda: plot_frontier({"plain CFG": result})),
                       ("per-class", lambda: plot_per_class(result)),
                       ("near-copies", lambda: plot_near_copies(result))):
        ax = draw()
        ax.figure.tight_layout()
        paths.append(save_figure(ax.figure, f"{prefix}-{name}.png", figures_dir))
        plt.close(ax.figure)
    for name, fig in (("strips", plot_strips(result)), ("closest-pairs", plot_closest_pairs(result))):
        paths.append(save_figure(fig, f"{prefix}-{name}.png", figures_dir))
        plt.close(fig)
    return paths

def plot_near_copies(result: SweepResult, ax=None):
    """Fraction of near copies of training images by w (pixels and features), 95% intervals, real floor (05)."""
    import matplotlib.pyplot as plt

    frame = sweep_frame(result)
    ax = ax or plt.subplots(figsize=(6, 3.4))[1]
    for metric, marker in (("near_copy_pixels", "o-"), ("near_copy_features", "s-")):
        line, = ax.plot(frame["w"], frame[metric], marker, label=METRIC_LABELS[metric])
        _band(ax, frame, metric, line.get_color())
        _floor_band(ax, result.floor, metric, color=line.get_color(), label=None)
    ax.set_ylabel("fraction of near copies")
    ax.set_ylim(bottom=0)
    _log_w_axis(ax, frame)
    ax.legend(fontsize=8)
    item = _item(result)
    ax.set_title(f"Samples closer to a training {item} than 99% of real test {item}s are\n(dotted: real test {item}s)")
    return ax


def plot_closest_pairs(result: SweepResult, weights=(-1, 0, 2, 10), k: int = 6):
    """For chosen w: the ``k`` samples closest to a training digit (top) above that training digit (below)."""
    import matplotlib.pyplot as plt

    available = sorted(result.closest)
    chosen = list(dict.fromkeys(min(available, key=lambda s: abs(s - (w + 1))) for w in weights))
    fig, axes = plt.subplots(1, len(chosen), figsize=(1.05 * k * len(chosen) / 2 + 0.5, 2.4), squeeze=False)
    for ax, scale in zip(axes[0], chosen):
        pairs = result.closest[scale]
        shown = min(k, pairs["samples"].shape[0])
        image_grid(torch.cat([pairs["samples"][:shown], pairs["training"][:shown]]), nrow=shown, ax=ax,
                   row_labels=["sample", "training"] if ax is axes[0][0] else None,
                   title=f"w={scale - 1:g}: distance {pairs['distances'][0]:.1f}-{pairs['distances'][shown - 1]:.1f}")
        ax.title.set_fontsize(8)
    item = _item(result)
    fig.suptitle(f"The generated {item}s closest to a training {item} (pixel distance)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_variants(results: dict[str, SweepResult], metric: str, ax=None, floor: bool = True):
    """One metric vs w with its 95% interval, one line per guidance rule, the real-data floor dotted (06)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5.5, 3.4))[1]
    frame = variants_frame(results)
    for name, group in frame.groupby("variant", sort=False):
        line, = ax.plot(group["w"], group[metric], "o-", ms=3, label=name)
        _band(ax, group, metric, line.get_color(), alpha=0.15)
    first = next(iter(results.values()))
    if floor and first.floor.get(metric) is not None:
        _floor_band(ax, first.floor, metric, label=_real(first))
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    _log_w_axis(ax, frame)
    ax.legend(fontsize=7)
    return ax


def variants_figure(results: dict[str, SweepResult]):
    """Accuracy, KID, Fréchet distance and recall by w, one line per guidance rule, 95% bands, the real-data floor
    dotted (06). Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    titles = {"accuracy": "fidelity to the label (higher is better)", "kid": "KID to real images (lower is better)",
              "frechet_distance": "Fréchet distance to real images (lower is better)",
              "recall": "recall: real variety covered (higher is better)"}
    for ax, (metric, title) in zip(axes.flat, titles.items()):
        plot_variants(results, metric, ax=ax)
        ax.set_title(title, fontsize=10)
    axes[0, 0].set_ylim(0, 1.02)
    axes[1, 0].set_yscale("log")
    fig.tight_layout()
    return fig


def plot_study(rows: list[dict], metric: str = "accuracy", reference_curve: bool = False):
    """One line per rung of an ablation study: ``metric`` vs w with its 95% interval; one panel per x0 clipping
    setting when the study sampled both (experiment collapse | label-dropout). Returns the figure."""
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(rows)
    arms = sorted(frame["clip_x0"].unique()) if "clip_x0" in frame else [None]
    fig, axes = plt.subplots(1, len(arms), figsize=(5.2 * len(arms) + 1.8, 3.8), sharey=True, squeeze=False)
    colors = {name: f"C{i}" for i, name in enumerate(frame["rung"].unique())}
    for ax, clip in zip(axes[0], arms):
        part = frame if clip is None or len(arms) == 1 else frame[frame["clip_x0"] == clip]
        for name, group in part.groupby("rung", sort=False):
            ax.plot(group["w"], group[metric], "o-", ms=3, color=colors[name], label=name)
            _band(ax, group, metric, colors[name], alpha=0.12)
        if reference_curve:
            ref_w, ref_acc = zip(*sorted(REFERENCE_ACCURACY.items()))
            ax.plot(ref_w, ref_acc, "s--", color="black", ms=4, label="reference study (published)")
        if len(arms) > 1:
            ax.set_title("x0 clipped at every step" if clip else "no x0 clipping", fontsize=9)
        _log_w_axis(ax, part)
    axes[0][0].set_ylabel(METRIC_LABELS.get(metric, metric))
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def plot_unguidable(strips: dict, class_names: Sequence[str] | None = None):
    """One row per scale: a model trained without label dropout, guided anyway (experiment label-dropout)."""
    return _class_rows(list(strips.values()), [f"s={s:g} (w={s - 1:g})" for s in strips],
                       "Trained without label dropout: the null label was never seen", class_names)


def plot_study_strips(extras: dict, weight: float, class_names: Sequence[str] | None = None):
    """One row per configuration: the first sample of every class at ``weight`` (the nearest weight sampled)."""
    rows, labels = [], []
    for name, extra in extras.items():
        available = sorted(extra["strips"])
        scale = min(available, key=lambda s: abs(s - (weight + 1)))
        rows.append(extra["strips"][scale][:, 0])
        labels.append(f"{name}, w={scale - 1:g}")
    return _class_rows(rows, labels, f"The same noise through every configuration, w = {weight:g}", class_names)


def _class_rows(rows: list, labels: list[str], title: str, class_names: Sequence[str] | None = None):
    """A figure of labelled rows of the ten classes (columns "0".."9" or the class names), one row per tensor."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 0.42 * len(rows) + 1))
    image_grid(torch.cat(rows), nrow=10, ax=ax, row_labels=labels,
               col_labels=list(class_names) if class_names else [str(d) for d in range(10)], title=title)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- the reproduction (07)
def plot_reproduction(pooled: pd.DataFrame, results: pd.DataFrame):
    """Accuracy by w under the three scorings (pooled over networks, exact 95% band; thin lines per network)
    beside the reference study's published curve (07-ablations)."""
    import matplotlib.pyplot as plt

    from .studies import SCORING_LABELS

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for (name, label), style in zip(SCORING_LABELS.items(), ("o-", "x--", "s-")):
        line, = ax.plot(pooled["w"], pooled[f"accuracy_{name}"], style, ms=4, label=label)
        _band(ax, pooled, f"accuracy_{name}", line.get_color(), alpha=0.2)
        for _, part in results.groupby("network"):
            part = part.sort_values("w")
            ax.plot(part["w"], part[f"accuracy_{name}"], "-", lw=0.6, alpha=0.5, color=line.get_color())
    ref_w, ref_acc = zip(*sorted(REFERENCE_ACCURACY.items()))
    ax.plot(ref_w, ref_acc, "s--", color="black", ms=3, label="reference study (published)")
    ax.set_ylabel("classifier accuracy")
    ax.set_ylim(0, 1.02)
    _log_w_axis(ax, pooled, upto=max(REFERENCE_ACCURACY))
    ax.legend(fontsize=7, loc="lower left")
    networks = results["network"].nunique()
    ax.set_title(f"The reference study rebuilt ({networks} trained network{'s' if networks > 1 else ''})")
    fig.tight_layout()
    return fig


def plot_reproduction_strips(strips: dict[float, torch.Tensor], class_names: Sequence[str] | None = None):
    """One row per weight: the first sample of every class from the first network, clamped for display (07)."""
    weights = sorted(strips)
    rows = [strips[w].float().clamp(-1, 1) for w in weights]
    return _class_rows(rows, [f"w={w:g} (s={w + 1:g})" for w in weights],
                       "The reference network, sampled as the study sampled it", class_names)
