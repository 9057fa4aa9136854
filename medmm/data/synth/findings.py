"""The 18 CT-RATE findings in the phantom: which are rendered, how, and in which order.

`sample_specs` draws a JSON-able spec per positive finding (the report is written from it),
`anatomy_mods` turns the anatomy-level ones (heart size, pericardial fluid, airway calibre and
walls, diaphragm height) into `AnatomyMods`, and `draw_findings` paints the rest in a fixed order
(parenchyma before pleura, devices last) so overlapping findings compose plausibly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medmm.data.synth import lung_findings as lf
from medmm.data.synth import mediastinal_findings as mf
from medmm.data.synth.anatomy import AnatomyMods, Patient
from medmm.data.synth.context import Canvas
from medmm.labels import CT_RATE_FINDINGS

RENDERED_FINDINGS: tuple[str, ...] = CT_RATE_FINDINGS
"""All 18 CT-RATE findings have a visible signature in the phantom at 64³ (see docs/synthetic_data.md)."""

UNRENDERED_FINDINGS: dict[str, str] = {}
"""Finding -> why it is not drawn (it still appears in labels and reports). Empty: all are drawn."""

SCALE_CAVEATS: dict[str, str] = {
    "Interlobular septal thickening": "septa are ~1-2 mm; drawn as ~4 mm reticular lines so they survive 5 mm voxels",
    "Peribronchial thickening": "bronchial walls drawn 3-4 mm thicker than normal so the cuffs span a voxel",
    "Bronchiectasis": "only segmental/subsegmental airways are dilated (3-4x), visible as dark tubes/rings",
    "Coronary artery wall calcification": "plaques drawn >= 1.5 voxels across; no coronary lumen is drawn",
    "Arterial wall calcification": "plaques drawn >= 1.5 voxels across so they are not lost between voxels",
    "Mosaic attenuation pattern": "geographic +/-100-140 HU lobular patches; no expiratory scan to show air trapping",
    "Lung nodule": "drawn >= 2 voxels across (13 mm at 64^3): a 1-voxel nodule is a vessel cross-section",
    "Emphysema": "destroyed-lung holes drawn >= 1 voxel in radius and at -1000 HU",
    "Pulmonary fibrotic sequela": "fibrotic bands drawn >= ~1 voxel thick",
}


def _sample_cardiomegaly(rng, patient) -> dict:
    scale = float(rng.uniform(1.27, 1.45))
    return dict(scale=scale, degree="mild" if scale < 1.35 else "moderate")


def _sample_pericardial(rng, patient) -> dict:
    mm = float(rng.uniform(8, 18))
    return dict(thickness_mm=mm, amount="small" if mm < 12 else "moderate")


def _sample_bronchiectasis(rng, patient) -> dict:
    return dict(lobes=lf._lobes(rng, 3, lf.LOWER_WEIGHTED), dilation=float(rng.uniform(3.0, 4.0)),
                kind=str(rng.choice(["cylindrical", "cylindrical", "varicose"])))


def _sample_peribronchial(rng, patient) -> dict:
    return dict(extra_wall_mm=float(rng.uniform(2.8, 4.0)), distribution=str(rng.choice(["bilateral", "diffuse"])))


def _noop(canvas: Canvas, spec: dict, rng) -> None:
    """Anatomy-level findings are drawn with the anatomy (see `anatomy_mods`)."""


# name -> (sampler, drawer, stage); stage order: anatomy, lung, mediastinum, then "dense" after the
# scanner blur: calcium and metal bloom on real CT instead of being smoothed away, so they are
# painted onto the blurred, noisy image
FINDINGS: dict[str, tuple[Callable, Callable, str]] = {
    "Cardiomegaly": (_sample_cardiomegaly, _noop, "anatomy"),
    "Pericardial effusion": (_sample_pericardial, _noop, "anatomy"),
    "Bronchiectasis": (_sample_bronchiectasis, _noop, "anatomy"),
    "Peribronchial thickening": (_sample_peribronchial, _noop, "anatomy"),
    "Mosaic attenuation pattern": (lf.sample_mosaic, lf.draw_mosaic, "lung"),
    "Emphysema": (lf.sample_emphysema, lf.draw_emphysema, "lung"),
    "Lung opacity": (lf.sample_opacity, lf.draw_opacity, "lung"),
    "Consolidation": (lf.sample_consolidation, lf.draw_consolidation, "lung"),
    "Lung nodule": (lf.sample_nodule, lf.draw_nodule, "lung"),
    "Interlobular septal thickening": (lf.sample_septal, lf.draw_septal, "lung"),
    "Pulmonary fibrotic sequela": (lf.sample_fibrosis, lf.draw_fibrosis, "lung"),
    "Atelectasis": (lf.sample_atelectasis, lf.draw_atelectasis, "lung"),
    "Pleural effusion": (lf.sample_pleural_effusion, lf.draw_pleural_effusion, "lung"),
    "Lymphadenopathy": (mf.sample_lymphadenopathy, mf.draw_nodes, "mediastinum"),
    "Hiatal hernia": (mf.sample_hiatal_hernia, mf.draw_hiatal_hernia, "mediastinum"),
    "Arterial wall calcification": (mf.sample_arterial_calcification, mf.draw_arterial_calcification, "dense"),
    "Coronary artery wall calcification": (mf.sample_coronary_calcification, mf.draw_coronary_calcification, "dense"),
    "Medical material": (mf.sample_medical_material, mf.draw_medical_material, "dense"),
}
if set(FINDINGS) != set(CT_RATE_FINDINGS):  # pragma: no cover - import-time consistency check
    raise RuntimeError("synthetic findings table out of sync with CT_RATE_FINDINGS")


def finding_rng(entropy: int, name: str) -> np.random.Generator:
    """A generator per (patient, finding): a follow-up scan redraws the same nodule in the same place."""
    return np.random.default_rng([entropy, CT_RATE_FINDINGS.index(name)])


def sample_specs(labels: dict[str, int], patient: Patient, entropy: int) -> dict[str, dict]:
    """Spec per positive label (in `FINDINGS` order), plus the normal-size lymph nodes."""
    specs = {name: FINDINGS[name][0](finding_rng(entropy, name), patient)
             for name in FINDINGS if labels.get(name, 0) == 1}
    specs["_normal_nodes"] = mf.sample_normal_nodes(np.random.default_rng([entropy, 99]))
    return specs


def anatomy_mods(specs: dict[str, dict]) -> AnatomyMods:
    """Anatomy-level changes made by the positive findings."""
    mods = AnatomyMods()
    if "Cardiomegaly" in specs:
        mods.heart_scale = specs["Cardiomegaly"]["scale"]
    if "Pericardial effusion" in specs:
        mods.pericardial_fluid_mm = specs["Pericardial effusion"]["thickness_mm"]
    if "Bronchiectasis" in specs:
        s = specs["Bronchiectasis"]
        mods.airway_dilation = {lobe: s["dilation"] for lobe in s["lobes"]}
    if "Peribronchial thickening" in specs:
        mods.airway_wall_mm = specs["Peribronchial thickening"]["extra_wall_mm"]
    if "Atelectasis" in specs and specs["Atelectasis"]["elevation"] > 0:
        s = specs["Atelectasis"]
        sides = ["right", "left"] if s["side"] == "bilateral" else [s["side"]]
        mods.dome_elevation = {side: s["elevation"] for side in sides}
    return mods


def draw_findings(canvas: Canvas, specs: dict[str, dict], stage: str, entropy: int) -> None:
    """Paint the positive findings of one stage, in the fixed `FINDINGS` order."""
    if stage == "mediastinum":
        mf.draw_nodes(canvas, specs["_normal_nodes"], None, name=None)
    for name, (_, draw, st) in FINDINGS.items():
        if st == stage and name in specs:
            draw(canvas, specs[name], np.random.default_rng([entropy, 1000 + CT_RATE_FINDINGS.index(name)]))
