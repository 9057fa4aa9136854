"""Paired macro-AUROC difference with a bootstrap CI over shared held-out scans."""

from __future__ import annotations

import numpy as np

from medmm.evaluation.paired import paired_macro_auroc_difference
from medmm.training.validation import macro_auroc, per_label_auroc


def _data(n=80, labels=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.4).astype(float)
    y[0, 2] = -1  # unknown entries are skipped
    y[:, 1] = 0  # a label with one class only is not scored
    return y, rng


def test_identical_models_differ_by_zero():
    y, rng = _data()
    p = rng.random(y.shape)
    out = paired_macro_auroc_difference(y, [p, p], [p, p], n_bootstrap=200)
    assert out == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_findings": 2}


def test_a_better_model_has_a_positive_ci_and_the_point_is_the_seed_mean():
    y, rng = _data()
    good = [np.clip(y + rng.normal(0, 0.6, y.shape), -3, 3) for _ in range(3)]
    bad = [rng.random(y.shape) for _ in range(3)]
    out = paired_macro_auroc_difference(y, good, bad, n_bootstrap=300, seed=1)
    names = ["a", "b", "c"]
    expected = np.mean([macro_auroc(per_label_auroc(y, g, names)) for g in good]) - np.mean(
        [macro_auroc(per_label_auroc(y, b, names)) for b in bad])
    assert np.isclose(out["difference"], expected)
    assert 0 < out["ci_low"] < out["difference"] < out["ci_high"]
    again = paired_macro_auroc_difference(y, good, bad, n_bootstrap=300, seed=1)
    assert again == out  # seeded
