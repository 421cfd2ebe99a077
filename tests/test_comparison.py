"""Notebook 08's comparison: each rule at matched accuracy, its cost, and a winner only where intervals separate."""

import pytest
from test_evaluation import _shifted, _synthetic_result

from cfgutils.core.guidance import Guidance
from cfgutils.core.newer_guidance import AutoGuidance
from cfgutils.presentation import comparison
from cfgutils.workflows.evaluation import summarise_seeds
from cfgutils.workflows.experiments import SweepResult


def _results():
    synthetic = _synthetic_result()  # accuracy 0.99 only at w = 2 (Fréchet 10.5), 0.90 at w = 5, 0.85 at w = 10
    base = SweepResult(synthetic.rows, summarise_seeds(synthetic.floor_rows))  # per-seed rows only
    return {
        "cfg": base,
        "better": _shifted(base, {}, lambda w: 0.5),                       # same accuracy, half the Fréchet distance
        "faithful": _shifted(base, {4.0: 0.995, 9.0: 1.0}, lambda w: 1.0),  # w = 5 and 10 now pass the floor too
        "never": _shifted(base, {1.0: 0.9, 2.0: 0.9}, lambda w: 1.0),       # never reaches 0.99
    }


def test_matched_accuracy_takes_each_rules_best_frechet_among_faithful_cells():
    matched = comparison.matched_accuracy(_results(), accuracy_floor=0.99).set_index("rule")
    assert matched.loc["cfg", "w"] == 2 and matched.loc["cfg", "reached"]
    assert matched.loc["better", "frechet_distance"] == pytest.approx(0.5 * matched.loc["cfg", "frechet_distance"])
    assert matched.loc["faithful", "w"] == 2  # three faithful cells; w = 2 has the lowest Fréchet distance
    assert not matched.loc["never", "reached"] and matched.loc["never", "accuracy"] < 0.99
    assert {"accuracy_low", "accuracy_high", "frechet_distance_low", "recall_high"} <= set(matched.columns)


def test_matched_conclusions_name_a_winner_only_where_intervals_separate():
    results = _results()
    found = comparison.matched_conclusions(comparison.matched_accuracy(results, 0.99), 0.99)
    assert found["frechet"]["winner"] == "better" and found["never_reached"] == ["never"]
    assert any("better has the lowest Fréchet distance" in line for line in found["lines"])
    tied = {"cfg": results["cfg"], "faithful": results["faithful"]}  # identical Fréchet distances: tied
    found = comparison.matched_conclusions(comparison.matched_accuracy(tied, 0.99), 0.99)
    assert found["frechet"]["winner"] is None and sorted(found["frechet"]["tied"]) == ["cfg", "faithful"]
    assert "not distinguishable at this sample size" in found["lines"][0] and "tied" not in found["lines"][0]


def test_matched_conclusions_pair_the_samples_of_sweeps_that_kept_them():
    results = {"cfg": _synthetic_result(), "closer": _synthetic_result({2.0: 0.05})}  # same noise, less shift at w = 2
    matched = comparison.matched_accuracy(results, 0.99)
    found = comparison.matched_conclusions(matched, 0.99, results)
    assert found["paired_frechet"]["winner"] == "closer" and found["paired_frechet"]["differences"]["cfg"][1] > 0
    assert found["lines"][0].startswith("- At accuracy ≥ 0.99: the KID is lowest for closer")
    assert found["lines"][1].startswith("- At accuracy ≥ 0.99: the Fréchet distance is lowest for closer")
    # recall, measured per seed, is paired by seed: the same per-seed values give a zero difference, no winner
    assert found["paired"]["recall"]["winner"] is None and list(found["paired"]["recall"]["differences"].values()) == [[0.0, 0.0, 0.0]]
    assert "recall is highest for" in found["lines"][2] and "overlap" not in "\n".join(found["lines"])
    same = {"cfg": _synthetic_result(), "again": _synthetic_result()}
    found = comparison.matched_conclusions(comparison.matched_accuracy(same, 0.99), 0.99, same)
    assert found["paired_frechet"]["winner"] is None and "not distinguishable" in found["lines"][0]


def test_network_calls_and_the_table(tiny_guide_rules):
    assert comparison.network_calls(Guidance()) == "2 (one batch of 2n)"
    assert comparison.network_calls(tiny_guide_rules["auto"]) == "1 model + 1 guide"
    results = _results()
    matched = comparison.matched_accuracy(results, 0.99)
    rules = {name: Guidance() for name in results}
    table = comparison.matched_table(matched, {name: 1.5 for name in results}, rules)
    assert table.loc["never", "accuracy"].endswith("(below the floor)") and table.loc["cfg", "seconds per cell"] == "1.5"
    text = comparison.comparison_markdown(table, ["- a line"])
    assert text.startswith("| rule |") and text.endswith("- a line")


@pytest.fixture
def tiny_guide_rules():
    import torch

    from cfgutils.core.diffusion import GaussianDiffusion
    return {"auto": AutoGuidance(torch.nn.Linear(1, 1), GaussianDiffusion())}
