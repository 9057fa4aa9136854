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


@pytest.mark.parametrize("text,cut", [
    ("No pleural effusion.", False), ("Heart enlarged!", False), ('He said "no effusion."', False),
    ("Multiple pulmonary nodules, the largest measuring 22 mm in", True), ("", True), (None, True),
    ("Findings: normal. ", False), ("(see above.)", False), ("Impression: 1", True),
])
def test_is_truncated(text, cut):
    assert rm.is_truncated(text) is cut


def test_truncated_distinct_mean_tokens():
    reports = ["No pleural effusion.", "No pleural effusion.", "Cardiomegaly with small effusion. No nodule."]
    assert rm.truncated_fraction(reports + ["Nodule in the"]) == 0.25
    # 4-grams: 1 + 1 + 5 = 7 (8 tokens in the third), distinct: "no pleural effusion ." + 5 of the third = 6
    assert rm.distinct_n(reports, 4) == pytest.approx(6 / 7)
    assert rm.distinct_n(["a b c d e", "a b c d e"], 4) == 0.5
    assert rm.distinct_n(["short"], 4) == 0.0
    assert rm.mean_tokens(reports) == pytest.approx((4 + 4 + 8) / 3)


def test_agreement_counts_pairs():
    labels = ["A", "B"]
    stated = [{"A": 1, "B": 0}, {"A": 0, "B": 1}, {"A": 1, "B": -1}]
    decisions = [[1, 0], [1, 0], [1, 1]]
    res = rm.agreement(stated, decisions, labels)
    assert res["agreement"] == pytest.approx(3 / 6)
    assert res["per_finding"] == {"A": pytest.approx(2 / 3), "B": pytest.approx(1 / 3)}
    assert res["disagreements"] == {"unstated": 2, "contradicted": 1}
    with pytest.raises(ValueError, match="shape"):
        rm.agreement(stated, [[1, 0]], labels)


def test_report_metrics_adds_generation_metrics_with_the_real_labeler():
    from medmm.knowledge import ReportLabeler, load_ontology

    labeler = ReportLabeler(load_ontology(), ["Pleural effusion", "Cardiomegaly"])
    generated = ["Small right pleural effusion. Heart size is normal.", "The heart is enlarged. No pleural effusion"]
    decisions = [[1, 0], [0, 0]]  # the second report states cardiomegaly the model decided absent
    res = rm.report_metrics(generated, ["x", ""], labeler=labeler, decisions=decisions)
    assert res["n_reports"] == 1 and res["n_generated"] == 2
    assert res["agreement"] == 0.75 and res["agreement_detail"]["disagreements"] == {"unstated": 0, "contradicted": 1}
    assert res["truncated"] == 0.5 and res["mean_tokens"] == pytest.approx((10 + 8) / 2)
    assert 0 < res["distinct_4"] <= 1 and "agreement" in res["protocol"]
    # without any reference the reference-free metrics are still reported
    res = rm.report_metrics(generated, ["", ""], labeler=labeler, decisions=decisions)
    assert res["n_reports"] == 0 and res["agreement"] == 0.75 and "bleu4" not in res


def test_classifier_f1_is_the_decisions_against_the_truth():
    """The ceiling of CE-F1: decisions vs true labels (-1 unknown counts as negative)."""
    from medmm.knowledge import ReportLabeler, load_ontology

    labels = ["Pleural effusion", "Cardiomegaly"]
    labeler = ReportLabeler(load_ontology(), labels)
    generated = ["Small right pleural effusion. Heart size is normal.", "The heart is enlarged."]
    decisions, truth = [[1, 0], [0, 1]], [[1, 0], [1, -1]]
    res = rm.report_metrics(generated, ["Pleural effusion.", "Pleural effusion."], labeler=labeler,
                            decisions=decisions, truth=truth)
    # true positives 1 (effusion, scan 1), false positives 1 (cardiomegaly), false negatives 1
    assert res["classifier_f1"]["micro"] == pytest.approx(0.5)
    assert res["classifier_f1"] == rm.decision_f1(decisions, truth, labels)
    assert res["agreement"] == 1.0 and res["clinical_efficacy"]["micro"]["f1"] == pytest.approx(0.5)
    assert "classifier_f1" not in rm.report_metrics(generated, ["x", "y"], labeler=labeler, decisions=decisions)
