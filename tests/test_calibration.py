"""Calibration: the ECE measures what it should, temperature scaling recovers a known
over-confidence without changing a prediction, and a decision is saved and kept."""

from __future__ import annotations

import math

import numpy as np
import pytest

from catsdogs_helpers import calibration
from catsdogs_helpers.runs import RunConflict


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _overconfident(n: int = 20000, factor: float = 2.0, seed: int = 0):
    """Labels drawn from softmax(z); the model says softmax(factor * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, 2))
    truth = _softmax(z)
    labels = (rng.random(n) < truth[:, 1]).astype(int)
    return labels, truth, _softmax(factor * z)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    labels, truth, overconfident = _overconfident()
    assert calibration.expected_calibration_error(labels, truth) < 0.02
    assert calibration.expected_calibration_error(labels, overconfident) > 0.05
    table = calibration.reliability_table(labels, overconfident)
    assert table["count"].sum() == len(labels)
    assert (table["low"] < table["confidence"]).all() and (
        table["confidence"] <= table["high"]
    ).all()


def test_temperature_scaling_recovers_a_known_overconfidence_and_keeps_every_answer():
    labels, _, overconfident = _overconfident(factor=2.0)
    temperature = calibration.fit_temperature(labels, overconfident)
    assert temperature == pytest.approx(2.0, rel=0.1)
    scaled = calibration.apply_temperature(overconfident, temperature)
    np.testing.assert_array_equal(scaled.argmax(1), overconfident.argmax(1))
    np.testing.assert_allclose(scaled.sum(1), 1, rtol=1e-9)
    before = calibration.expected_calibration_error(labels, overconfident)
    assert calibration.expected_calibration_error(labels, scaled) < before / 3


def test_threshold_reaches_the_precision_asked_for_and_the_decision_uses_it():
    labels, truth, _ = _overconfident(seed=1)
    names = ["Cat", "Dog"]
    decision = calibration.make_decision(labels, truth, names, positive="Cat", precision=0.99)
    assert decision.threshold > 0.5 and decision.precision >= 0.99
    assert decision.temperature == pytest.approx(1.0, rel=0.1)
    called_cat = decision.decide(truth, names) == 0
    assert np.mean(labels[called_cat] == 0) >= 0.99
    assert 0 < decision.recall < 1
    assert called_cat.sum() < (truth.argmax(1) == 0).sum(), "a stricter rule calls fewer cats"


def test_no_threshold_reaches_an_impossible_precision():
    labels = np.array([0, 1, 0, 1])
    probs = np.full((4, 2), 0.5)
    point = calibration.choose_threshold(labels, probs, ["Cat", "Dog"], "Cat", 0.99)
    assert math.isnan(point.threshold) and point.recall == 0.0
    decision = calibration.Decision(positive="Cat", threshold=point.threshold)
    np.testing.assert_array_equal(decision.decide(probs, ["Cat", "Dog"]), probs.argmax(1))
    with pytest.raises(ValueError, match="Bird"):
        calibration.choose_threshold(labels, probs, ["Cat", "Dog"], "Bird", 0.9)


def test_a_saved_decision_is_read_back_and_not_silently_replaced(tmp_path):
    decision = calibration.Decision(1.7, "Cat", 0.93, "99% precision for Cat", 0.99, 0.6)
    calibration.save_decision(tmp_path, decision, name="Cat-99")
    assert calibration.read_decision(tmp_path, "Cat-99") == decision
    assert (tmp_path / "decisions" / "Cat-99.json").is_file()
    calibration.save_decision(tmp_path, decision, name="Cat-99")  # the same again is fine
    other = calibration.Decision(1.2, "Cat", 0.8, "95% precision for Cat", 0.95, 0.8)
    with pytest.raises(RunConflict, match="OVERWRITE"):
        calibration.save_decision(tmp_path, other, name="Cat-99")
    assert calibration.read_decision(tmp_path, "Cat-99") == decision
    calibration.save_decision(tmp_path, other, name="Cat-99", overwrite=True)
    assert calibration.read_decision(tmp_path, "Cat-99").threshold == 0.8
    assert "NaN" not in (tmp_path / "decisions" / "Cat-99.json").read_text(), "standard JSON"
    assert calibration.decision_names(tmp_path) == ["Cat-99"]
    with pytest.raises(FileNotFoundError, match="no decision rule 'Dog-90'.*saved rules: Cat-99"):
        calibration.read_decision(tmp_path, "Dog-90")
    with pytest.raises(ValueError, match="letters, digits"):
        calibration.save_decision(tmp_path, decision, name="../elsewhere")


def test_by_default_the_most_likely_class_at_the_runs_temperature(tmp_path):
    """decision.json is the calibration; a threshold there (an older run's) is not applied."""
    assert calibration.read_decision(tmp_path) is None
    calibration.save_decision(tmp_path, calibration.Decision(1.7, "Cat", 0.93, "goal", 0.99))
    default = calibration.read_decision(tmp_path)
    assert default.temperature == 1.7 and not default.has_threshold
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    np.testing.assert_array_equal(default.decide(probs, ["Cat", "Dog"]), [0, 1])


def test_a_rule_says_in_words_why_it_answered():
    rule = calibration.Decision(1.0, "Cat", 0.89, "99% precision for Cat")
    names = ["Cat", "Dog"]
    assert rule.in_words("Dog", np.array([0.87, 0.13]), names) == (
        "Dog: p_Cat 0.87 is below the 0.89 needed for 99% precision for Cat"
    )
    assert rule.in_words("Cat", np.array([0.95, 0.05]), names).startswith("Cat: p_Cat 0.95 reaches")
    assert calibration.Decision().in_words("Cat", np.array([0.95, 0.05]), names) == ""


def test_decision_result_counts_what_the_rule_calls():
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.95, 0.05], [0.7, 0.3], [0.4, 0.6], [0.8, 0.2], [0.1, 0.9]])
    strict = calibration.Decision(positive="Cat", threshold=0.9)
    point = calibration.decision_result(labels, probs, ["Cat", "Dog"], strict, "Cat")
    assert (point.precision, point.recall) == (1.0, pytest.approx(1 / 3))
    plain = calibration.decision_result(
        labels, probs, ["Cat", "Dog"], calibration.Decision(), "Cat"
    )
    assert (plain.precision, plain.recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
