"""Report-generation metrics: BLEU-4, ROUGE-L, METEOR (or its offline variant), chrF, clinical F1."""

from __future__ import annotations

import pytest

from medmm.evaluation import text_metrics as rm

REF = ["No pleural effusion. A small nodule in the right upper lobe.", "The heart is enlarged."]


@pytest.mark.parametrize(
    "generated, low, high",
    [
        (REF, 0.99, 1.0),  # identical
        (["Banana bicycle orchestra", "Violet umbrella quantum"], 0.0, 0.1),  # disjoint words (chrF: shared letters)
        (["No pleural effusion. Small nodule in right lobe.", "The heart is large."], 0.2, 0.9),
    ],
)
def test_scores_order(generated, low, high):
    res = rm.report_metrics(generated, REF)
    meteor_key = "meteor" if "meteor" in res else "meteor_exact_stem"
    for key in ("bleu4", "rouge_l", meteor_key, "chrf"):
        assert low <= res[key] <= high, (key, res[key])
    assert res["n_reports"] == 2


def test_meteor_variant_documented():
    res = rm.report_metrics(REF, REF)
    variant = "meteor" if rm._wordnet() is not None else "meteor_exact_stem"
    assert variant in res
    assert ("synonym stage disabled" in res["protocol"]) == (variant == "meteor_exact_stem")


def test_meteor_stem_matching_without_wordnet():
    score, _ = rm.meteor(["nodules enlarged"], ["nodule enlarged"])
    assert score > 0.9  # 'nodules' ~ 'nodule' via the Porter stemmer


def test_empty_references_dropped_and_clinical_f1_called():
    calls = {}

    def fake_f1(gen, ref, labeler):
        calls["n"] = len(gen)
        return {"f1": 0.5, "precision": 0.5, "recall": 0.5}

    res = rm.report_metrics(["a b c", "x"], ["a b c", ""], labeler=lambda t: {}, clinical_f1=fake_f1)
    assert res["n_reports"] == 1 and calls["n"] == 1
    assert res["clinical_efficacy"]["f1"] == 0.5


def test_length_mismatch_and_no_references():
    with pytest.raises(ValueError, match="reference"):
        rm.report_metrics(["a"], [])
    assert rm.report_metrics(["a"], [None])["n_reports"] == 0
