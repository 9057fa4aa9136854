"""Per-finding temperature scaling on validation and thresholds kept in a sane range."""

from __future__ import annotations

import numpy as np
import torch

from medmm.models.calibration import Calibration, calibrate_and_choose, fit_temperature
from medmm.training.validation import choose_thresholds


def _overconfident(n=2000, scale=4.0, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return z * scale, y


def test_temperature_recovers_the_overconfidence():
    logits, y = _overconfident(scale=4.0)
    assert abs(fit_temperature(logits, y) - 4.0) < 0.6
    assert fit_temperature(logits, np.zeros_like(y)) == 1.0  # one class: nothing to fit


def test_thresholds_are_chosen_on_calibrated_probabilities_and_clamped():
    logits, y = _overconfident(scale=6.0)
    rng = np.random.default_rng(1)
    # a second finding (97 % prevalence, weak signal) whose F1-optimal cut calls every scan positive:
    # after calibration that threshold is ~0.01, outside the sane range
    y2 = (rng.random(y.size) < 0.97).astype(float)
    l2 = (rng.normal(0, 1, y.size) + y2) * 8
    both_logits, both_y = np.stack([logits, l2], 1), np.stack([y, y2], 1)
    thresholds, record = calibrate_and_choose(both_logits, both_y, ["a", "b"],
                                              lambda yy, p, names: choose_thresholds(yy, p, names, "f1"))
    assert record["method"] == "temperature" and set(record["temperature"]) == {"a", "b"}
    assert all(0.05 <= t <= 0.95 for t in thresholds.values())
    assert "a" not in record["unreliable"]
    assert "b" in record["unreliable"] and thresholds["b"] == 0.05


def test_missing_class_is_flagged_unreliable():
    logits = np.random.default_rng(0).normal(size=(20, 1))
    _, record = calibrate_and_choose(logits, np.zeros((20, 1)), ["a"], lambda y, p, n: {"a": 0.5})
    assert "no positive" in record["unreliable"]["a"]


def test_calibration_applies_to_logits_and_is_identity_without_a_record():
    logits = torch.tensor([[2.0, -4.0]])
    assert torch.equal(Calibration(None, ["a", "b"]).logits(logits), logits)
    cal = Calibration({"temperature": {"a": 2.0, "b": 4.0}, "unreliable": {"b": "why"}}, ["a", "b"])
    assert torch.allclose(cal.logits(logits), torch.tensor([[1.0, -1.0]]))
    assert cal.unreliable == {"b": "why"}


def test_separable_finding_is_clamped_without_a_flag():
    """Perfect separation: F1 is the same anywhere between the classes, so the clamp costs nothing."""
    y = np.array([0.0] * 50 + [1.0] * 10)
    logits = np.concatenate([np.full(50, -12.0), np.full(10, 14.0)])[:, None]
    thresholds, record = calibrate_and_choose(logits, y[:, None], ["m"],
                                              lambda yy, p, names: choose_thresholds(yy, p, names, "f1"))
    assert 0.05 <= thresholds["m"] <= 0.95 and record["unreliable"] == {}
    assert record["temperature"]["m"] <= 0.26  # capped sharpening
