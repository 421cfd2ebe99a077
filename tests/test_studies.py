"""Study tables and conclusions on known rows; the predicted-x0 overshoot meter on a known prediction."""

import math

import pandas as pd
import torch

from cfgutils.core.guidance import Guidance, GuidanceContext, OvershootMeter
from cfgutils.plumbing import paths
from cfgutils.presentation.studies import (collapse_lines, dropout_table, factor_changes, factor_table,
                                           paired_change, reproduction_table, verdict)


def _row(rung, clip, w, accuracy, low, high, frechet=50.0, p_uncond=0.1, changed="x"):
    return {"configuration": f"{rung} +clip" if clip else rung, "rung": rung, "changed": changed, "clip_x0": clip,
            "w": w, "s": w + 1, "n": 20, "seeds": 3, "p_uncond": p_uncond,
            "accuracy": accuracy, "accuracy_low": low, "accuracy_high": high,
            "frechet_distance": frechet, "frechet_distance_low": frechet - 5, "frechet_distance_high": frechet + 5,
            "recall": 0.5, "recall_low": 0.4, "recall_high": 0.6, "x0_outside": 0.1, "x0_outside_low": 0.05,
            "x0_outside_high": 0.15, "floor_frechet_distance": 10.0}


def test_verdict_needs_the_whole_interval_on_one_side():
    assert verdict({"accuracy_low": 0.05, "accuracy_high": 0.3}) == "collapsed"
    assert verdict({"accuracy_low": 0.93, "accuracy_high": 1.0}) == "intact"
    assert verdict({"accuracy_low": 0.8, "accuracy_high": 0.95}) == "undecided"


def test_a_factor_turns_the_collapse_off_only_between_decided_verdicts():
    rows = [_row("reference", False, 10, 0.1, 0.05, 0.2), _row("clamp", False, 10, 0.85, 0.7, 0.95),
            _row("ddpm", True, 10, 0.98, 0.95, 1.0, changed="DDPM with clipping")]
    assert factor_changes(rows, 10) == []  # collapsed -> undecided -> intact: no decided flip
    rows[1] = _row("clamp", False, 10, 0.1, 0.05, 0.2)
    (change,) = factor_changes(rows, 10)
    assert (change["from"], change["to"], change["after"], change["train_seed"]) == ("clamp", "ddpm", "intact", 0)
    lines = collapse_lines(rows, 10)
    assert "At w = 10, reference, clamp collapse." in lines
    assert any(line.startswith("ddpm (DDPM with clipping) turns the collapse off: accuracy 0.100") for line in lines)


def test_factor_changes_walk_each_training_seed_separately():
    rows = []
    for seed, (a, b) in enumerate([((0.1, 0.05, 0.2), (0.98, 0.95, 1.0)), ((0.98, 0.95, 1.0), (0.98, 0.95, 1.0))]):
        rows += [{**_row("reference", False, 10, *a), "train_seed": seed},
                 {**_row("ddpm", True, 10, *b, changed="DDPM"), "train_seed": seed}]
    (change,) = factor_changes(rows, 10)
    assert change["train_seed"] == 0
    assert any("(training seed 0)" in line for line in collapse_lines(rows, 10))


def test_no_collapse_is_said_plainly():
    lines = collapse_lines([_row("size", False, 10, 1.0, 0.97, 1.0), _row("size", True, 10, 1.0, 0.97, 1.0)], 10)
    assert lines[-1] == "No configuration collapses at w = 10."


def test_reproduction_and_factor_tables_show_intervals_and_the_published_curve():
    rows = [_row("reference", False, 2, 0.9, 0.8, 0.95), _row("reference", False, 10, 0.1, 0.05, 0.2)]
    table = reproduction_table(rows)
    assert list(table["published accuracy"]) == ["0.970", "0.385"]
    assert list(table["ours (reference)"]) == ["0.900 [0.800, 0.950]", "0.100 [0.050, 0.200]"]
    assert list(factor_table(rows)["samples"]) == [60, 60]


def test_dropout_table_without_an_unconditional_model_and_with_ties():
    rows = [_row("p=0", False, 0, 0.9, 0.85, 0.95, p_uncond=0.0),
            _row("p=0.1", False, -1, 0.1, 0.05, 0.2, frechet=150, p_uncond=0.1),
            _row("p=0.1", False, 0, 0.95, 0.9, 0.98, frechet=30, p_uncond=0.1),
            _row("p=0.1", False, 2, 0.99, 0.96, 1.0, frechet=60, p_uncond=0.1)]
    table = dropout_table(rows).set_index("p_uncond")
    assert table.loc["0", "Fréchet at s = 0 (w = -1)"] == "no unconditional model"
    assert table.loc["0.1", "Fréchet at s = 0 (w = -1)"] == "150.0 [145.0, 155.0]"
    assert table.loc["0.1", "at w"] == "2 (overlapping: 0, 2)"  # 0.95 [0.9, 0.98] overlaps 0.99 [0.96, 1]
    assert table.loc["0.1", "at w "] == "0"  # Fréchet 30 [25, 35] separates from 60 and 150


def _with_bits(row, correct: int, n: int = 60, flipped: int = 0):
    """``row`` with per-sample outcomes: the first ``correct`` of ``n`` samples right, then ``flipped`` of the
    right ones turned wrong at the start (so two rows share most of their outcomes)."""
    bits = ["1"] * correct + ["0"] * (n - correct)
    bits[:flipped] = ["0"] * flipped
    return {**row, "correct_bits": "".join(bits), "accuracy": bits.count("1") / n}


def test_factor_table_pairs_each_configuration_with_the_one_above():
    rows = [_with_bits(_row("reference", False, 10, 0.1, 0.05, 0.2), 6),
            _with_bits(_row("clamp", False, 10, 0.1, 0.05, 0.2), 6),
            _with_bits(_row("classifier", False, 10, 0.9, 0.91, 0.97), 54),
            {**_row("ddpm", True, 10, 0.98, 0.95, 1.0), "correct_bits": "1" * 30}]  # other samples: not paired
    changes = list(factor_table(rows)["change from the row above (paired)"])
    assert changes[0] == "" and changes[3] == ""
    assert changes[1].startswith("+0.000 [-") and changes[2].startswith("+0.800 [+")  # 48 of 60 gained, none lost
    assert "a paired change of +0.800 [+" in "\n".join(collapse_lines(rows[1:3], 10))


def test_ladder_changes_average_the_paired_change_over_trained_networks():
    from cfgutils.presentation.studies import ladder_network_lines, ladder_networks_table

    rows = []
    for seed, (before, after) in enumerate([(30, 50), (40, 55), (35, 58)]):
        rows += [{**_with_bits(_row(f"clamp #{seed}", False, 10, 0, 0, 0), before), "train_seed": seed},
                 {**_with_bits(_row(f"classifier #{seed}", False, 10, 0, 0, 0), after), "train_seed": seed}]
    table = ladder_networks_table(rows)
    assert list(table["configuration"]) == ["classifier"]
    assert table.loc[0, "network 1"].startswith("+0.250 [+")  # 15 of 60 gained on the same samples
    mean = (20 + 15 + 23) / 3 / 60
    assert table.loc[0, "mean over networks"].startswith(f"{mean:+.3f} [+")
    assert table.loc[0, "reading"] == "raises accuracy"
    (line,) = ladder_network_lines(rows, 10)
    assert line.startswith(f"classifier against clamp at w = 10, over 3 trained networks: raises accuracy by {mean:+.3f}")
    from cfgutils.presentation.studies import ladder_table

    compact = ladder_table(rows, 10).set_index("configuration")
    assert compact.loc["classifier", "networks"] == 3 and compact.loc["clamp", "change from the row above"] == ""
    assert compact.loc["classifier", "accuracy per network"] == "0.833, 0.917, 0.967"
    assert compact.loc["classifier", "reading"] == "raises accuracy (over 3 networks)"
    one = ladder_network_lines(rows[:2], 10)
    assert one == [f"classifier against clamp at w = 10 rests on one trained network (seed 0): raises accuracy "
                   f"({table.loc[0, 'network 0']}, paired over samples)."]


def test_dropout_table_ranks_the_weights_by_paired_differences_where_rows_kept_outcomes():
    rows = [_with_bits(_row("p=0.1", False, 0, 0.9, 0.8, 0.95, p_uncond=0.1), 54),
            _with_bits(_row("p=0.1", False, 2, 0.95, 0.9, 0.99, p_uncond=0.1), 57),
            _with_bits(_row("p=0.1", False, 5, 0.95, 0.9, 0.99, p_uncond=0.1), 57, flipped=1)]
    table = dropout_table(rows).set_index("p_uncond")
    assert table.loc["0.1", "at w"] == "2 (not distinguishable at this sample size, paired: 0, 5)"


def test_overshoot_meter_counts_the_predicted_x0_pixels_outside_the_data_range():
    meter = OvershootMeter(Guidance())
    context = GuidanceContext(alpha_bar=0.5, step_index=0, num_steps=1)
    x0 = torch.tensor([[[[0.5, 1.5], [-2.0, 1.0]]]])
    assert torch.equal(meter.finalize(x0, context), x0)
    assert math.isclose(meter.fraction(), 0.5) and meter.fraction() == 0.0  # read once, then reset
    assert meter.describe() == Guidance().describe()


def test_the_reproduction_tables_pool_networks_with_exact_intervals():
    import pandas as pd

    from cfgutils.presentation.studies import mechanism_table, pooled_reproduction, trajectory_table

    results = pd.DataFrame([
        {"network": f"seed{k}", "w": 2.0, "n": 200, "published_accuracy": 0.97, "correct_published": c,
         "accuracy_published": c / 200, "correct_clamped": 200, "accuracy_clamped": 1.0, "correct_ours": 190,
         "accuracy_ours": 0.95, "outside_fraction": 0.1 * k, "max_abs": 3.0 + k, "norm_step_00": 28.0,
         "norm_final": 20.0} for k, c in enumerate((100, 150, 200))])
    (row,) = pooled_reproduction(results).to_dict("records")
    assert row["accuracy_published"] == 0.75 and row["samples"] == 600 and row["networks"] == 3
    assert row["accuracy_published_low"] < 0.75 < row["accuracy_published_high"]
    assert row["per_network_published"] == "0.500, 0.750, 1.000" and row["max_abs"] == 5.0
    assert row["accuracy_clamped_high"] == 1.0
    assert trajectory_table(results).iloc[0]["final"] == "20.0"
    mechanism = mechanism_table([{"network": "a", "t": 999, "eps_mse": 0.5, "eps_mse_low": 0.4, "eps_mse_high": 0.6,
                                  "step_gain": 31.62}, {"network": "b", "t": 999, "eps_mse": 0.004,
                                  "eps_mse_low": 0.003, "eps_mse_high": 0.005, "step_gain": 31.62}])
    assert mechanism.iloc[0].to_dict() == {"t": 999, "1/sqrt(alpha_t)": "31.62", "a": "0.5000 [0.4000, 0.6000]",
                                           "b": "0.0040 [0.0030, 0.0050]"}


def test_across_networks_spreads_the_mean_over_trained_networks(tmp_path):
    import json
    import subprocess
    import sys

    import pandas as pd

    from cfgutils.presentation.studies import across_networks

    def summary(accuracy, kid):
        return pd.DataFrame([{"set": "generated", "w": 1.0, "s": 2.0, "accuracy": accuracy, "accuracy_low": accuracy - .02,
                              "accuracy_high": min(accuracy + .02, 1), "kid": kid, "kid_low": kid - 1,
                              "kid_high": kid + 1, "frechet_distance": 10.0, "frechet_distance_low": 9.0,
                              "frechet_distance_high": 11.0},
                             {"set": "real data floor", "w": None, "s": None, "accuracy": .98, "kid": 0.0,
                              "frechet_distance": 5.0}])

    runs = {"a": summary(.95, 10.0), "b": summary(.97, 12.0), "c": summary(.96, 14.0)}
    table = across_networks(runs).set_index("metric")
    assert table.loc["accuracy", "a"] == "0.950 [0.930, 0.970]"
    assert table.loc["kid", "mean over 3 networks"] == "12.0 [7.0, 17.0]"  # t(2) = 4.303, sd 2 / sqrt(3)
    for name, frame in runs.items():
        (tmp_path / name).mkdir()
        frame.to_csv(tmp_path / name / "summary.csv", index=False)
        (tmp_path / name / "meta.json").write_text(json.dumps({"model": f"{name}.pt"}))
    out = tmp_path / "across"
    done = subprocess.run([sys.executable, "-m", "cfgutils", "experiment", "across-networks", out,
                           *(tmp_path / n for n in runs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "12.0 [7.0, 17.0]" in (out / "table.md").read_text() and "- c: c.pt" in (out / "table.md").read_text()
    refused = subprocess.run([sys.executable, "-m", "cfgutils", "experiment", "across-networks", tmp_path / "x",
                              tmp_path / "a", tmp_path / "missing"], capture_output=True, text=True)
    assert refused.returncode == 2 and "no summary.csv" in refused.stderr and not (tmp_path / "x").exists()


def test_outcome_bits_read_back_as_a_number_keep_their_leading_zeros():
    row = _with_bits(_row("reference", False, 10, 0.1, 0.05, 0.2), 6)
    row["correct_bits"] = "0" * 3 + row["correct_bits"][3:]  # the first three samples wrong
    as_number = {**row, "correct_bits": int(row["correct_bits"])}  # what a numeric CSV read leaves
    assert paired_change(as_number, row) == paired_change(row, row)
    assert paired_change({**row, "correct_bits": "1.2e+50"}, row) is None  # not outcomes: no claim


def _reproduction_cells(w: float, published: float, correct: tuple[int, int, int], changed: tuple[int, int]) -> list:
    """Three networks' reproduction cells at ``w``: (correct as published, clamped, ours) of 200 each, the
    clamped and our classifier's scoring gaining ``changed`` samples over the scoring before."""
    return [{"network": f"seed{k}", "w": w, "n": 200, "published_accuracy": published,
             "correct_published": correct[0], "accuracy_published": correct[0] / 200, "correct_clamped": correct[1],
             "accuracy_clamped": correct[1] / 200, "gained_clamped": changed[0], "lost_clamped": 0,
             "correct_ours": correct[2], "accuracy_ours": correct[2] / 200, "gained_ours": changed[1], "lost_ours": 0,
             "outside_fraction": 0.3, "max_abs": 1000.0 * w} for k in range(3)]


def test_the_plain_words_answer_follows_the_numbers():
    import pandas as pd

    from cfgutils.presentation.studies import cause_in_plain_words, pooled_reproduction, what_decides

    results = pd.DataFrame(_reproduction_cells(2.0, 0.97, (190, 190, 196), (0, 6))
                           + _reproduction_cells(15.0, 0.105, (170, 170, 194), (0, 24)))
    pooled = pooled_reproduction(results)
    mechanism = [{"network": name, "t": 999, "eps_mse": e, "step_gain": 31.6}
                 for name, e in (("seed0", 0.001), ("seed1", 0.002), ("reference-recipe", 0.004))]

    def cell(network, correct):
        return {"network": network, "w": 0.0, "accuracy_published": correct, "accuracy_published_low": correct - .05,
                "accuracy_published_high": correct + .05}

    cross = {"ancestral": pd.DataFrame([cell("seed0", .65), cell("reference-recipe", .07)]),
             "ddpm": pd.DataFrame([cell("seed0", .64), cell("reference-recipe", .08)])}
    assert what_decides(cross) == "network"
    rows = []
    for seed, (before, after) in enumerate([(30, 50), (40, 55), (35, 58)]):
        rows += [{**_with_bits(_row(f"clamp #{seed}", False, 10, 0, 0, 0), before), "train_seed": seed},
                 {**_with_bits(_row(f"classifier #{seed}", False, 10, 0, 0, 0), after), "train_seed": seed}]
    text = cause_in_plain_words(pooled, mechanism, cross, rows)
    assert "does not fall as far as published: scored its way, accuracy at w = 15 (s = 16) is 0.850 [" in text
    assert "clamping them to [-1, 1] does not change what its classifier reads (+0.000 [" in text
    assert "so the fall lives in the measurement" in text  # ours: 0.970 at w = 15 against 0.980 at w = 2
    assert "mean squared error of 0.0040 against 0.0010 to 0.0020" in text
    assert "over 3 trained networks, the changes that move accuracy are classifier +0.322 [" in text
    results.loc[results["w"] == 15.0, ["correct_ours", "accuracy_ours"]] = [150, 0.75]  # ours falls too
    results.loc[results["w"] == 15.0, ["gained_ours", "lost_ours"]] = [0, 20]
    assert "the study's classifier is not what makes the fall" in cause_in_plain_words(
        pooled_reproduction(results), mechanism, cross, rows)
    results.loc[results["w"] == 15.0, ["correct_ours", "accuracy_ours", "gained_ours", "lost_ours"]] = [180, .9, 10, 0]
    assert "part of the fall lives in the measurement" in cause_in_plain_words(
        pooled_reproduction(results), mechanism, cross, rows)


def test_the_committed_studies_are_read_as_the_notebook_uses_them():
    """07 reads the committed reproduction, its strips, the cross check, the ladder and the dropout study."""
    from cfgutils.presentation.studies import committed_studies

    committed = committed_studies()
    assert set(committed.reproduction["network"]) >= {"seed0"} and len(committed.reproduction) > 0
    assert sorted(committed.cross) == ["ancestral", "ddpm"]
    assert "seed0" in set(committed.cross["ancestral"]["network"])
    assert set(committed.strips) <= set(committed.reproduction["w"]) and committed.strips
    strip = next(iter(committed.strips.values()))
    assert strip.shape[0] == 10 and strip.shape[-2:] == (28, 28)
    assert any(str(row["correct_bits"]).startswith("0") for row in committed.ladder)  # leading zeros kept
    assert {row["p_uncond"] for row in committed.dropout} >= {0.0, 0.1}
    assert committed.no_dropout_figure.is_file()


def test_computed_prose_renders_lines_as_bullets_and_committed_runs_by_name(tmp_path):
    from IPython.display import Markdown

    from cfgutils.presentation import report

    shown = report.show(["one", "- two"])
    assert isinstance(shown, Markdown) and shown.data == "- one\n- two"
    assert report.show("**as is**").data == "**as is**"
    by_name = report.committed_conclusions("w1-vs-w0")
    assert by_name == report.committed_conclusions(paths.COMMITTED_NETWORKS / "w1-vs-w0") and "- " in by_name
    assert report.committed_conclusions(tmp_path).startswith("(no committed comparison")
    assert report.widths_beside_committed(pd.DataFrame(), "classifier-eval", "no-such-data").startswith(
        "no committed run for no-such-data")
