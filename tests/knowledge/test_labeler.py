"""Report labeler: negation/uncertainty cases, the hand-written sentence sets, clinical-efficacy F1."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medmm.errors import MedmmConfigError
from medmm.knowledge import ReportLabeler, clinical_efficacy_f1, label_f1, load_ontology
from medmm.knowledge.labeler import NEGATED, POSITIVE, UNCERTAIN, split_sentences
from medmm.labels import CT_RATE_FINDINGS

from .conftest import CHAIN_TTL

HERE = Path(__file__).parent
# Floors a little below the measured F1 (see docs/knowledge.md), so regressions fail.
FLOORS = {"labeler_sentences.tsv": 0.95, "labeler_sentences_heldout.tsv": 0.90}


@pytest.fixture(scope="module")
def labeler(onto):
    return ReportLabeler(onto)


def read_sentences(name: str, uncertain_as: int = 1) -> list[tuple[str, dict[str, int]]]:
    rows = [r for r in csv.reader((HERE / name).open(encoding="utf-8"), delimiter="\t")
            if r and not r[0].startswith("#")][1:]
    out = []
    for row in rows:
        sentence, positive, uncertain = (row + ["", ""])[:3]
        pos = set(filter(None, positive.split(";")))
        unc = set(filter(None, uncertain.split(";"))) - pos
        expected = {lab: 1 if lab in pos else (uncertain_as if lab in unc else 0) for lab in CT_RATE_FINDINGS}
        out.append((sentence, expected))
    return out


@pytest.mark.parametrize(
    "text,concept,status",
    [
        ("No pleural effusion.", "Pleural effusion", NEGATED),
        ("There is no evidence of consolidation.", "Consolidation", NEGATED),
        ("Without pericardial effusion.", "Pericardial effusion", NEGATED),
        ("Negative for lymphadenopathy.", "Lymphadenopathy", NEGATED),
        ("Free of pleural effusion.", "Pleural effusion", NEGATED),
        ("Resolved consolidation in the right lower lobe.", "Consolidation", NEGATED),
        ("The consolidation has resolved.", "Consolidation", NEGATED),
        ("Pleural effusion was not detected.", "Pleural effusion", NEGATED),
        ("Previously seen nodule is no longer visible.", "Lung nodule", NEGATED),
        ("There is no longer any pleural effusion.", "Pleural effusion", NEGATED),
        ("Absent pericardial effusion.", "Pericardial effusion", NEGATED),
        ("Cannot exclude a small pleural effusion.", "Pleural effusion", UNCERTAIN),
        ("Consolidation cannot be excluded.", "Consolidation", UNCERTAIN),
        ("Possible hiatal hernia.", "Hiatal hernia", UNCERTAIN),
        ("This may represent atelectasis.", "Atelectasis", UNCERTAIN),
        ("Findings suspicious for lymphadenopathy.", "Lymphadenopathy", UNCERTAIN),
        ("No change in the right upper lobe nodule.", "Lung nodule", POSITIVE),  # pseudo-negation
        ("Emphysema, likely smoking related.", "Emphysema", POSITIVE),
        ("Atelectasis in the lower lobes.", "Atelectasis", POSITIVE),
    ],
)
def test_mention_status(labeler, text, concept, status):
    found = [(m.concept, m.status) for m in labeler.mentions(text)]
    assert (concept, status) in found


@pytest.mark.parametrize(
    "text,positive",
    [
        ("No pleural effusion but there is bibasilar atelectasis.", {"Atelectasis"}),
        ("No pleural effusion, however small nodules are seen.", {"Lung nodule"}),
        ("No effusion; mild cardiomegaly.", {"Cardiomegaly"}),
        ("No pleural effusion, mild atelectasis.", {"Atelectasis"}),
        ("No pleural effusion, consolidation or lymphadenopathy.", set()),  # list stays negated
        ("Pleural effusions and atelectasis are not seen.", set()),
        ("Ground-glass opacities; no consolidation.", {"Lung opacity"}),
        ("Right lower lobe consolidation.", {"Consolidation", "Lung opacity"}),  # implication applied
        ("Calcified plaques in the aorta and coronary arteries.",
         {"Arterial wall calcification", "Coronary artery wall calcification"}),  # site specialisation
        ("Aortic calcification without coronary involvement.", {"Arterial wall calcification"}),
        ("BILATERAL PLEURAL EFFUSIONS.", {"Pleural effusion"}),  # case, plural
        ("Multiple pulmonary nodules and opacities.", {"Lung nodule", "Lung opacity"}),
        ("Ground glass opacity and ground-glass opacities.", {"Lung opacity"}),  # hyphen-insensitive
        ("Pleural and pericardial effusions.", {"Pleural effusion", "Pericardial effusion"}),
        ("Nodule.\nNo effusion.", {"Lung nodule"}),
        ("", set()),
    ],
)
def test_report_labels(labeler, text, positive):
    out = labeler(text)
    assert list(out) == list(CT_RATE_FINDINGS)
    assert {k for k, v in out.items() if v == 1} == positive


@pytest.mark.parametrize("uncertain_as", [1, 0, -1])
def test_uncertain_as(onto, uncertain_as):
    out = ReportLabeler(onto, uncertain_as=uncertain_as)("Possible small consolidation. Emphysema.")
    assert out["Consolidation"] == out["Lung opacity"] == uncertain_as
    assert out["Emphysema"] == 1


def test_positive_beats_negative_and_uncertain(labeler):
    out = labeler("No nodule in the right lung. Possible nodule in the left lung. A 4 mm nodule in the lingula.")
    assert out["Lung nodule"] == 1


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_sentence_set_f1(labeler, name):
    rows = read_sentences(name)
    if name == "labeler_sentences.tsv":
        assert len(rows) >= 60
    scores = label_f1([labeler(s) for s, _ in rows], [e for _, e in rows], CT_RATE_FINDINGS)
    assert scores["micro"]["f1"] >= FLOORS[name]


def test_sentence_set_strict_uncertainty(onto):
    """With uncertain_as=0 the uncertain mentions of the set must come out negative."""
    labeler = ReportLabeler(onto, uncertain_as=0)
    rows = read_sentences("labeler_sentences.tsv", uncertain_as=0)
    scores = label_f1([labeler(s) for s, _ in rows], [e for _, e in rows], CT_RATE_FINDINGS)
    assert scores["micro"]["f1"] >= FLOORS["labeler_sentences.tsv"]


def test_clinical_efficacy_f1(labeler):
    refs = ["Right pleural effusion. Emphysema.", "No abnormality. Coronary artery calcification."]
    gens = ["Small right pleural effusion. No emphysema.", "Coronary artery calcification."]
    scores = clinical_efficacy_f1(gens, refs, labeler)
    # positives ref: {PE, Emph} + {CAC, AWC}; gen: {PE} + {CAC, AWC} -> TP 3, FP 0, FN 1
    assert scores["micro"] == pytest.approx({"precision": 1.0, "recall": 0.75, "f1": 6 / 7})
    assert scores["per_label"]["Emphysema"]["recall"] == 0.0
    assert scores["macro"]["f1"] == pytest.approx((1 + 0 + 1 + 1) / 4)
    with pytest.raises(ValueError, match="references"):
        clinical_efficacy_f1(gens, refs[:1], labeler)


def test_user_ontology_descendants_count_for_labels(write_ttl):
    onto = load_ontology(write_ttl(CHAIN_TTL + 'ex:A skos:altLabel "alpha sign" , "alpha" .'))
    labeler = ReportLabeler(onto, labels=["B", "C"])
    assert labeler("The alpha sign is present.") == {"B": 1, "C": 0}  # A => X => B


def test_no_abnormality_yields_to_findings(onto):
    labeler = ReportLabeler(onto, labels=["No abnormality", "Emphysema"])
    assert labeler("Normal study.") == {"No abnormality": 1, "Emphysema": 0}
    assert labeler("Normal study apart from mild emphysema.") == {"No abnormality": 0, "Emphysema": 1}


def test_bad_arguments(onto):
    with pytest.raises(MedmmConfigError, match="did you mean 'Emphysema'"):
        ReportLabeler(onto, labels=["Emphysma"])
    with pytest.raises(ValueError, match="uncertain_as"):
        ReportLabeler(onto, uncertain_as=2)


def test_split_sentences():
    assert split_sentences("A 3.5 mm nodule. No effusion!\nHeart normal") == [
        "A 3.5 mm nodule", "No effusion", "Heart normal"]


@pytest.mark.slow
def test_synthetic_reports_f1(labeler):
    """Reports written by medmm's synthetic-data generator are labelled like their ground truth."""
    synth = pytest.importorskip("medmm.data.synth")
    cases = [synth.render_case(seed, size=64) for seed in range(20)]
    scores = label_f1([labeler(c[3]) for c in cases], [c[2] for c in cases], CT_RATE_FINDINGS)
    assert scores["micro"]["f1"] >= 0.95
