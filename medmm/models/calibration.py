"""Per-finding temperature scaling fitted on validation, and thresholds kept in a sane range.

An over-confident classifier puts most scores near 0 or 1, so its F1-optimal thresholds on raw
probabilities are degenerate (0.008, 0.994): a decision then flips on noise. Temperature scaling
(Guo et al., ICML 2017, "On Calibration of Modern Neural Networks"), one temperature per finding,
divides each logit by ``T_f`` fitted by minimising the validation BCE; it is monotone, so AUROC is
unchanged, but the thresholds are then chosen on calibrated probabilities. A threshold outside
:data:`THRESHOLD_RANGE` is clamped into it; when that costs validation F1 the finding is flagged
*unreliable* (in the run's ``calibration`` record, the model card, ``result.json`` and the HTML
report), as is a finding without both classes in validation or whose scores calibration flattens
(no signal). A perfectly separated finding loses nothing by the clamp and is not flagged.

The record is stored under the run metadata key ``calibration``; the predictor applies it to the
logits before anything else (sigmoid, consistency, thresholds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

THRESHOLD_RANGE = (0.05, 0.95)
# search interval of log T: a perfectly separated validation set drives the fitted T to 0, so
# sharpening is capped at 4x; flattening up to 100x (then the finding is flagged: no signal)
_LOG_T = (np.log(0.25), np.log(100.0))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the BCE of ``sigmoid(logits / T)`` on known (0/1) labels (1.0 if one class)."""
    from scipy.optimize import minimize_scalar

    known = y >= 0
    z, t = np.asarray(logits, dtype=np.float64)[known], np.asarray(y, dtype=np.float64)[known]
    if not (t.size and 0 < t.sum() < t.size):
        return 1.0

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - t * s))  # BCE with logits, numerically stable

    res = minimize_scalar(nll, bounds=_LOG_T, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def calibrate_and_choose(logits: np.ndarray, y: np.ndarray, labels: Sequence[str],
                         choose: Callable[[np.ndarray, np.ndarray, Sequence[str]], Mapping[str, float]],
                         threshold_range: tuple[float, float] = THRESHOLD_RANGE) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit one temperature per finding, choose thresholds on calibrated probabilities, clamp them.

    Args:
        logits / y: validation logits ``[N, L]`` and labels (1/0/-1).
        choose: the threshold rule (``(y, probs, labels) -> {label: threshold}``).

    Returns:
        ``(thresholds, record)``; ``record`` is the run's ``calibration`` entry.
    """
    lo, hi = threshold_range
    temps = {name: fit_temperature(logits[:, j], y[:, j]) for j, name in enumerate(labels)}
    t = np.asarray([temps[n] for n in labels])[None, :]
    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / t))
    chosen = dict(choose(y, probs, labels))
    thresholds: dict[str, float] = {}
    unreliable: dict[str, str] = {}
    for j, name in enumerate(labels):
        known = y[:, j] >= 0
        n_pos = int((y[known, j] == 1).sum())
        if not (0 < n_pos < int(known.sum())):
            unreliable[name] = f"validation has {'no' if n_pos == 0 else 'only'} positive scans; threshold not fitted"
        if temps[name] >= 0.99 * np.exp(_LOG_T[1]):
            unreliable[name] = "calibration flattened the scores (no signal on validation)"
        thr = float(chosen[name])
        if not lo <= thr <= hi:
            clamped = min(max(thr, lo), hi)
            best, kept = _f1(y[known, j], probs[known, j], thr), _f1(y[known, j], probs[known, j], clamped)
            if kept < best - 1e-9:  # clamping costs validation F1: the finding cannot be decided sanely
                unreliable[name] = (f"F1-optimal threshold {thr:.3f} after calibration lies outside [{lo:g}, {hi:g}]; "
                                    f"clamped to {clamped:g} (validation F1 {best:.2f} -> {kept:.2f})")
            thr = clamped
        thresholds[name] = thr
    record = {
        "method": "temperature",
        "fit_on": "validation",
        "temperature": temps,
        "threshold_range": [lo, hi],
        "unreliable": unreliable,
    }
    return thresholds, record


def _f1(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    pred, true = p >= threshold, y == 1
    tp = float((pred & true).sum())
    return 2 * tp / max(1.0, float(pred.sum() + true.sum()))


class Calibration:
    """The stored ``calibration`` record applied to logits (identity for runs without one)."""

    def __init__(self, record: Mapping[str, Any] | None, labels: Sequence[str]):
        record = dict(record or {})
        temps = record.get("temperature") or {}
        self.record = record
        self.temperature = torch.tensor([float(temps.get(name, 1.0)) for name in labels], dtype=torch.float32)
        self.unreliable: dict[str, str] = dict(record.get("unreliable") or {})

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated logits ``logits / T`` (differentiable; ``sigmoid`` of them are the probabilities)."""
        return logits / self.temperature.to(device=logits.device, dtype=logits.dtype)
