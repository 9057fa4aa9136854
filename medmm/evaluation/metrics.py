"""Multi-label classification metrics on numpy arrays, with bootstrap confidence intervals.

Inputs everywhere are ``y_true`` ``[N, L]`` with 1 (present), 0 (absent) or -1 (unknown, ignored
for that finding) and ``y_score`` ``[N, L]`` probabilities, one row per scan. Point estimates come
from scikit-learn; the bootstrap resamples *scans* (rows), the same resamples for every finding,
so the macro CI reflects one coherent resampled test set.

References: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), percentile interval;
Hanley & McNeil, Radiology 143 (1982) for AUROC as the Mann-Whitney probability.

>>> import numpy as np
>>> y = np.array([[1], [0], [1], [0]]); p = np.array([[0.9], [0.2], [0.7], [0.4]])
>>> round(auroc(y[:, 0], p[:, 0]), 3)
1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

UNKNOWN = -1


def _check(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_score = y_true[:, None], y_score[:, None]
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must both be [N, L]")
    if not np.isin(y_true, (0, 1, UNKNOWN)).all():
        raise ValueError("y_true may contain only 1, 0 and -1 (unknown)")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinite values")
    return y_true.astype(np.int64), y_score


def _known(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = y != UNKNOWN
    return y[keep], p[keep]


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve of one finding (unknown labels dropped); NaN if one class only."""
    y, p = _known(np.asarray(y_true), np.asarray(y_score, dtype=np.float64))
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def auprc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives."""
    y, p = _known(np.asarray(y_true), np.asarray(y_score, dtype=np.float64))
    if y.sum() == 0 or len(y) == 0:
        return float("nan")
    return float(average_precision_score(y, p))


def threshold_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, precision, F1 and counts of one finding at ``score >= threshold``.

    Returns NaN for a rate whose denominator is zero (e.g. sensitivity without positives).
    """
    y, p = _known(np.asarray(y_true), np.asarray(y_score, dtype=np.float64))
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else float("nan")

    return {
        "threshold": float(threshold),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp),
        # F1 = 2TP / (2TP + FP + FN); sklearn's f1_score warns and returns 0 when undefined,
        # we prefer NaN so a finding with no positives and no predictions is not scored 0.
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
    }


def label_accuracy(y_true: np.ndarray, y_score: np.ndarray, thresholds: Sequence[float]) -> float:
    """Fraction of known (scan, finding) labels predicted correctly at per-finding thresholds."""
    y, p = _check(y_true, y_score)
    pred = p >= np.asarray(thresholds, dtype=np.float64)[None, :]
    known = y != UNKNOWN
    return float(((pred == (y == 1)) & known).sum() / max(int(known.sum()), 1))


def _resample_counts(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """How often each of ``n`` scans is drawn in each of ``n_bootstrap`` resamples ``[B, n]``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    counts = np.zeros((n_bootstrap, n), dtype=np.float64)
    np.add.at(counts, (np.arange(n_bootstrap)[:, None], idx), 1.0)
    return counts


def _weighted_auroc(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC of every resample of one finding, given per-scan draw counts ``[B, n]``.

    Why hand-written: scikit-learn scores one resample per call (~1 ms of validation each, i.e.
    ~20 s for 1000 resamples x 18 findings on a laptop core); the Mann-Whitney form
    AUROC = sum_ij c_i c_j [s_i > s_j] (+1/2 ties) / (sum c_pos * sum c_neg) evaluates all
    resamples as two matrix products and is exact (tests compare it to ``roc_auc_score``).
    Resamples lacking a positive or a negative scan return NaN.
    """
    pos, neg = y == 1, y == 0
    sp, sn = p[pos], p[neg]
    wins = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
    cp, cn = counts[:, pos], counts[:, neg]
    num = np.einsum("bi,ij,bj->b", cp, wins, cn)
    den = cp.sum(1) * cn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap_auroc(
    y_true: np.ndarray, y_score: np.ndarray, n_bootstrap: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Per-finding and macro AUROC with percentile bootstrap CIs, resampling scans.

    Every resample draws ``N`` scans with replacement (seeded ``numpy.random.default_rng(seed)``);
    the same draws serve all findings. A resample in which a finding has a single class is skipped
    for that finding (counted in ``n_skipped``). The macro AUROC of a resample is the mean over the
    findings evaluable both in the full set and in that resample.

    Args:
        y_true: ``[N, L]`` labels in {1, 0, -1}.
        y_score: ``[N, L]`` probabilities.
        n_bootstrap: number of resamples (>= 1; the evaluation protocol uses >= 1000).
        seed: resampling seed.
        alpha: 1 - confidence level.

    Returns:
        ``{"per_finding": [{auroc, ci_low, ci_high, n_resamples_used, n_skipped}, ...],
        "macro": {...same keys..., "n_findings"}}``; NaN where a finding has one class.
    """
    y, p = _check(y_true, y_score)
    if n_bootstrap < 1:
        raise ValueError("n_bootstrap must be >= 1")
    counts = _resample_counts(len(y), n_bootstrap, seed)
    q = (100 * alpha / 2, 100 * (1 - alpha / 2))
    per, boot = [], np.full((n_bootstrap, y.shape[1]), np.nan)
    for j in range(y.shape[1]):
        known = y[:, j] != UNKNOWN
        point = auroc(y[:, j], p[:, j])
        if np.isfinite(point):
            boot[:, j] = _weighted_auroc(y[known, j], p[known, j], counts[:, known])
        per.append(_summary(point, boot[:, j], q))
    evaluable = np.array([np.isfinite(r["auroc"]) for r in per])
    macro_point = float(np.mean([r["auroc"] for r in per if np.isfinite(r["auroc"])] or [np.nan]))
    sub = boot[:, evaluable]
    n_ok = np.isfinite(sub).sum(1)
    macro_boot = np.where(n_ok > 0, np.nansum(sub, 1) / np.maximum(n_ok, 1), np.nan)
    macro = _summary(macro_point, macro_boot, q)
    macro["n_findings"] = int(evaluable.sum())
    return {"per_finding": per, "macro": macro}


def _summary(point: float, boot: np.ndarray, q: tuple[float, float]) -> dict[str, Any]:
    ok = boot[np.isfinite(boot)]
    lo, hi = (np.percentile(ok, q) if len(ok) else (np.nan, np.nan))
    return {
        "auroc": float(point),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_resamples_used": int(len(ok)),
        "n_skipped": int(len(boot) - len(ok)) if np.isfinite(point) else int(len(boot)),
    }


def classification_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    labels: Sequence[str],
    thresholds: Mapping[str, float] | Sequence[float] | float = 0.5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """All per-finding and macro classification metrics of one prediction matrix.

    Args:
        y_true: ``[N, L]`` labels in {1, 0, -1}.
        y_score: ``[N, L]`` probabilities.
        labels: the ``L`` finding names.
        thresholds: one threshold per finding (mapping or sequence), or one for all.
        n_bootstrap, seed, alpha: see :func:`bootstrap_auroc`.

    Returns:
        ``{"per_finding": [row per finding], "macro": {...}}``; each row holds finding,
        n_known, n_positive, prevalence, auroc (+ CI, skipped resamples), auprc, and the
        threshold metrics. Macro values average findings where they are defined.
    """
    y, p = _check(y_true, y_score)
    if len(labels) != y.shape[1]:
        raise ValueError(f"{len(labels)} labels for {y.shape[1]} columns")
    thr = resolve_thresholds(thresholds, labels)
    boot = bootstrap_auroc(y, p, n_bootstrap=n_bootstrap, seed=seed, alpha=alpha)
    rows = []
    for j, name in enumerate(labels):
        known = y[:, j] != UNKNOWN
        row: dict[str, Any] = {
            "finding": name,
            "n_known": int(known.sum()),
            "n_positive": int((y[:, j] == 1).sum()),
            "prevalence": float((y[known, j] == 1).mean()) if known.any() else float("nan"),
        }
        row.update(boot["per_finding"][j])
        row["auprc"] = auprc(y[:, j], p[:, j])
        row.update(threshold_metrics(y[:, j], p[:, j], thr[j]))
        rows.append(row)
    macro: dict[str, Any] = dict(boot["macro"])
    for key in ("auprc", "sensitivity", "specificity", "precision", "f1", "accuracy"):
        vals = [r[key] for r in rows if np.isfinite(r[key])]
        macro[key] = float(np.mean(vals)) if vals else float("nan")
    macro["label_accuracy"] = label_accuracy(y, p, thr)
    return {"per_finding": rows, "macro": macro}


def resolve_thresholds(thresholds: Mapping[str, float] | Sequence[float] | float, labels: Sequence[str]) -> list[float]:
    """Per-finding thresholds as a list in ``labels`` order (mapping, sequence or one number)."""
    if isinstance(thresholds, (int, float)):
        return [float(thresholds)] * len(labels)
    if isinstance(thresholds, Mapping):
        missing = [name for name in labels if name not in thresholds]
        if missing:
            raise ValueError(f"no threshold for {missing[:3]}")
        return [float(thresholds[name]) for name in labels]
    out = [float(t) for t in thresholds]
    if len(out) != len(labels):
        raise ValueError(f"{len(out)} thresholds for {len(labels)} labels")
    return out
