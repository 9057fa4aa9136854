"""Paired comparison of two models on the same scans: macro-AUROC difference with a bootstrap CI.

Both models are scored on the *same* resamples of the scans (percentile bootstrap, seeded), so the
CI reflects how much the difference depends on which scans were held out; several training seeds
per model are averaged inside each resample (the seed-to-seed spread is reported separately, as
a standard deviation, by the caller).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medmm.evaluation.metrics import UNKNOWN, _resample_counts, _weighted_auroc


def _macro_per_resample(y: np.ndarray, p: np.ndarray, counts: np.ndarray, findings: Sequence[int]) -> np.ndarray:
    """Macro AUROC ``[B]`` of one prediction matrix over ``findings`` for each resample."""
    boot = np.full((counts.shape[0], len(findings)), np.nan)
    for k, j in enumerate(findings):
        known = y[:, j] != UNKNOWN
        boot[:, k] = _weighted_auroc(y[known, j], p[known, j], counts[:, known])
    return np.nanmean(boot, axis=1)


def paired_macro_auroc_difference(y_true: np.ndarray, scores_a: Sequence[np.ndarray], scores_b: Sequence[np.ndarray],
                                  n_bootstrap: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Macro AUROC of ``a`` minus ``b`` (each the mean over its seeds) with a paired bootstrap CI.

    Args:
        y_true: ``[N, L]`` labels (1/0/-1) of the shared held-out scans.
        scores_a / scores_b: one ``[N, L]`` probability matrix per training seed of each model.
        n_bootstrap, seed, alpha: resamples of the ``N`` scans, their seed, 1 - confidence level.

    Returns:
        ``{"difference", "ci_low", "ci_high", "n_findings"}``: the point difference on all scans
        and the percentile CI over resamples (findings with both classes in the full set only).
    """
    y = np.asarray(y_true)
    findings = [j for j in range(y.shape[1]) if len(np.unique(y[y[:, j] != UNKNOWN, j])) == 2]
    counts = _resample_counts(len(y), n_bootstrap, seed)
    full = np.ones((1, len(y)))

    def mean_over_seeds(scores: Sequence[np.ndarray], c: np.ndarray) -> np.ndarray:
        return np.mean([_macro_per_resample(y, np.asarray(s, dtype=np.float64), c, findings) for s in scores], axis=0)

    point = float(mean_over_seeds(scores_a, full)[0] - mean_over_seeds(scores_b, full)[0])
    diffs = mean_over_seeds(scores_a, counts) - mean_over_seeds(scores_b, counts)
    diffs = diffs[np.isfinite(diffs)]
    lo, hi = np.percentile(diffs, (100 * alpha / 2, 100 * (1 - alpha / 2))) if len(diffs) else (np.nan, np.nan)
    return {"difference": point, "ci_low": float(lo), "ci_high": float(hi), "n_findings": len(findings)}
