"""Calibration: ECE and reliability-diagram data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import CalibrationErrorMetric

from medmm.evaluation.calibration import calibration_metrics, reliability


@pytest.mark.parametrize(
    "y, p, ece",
    [
        ([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0], 0.0),  # confident and right
        ([1, 0, 1, 0], [1.0, 1.0, 1.0, 1.0], 0.5),  # always 1, half positive
        ([1, 1, 1, 1], [0.05, 0.05, 0.05, 0.05], 0.95),
        ([1, 0, -1], [1.0, 0.0, 0.5], 0.0),  # unknown ignored
    ],
)
def test_ece_table(y, p, ece):
    res = reliability(np.array(y), np.array(p), n_bins=10)
    assert res["ece"] == pytest.approx(ece, abs=1e-6)
    assert sum(res["count"]) == sum(v != -1 for v in y)


def test_ece_matches_monai_metric():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(int)
    metric = CalibrationErrorMetric(num_bins=10, calibration_reduction="expected")
    ref = metric(torch.tensor(p, dtype=torch.float32)[None, None], torch.tensor(y, dtype=torch.float32)[None, None])
    assert reliability(y, p, 10)["ece"] == pytest.approx(float(ref.mean()), abs=1e-5)


def test_calibration_metrics_per_finding_and_protocol():
    y = np.array([[1, 0], [0, 1], [1, -1]])
    p = np.array([[0.9, 0.2], [0.1, 0.8], [0.8, 0.5]])
    res = calibration_metrics(y, p, ["a", "b"])
    assert set(res["per_finding"]) == {"a", "b"}
    assert "equal-width" in res["binning"]
    assert res["pooled"]["n"] == 5
    assert reliability(np.array([-1]), np.array([0.2]))["n"] == 0
