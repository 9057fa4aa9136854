"""Report labeler: negation/uncertainty cases, the hand-written sentence sets, clinical-efficacy F1."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmm.errors import MedmmConfigError
from medmm.knowledge import ReportLabeler, clinical_efficacy_f1, label_f1, load_ontology
from medmm.knowledge.label_scores import read_sentence_tsv
from medmm.knowledge.labeler import NEGATED, POSITIVE, UNCERTAIN, split_sentences
from medmm.labels import CT_RATE_FINDINGS

from .conftest import CHAIN_TTL

HERE = Path(__file__).parent
# Floors a little below the measured F1 (see docs/knowledge.md), so regressions fail.
FLOORS = {"labeler_sentences.tsv": 0.95, "labeler_sentences_heldout.tsv": 0.90,
          "data/real_style_sentences.tsv": 0.95, "data/real_style_heldout.tsv": 0.95,
          "data/real_style_posthoc.tsv": 0.93}
# Per-finding recall floor on the real-style set: every finding, the issue-16 misses included.
RECALL_FLOOR = 0.85


@pytest.fixture(scope="module")
def labeler(onto):
    return ReportLabeler(onto)


def read_sentences(name: str, uncertain_as: int = 1) -> list[tuple[str, dict[str, int]]]:
    return read_sentence_tsv(HERE / name, uncertain_as=uncertain_as)


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


def test_real_style_set_covers_every_finding_with_recall(labeler):
    """Positives and negatives of all 18 findings, each recalled (issue 16: phrasings of real reports)."""
    rows = read_sentences("data/real_style_sentences.tsv")
    assert len(rows) >= 150
    for name in CT_RATE_FINDINGS:
        assert sum(e[name] == 1 for _, e in rows) >= 3 and sum(e[name] == 0 for _, e in rows) >= 100
    scores = label_f1([labeler(s) for s, _ in rows], [e for _, e in rows], CT_RATE_FINDINGS)
    low = {k: round(v["recall"], 2) for k, v in scores["per_label"].items() if v["recall"] < RECALL_FLOOR}
    assert not low


@pytest.mark.parametrize(
    "text,positive",
    [
        # split mentions: modifier and site in either order, words between
        ("Heart size increased.", {"Cardiomegaly"}),
        ("An increase in cardiac dimensions is observed.", {"Cardiomegaly"}),
        ("The heart is not enlarged.", set()),
        ("Thickening is observed in the interlobular septa.", {"Interlobular septal thickening"}),
        ("Interlobular septa are thickened, bronchial walls are normal.", {"Interlobular septal thickening"}),
        ("Bronchial walls are of normal thickness.", set()),
        ("Minimal fluid in the pericardial space.", {"Pericardial effusion"}),
        ("Pericardial thickening and effusion were observed.", {"Pericardial effusion"}),  # not pleural
        ("No fluid in the pleural or pericardial spaces.", set()),
        ("Part of the stomach herniates through the esophageal hiatus.", {"Hiatal hernia"}),
        ("The bronchi are dilated in the lower lobes.", {"Bronchiectasis"}),
        ("Trachea and main bronchi are of normal caliber, not dilated.", set()),
        ("Calcified atherosclerotic changes in the thoracic aorta and coronary artery wall.",
         {"Arterial wall calcification", "Coronary artery wall calcification"}),
        ("Calcified atherosclerotic changes in the aorta, coronary arteries are free of calcification.",
         {"Arterial wall calcification"}),
        ("The coronary arteries are free of calcification.", set()),
        # another finding between modifier and site blocks the pairing
        ("Calcified nodule adjacent to the aorta.", {"Lung nodule"}),
        ("Heart size is normal, lymph nodes increased in number.", {"Lymphadenopathy"}),
        ("Increased density in the lung adjacent to the heart.", {"Lung opacity"}),
        # a reported lymph node counts; normal-size statements negate unless a size is given
        ("Millimetric lymph nodes in the mediastinum.", {"Lymphadenopathy"}),
        ("Lymph nodes of 9 mm in short axis, not reaching pathological size.", {"Lymphadenopathy"}),
        ("Lymph nodes up to 8 mm, not enlarged.", {"Lymphadenopathy"}),
        ("Mediastinal lymph nodes are not enlarged.", set()),
        ("Lymph nodes in the mediastinum are of normal size.", set()),
        ("Normal-sized lymph nodes in the mediastinum.", set()),
        ("No lymph node in pathological size was observed.", set()),
        # a post-trigger does not reach back over a finished clause
        ("Heart size is increased and pericardial effusion was not observed.", {"Cardiomegaly"}),
        ("Pleural effusion on the right and the heart is normal in size.", {"Pleural effusion"}),
        # one phrase, two findings
        ("Traction bronchiectasis in the lower lobes.", {"Bronchiectasis", "Pulmonary fibrotic sequela"}),
        ("Pleuroparenchymal sequelae at both apices.", {"Pulmonary fibrotic sequela"}),
        ("Metallic artifacts of sternotomy wires.", {"Medical material"}),
        ("No pathological finding in the lungs except for a millimetric nodule.", {"Lung nodule"}),
    ],
)
def test_real_report_phrasings(labeler, text, positive):
    assert {k for k, v in labeler(text).items() if v == 1} == positive


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
