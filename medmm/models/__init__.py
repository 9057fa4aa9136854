"""Multimodal network: MONAI 3D image encoder, report-generation LM, text encoder, fusion head.

Public API::

    from medmm.models import MedMM, ModelConfig, save_checkpoint, load_checkpoint, fusion_text
"""

from __future__ import annotations

from medmm.models.checkpoint import load_checkpoint, save_checkpoint
from medmm.models.config import (
    FusionConfig,
    ImageEncoderConfig,
    ModelConfig,
    ReportGeneratorConfig,
    TextEncoderConfig,
)
from medmm.models.fusion import FusionHead, fusion_text
from medmm.models.image_encoder import ImageEncoder
from medmm.models.medmm import MedMM
from medmm.models.report_generator import ReportGenerator
from medmm.models.text_encoder import TextEncoder

__all__ = [
    "FusionConfig",
    "FusionHead",
    "ImageEncoder",
    "ImageEncoderConfig",
    "MedMM",
    "ModelConfig",
    "ReportGenerator",
    "ReportGeneratorConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "fusion_text",
    "load_checkpoint",
    "save_checkpoint",
]
