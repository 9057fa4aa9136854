"""Which findings a synthetic patient has: CT-RATE-like prevalences, age and disease correlations,
and the ontology's implications.

Each label is a logistic function of age and four latent "disease processes" (infection, heart
failure, airway disease, smoking), so findings co-occur as they do clinically (pneumonia brings
consolidation + opacity + effusion; heart failure brings cardiomegaly + effusions + septal lines).
Intercepts are calibrated once (deterministically) so the marginal prevalences match `PREVALENCE`
*after* the implications are applied.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from medmm.labels import CT_RATE_FINDINGS

# Approximate label frequencies of the CT-RATE training set (labels from its report classifier).
PREVALENCE: dict[str, float] = {
    "Medical material": 0.11,
    "Arterial wall calcification": 0.29,
    "Cardiomegaly": 0.10,
    "Pericardial effusion": 0.07,
    "Coronary artery wall calcification": 0.25,
    "Hiatal hernia": 0.14,
    "Lymphadenopathy": 0.26,
    "Emphysema": 0.20,
    "Atelectasis": 0.26,
    "Lung nodule": 0.45,
    "Lung opacity": 0.40,
    "Pulmonary fibrotic sequela": 0.27,
    "Pleural effusion": 0.12,
    "Mosaic attenuation pattern": 0.08,
    "Peribronchial thickening": 0.11,
    "Consolidation": 0.17,
    "Bronchiectasis": 0.10,
    "Interlobular septal thickening": 0.08,
}

# child => parent, as asserted in ontologies/chest_ct.ttl (checked against the ontology in tests)
IMPLICATIONS: tuple[tuple[str, str], ...] = (
    ("Coronary artery wall calcification", "Arterial wall calcification"),
    ("Consolidation", "Lung opacity"),
)

AGE_EFFECT: dict[str, float] = {  # log-odds per standard deviation (14 y) of age
    "Medical material": 0.6, "Arterial wall calcification": 1.4, "Cardiomegaly": 0.7,
    "Pericardial effusion": 0.3, "Coronary artery wall calcification": 1.5, "Hiatal hernia": 0.7,
    "Lymphadenopathy": 0.2, "Emphysema": 0.6, "Atelectasis": 0.4, "Lung nodule": 0.3,
    "Lung opacity": 0.2, "Pulmonary fibrotic sequela": 0.5, "Pleural effusion": 0.4,
    "Mosaic attenuation pattern": 0.0, "Peribronchial thickening": 0.1, "Consolidation": 0.2,
    "Bronchiectasis": 0.3, "Interlobular septal thickening": 0.4,
}

FACTORS: tuple[str, ...] = ("infection", "heart failure", "airway disease", "smoking")
LOADINGS: dict[str, dict[str, float]] = {
    "infection": {"Consolidation": 1.6, "Lung opacity": 1.2, "Pleural effusion": 0.6, "Atelectasis": 0.7,
                  "Lymphadenopathy": 0.6, "Peribronchial thickening": 0.5},
    "heart failure": {"Cardiomegaly": 1.4, "Pleural effusion": 1.1, "Pericardial effusion": 1.0,
                      "Interlobular septal thickening": 1.2, "Lung opacity": 0.4, "Medical material": 0.6},
    "airway disease": {"Bronchiectasis": 1.4, "Peribronchial thickening": 1.1, "Mosaic attenuation pattern": 1.2,
                       "Emphysema": 0.3, "Pulmonary fibrotic sequela": 0.3},
    "smoking": {"Emphysema": 1.3, "Lung nodule": 0.4, "Arterial wall calcification": 0.5,
                "Coronary artery wall calcification": 0.6, "Pulmonary fibrotic sequela": 0.4},
}
AGE_MEAN, AGE_SD = 60.0, 14.0
# acute findings may change between a scan and its follow-up; the others persist
ACUTE: frozenset[str] = frozenset({"Consolidation", "Lung opacity", "Pleural effusion", "Pericardial effusion",
                                   "Atelectasis", "Lymphadenopathy", "Mosaic attenuation pattern",
                                   "Peribronchial thickening", "Interlobular septal thickening"})


def close_implications(labels: dict[str, int], implications=IMPLICATIONS) -> dict[str, int]:
    """Copy of ``labels`` with every implied parent set to 1 (transitively)."""
    out = dict(labels)
    changed = True
    while changed:
        changed = False
        for child, parent in implications:
            if out.get(child, 0) == 1 and out.get(parent, 0) != 1:
                out[parent] = 1
                changed = True
    return out


def _loading_matrix() -> np.ndarray:
    m = np.zeros((len(FACTORS), len(CT_RATE_FINDINGS)))
    for f, factor in enumerate(FACTORS):
        for name, value in LOADINGS[factor].items():
            m[f, CT_RATE_FINDINGS.index(name)] = value
    return m


def _order() -> list[str]:
    """Labels ordered so that every label comes after the labels that imply it."""
    order: list[str] = []
    pending = list(CT_RATE_FINDINGS)
    while pending:
        for name in pending:
            if all(child in order for child, parent in IMPLICATIONS if parent == name):
                order.append(name)
                pending.remove(name)
                break
    return order


@lru_cache(maxsize=1)
def intercepts() -> np.ndarray:
    """Per-label logit intercepts so that marginal prevalences (after implications) match `PREVALENCE`."""
    rng = np.random.default_rng(20240601)
    n = 20000
    age_z = (np.clip(rng.normal(AGE_MEAN, AGE_SD, n), 20, 92) - AGE_MEAN) / AGE_SD
    z = rng.standard_normal((n, len(FACTORS)))
    u = rng.random((n, len(CT_RATE_FINDINGS)))
    linear = z @ _loading_matrix() + age_z[:, None] * np.array([AGE_EFFECT[k] for k in CT_RATE_FINDINGS])
    final = np.zeros((n, len(CT_RATE_FINDINGS)), bool)
    out = np.zeros(len(CT_RATE_FINDINGS))
    for name in _order():
        j = CT_RATE_FINDINGS.index(name)
        implied = np.zeros(n, bool)
        for child, parent in IMPLICATIONS:
            if parent == name:
                implied |= final[:, CT_RATE_FINDINGS.index(child)]
        lo, hi = -12.0, 12.0
        for _ in range(30):
            mid = (lo + hi) / 2
            p = 1 / (1 + np.exp(-(mid + linear[:, j])))
            if (implied | (u[:, j] < p)).mean() < PREVALENCE[name]:
                lo = mid
            else:
                hi = mid
        out[j] = (lo + hi) / 2
        final[:, j] = implied | (u[:, j] < 1 / (1 + np.exp(-(out[j] + linear[:, j]))))
    return out


def sample_age_sex(rng: np.random.Generator) -> tuple[int, str]:
    """Age (20-92 y) and sex of a patient."""
    return int(np.clip(round(rng.normal(AGE_MEAN, AGE_SD)), 20, 92)), str(rng.choice(["F", "M"]))


def sample_labels(rng: np.random.Generator, age: int) -> dict[str, int]:
    """One scan's 18 labels (1/0), consistent with `IMPLICATIONS`."""
    age_z = (age - AGE_MEAN) / AGE_SD
    logits = intercepts() + rng.standard_normal(len(FACTORS)) @ _loading_matrix()
    logits = logits + age_z * np.array([AGE_EFFECT[k] for k in CT_RATE_FINDINGS])
    draws = rng.random(len(CT_RATE_FINDINGS)) < 1 / (1 + np.exp(-logits))
    return close_implications({k: int(v) for k, v in zip(CT_RATE_FINDINGS, draws)})


def follow_up_labels(rng: np.random.Generator, first: dict[str, int], age: int) -> dict[str, int]:
    """Labels of a follow-up scan: chronic findings persist, acute ones may resolve or appear."""
    fresh = sample_labels(rng, age)
    keep = rng.random(len(CT_RATE_FINDINGS))
    out = {}
    for k, name in enumerate(CT_RATE_FINDINGS):
        if name in ACUTE:
            out[name] = first[name] if keep[k] < 0.5 else fresh[name]
        else:
            out[name] = first[name] if keep[k] < 0.95 else max(first[name], fresh[name])
    return close_implications(out)
