"""Validation metrics and per-finding thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from medmm.models import fusion_texts
from medmm.training.validation import choose_thresholds, macro_auroc, per_label_auroc

LABELS = ["a", "b", "c"]
Y = np.array([[1, 0, 1], [1, 0, 1], [0, 0, -1], [0, 1, 1]], dtype=float)
P = np.array([[0.9, 0.1, 0.7], [0.6, 0.2, 0.8], [0.3, 0.3, 0.1], [0.4, 0.9, 0.6]])


def test_auroc_only_over_labels_with_both_classes():
    per = per_label_auroc(Y, P, LABELS)
    assert per == {"a": 1.0, "b": 1.0}  # c has only positives among known entries
    assert macro_auroc(per) == 1.0
    assert macro_auroc(per, ["b", "c"]) == 1.0
    assert macro_auroc(per, ["c"]) is None


@pytest.mark.parametrize("rule", ["f1", "youden"])
def test_thresholds_separate_perfectly_separable_labels(rule):
    thr = choose_thresholds(Y, P, LABELS, rule)
    assert set(thr) == set(LABELS) and thr["c"] == 0.5
    for j, name in enumerate(["a", "b"]):
        predicted = P[:, j] >= thr[name]
        assert np.array_equal(predicted, Y[:, j] == 1)


def test_fixed_rule_keeps_one_half_whatever_validation_says():
    """``fixed`` fits nothing to the validation split, so its noise cannot move a decision."""
    assert choose_thresholds(Y, P, LABELS, "fixed") == {"a": 0.5, "b": 0.5, "c": 0.5}
    shuffled = choose_thresholds(Y[::-1], P, LABELS, "fixed")
    assert shuffled == {"a": 0.5, "b": 0.5, "c": 0.5}


@pytest.mark.parametrize("reports, indications, use_rep, use_ind, expected", [
    (["r1", "r2"], ["", "cough"], True, True, ["r1", "Indication: cough\nr2"]),
    (["r1", "r2"], ["", "cough"], False, True, ["", "Indication: cough\n"]),
    (["r1", "r2"], ["x", "cough"], True, False, ["r1", "r2"]),
])
def test_fusion_texts_use_only_inference_text(reports, indications, use_rep, use_ind, expected):
    assert [t.strip() for t in fusion_texts(reports, indications, use_rep, use_ind)] == [e.strip() for e in expected]
