"""MedMM: the composed multimodal network (image encoder, report generator, text encoder, fusion).

Data path at inference: image → :meth:`MedMM.feature_map` (sliding-window stitchable) →
:meth:`MedMM.embed` → pooled embedding + tokens; tokens → :meth:`MedMM.generate_reports`;
``fusion_text(report, indication)`` → :meth:`MedMM.encode_text`; pooled + text →
:meth:`MedMM.classify` → logits. Training combines :meth:`MedMM.report_loss` (teacher forcing)
with a classification loss on :meth:`MedMM.classify` (owned by ``medmm.training``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from medmm.errors import MedmmConfigError
from medmm.models.config import ModelConfig
from medmm.models.fusion import FusionHead
from medmm.models.image_encoder import ImageEncoder
from medmm.models.pretrained import load_tokenizer
from medmm.models.report_generator import ReportGenerator
from medmm.models.text_encoder import TextEncoder


class MedMM(nn.Module):
    """Multimodal chest-CT model over a fixed list of findings.

    Args:
        config: the network schema (``ModelConfig``).
        labels: finding names, in the order of the logits.

    Raises:
        MedmmConfigError: a pretrained model named in ``config`` cannot be loaded offline, or
            ``labels`` is empty / has duplicates.

    Example:
        >>> model = MedMM(ModelConfig(), CT_RATE_FINDINGS)
        >>> pooled, tokens = model.embed(model.feature_map(torch.zeros(2, 1, 48, 48, 48)))
        >>> reports = model.generate_reports(tokens)
        >>> logits = model.classify(pooled, model.encode_text(reports))
    """

    def __init__(self, config: ModelConfig, labels: Sequence[str]):
        super().__init__()
        labels = [str(label) for label in labels]
        if not labels or len(set(labels)) != len(labels):
            raise MedmmConfigError("labels", f"need a non-empty list of distinct finding names, got {labels}")
        self.config = config
        self.labels = labels
        self.image_encoder = ImageEncoder(config.image_encoder)
        self.text_encoder = TextEncoder(config.text_encoder) if config.fusion.use_text else None
        shared_tokenizer = None
        if config.report_generator.name_or_path is None:
            shared_tokenizer = (
                self.text_encoder.tokenizer
                if self.text_encoder is not None
                else load_tokenizer(config.text_encoder.name_or_path)
            )
        self.report_generator = ReportGenerator(config.report_generator, self.image_encoder.embed_dim, shared_tokenizer,
                                                n_findings=len(labels), n_image_tokens=config.image_encoder.n_tokens)
        text_dim = self.text_encoder.dim if self.text_encoder is not None else 0
        self.fusion = FusionHead(config.fusion, self.image_encoder.embed_dim, text_dim, len(labels))

    @property
    def uses_text(self) -> bool:
        return self.text_encoder is not None

    def feature_map(self, x: torch.Tensor,
                    histograms: Callable[[tuple[int, ...]], torch.Tensor | None] | None = None) -> torch.Tensor:
        """Fully convolutional image features ``[B, C, x, y, z]`` of ``x [B, 1, X, Y, Z]``
        (``histograms``: precomputed histogram channels, see `ImageEncoder.feature_map`)."""
        return self.image_encoder.feature_map(x, histograms)

    def embed(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled [B, D], tokens [B, N, D])`` of a (possibly stitched) feature map."""
        return self.image_encoder.embed(fmap)

    def report_loss(self, tokens: torch.Tensor, reports: Sequence[str], findings: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced LM loss of the reference ``reports`` given the image ``tokens`` (and, for a
        grounded generator, the training labels ``findings [B, L]``) (scalar)."""
        return self.report_generator.loss(tokens, reports, findings)

    def generate_reports(self, tokens: torch.Tensor, **decode: object) -> list[str]:
        """Decode one report per image; ``decode`` overrides ``max_new_tokens``, ``num_beams``, ...."""
        return self.report_generator.generate(tokens, **decode)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``[B, T]`` for the fusion head (build texts with ``fusion_text``).

        Raises:
            MedmmConfigError: the model is image-only (``fusion.use_text: false``).
        """
        if self.text_encoder is None:
            raise MedmmConfigError("network.fusion.use_text", "this model is image-only; it has no text encoder")
        return self.text_encoder(texts)

    def classify(
        self, pooled: torch.Tensor, text_emb: torch.Tensor | None = None, image_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[B, L]`` (one per label, in ``self.labels`` order)."""
        return self.fusion(pooled, text_emb, image_tokens)

    def forward(self, image: torch.Tensor, texts: Sequence[str] | None = None) -> torch.Tensor:
        """Image (+ fusion texts, one per image) → logits ``[B, L]``; ``texts`` is ignored when image-only."""
        pooled, tokens = self.embed(self.feature_map(image))
        if self.text_encoder is None:
            return self.classify(pooled)
        if texts is None or len(texts) != image.shape[0]:
            got = None if texts is None else len(texts)
            raise ValueError(f"need one fusion text per image ({image.shape[0]}), got {got}")
        return self.classify(pooled, self.encode_text(texts), tokens)
