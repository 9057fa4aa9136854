"""Multimodal network: MONAI 3D image encoder, report-generation LM, text encoder, fusion head.

Public API::

    from medmm.models import MedMM, ModelConfig, RunMeta, save_checkpoint, load_checkpoint, fusion_texts
"""

from __future__ import annotations

from medmm.config.network import ModelConfig, NetworkDerived
from medmm.models.checkpoint import load_checkpoint, save_checkpoint
from medmm.models.derived import derive_network
from medmm.models.fusion import FusionHead, fusion_text, fusion_texts
from medmm.models.image_encoder import ImageEncoder
from medmm.models.medmm import MedMM, StepOutput
from medmm.models.run_meta import RunMeta, read_run_meta
from medmm.models.report_generator import ReportGenerator
from medmm.models.text_encoder import TextEncoder

__all__ = [
    "FusionHead",
    "ImageEncoder",
    "MedMM",
    "ModelConfig",
    "NetworkDerived",
    "RunMeta",
    "StepOutput",
    "ReportGenerator",
    "TextEncoder",
    "derive_network",
    "fusion_text",
    "fusion_texts",
    "load_checkpoint",
    "read_run_meta",
    "save_checkpoint",
]
