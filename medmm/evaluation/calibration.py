"""Calibration: expected calibration error (ECE) and reliability-diagram data.

Binning (the documented protocol): ``n_bins`` (default 10) equal-width bins on [0, 1], left edge
inclusive (the last bin also holds 1.0), computed by MONAI's ``calibration_binning``.
ECE = sum_b (n_b / N) * |mean predicted probability_b - observed positive fraction_b|
(Guo et al., "On Calibration of Modern Neural Networks", ICML 2017). The pooled ECE treats every
known (scan, finding) pair as one binary prediction; per-finding ECEs use that finding's scans.
Unknown labels (-1) are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.metrics import calibration_binning

DEFAULT_BINS = 10


def reliability(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """ECE and per-bin statistics of binary predictions (any shape; -1 labels ignored).

    Args:
        y_true: labels in {1, 0, -1}.
        y_prob: probabilities, same shape.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        ``{"ece", "n", "n_bins", "bin_edges", "mean_predicted", "fraction_positive", "count"}``;
        empty bins hold NaN means and count 0; ECE is NaN when no label is known.
    """
    y = np.asarray(y_true).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    keep = y != -1
    y, p = y[keep].astype(np.float32), p[keep].astype(np.float32)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    if len(y) == 0:
        nan = [float("nan")] * n_bins
        return {"ece": float("nan"), "n": 0, "n_bins": n_bins, "bin_edges": edges.tolist(),
                "mean_predicted": nan, "fraction_positive": nan, "count": [0] * n_bins}
    mean_p, mean_gt, counts = calibration_binning(
        torch.from_numpy(p)[None, None], torch.from_numpy(y)[None, None], num_bins=n_bins
    )
    mean_p, mean_gt, counts = (t[0, 0].double().numpy() for t in (mean_p, mean_gt, counts))
    filled = counts > 0
    ece = float((counts[filled] / counts.sum() * np.abs(mean_p[filled] - mean_gt[filled])).sum())
    return {
        "ece": ece,
        "n": int(counts.sum()),
        "n_bins": n_bins,
        "bin_edges": edges.tolist(),
        "mean_predicted": [float(v) if c else float("nan") for v, c in zip(mean_p, counts)],
        "fraction_positive": [float(v) if c else float("nan") for v, c in zip(mean_gt, counts)],
        "count": [int(c) for c in counts],
    }


def calibration_metrics(y_true: np.ndarray, y_prob: np.ndarray, labels: list[str], n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Pooled reliability data plus one ECE per finding (``{"pooled": ..., "per_finding": {name: ece}}``)."""
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    return {
        "binning": f"{n_bins} equal-width bins on [0,1], left-inclusive (MONAI calibration_binning)",
        "pooled": reliability(y, p, n_bins),
        "per_finding": {name: reliability(y[:, j], p[:, j], n_bins)["ece"] for j, name in enumerate(labels)},
    }
