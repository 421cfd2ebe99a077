"""Guidance rules compared as curves, not at a threshold (06-guidance-variants, 08-newer-guidance).

A rule swept over its weights traces a curve of fidelity against variety. Two readings of those curves:

- :func:`at_accuracy`: where a rule's accuracy reaches a target (the real data's own accuracy), found by linear
  interpolation between its two neighbouring weights, and every other metric there. Its interval is honest about
  both uncertainties: the weights where the accuracy's 95% interval contains the target, and over those weights the
  widest extent of each metric's interpolated 95% band.
- :func:`band_verdict`: a rule against a baseline along a fidelity axis that does not saturate (the notebooks use
  the intended class's mean -log p on a log scale): the stretches of that axis where the rule's interval band lies
  wholly below (or above) the baseline's. Only there is one rule named better; elsewhere the two are not
  distinguishable.

Both take one rule's sweep as a frame with a row per weight (``s``, ``w``, metrics with ``_low``/``_high``), as
:func:`cfgutils.presentation.report.sweep_frame` returns it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: the metrics read at matched accuracy
MATCHED_METRICS = ("kid", "frechet_distance", "precision", "recall", "intended_log_probability")


def crossing(scales, values, target: float) -> float | None:
    """The smallest scale where the piecewise-linear curve of ``values`` over sorted ``scales`` reaches ``target``
    from below; None where it starts at or above the target (nothing to interpolate) or never reaches it."""
    scales, values = np.asarray(scales, float), np.asarray(values, float)
    if len(scales) == 0 or values[0] >= target:
        return None
    for k in range(1, len(scales)):
        if values[k] >= target:
            fraction = (target - values[k - 1]) / (values[k] - values[k - 1])
            return float(scales[k - 1] + fraction * (scales[k] - scales[k - 1]))
    return None


def _envelope(scales, low, high, start: float, stop: float) -> tuple[float, float]:
    """The lowest ``low`` and highest ``high`` of the interpolated band over scales [start, stop]."""
    inside = [s for s in scales if start < s < stop]
    points = [start, *inside, stop]
    return float(np.min(np.interp(points, scales, low))), float(np.max(np.interp(points, scales, high)))


def at_accuracy(frame: pd.DataFrame, target: float, metrics=MATCHED_METRICS) -> dict:
    """One rule read where its accuracy reaches ``target`` (see the module's docstring).

    Returns ``reached`` (False where the accuracy starts above the target or never gets there: then only
    ``accuracy_range`` is filled), ``s`` and ``w`` there, ``s_low``/``s_high`` (the scales where the accuracy's
    interval contains the target; ``s_high`` is the last scale where the interval's low end stays below it), and
    per metric its interpolated value with ``_low``/``_high``.
    """
    frame = frame.sort_values("s").reset_index(drop=True)
    scales = frame["s"].to_numpy(float)
    found = {"target": float(target), "accuracy_range": (float(frame["accuracy"].min()),
                                                         float(frame["accuracy"].max()))}
    point = crossing(scales, frame["accuracy"], target)
    if point is None:
        return {**found, "reached": False}
    early = crossing(scales, frame["accuracy_high"], target)
    late = crossing(scales, frame["accuracy_low"], target)
    start = point if early is None else min(early, point)
    stop = float(scales[-1]) if late is None else max(late, point)
    found.update(reached=True, s=point, w=point - 1.0, s_low=start, s_high=stop, open_high=late is None)
    for metric in metrics:
        if metric not in frame or f"{metric}_low" not in frame:
            continue
        values = frame[metric].to_numpy(float)
        low, high = _envelope(scales, frame[f"{metric}_low"].to_numpy(float),
                              frame[f"{metric}_high"].to_numpy(float), start, stop)
        found.update({metric: float(np.interp(point, scales, values)), f"{metric}_low": low, f"{metric}_high": high})
    return found


def matched_frame(frames: dict[str, pd.DataFrame], target: float, metrics=MATCHED_METRICS) -> pd.DataFrame:
    """:func:`at_accuracy` for every rule: one row per rule, in the order given."""
    return pd.DataFrame([{"rule": rule, **at_accuracy(frame, target, metrics)} for rule, frame in frames.items()])


def most_faithful(frame: pd.DataFrame, axis: str, faithful_high: bool = True) -> int:
    """The position, in ``frame``'s row order (sorted by s), of the scale where a rule is most faithful along
    ``axis`` (its highest value, or its lowest where ``faithful_high`` is False). A rule that loses fidelity past
    that scale would fold its curve back over itself: its frontier ends there."""
    values = frame[axis].to_numpy(float)
    return int(np.argmax(values) if faithful_high else np.argmin(values))


def _band(frame: pd.DataFrame, metric: str, axis: str, faithful_high: bool = True):
    """(axis values ascending, metric, low, high) of one rule's rising cells (up to :func:`most_faithful`),
    ordered along ``axis``."""
    part = frame.dropna(subset=[axis, metric, f"{metric}_low", f"{metric}_high"]).sort_values("s")
    if len(part):
        part = part.iloc[:most_faithful(part, axis, faithful_high) + 1]
    part = part.sort_values(axis)
    return (part[axis].to_numpy(float), part[metric].to_numpy(float), part[f"{metric}_low"].to_numpy(float),
            part[f"{metric}_high"].to_numpy(float))


def _stretches(grid: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """The contiguous runs of ``grid`` where ``mask`` holds, as (first, last) pairs."""
    runs, start = [], None
    for k, inside in enumerate(mask):
        if inside and start is None:
            start = k
        if start is not None and (not inside or k == len(mask) - 1):
            last = k if inside else k - 1
            runs.append((float(grid[start]), float(grid[last])))
            start = None
    return runs


def band_verdict(rule: pd.DataFrame, baseline: pd.DataFrame, metric: str, lower_is_better: bool = True,
                 axis: str = "intended_log_probability", points: int = 200, log_axis: bool = False,
                 faithful_high: bool = True) -> dict:
    """Where along ``axis`` one rule's interval band of ``metric`` lies wholly on the better side of the baseline's.

    Both bands are interpolated linearly between cells on a grid over the stretch of ``axis`` both curves cover
    (in log10 of the axis with ``log_axis``, for a positive axis whose values span decades), each curve up to its
    most faithful scale (``faithful_high``: whether a higher axis value is more faithful). Returns ``range``
    (that common stretch, or None), ``better`` and ``worse`` (lists of (from, to) stretches, in the axis' own
    units) and ``fraction_better``/``fraction_worse`` of the grid. The axis values are point estimates: the verdict
    is read at the rule's and the baseline's estimated fidelity.
    """
    ours, theirs = _band(rule, metric, axis, faithful_high), _band(baseline, metric, axis, faithful_high)
    if log_axis:
        ours, theirs = _logged(ours), _logged(theirs)
    apart = {"range": None, "better": [], "worse": [], "fraction_better": 0.0, "fraction_worse": 0.0}
    if len(ours[0]) < 2 or len(theirs[0]) < 2:
        return apart
    start, stop = max(ours[0][0], theirs[0][0]), min(ours[0][-1], theirs[0][-1])
    if not start < stop:
        return apart
    grid = np.linspace(start, stop, points)
    our_low, our_high = np.interp(grid, ours[0], ours[2]), np.interp(grid, ours[0], ours[3])
    their_low, their_high = np.interp(grid, theirs[0], theirs[2]), np.interp(grid, theirs[0], theirs[3])
    below, above = our_high < their_low, our_low > their_high
    better, worse = (below, above) if lower_is_better else (above, below)
    units = (lambda x: 10.0 ** x) if log_axis else float
    return {"range": (units(start), units(stop)), "better": [(units(a), units(b)) for a, b in _stretches(grid, better)],
            "worse": [(units(a), units(b)) for a, b in _stretches(grid, worse)],
            "fraction_better": float(better.mean()), "fraction_worse": float(worse.mean()),
            "lower_is_better": lower_is_better}


def _logged(band):
    """A band with its axis in log10, its points sorted again along it (the axis must be positive)."""
    axis, value, low, high = band
    logged = np.log10(np.clip(axis, 1e-12, None))
    order = np.argsort(logged)
    return logged[order], value[order], low[order], high[order]


def _stretch_words(stretches: list[tuple[float, float]]) -> str:
    return ", ".join(f"[{_number(a)}, {_number(b)}]" for a, b in stretches)


def _number(value: float) -> str:
    """Two significant digits, without an exponent for values between 0.0001 and 1000."""
    return f"{value:.2g}" if value == 0 or 1e-4 <= abs(value) < 1e3 else f"{value:.1e}"


def verdict_sentence(rule: str, baseline: str, verdict: dict, label: str, axis_label: str) -> str:
    """One line: where ``rule``'s band of the metric is better or worse than ``baseline``'s, in words."""
    if verdict["range"] is None:
        return f"- {rule} and {baseline}: their curves share no stretch of {axis_label}."
    span = _stretch_words([verdict["range"]])
    good, bad = ("lower", "higher") if verdict.get("lower_is_better", True) else ("higher", "lower")
    parts = []
    if verdict["better"]:
        parts.append(f"{good} {label} than {baseline} where {axis_label} is in {_stretch_words(verdict['better'])}")
    if verdict["worse"]:
        parts.append(f"{bad} {label} than {baseline} where it is in {_stretch_words(verdict['worse'])}")
    if not parts:
        return (f"- {rule}: its {label} band overlaps {baseline}'s over the whole shared stretch of {axis_label} "
                f"{span}: not distinguishable at this sample size.")
    rest = 1.0 - verdict["fraction_better"] - verdict["fraction_worse"]
    return (f"- {rule}: " + "; ".join(parts) + f" (bands separate); not distinguishable over the other "
            f"{100 * rest:.0f}% of the shared stretch {span}.")


def not_reached_text(row) -> str:
    """What a matched row says where its rule never reached the target accuracy: how far its accuracy got."""
    low, high = row["accuracy_range"]
    return f"not reached (accuracy {low:.3f} to {high:.3f})"


def interval_text(row, metric: str, digits: int = 3) -> str:
    """``value [low, high]`` of a matched row, or an explanation where the rule never reached the target."""
    if not row.get("reached", False):
        return not_reached_text(row)
    value, low, high = (row.get(key) for key in (metric, f"{metric}_low", f"{metric}_high"))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
