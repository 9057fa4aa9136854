"""Classification metrics: AUROC (+ bootstrap CIs), AUPRC, threshold metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medmm.evaluation import metrics as m


def _data(n=60, n_labels=3, seed=0, unknown=0.1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, n_labels))
    p = np.clip(0.35 * y + 0.65 * rng.random((n, n_labels)), 0, 1)
    y[rng.random((n, n_labels)) < unknown] = -1
    return y, p


@pytest.mark.parametrize(
    "y, p, expected",
    [
        ([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 0.0),
        ([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5], 0.5),
        ([1, 0, -1, -1], [0.9, 0.1, 0.0, 1.0], 1.0),  # unknowns ignored
        ([1, 1, -1, 1], [0.9, 0.1, 0.0, 1.0], float("nan")),  # one class only
    ],
)
def test_auroc_table(y, p, expected):
    got = m.auroc(np.array(y), np.array(p))
    assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected)


def test_weighted_auroc_equals_sklearn_on_each_resample():
    y, p = _data(n=40, n_labels=1)
    known = y[:, 0] != -1
    counts = m._resample_counts(len(y), 20, seed=3)
    fast = m._weighted_auroc(y[known, 0], p[known, 0], counts[:, known])
    for b in range(20):
        idx = np.repeat(np.arange(len(y)), counts[b].astype(int))
        idx = idx[y[idx, 0] != -1]
        if len(np.unique(y[idx, 0])) < 2:
            assert np.isnan(fast[b])
        else:
            assert fast[b] == pytest.approx(roc_auc_score(y[idx, 0], p[idx, 0]), abs=1e-12)


def test_bootstrap_ci_brackets_point_and_is_seeded():
    y, p = _data()
    a = m.bootstrap_auroc(y, p, n_bootstrap=1000, seed=0)
    b = m.bootstrap_auroc(y, p, n_bootstrap=1000, seed=0)
    c = m.bootstrap_auroc(y, p, n_bootstrap=1000, seed=1)
    assert a == b
    assert a["macro"]["ci_low"] != c["macro"]["ci_low"]
    for row in a["per_finding"] + [a["macro"]]:
        assert row["ci_low"] <= row["auroc"] <= row["ci_high"]
        assert row["n_resamples_used"] + row["n_skipped"] == 1000


def test_bootstrap_skips_single_class_resamples_and_counts_them():
    y = np.zeros((12, 2), dtype=int)
    y[0, 0] = 1  # finding 0: one positive in 12 scans -> many resamples lack it
    y[:6, 1] = 1
    p = np.linspace(0, 1, 24).reshape(12, 2)
    res = m.bootstrap_auroc(y, p, n_bootstrap=500, seed=0)
    rare = res["per_finding"][0]
    # P(scan 0 never drawn in 12 draws) = (11/12)^12 ~ 0.35
    assert 100 < rare["n_skipped"] < 260
    assert rare["n_resamples_used"] + rare["n_skipped"] == 500
    assert res["per_finding"][1]["n_skipped"] <= 5


def test_single_class_finding_is_nan_and_excluded_from_macro():
    y, p = _data(unknown=0)
    y[:, 2] = 0
    res = m.bootstrap_auroc(y, p, n_bootstrap=200)
    assert np.isnan(res["per_finding"][2]["auroc"])
    assert res["per_finding"][2]["n_skipped"] == 200
    assert res["macro"]["n_findings"] == 2
    assert res["macro"]["auroc"] == pytest.approx(np.mean([r["auroc"] for r in res["per_finding"][:2]]))


@pytest.mark.parametrize(
    "threshold, sens, spec, f1",
    [
        (0.5, 2 / 3, 2 / 3, 2 / 3),  # tp=2 fn=1 tn=2 fp=1
        (0.0, 1.0, 0.0, 2 * 3 / (2 * 3 + 3)),
        (1.1, 0.0, 1.0, 0.0),
    ],
)
def test_threshold_metrics_table(threshold, sens, spec, f1):
    y = np.array([1, 1, 1, 0, 0, 0, -1])
    p = np.array([0.9, 0.6, 0.4, 0.7, 0.2, 0.1, 0.99])
    got = m.threshold_metrics(y, p, threshold)
    assert got["sensitivity"] == pytest.approx(sens)
    assert got["specificity"] == pytest.approx(spec)
    assert got["f1"] == pytest.approx(f1)
    assert got["tp"] + got["fp"] + got["tn"] + got["fn"] == 6


def test_classification_metrics_rows_and_macro():
    y, p = _data()
    res = m.classification_metrics(y, p, ["a", "b", "c"], {"a": 0.5, "b": 0.4, "c": 0.6}, n_bootstrap=100)
    assert [r["finding"] for r in res["per_finding"]] == ["a", "b", "c"]
    assert [r["threshold"] for r in res["per_finding"]] == [0.5, 0.4, 0.6]
    for key in ("auroc", "auprc", "f1", "sensitivity"):  # macro = mean over findings with both classes
        values = [r[key] for r in res["per_finding"] if np.isfinite(r[key])]
        assert res["macro"][key] == pytest.approx(np.mean(values)), key


@pytest.mark.parametrize(
    "thresholds, error",
    [({"a": 0.5}, "no threshold"), ([0.5], "thresholds for"), ([0.1, 0.2, 0.3], None), (0.3, None)],
)
def test_resolve_thresholds(thresholds, error):
    if error:
        with pytest.raises(ValueError, match=error):
            m.resolve_thresholds(thresholds, ["a", "b", "c"])
    else:
        assert len(m.resolve_thresholds(thresholds, ["a", "b", "c"])) == 3


@pytest.mark.parametrize(
    "y, p, match",
    [([[2]], [[0.5]], "only 1, 0 and -1"), ([[1]], [[np.nan]], "NaN"), ([[1, 0]], [[0.5]], "must both be")],
)
def test_bad_arrays_rejected(y, p, match):
    with pytest.raises(ValueError, match=match):
        m.bootstrap_auroc(np.array(y), np.array(p), n_bootstrap=10)
