"""Synthetic chest-CT phantoms with findings, reports and manifests (the embedded default data set)."""

from medmm.data.synth.findings import RENDERED_FINDINGS, SCALE_CAVEATS, UNRENDERED_FINDINGS
from medmm.data.synth.generator import ensure_synthetic, render_case, synthesize, write_case_dicom
from medmm.data.synth.labels import IMPLICATIONS, PREVALENCE

__all__ = ["write_case_dicom", "RENDERED_FINDINGS", "UNRENDERED_FINDINGS", "SCALE_CAVEATS", "IMPLICATIONS", "PREVALENCE",
           "ensure_synthetic", "render_case", "synthesize"]
