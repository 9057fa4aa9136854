"""The CT-RATE protocol (`medmm evaluate --protocol ctrate`) against hand-computed values and an
independent re-statement of CT-CLIP's threshold loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, roc_auc_score

from medmm.evaluation.ctrate import (
    THRESHOLD_GRID,
    corner_threshold,
    ctrate_metrics,
    ctrate_table,
    finding_metrics,
    resampled_threshold_metrics,
)
from medmm.evaluation.metrics import _resample_counts
from medmm.labels import CT_RATE_FINDINGS


def _ctclip_loop(p: np.ndarray, y: np.ndarray) -> float:
    """CT-CLIP's threshold search as their script states it: a loop over 100 thresholds, ``<=``."""
    best, best_t = 10000.0, 0.0
    for t in np.linspace(0, 1, 100):
        tn, fp, fn, tp = confusion_matrix(y, (p > t).astype(int), labels=[0, 1]).ravel()
        d = math.sqrt((1 - tp / (tp + fn)) ** 2 + (fp / (fp + tn)) ** 2)
        if d <= best:
            best, best_t = d, t
    return float(best_t)


def test_hand_computed_threshold_and_metrics():
    y = np.array([1, 0, 1, 0, 0])
    p = np.array([0.8, 0.7, 0.3, 0.2, 0.1])
    # operating points: t in [0.2, 0.3) gives TPR 1, FPR 1/3, the closest to (0, 1); the largest
    # grid value below 0.3 is 29/99
    assert corner_threshold(y, p) == pytest.approx(29 / 99)
    row = finding_metrics(y, p)  # predicted [1, 1, 1, 0, 0]: TP 2, FP 1, TN 2, FN 0
    assert row["accuracy"] == pytest.approx(4 / 5)
    assert row["precision"] == pytest.approx(2 / 3)
    assert row["recall"] == 1.0 and row["specificity"] == pytest.approx(2 / 3)
    # F1(positive) = 2*2/(2*2+1) = 0.8; F1(negative) = 2*2/(2*2+1) = 0.8; weighted by support 2:3
    assert row["f1_weighted"] == pytest.approx((2 * 0.8 + 3 * 0.8) / 5)
    assert row["auroc"] == pytest.approx(5 / 6)  # pairs (pos > neg): 0.8 beats 3, 0.3 beats 2 -> 5 of 6


def test_separable_scores_take_the_largest_tied_threshold():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.1])
    assert corner_threshold(y, p) == pytest.approx(59 / 99)  # every t in [0.4, 0.6) is perfect
    row = finding_metrics(y, p)
    assert row["f1_weighted"] == row["accuracy"] == row["precision"] == row["auroc"] == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_matches_ctclip_loop_and_sklearn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(60) < 0.3).astype(int)
    y[:2] = [0, 1]
    p = np.clip(rng.random(60) * 0.6 + 0.35 * y, 0, 1)
    if seed % 2:
        p = np.round(p, 1)  # ties between scores and grid-aligned values
    t = corner_threshold(y, p)
    assert t == _ctclip_loop(p, y)
    row = finding_metrics(y, p)
    pred = (p > t).astype(int)
    assert row["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert row["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert row["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
    assert row["auroc"] == pytest.approx(roc_auc_score(y, p))


def test_macro_over_ctrate_findings_with_unknowns_and_missing_classes():
    rng = np.random.default_rng(0)
    labels = ["Emphysema", "lung nodule", "Not a CT-RATE finding", "Cardiomegaly"]
    y = (rng.random((40, 4)) < 0.4).astype(int)
    y[:2] = [[0, 0, 0, 0], [1, 1, 1, 0]]
    y[:, 3] = 0  # one class only: NaN, left out of the macro
    y[5:9, 0] = -1  # unknown labels are dropped for that finding
    p = np.clip(rng.random((40, 4)) * 0.7 + 0.3 * (y == 1), 0, 1)
    out = ctrate_metrics(y, p, labels)
    assert [r["finding"] for r in out["per_finding"]] == ["Emphysema", "lung nodule", "Cardiomegaly"]
    emph = out["per_finding"][0]
    keep = y[:, 0] != -1
    assert emph == {"finding": "Emphysema", **finding_metrics(y[keep, 0], p[keep, 0])}
    assert np.isnan(out["per_finding"][2]["auroc"]) and np.isnan(out["per_finding"][2]["f1_weighted"])
    assert out["macro"]["n_findings"] == 2
    for key in ("auroc", "f1_weighted", "accuracy", "precision"):
        assert out["macro"][key] == pytest.approx(np.mean([r[key] for r in out["per_finding"][:2]]))
    assert not out["comparable"] and len(out["findings_missing"]) == 18 - 3
    assert "Cardiomegaly" not in out["findings_missing"]
    text = ctrate_table(out)
    assert "macro (2 findings)" in text and "not directly comparable" in text


def test_all_18_findings_make_a_comparable_result():
    rng = np.random.default_rng(1)
    y = (rng.random((30, 18)) < 0.5).astype(int)
    y[0], y[1] = 0, 1
    out = ctrate_metrics(y, rng.random((30, 18)), list(CT_RATE_FINDINGS))
    assert out["comparable"] and out["macro"]["n_findings"] == 18
    assert len(THRESHOLD_GRID) == 100 and THRESHOLD_GRID[0] == 0 and THRESHOLD_GRID[-1] == 1


def test_resampled_metrics_equal_sklearn_on_each_resample():
    rng = np.random.default_rng(3)
    y = (rng.random(25) < 0.3).astype(int)
    y[:3] = [0, 1, -1]
    p = rng.random(25)
    counts = _resample_counts(25, 40, seed=5)
    out = resampled_threshold_metrics(y, p, 0.42, counts)
    for b in range(40):
        idx = np.repeat(np.arange(25), counts[b].astype(int))
        idx = idx[y[idx] != -1]
        yy, pred = y[idx], (p[idx] > 0.42).astype(int)
        assert out["f1_weighted"][b] == pytest.approx(f1_score(yy, pred, average="weighted", zero_division=0))
        assert out["accuracy"][b] == pytest.approx(accuracy_score(yy, pred))
        assert out["precision"][b] == pytest.approx(precision_score(yy, pred, zero_division=0))
        if yy.sum():
            assert out["recall"][b] == pytest.approx(pred[yy == 1].mean())
        else:
            assert np.isnan(out["recall"][b])


def test_macro_confidence_intervals_bracket_the_point_estimate():
    rng = np.random.default_rng(2)
    y = (rng.random((80, 18)) < 0.3).astype(int)
    y[0], y[1] = 0, 1
    p = np.clip(rng.random((80, 18)) * 0.7 + 0.3 * y, 0, 1)
    out = ctrate_metrics(y, p, list(CT_RATE_FINDINGS), n_bootstrap=300, seed=0)["macro"]
    for key in ("f1_weighted", "accuracy", "precision", "recall"):
        lo, hi = out[f"{key}_ci"]
        assert lo < out[key] < hi and hi - lo < 0.2, key
    assert "f1_weighted_ci" not in ctrate_metrics(y, p, list(CT_RATE_FINDINGS), n_bootstrap=0)["macro"]
