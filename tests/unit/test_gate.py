"""The gate: absolute thresholds plus no regression against production beyond the tolerance."""

import pytest

from infra.gate import evaluate
from infra.settings import GateConfig

GATE = GateConfig(
    version=3,
    min={"test_accuracy": 0.8},
    max={"test_loss": 1.0},
    compare=["test_accuracy", "test_loss"],
    tolerance=0.01,
)
GOOD = {"test_accuracy": 0.9, "test_loss": 0.3}


def test_first_model_passes_on_thresholds_alone():
    decision = evaluate(GOOD, GATE)
    assert decision.passed and decision.production_version is None
    assert "no model in production yet" in decision.summary and decision.gate_version == 3


def test_candidate_below_a_threshold_is_rejected_with_the_numbers():
    decision = evaluate({"test_accuracy": 0.7, "test_loss": 0.3}, GATE)
    assert not decision.passed
    assert decision.summary == "rejected: test_accuracy 0.7000 >= 0.8000 (FAILED)"


def test_candidate_above_a_maximum_is_rejected():
    assert not evaluate({"test_accuracy": 0.9, "test_loss": 1.5}, GATE).passed


def test_missing_metric_fails_its_check():
    decision = evaluate({"test_loss": 0.3}, GATE)
    assert not decision.passed and "test_accuracy is missing" in decision.summary


def test_regression_within_tolerance_passes():
    decision = evaluate({"test_accuracy": 0.895, "test_loss": 0.305}, GATE, GOOD, "v4")
    assert decision.passed and "production v4" in decision.summary


def test_regression_beyond_tolerance_is_rejected_even_above_thresholds():
    decision = evaluate({"test_accuracy": 0.85, "test_loss": 0.3}, GATE, GOOD, "v4")
    assert not decision.passed
    regression = next(c for c in decision.checks if c.kind == "regression" and c.metric == "test_accuracy")
    assert regression.delta == pytest.approx(-0.05) and regression.target == pytest.approx(0.89)


def test_loss_comparisons_treat_lower_as_better():
    worse_loss = evaluate({"test_accuracy": 0.9, "test_loss": 0.5}, GATE, GOOD, "v4")
    better_loss = evaluate({"test_accuracy": 0.9, "test_loss": 0.1}, GATE, GOOD, "v4")
    assert not worse_loss.passed and better_loss.passed


def test_production_without_a_compared_metric_is_not_held_against_the_candidate():
    decision = evaluate(GOOD, GATE, {"test_accuracy": 0.85}, "v1")
    assert decision.passed
    assert [c.metric for c in decision.checks if c.kind == "regression"] == ["test_accuracy"]


def test_decision_serialises_for_the_registry():
    data = evaluate(GOOD, GATE).to_dict()
    assert data["passed"] is True and data["summary"].startswith("promote") and len(data["checks"]) == 2


def test_a_production_model_that_cannot_be_compared_leaves_the_thresholds_to_decide():
    decision = evaluate(GOOD, GATE, None, "v4", notes=["production v4 predicts other classes"])
    assert decision.passed and "not compared with production v4" in decision.summary
    assert decision.reasons[1] == "production v4 predicts other classes"
