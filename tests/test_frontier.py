"""Rules read as curves: the crossing of the real data's accuracy, interval bands and the choice of a setting."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfgutils.errors import UserInputError
from cfgutils.workflows.frontier import at_accuracy, band_verdict, crossing, interval_text, matched_frame, verdict_sentence
from cfgutils.workflows.guides import guide_grid, guide_name
from cfgutils.workflows.tuning import choose, guide_settings, read_settings


def sweep(scales, accuracy, kid, half_width=0.02, kid_half_width=1.0, axis=None):
    """A made-up sweep frame with symmetric intervals, as report.sweep_frame returns one."""
    accuracy, kid = np.asarray(accuracy, float), np.asarray(kid, float)
    frame = pd.DataFrame({"s": scales, "w": np.asarray(scales) - 1.0, "accuracy": accuracy,
                          "accuracy_low": accuracy - half_width, "accuracy_high": accuracy + half_width,
                          "kid": kid, "kid_low": kid - kid_half_width, "kid_high": kid + kid_half_width})
    if axis is not None:
        frame["intended_log_probability"] = axis
    return frame


def test_crossing_interpolates_between_the_two_neighbouring_scales():
    assert crossing([1, 2, 3], [0.5, 0.7, 0.9], 0.8) == pytest.approx(2.5)
    assert crossing([1, 2, 3], [0.5, 0.7, 0.9], 0.7) == pytest.approx(2.0)
    assert crossing([1, 2, 3], [0.85, 0.9, 0.95], 0.8) is None  # starts above: nothing to interpolate
    assert crossing([1, 2, 3], [0.5, 0.6, 0.7], 0.8) is None  # never gets there


def test_at_accuracy_reads_every_metric_at_the_crossing_with_a_band_that_covers_it():
    frame = sweep([1.0, 2.0, 3.0, 5.0], [0.80, 0.90, 0.96, 0.99], [10.0, 20.0, 40.0, 80.0])
    reading = at_accuracy(frame.sample(frac=1.0, random_state=0), 0.93, ("kid",))  # any row order
    assert reading["reached"] and reading["s"] == pytest.approx(2.5) and reading["w"] == pytest.approx(1.5)
    assert reading["kid"] == pytest.approx(30.0)
    # the accuracy's interval contains 0.93 from s = 2 + (0.93 - 0.92) / 0.06 to s = 3 + (0.93 - 0.94) / ... < 3
    assert reading["s_low"] <= reading["s"] <= reading["s_high"]
    assert reading["s_low"] == pytest.approx(2 + 0.01 / 0.06)
    assert reading["kid_low"] <= reading["kid"] <= reading["kid_high"]
    assert reading["kid_low"] == pytest.approx(np.interp(reading["s_low"], [2, 3], [19, 39]))
    assert not at_accuracy(frame, 0.995)["reached"] and not at_accuracy(frame, 0.5)["reached"]
    assert "not reached" in interval_text(at_accuracy(frame, 0.995), "kid")
    assert interval_text(reading, "kid", 1) == f"30.0 [{reading['kid_low']:.1f}, {reading['kid_high']:.1f}]"


def test_matched_frame_keeps_the_rules_order():
    frames = {"b": sweep([1, 2], [0.8, 1.0], [1, 2]), "a": sweep([1, 2], [0.9, 1.0], [1, 2])}
    table = matched_frame(frames, 0.95, ("kid",))
    assert table["rule"].tolist() == ["b", "a"] and table["s"].tolist() == pytest.approx([1.75, 1.5])


def test_band_verdict_names_a_rule_better_only_where_the_bands_separate():
    axis = [-2.0, -1.0, -0.5, -0.1]
    baseline = sweep([1, 2, 3, 4], [0.9] * 4, [10.0, 10.0, 10.0, 10.0], axis=axis)
    lower = sweep([1, 2, 3, 4], [0.9] * 4, [10.0, 10.0, 5.0, 5.0], axis=axis)  # high band below 9 from -0.8 on
    verdict = band_verdict(lower, baseline, "kid")
    assert verdict["range"] == pytest.approx((-2.0, -0.1)) and not verdict["worse"]
    assert len(verdict["better"]) == 1 and verdict["better"][0][0] == pytest.approx(-0.8, abs=0.02)
    assert verdict["better"][0][1] == pytest.approx(-0.1)
    assert 0.3 < verdict["fraction_better"] < 0.4
    assert band_verdict(baseline, lower, "kid")["worse"] and not band_verdict(baseline, lower, "kid")["better"]
    same = band_verdict(sweep([1, 2, 3, 4], [0.9] * 4, [10.5] * 4, axis=axis), baseline, "kid")
    assert same["better"] == [] and same["worse"] == []
    sentence = verdict_sentence("same", "cfg", same, "KID", "log p")
    assert "not distinguishable" in sentence and "better" not in sentence
    assert "lower KID than cfg where log p is in [-0.8, -0.1]" in verdict_sentence("lower", "cfg", verdict, "KID", "log p")
    higher_is_better = band_verdict(lower, baseline, "kid", lower_is_better=False)
    assert higher_is_better["worse"] and not higher_is_better["better"]
    apart = sweep([1, 2], [0.9] * 2, [1.0, 2.0], axis=[1.0, 2.0])
    assert band_verdict(apart, baseline, "kid")["range"] is None  # no shared stretch of the axis


def tuning_rows(rule, setting, accuracy, kid, real_accuracy=0.95):
    frame = sweep([1.0, 2.0, 3.0], accuracy, kid)
    return frame.assign(rule=rule, setting=setting, real_accuracy=real_accuracy,
                        frechet_distance=frame["kid"], frechet_distance_low=frame["kid_low"],
                        frechet_distance_high=frame["kid_high"])


def test_choose_takes_the_lowest_kid_at_the_real_accuracy_and_falls_back_to_the_most_accurate():
    grid = pd.concat([
        tuning_rows("cfg", "(none)", [0.9, 1.0, 1.0], [1.0, 3.0, 5.0]),
        tuning_rows("rescale", "phi=0.3", [0.9, 1.0, 1.0], [1.0, 9.0, 9.0]),  # KID 5 at s = 1.5
        tuning_rows("rescale", "phi=0.7", [0.8, 0.9, 1.0], [0.0, 1.0, 2.0]),  # KID 1.5 at s = 2.5: lower, later
        tuning_rows("apg", "a", [0.5, 0.6, 0.7], [1.0, 1.0, 1.0]),
        tuning_rows("apg", "b", [0.5, 0.8, 0.9], [1.0, 1.0, 1.0]),  # neither reaches 0.95
    ], ignore_index=True)
    settings = read_settings(grid)
    assert len(settings) == 5 and settings["reached"].tolist() == [True, True, True, False, False]
    chosen = choose(grid).set_index("rule")
    assert chosen.loc["rescale", "setting"] == "phi=0.7" and chosen.loc["rescale", "s"] == pytest.approx(2.5)
    assert chosen.loc["rescale", "kid"] == pytest.approx(1.5) and chosen.loc["rescale", "candidates"] == 2
    # neither apg setting reaches 0.95: both are read at the highest accuracy either reaches, 0.9 (only b does)
    assert chosen.loc["apg", "setting"] == "b" and chosen.loc["apg", "target"] == pytest.approx(0.9)
    assert chosen.loc["apg", "s"] == pytest.approx(3.0) and chosen.loc["rescale", "target"] == pytest.approx(0.95)


def test_the_guide_grid_is_the_default_recipe_at_each_size_length_and_average():
    grid = guide_grid([8, 16], [250], [0.0, 0.999], seed=3)
    assert list(grid) == ["c8-k250-ema0", "c8-k250-ema0.999", "c16-k250-ema0", "c16-k250-ema0.999"]
    config = grid["c16-k250-ema0.999"]
    assert config["model"]["base_channels"] == 16 and config["train"]["steps"] == 250
    assert config["train"]["ema_decay"] == 0.999 and config["train"]["seed"] == 3
    assert config["train"]["p_uncond"] == guide_grid([8], [250], [0.0])["c8-k250-ema0"]["train"]["p_uncond"] > 0
    assert guide_name(24, 1000, 0.9) == "c24-k1000-ema0.9"
    for bad in (([0], [250], [0.9]), ([8], [-1], [0.9]), ([8], [250], [1.0]), ([], [250], [0.9])):
        with pytest.raises(UserInputError):
            guide_grid(*bad)


def test_autoguidance_settings_are_the_guide_files_of_a_folder(tmp_path):
    with pytest.raises(UserInputError, match="experiment guides"):
        guide_settings(tmp_path)
    for name in ("c8-k250-ema0.pt", "c16-k250-ema0.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(s["guide_model"]).name for s in guide_settings(tmp_path)] == ["c16-k250-ema0.pt", "c8-k250-ema0.pt"]



def test_band_verdict_on_a_log_axis_reports_stretches_in_the_axis_units():
    surprise = [1e-1, 1e-2, 1e-3, 1e-4]  # decades of -log p: a linear grid would spend itself on the first one
    baseline = sweep([1, 2, 3, 4], [0.9] * 4, [10.0] * 4).assign(intended_surprise=surprise)
    lower = sweep([1, 2, 3, 4], [0.9] * 4, [10.0, 10.0, 5.0, 5.0]).assign(intended_surprise=surprise)
    verdict = band_verdict(lower, baseline, "kid", axis="intended_surprise", log_axis=True, faithful_high=False)
    assert verdict["range"] == pytest.approx((1e-4, 1e-1))
    (start, stop), = verdict["better"]  # the high band 6 + 5 (x + 3) stays below 9 up to x = log10 -log p = -2.4
    assert start == pytest.approx(1e-4) and stop == pytest.approx(10 ** -2.4, rel=0.05)
    assert verdict["fraction_better"] == pytest.approx(1.6 / 3, abs=0.01)
    linear = band_verdict(lower, baseline, "kid", axis="intended_surprise", faithful_high=False)
    assert linear["fraction_better"] < 0.1  # the same curves on a linear axis: the separation is squeezed away
    assert "[0.0001, 0.004]" in verdict_sentence("lower", "cfg", verdict, "KID", "-log p")


def test_a_curve_that_loses_fidelity_again_ends_at_its_most_faithful_scale():
    axis = [-2.0, -1.0, -0.5, -1.5]  # fidelity rises to s = 3, then falls back at s = 4
    baseline = sweep([1, 2, 3, 4], [0.9] * 4, [10.0] * 4, axis=[-2.0, -1.0, -0.5, -0.1])
    folding = sweep([1, 2, 3, 4], [0.9] * 4, [10.0, 10.0, 10.0, 50.0], axis=axis)
    verdict = band_verdict(folding, baseline, "kid")
    assert verdict["range"] == pytest.approx((-2.0, -0.5))  # s = 4's cell does not fold back onto -1.5
    assert verdict["worse"] == [] and verdict["better"] == []
