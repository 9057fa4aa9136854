"""The chest-CT finding vocabulary medmm targets by default: the 18 CT-RATE labels.

Names are spelled exactly as in the CT-RATE release so that its label CSVs load unchanged.
The ontology (``ontologies/chest_ct.ttl``) is the authority on their meaning and relations;
this tuple only fixes the default order of model outputs.
"""

CT_RATE_FINDINGS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)
