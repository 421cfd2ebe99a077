"""Rules compared on their frontier: read at the real images' accuracy, and by interval bands along log p."""

import math

import pytest

from cfgutils.core.guidance import Guidance
from cfgutils.core.rules import AutoGuidance
from cfgutils.presentation import comparison
from cfgutils.workflows.evaluation import summarise_seeds
from cfgutils.workflows.experiments import SweepResult


def _rule(accuracy_by_s: dict, kid_by_s: dict, spread: float = 1.0, floor_accuracy: float = 0.95) -> SweepResult:
    """A sweep of three seeds of 100 samples per scale; KID and the Fréchet distance pooled with +-``spread``."""
    rows = [{"s": s, "w": s - 1.0, "seed": seed, "n": 100, "n_reference": 1000, "accuracy": accuracy,
             "precision": 0.8, "recall": 0.9 - 0.05 * s + 0.01 * seed, "intended_log_probability": math.log(accuracy)
             + 0.001 * seed} for s, accuracy in accuracy_by_s.items() for seed in (0, 1, 2)]
    pooled = {s: {"kid": kid, "kid_low": kid - spread, "kid_high": kid + spread, "frechet_distance": 2 * kid,
                  "frechet_distance_low": 2 * (kid - spread), "frechet_distance_high": 2 * (kid + spread)}
              for s, kid in kid_by_s.items()}
    floor = summarise_seeds([{"seed": seed, "n": 100, "n_reference": 1000, "accuracy": floor_accuracy,
                              "precision": 0.8, "recall": 0.85, "intended_log_probability": -0.05} for seed in range(3)])
    floor.update(kid=0.0, kid_low=-0.5, kid_high=0.5, frechet_distance=1.0, frechet_distance_low=0.5,
                 frechet_distance_high=1.5)
    return SweepResult(rows, floor, pooled=pooled)


ACCURACY = {1.0: 0.80, 2.0: 0.90, 3.0: 0.97, 5.0: 0.99}


def _results():
    return {"cfg": _rule(ACCURACY, {1.0: 10.0, 2.0: 10.0, 3.0: 10.0, 5.0: 10.0}),
            "lower": _rule(ACCURACY, {1.0: 10.0, 2.0: 10.0, 3.0: 5.0, 5.0: 5.0}),  # separates at high fidelity
            "same": _rule(ACCURACY, {1.0: 10.5, 2.0: 10.5, 3.0: 10.5, 5.0: 10.5}),
            "weak": _rule({1.0: 0.5, 2.0: 0.6, 3.0: 0.7, 5.0: 0.8}, {1.0: 1.0, 2.0: 1.0, 3.0: 1.0, 5.0: 1.0})}


def test_rules_are_read_where_their_accuracy_reaches_the_real_images():
    rows = comparison.matched(_results()).set_index("rule")
    assert comparison.real_accuracy(_results()) == pytest.approx(0.95)
    assert rows.loc["cfg", "reached"] and rows.loc["cfg", "s"] == pytest.approx(2 + 0.05 / 0.07)
    assert rows.loc["cfg", "kid"] == pytest.approx(10.0) and rows.loc["lower", "kid"] < rows.loc["cfg", "kid"]
    assert not rows.loc["weak", "reached"]  # never as faithful as the real images on this grid
    assert rows.loc["cfg", "s_low"] <= rows.loc["cfg", "s"] <= rows.loc["cfg", "s_high"]
    at_080 = comparison.matched(_results(), target=0.85).set_index("rule")
    assert at_080.loc["cfg", "s"] == pytest.approx(1.5) and not at_080.loc["weak", "reached"]


def test_the_table_shows_the_crossing_with_its_interval_and_the_cost(tiny_guide):
    rows = comparison.matched(_results())
    rules = {"cfg": Guidance(), "lower": tiny_guide, "same": Guidance(), "weak": Guidance()}
    table = comparison.matched_table(rows, {name: 1.5 for name in rules}, rules)
    assert table.loc["cfg", "where its accuracy reaches the real images'"].startswith("w = 1.71 [")
    assert "(s = 2.71)" in table.loc["cfg", "where its accuracy reaches the real images'"]
    assert table.loc["weak", "where its accuracy reaches the real images'"] == "not reached (accuracy 0.500 to 0.800)"
    assert table.loc["cfg", "KID"].startswith("10.0 [") and table.loc["weak", "KID"] == ""
    assert table.loc["lower", "network calls per step"] == "1 model + 1 guide"
    assert table.loc["cfg", "seconds per cell"] == "1.5"
    cfgpp = rows.assign(rule=["cfgpp", "lower", "same", "weak"])
    assert comparison.matched_table(cfgpp).loc["cfgpp"].iloc[0].startswith("λ = 2.71 [")
    text = comparison.comparison_markdown(table, ["- a line"])
    assert text.startswith("| rule |") and text.endswith("- a line")


def test_a_rule_is_named_better_only_where_its_band_separates_from_plain_cfg():
    found = comparison.conclusions(_results())
    assert found["never_reached"] == ["weak"] and found["target"] == pytest.approx(0.95)
    lower = found["verdicts"]["lower"]["kid"]
    assert lower["better"] and not lower["worse"] and 0 < lower["fraction_better"] < 1
    assert found["verdicts"]["same"]["kid"]["better"] == [] and found["verdicts"]["same"]["kid"]["worse"] == []
    text = "\n".join(found["lines"])
    assert "- lower: lower KID than cfg where the intended class's mean -log p is in [" in text
    assert "- same: its KID band overlaps cfg's over the whole shared stretch" in text
    assert "not distinguishable at this sample size" in text
    assert "Never crosses it on this grid: weak." in text
    assert found["lines"][0].startswith("- Target: the real test images' accuracy, 0.950 [")


def test_network_calls():
    assert comparison.network_calls(Guidance()) == "2 (one batch of 2n)"


@pytest.fixture
def tiny_guide():
    import torch

    from cfgutils.core.diffusion import GaussianDiffusion
    return AutoGuidance(torch.nn.Linear(1, 1), GaussianDiffusion())
