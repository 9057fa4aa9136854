"""Free-text reports and indications for synthetic scans, written from the same specs the image
was drawn from (so "a 9 mm nodule in the right upper lobe" is where and as big as the report says).

Positives get varied synonyms; some absent findings are negated the way radiologists do
("No pleural effusion.", "without lymphadenopathy"). Every positive sentence matches the finding's
pattern in `POSITIVE_PATTERNS` and contains no negation cue; every negative sentence does contain
one — the tests and the label checks rely on that.
"""

from __future__ import annotations

import re

import numpy as np

NEGATION_CUE = re.compile(r"\b(no|not|without|normal|negative)\b", re.IGNORECASE)

# finding -> regex a positive mention of it matches (in a sentence without a negation cue)
POSITIVE_PATTERNS: dict[str, re.Pattern] = {k: re.compile(v, re.IGNORECASE) for k, v in {
    "Medical material": r"pacemaker|\bport\b|sternotomy|catheter",
    "Arterial wall calcification": r"aort.*(calcif|plaque)|(calcif|plaque).*aort",
    "Cardiomegaly": r"cardiomegaly|heart is enlarged|enlarged heart|cardiac silhouette is \w+ enlarged|enlarged cardiac",
    "Pericardial effusion": r"pericardial (effusion|fluid)",
    "Coronary artery wall calcification": r"coronar",
    "Hiatal hernia": r"hiatal hernia|hiatus",
    "Lymphadenopathy": r"lymph",
    "Emphysema": r"emphysem",
    "Atelectasis": r"atelecta",
    "Lung nodule": r"nodul",
    "Lung opacity": r"ground.glass|opacit",
    "Pulmonary fibrotic sequela": r"fibrotic|fibrosis|parenchymal bands",
    "Pleural effusion": r"pleural (effusion|fluid)",
    "Mosaic attenuation pattern": r"mosaic",
    "Peribronchial thickening": r"peribronchial|bronchial wall thickening",
    "Consolidation": r"consolidat",
    "Bronchiectasis": r"bronchiect|dilated bronchi",
    "Interlobular septal thickening": r"interlobular sept",
}.items()}

NEGATIVES: dict[str, list[str]] = {
    "Medical material": ["No foreign body or medical device is seen."],
    "Arterial wall calcification": ["The thoracic aorta is normal in caliber without calcification.", "No aortic wall calcification."],
    "Cardiomegaly": ["Heart size is normal.", "No cardiomegaly.", "Heart size is within normal limits."],
    "Pericardial effusion": ["No pericardial effusion.", "There is no pericardial effusion or thickening."],
    "Coronary artery wall calcification": ["No coronary artery calcification.", "Coronary arteries without calcification."],
    "Hiatal hernia": ["No hiatal hernia."],
    "Lymphadenopathy": ["No mediastinal or hilar lymphadenopathy.", "No pathologically enlarged lymph nodes.",
                        "Mediastinum without lymphadenopathy."],
    "Emphysema": ["No emphysema.", "There is no emphysema."],
    "Atelectasis": ["No atelectasis."],
    "Lung nodule": ["No pulmonary nodule.", "No suspicious nodules are seen."],
    "Lung opacity": ["No ground-glass opacity.", "No focal opacity."],
    "Pulmonary fibrotic sequela": ["No fibrotic changes."],
    "Pleural effusion": ["No pleural effusion.", "There is no pleural effusion.", "No pleural effusion or pneumothorax."],
    "Mosaic attenuation pattern": ["No mosaic attenuation."],
    "Peribronchial thickening": ["No bronchial wall thickening."],
    "Consolidation": ["No consolidation.", "No evidence of consolidation.", "No pneumonic infiltrate or consolidation."],
    "Bronchiectasis": ["No bronchiectasis."],
    "Interlobular septal thickening": ["No interlobular septal thickening."],
}
NEGATE_PROB = {"Pleural effusion": 0.7, "Cardiomegaly": 0.5, "Lymphadenopathy": 0.5, "Consolidation": 0.45,
               "Pericardial effusion": 0.45, "Lung nodule": 0.35, "Medical material": 0.05}

FILLER = ["Trachea and both main bronchi are patent.", "Thyroid gland appears unremarkable.",
          "Visualized upper abdominal organs are unremarkable.", "Osseous structures are intact.",
          "The esophagus has a regular course."]

INDICATIONS = {
    "infection": ["Cough and fever.", "Fever, suspected pneumonia.", "Productive cough for two weeks."],
    "cardiac": ["Dyspnea.", "Shortness of breath, known heart failure.", "Dyspnea on exertion."],
    "nodule": ["Follow-up of nodule.", "Follow-up of a pulmonary nodule."],
    "copd": ["Chronic obstructive pulmonary disease, dyspnea.", "Smoker, chronic cough."],
    "generic": ["Chest pain.", "Routine check-up.", "Weight loss.", "Cough.", "Dyspnea.", "Staging examination."],
}


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sides(side: str) -> str:
    return "both" if side == "bilateral" else side


def _positive(name: str, spec: dict, rng: np.random.Generator) -> tuple[str, str]:
    """(FINDINGS sentence, IMPRESSION phrase) for a positive finding."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    s = spec
    if name == "Medical material":
        if s["kind"] == "pacemaker":
            return pick([f"A cardiac pacemaker is seen in the {s['side']} chest wall with its lead in the right ventricle.",
                         "Pacemaker generator and lead are in place."]), "Pacemaker in situ."
        if s["kind"] == "port catheter":
            return pick([f"A {s['side']}-sided port catheter is seen with its tip in the superior vena cava.",
                         f"Venous port device in the {s['side']} anterior chest wall."]), "Port catheter in place."
        return pick(["Median sternotomy wires are noted.", "Postoperative sternotomy sutures are seen."]), "Status post sternotomy."
    if name == "Arterial wall calcification":
        seg = "arch and descending" if len(s["segments"]) == 2 else s["segments"][0]
        return pick([f"Atherosclerotic calcifications are present in the {seg} aorta.",
                     "Calcified atherosclerotic plaques in the wall of the thoracic aorta.",
                     "Aortic wall calcifications are seen."]), "Calcified aortic atherosclerosis."
    if name == "Cardiomegaly":
        return pick(["The heart is enlarged.", "Cardiomegaly is present.", f"The cardiac silhouette is {s['degree']}ly enlarged."]), "Cardiomegaly."
    if name == "Pericardial effusion":
        mm = int(round(s["thickness_mm"]))
        return pick([f"A {s['amount']} pericardial effusion measuring {mm} mm.", f"Pericardial fluid up to {mm} mm thick.",
                     f"There is a {s['amount']} pericardial effusion."]), "Pericardial effusion."
    if name == "Coronary artery wall calcification":
        return pick([f"Coronary artery calcifications in the {_list(s['vessels'])}.",
                     f"Calcified coronary plaques are noted along the {_list(s['vessels'])}.",
                     "Calcific atherosclerosis of the coronary arteries."]), "Coronary artery calcifications."
    if name == "Hiatal hernia":
        return pick([f"A {s['size']} hiatal hernia is present.", "A sliding hiatal hernia is seen behind the heart.",
                     "Herniation of the stomach through the esophageal hiatus."]), "Hiatal hernia."
    if name == "Lymphadenopathy":
        big = max(s["short_axis_mm"])
        return pick([f"Enlarged lymph nodes at the {_list(s['stations'])} stations, the largest with a short axis of {big} mm.",
                     f"Mediastinal lymphadenopathy ({_list(s['stations'])}).",
                     f"Pathologically enlarged {s['stations'][0]} lymph node measuring {big} mm."]), "Mediastinal lymphadenopathy."
    if name == "Emphysema":
        return pick([f"{s['severity'].capitalize()} {s['kind']} emphysema.",
                     f"Emphysematous changes of {s['kind']} type are present.",
                     f"Low-attenuation areas consistent with {s['kind']} emphysema."]), f"{s['kind'].capitalize()} emphysema."
    if name == "Lung nodule":
        nods = sorted(s["nodules"], key=lambda n: -n["size_mm"])
        if len(nods) == 1:
            n = nods[0]
            return pick([f"A {n['size_mm']} mm solid nodule is seen in the {n['lobe']}.",
                         f"There is a {n['size_mm']} mm pulmonary nodule in the {n['lobe']}.",
                         f"{n['size_mm']} mm nodular lesion in the {n['lobe']}."]), "Pulmonary nodule."
        return (f"Multiple pulmonary nodules, the largest measuring {nods[0]['size_mm']} mm in the {nods[0]['lobe']}.",
                "Multiple pulmonary nodules.")
    if name == "Lung opacity":
        where = _list(s["lobes"])
        return pick([f"Patchy ground-glass opacities in the {where}.", f"Areas of ground-glass density in the {where}.",
                     f"Hazy increased attenuation (ground-glass opacity) in the {where}."]), "Ground-glass opacities."
    if name == "Consolidation":
        where = _list(s["lobes"])
        return pick([f"Consolidation with air bronchograms in the {where}.",
                     f"Airspace consolidation in the {where} with surrounding ground-glass opacity.",
                     f"Dense consolidative changes in the {where}."]), f"Consolidation in the {where}, likely pneumonia."
    if name == "Atelectasis":
        side = _sides(s["side"])
        base = "both lung bases" if side == "both" else f"the {side} lung base"
        if s["kind"] == "linear":
            return pick([f"Linear plate-like atelectasis at {base}.", f"Band-like subsegmental atelectasis at {base}."]), "Linear atelectasis."
        return pick([f"Atelectasis in the posterobasal segment at {base}.", f"Subsegmental atelectasis at {base}.",
                     f"Passive atelectatic changes in the dependent part of {base}."]), "Basal atelectasis."
    if name == "Pulmonary fibrotic sequela":
        where = _list(s["lobes"])
        return pick([f"Fibrotic sequelae with parenchymal bands in the {where}.", f"Linear fibrotic densities in the {where}.",
                     f"Sequelae fibrotic changes in the {where}."]), "Fibrotic sequelae."
    if name == "Pleural effusion":
        if s["side"] == "bilateral":
            return pick([f"Bilateral pleural effusions, {s['amount']}.", "Pleural effusion on both sides."]), "Bilateral pleural effusions."
        return pick([f"A {s['amount']} {s['side']} pleural effusion.", f"Pleural effusion on the {s['side']} side, {s['amount']} in amount.",
                     f"There is a {s['amount']} layering pleural fluid collection on the {s['side']}."]), f"{s['side'].capitalize()} pleural effusion."
    if name == "Mosaic attenuation pattern":
        return pick(["Mosaic attenuation pattern in both lungs.",
                     "Heterogeneous lung attenuation with a mosaic pattern, suggesting small airway disease.",
                     "Mosaic perfusion pattern is seen."]), "Mosaic attenuation."
    if name == "Peribronchial thickening":
        return pick(["Peribronchial thickening in both lungs.", "Bronchial wall thickening is present.",
                     "Diffuse peribronchial cuffing."]), "Peribronchial thickening."
    if name == "Bronchiectasis":
        where = _list(s["lobes"])
        return pick([f"{s['kind'].capitalize()} bronchiectasis in the {where}.", f"Dilated bronchi (bronchiectasis) in the {where}.",
                     f"Bronchiectatic changes in the {where}."]), "Bronchiectasis."
    if name == "Interlobular septal thickening":
        zone = "lower" if s["zone"] == "lower" else "peripheral"
        return pick([f"Interlobular septal thickening in the {zone} lung zones.", "Smooth thickening of the interlobular septa.",
                     f"Thickened interlobular septa in the {zone} lungs."]), "Interlobular septal thickening."
    raise KeyError(name)


SECTIONS = (
    ("Cardiomegaly", "Pericardial effusion", "Arterial wall calcification", "Coronary artery wall calcification",
     "Lymphadenopathy", "Hiatal hernia", "Medical material"),
    ("Emphysema", "Lung nodule", "Lung opacity", "Consolidation", "Atelectasis", "Pulmonary fibrotic sequela",
     "Mosaic attenuation pattern", "Interlobular septal thickening", "Peribronchial thickening", "Bronchiectasis"),
    ("Pleural effusion",),
)


def write_report(labels: dict[str, int], specs: dict[str, dict], rng: np.random.Generator) -> str:
    """FINDINGS + IMPRESSION text for one scan."""
    findings, impression = [], []
    fillers = list(rng.permutation(FILLER))
    for section in SECTIONS:
        for name in section:
            if labels.get(name, 0) == 1:
                sentence, short = _positive(name, specs[name], rng)
                findings.append(sentence)
                impression.append(short)
            elif rng.random() < NEGATE_PROB.get(name, 0.25):
                options = NEGATIVES[name]
                findings.append(options[int(rng.integers(len(options)))])
        if rng.random() < 0.5:
            findings.append(str(fillers.pop()))
    if labels.get("Consolidation", 0) == 1 and "Lung opacity" in specs and len(impression) > 1:
        impression = [s for s in impression if s != "Ground-glass opacities."] or impression
    if not impression:
        impression = [["No acute cardiopulmonary process.", "Unremarkable chest CT."][int(rng.integers(2))]]
    numbered = " ".join(f"{k + 1}. {s}" for k, s in enumerate(impression)) if len(impression) > 1 else impression[0]
    return f"FINDINGS: {' '.join(findings)}\n\nIMPRESSION: {numbered}"


def write_indication(labels: dict[str, int], follow_up: bool, rng: np.random.Generator) -> str | None:
    """Clinical indication, weakly correlated with the findings (None for about a fifth of scans)."""
    if rng.random() < 0.2:
        return None
    pool = "generic"
    if rng.random() < 0.55:
        if follow_up and labels.get("Lung nodule"):
            pool = "nodule"
        elif labels.get("Consolidation") or (labels.get("Lung opacity") and rng.random() < 0.5):
            pool = "infection"
        elif labels.get("Cardiomegaly") or labels.get("Pleural effusion") or labels.get("Pericardial effusion"):
            pool = "cardiac"
        elif labels.get("Emphysema"):
            pool = "copd"
    options = INDICATIONS[pool]
    return options[int(rng.integers(len(options)))]
