"""Normal statements about a finding's site are negated mentions ("Heart size is normal.")."""

from __future__ import annotations

import pytest

from medmm.knowledge import ReportLabeler
from medmm.knowledge.labeler import NEGATED, POSITIVE


@pytest.fixture(scope="module")
def labeler(onto):
    return ReportLabeler(onto)


def _statuses(labeler, text):
    return {(m.concept, m.status) for m in labeler.mentions(text)}


@pytest.mark.parametrize(
    "text,denied",
    [
        ("Heart size is normal.", {"Cardiomegaly"}),
        ("Heart size is within normal limits.", {"Cardiomegaly"}),
        ("The heart is of normal size.", {"Cardiomegaly"}),
        ("Cardiac size is normal.", {"Cardiomegaly"}),
        ("Normal heart size.", {"Cardiomegaly"}),
        ("Normal-sized heart.", {"Cardiomegaly"}),
        ("Heart contour and size are normal.", {"Cardiomegaly"}),
        ("Mediastinal main vascular structures, heart contour, size are normal.", {"Cardiomegaly"}),
        ("Heart contour is natural.", {"Cardiomegaly"}),  # translated CT-RATE wording
        ("Heart and pericardium are normal.", {"Cardiomegaly", "Pericardial effusion"}),
        ("Pleural spaces are unremarkable.", {"Pleural effusion"}),
        ("No pleural or pericardial effusion.", {"Pleural effusion", "Pericardial effusion"}),
        ("Bronchial walls are of normal thickness.", {"Peribronchial thickening"}),
        ("The bronchi are normal in calibre.", {"Bronchiectasis"}),
        ("Mediastinal lymph nodes are not enlarged.", {"Lymphadenopathy"}),
        ("Lymph nodes of normal size in the mediastinum.", {"Lymphadenopathy"}),
    ],
)
def test_normal_statement_denies_the_finding_of_its_site(labeler, text, denied):
    negated = {c for c, s in _statuses(labeler, text) if s == NEGATED}
    assert denied <= negated
    assert not {k for k, v in labeler(text).items() if v == 1}


@pytest.mark.parametrize(
    "text,positive,not_denied",
    [
        # the aspect says nothing about the finding: calibre is not calcification
        ("Thoracic aorta is normal in caliber with mild atherosclerotic calcification.",
         {"Arterial wall calcification"}, {"Arterial wall calcification"}),
        ("Bronchial walls are of normal thickness.", set(), {"Bronchiectasis"}),
        # the normal statement is about another site
        ("The heart is enlarged, the pericardium is normal.", {"Cardiomegaly"}, {"Cardiomegaly"}),
        ("Heart size increased, pleural spaces are normal.", {"Cardiomegaly"}, {"Cardiomegaly"}),
        ("Heart size increased, lungs are normal.", {"Cardiomegaly"}, {"Cardiomegaly"}),
        ("The heart is normal in size with a small pericardial effusion.", {"Pericardial effusion"},
         {"Pericardial effusion"}),
        # "not normal" is no normal statement
        ("Heart size is not normal.", set(), {"Cardiomegaly"}),
        # a lymph node reported with a size counts (CT-RATE), whatever adjective follows
        ("Mediastinal lymph nodes measuring 8 mm, not reaching pathological size.", {"Lymphadenopathy"},
         {"Lymphadenopathy"}),
        ("Millimetric lymph nodes of normal appearance in the mediastinum.", {"Lymphadenopathy"}, {"Lymphadenopathy"}),
    ],
)
def test_normal_statement_stays_with_its_site_and_aspect(labeler, text, positive, not_denied):
    assert {k for k, v in labeler(text).items() if v == 1} == positive
    negated = {c for c, s in _statuses(labeler, text) if s == NEGATED}
    assert not negated & not_denied


def test_positive_mention_still_wins_in_the_labels(labeler):
    out = labeler("Heart size is normal. Cardiomegaly.")
    assert out["Cardiomegaly"] == 1
    assert ("Cardiomegaly", POSITIVE) in _statuses(labeler, "Cardiomegaly.")
