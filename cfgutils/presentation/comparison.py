"""Guidance rules compared on their frontier (06-guidance-variants, 08-newer-guidance).

Every rule is swept over many weights and read two ways (:mod:`cfgutils.workflows.frontier`):

- at the real data's own accuracy (:func:`matched`): where each rule's accuracy curve crosses the accuracy of
  real test images, every other metric interpolated there with an interval that covers both the metric's and the
  crossing's uncertainty;
- along the intended class's mean -log p on a log scale (:func:`band_lines`): where one rule's interval band of
  KID or the Fréchet distance lies wholly on the better side of plain CFG's.
"""

from __future__ import annotations

import pandas as pd

from ..core.guidance import Guidance
from ..workflows.experiments import SweepResult
from ..workflows.frontier import band_verdict, interval_text, matched_frame, not_reached_text, verdict_sentence
from .report import markdown, sweep_frame

#: the metrics of the matched table: (column, label, digits)
MATCHED_COLUMNS = (("kid", "KID", 1), ("frechet_distance", "Fréchet distance", 1),
                   ("precision", "precision", 3), ("recall", "recall", 3),
                   ("intended_log_probability", "log p(intended)", 3))
#: the set distances read along the fidelity axis: (metric, label)
BAND_METRICS = (("kid", "KID"), ("frechet_distance", "Fréchet distance"))
#: the fidelity axis that does not saturate: the mean -log p of the intended class (0 = certain), read on a log
#: scale, where accuracy stops at 1 and the log-probability itself crowds against 0
AXIS, AXIS_LABEL = "intended_surprise", "the intended class's mean -log p"


def network_calls(rule: Guidance) -> str:
    """Network evaluations per guided step: one batch of 2n through the model, or the model and a guide."""
    return "1 model + 1 guide" if rule.guide is not None else "2 (one batch of 2n)"


def frames(results: dict[str, SweepResult]) -> dict[str, pd.DataFrame]:
    """rule -> its sweep as a frame (one row per scale, metrics with ``_low``/``_high``, and :data:`AXIS`)."""
    return {name: with_surprise(sweep_frame(result)) for name, result in results.items()}


def with_surprise(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the intended class's mean -log p (and its interval) beside its mean log p."""
    if "intended_log_probability" not in frame:
        return frame
    return frame.assign(intended_surprise=-frame["intended_log_probability"],
                        intended_surprise_low=-frame["intended_log_probability_high"],
                        intended_surprise_high=-frame["intended_log_probability_low"])


def real_accuracy(results: dict[str, SweepResult]) -> float:
    """The accuracy of the real test images scored with the same classifier, at the same sample size."""
    return float(next(iter(results.values())).floor["accuracy"])


def matched(results: dict[str, SweepResult], target: float | None = None) -> pd.DataFrame:
    """Every rule read where its accuracy reaches ``target`` (default: the real images' accuracy): one row per
    rule with the scale there (``s``; CFG++'s lambda), the interval of scales where its accuracy interval contains
    the target (``s_low``, ``s_high``) and every matched metric with its interval (08)."""
    return _matched(frames(results), real_accuracy(results) if target is None else target)


def _matched(found: dict[str, pd.DataFrame], target: float) -> pd.DataFrame:
    return matched_frame(found, target, tuple(metric for metric, _, _ in MATCHED_COLUMNS))


def _where(row, rule: str) -> str:
    """The scale where a rule reaches the target, with its interval: w for rules that take s, lambda for CFG++."""
    if not row["reached"]:
        return not_reached_text(row)
    if rule == "cfgpp":
        return f"λ = {row['s']:.2f} [{row['s_low']:.2f}, {row['s_high']:.2f}]"
    high = f"{row['s_high'] - 1:.2f}" + ("+" if row.get("open_high") else "")
    return f"w = {row['w']:.2f} [{row['s_low'] - 1:.2f}, {high}] (s = {row['s']:.2f})"


def matched_table(matched_rows: pd.DataFrame, seconds: dict[str, float] | None = None,
                  rules: dict[str, Guidance] | None = None) -> pd.DataFrame:
    """The matched rows as text with 95% intervals, and each rule's cost where ``rules`` and ``seconds`` are given."""
    records = []
    for _, row in matched_rows.iterrows():
        record = {"rule": row["rule"], "where its accuracy reaches the real images'": _where(row, row["rule"])}
        record.update({label: interval_text(row, metric, digits) if row["reached"] else "" for metric, label, digits
                       in MATCHED_COLUMNS})
        if rules is not None:
            record["network calls per step"] = network_calls(rules[row["rule"]])
        if seconds is not None:
            record["seconds per cell"] = f"{seconds[row['rule']]:.1f}"
        records.append(record)
    return pd.DataFrame(records).set_index("rule")


def band_verdicts(found: dict[str, pd.DataFrame], baseline: str = "cfg") -> dict:
    """rule -> metric -> :func:`~cfgutils.workflows.frontier.band_verdict` against ``baseline`` along :data:`AXIS`,
    from the rules' :func:`frames`."""
    return {name: {metric: band_verdict(frame, found[baseline], metric, True, AXIS, log_axis=True,
                                         faithful_high=False)
                   for metric, _ in BAND_METRICS} for name, frame in found.items() if name != baseline}


def band_lines(verdicts: dict, baseline: str = "cfg") -> list[str]:
    """One sentence per rule and set distance: where its band separates from ``baseline``'s, else not
    distinguishable over the stretch both cover."""
    return [verdict_sentence(name, baseline, by_metric[metric], label, AXIS_LABEL)
            for name, by_metric in verdicts.items() for metric, label in BAND_METRICS]


def conclusions(results: dict[str, SweepResult], baseline: str = "cfg") -> dict:
    """What the frontier supports: the target, the matched rows, the band verdicts and the sentences (06, 08)."""
    target, found = real_accuracy(results), frames(results)
    rows = _matched(found, target)
    verdicts = band_verdicts(found, baseline)
    never = [row["rule"] for _, row in rows.iterrows() if not row["reached"]]
    floor = next(iter(results.values())).floor
    lines = [f"- Target: the real test images' accuracy, {target:.3f} [{floor['accuracy_low']:.3f}, "
             f"{floor['accuracy_high']:.3f}] (same classifier, same sample size); each rule is read where its "
             f"accuracy curve crosses it, between its two neighbouring weights."]
    if never:
        lines.append(f"- Never crosses it on this grid: {', '.join(never)}.")
    lines += band_lines(verdicts, baseline)
    return {"target": target, "matched": rows, "verdicts": verdicts, "never_reached": never, "lines": lines}


def comparison_markdown(table: pd.DataFrame, lines: list[str]) -> str:
    """The matched table and its conclusions as Markdown (``table.md`` of 06, 08 and ``experiment variants``)."""
    return markdown(table.reset_index()) + "\n\n" + "\n".join(lines)
