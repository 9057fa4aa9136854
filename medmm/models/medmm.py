"""MedMM: the composed multimodal network (image encoder, report generator, text encoder, fusion).

Data path at inference, written once in :meth:`MedMM.predict_step`: image →
:meth:`MedMM.feature_map` (sliding-window stitchable) → :meth:`MedMM.embed` → pooled embedding +
tokens; tokens → :meth:`MedMM.generate_reports`; ``fusion_texts(reports, indications)`` →
:meth:`MedMM.encode_text`; pooled + text → :meth:`MedMM.classify` → logits. Validation, the
predictor, explanations and evaluation all call ``predict_step``. Training combines
:meth:`MedMM.report_loss` (teacher forcing) with a classification loss on :meth:`MedMM.classify`
(owned by ``medmm.training``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from medmm.config.network import ModelConfig, NetworkDerived
from medmm.errors import MedmmConfigError
from medmm.models.fusion import FusionHead, fusion_texts
from medmm.models.image_encoder import ImageEncoder
from medmm.models.pretrained import load_tokenizer
from medmm.models.report_generator import ReportGenerator
from medmm.models.text_encoder import TextEncoder


@dataclass
class StepOutput:
    """What :meth:`MedMM.predict_step` computed for a batch of ``B`` images.

    ``logits [B, L]``; ``reports`` (generated, ``""`` when generation was skipped); ``texts``
    (what the fusion head read); ``feature_map``, ``tokens [B, N, D]`` and ``text_emb [B, T]``
    (None for an image-only model) for explanations. With ``network.hierarchy``:
    ``group_logits [B, G]`` (after the max-constraint, like ``logits``) and ``raw_logits
    [B, L + G]`` (the head's outputs before it); None otherwise.
    """

    logits: torch.Tensor
    reports: list[str]
    texts: list[str]
    feature_map: torch.Tensor
    tokens: torch.Tensor
    text_emb: torch.Tensor | None
    group_logits: torch.Tensor | None = None
    raw_logits: torch.Tensor | None = None


class MedMM(nn.Module):
    """Multimodal chest-CT model over a fixed list of findings.

    Args:
        config: the network schema (``ModelConfig``).
        labels: finding names, in the order of the logits.
        derived: values computed when the model was first built (`medmm.models.derive_network`):
            histogram centres in input units, the decoder vocabulary, the ontology's group outputs.
        label_embeddings: initial knowledge queries ``[L + G, T]`` of a fresh model with
            ``fusion.head: knowledge_queries`` (`medmm.models.query_head`); None when loading.

    Raises:
        MedmmConfigError: a pretrained model named in ``config`` cannot be loaded offline, or
            ``labels`` is empty / has duplicates.

    Example:
        >>> model = MedMM(ModelConfig(), CT_RATE_FINDINGS)
        >>> out = model.predict_step(torch.zeros(2, 1, 48, 48, 48), ["cough", None])
        >>> out.logits.shape, out.reports
    """

    def __init__(self, config: ModelConfig, labels: Sequence[str], derived: NetworkDerived | None = None,
                 label_embeddings: torch.Tensor | None = None):
        super().__init__()
        labels = [str(label) for label in labels]
        if not labels or len(set(labels)) != len(labels):
            raise MedmmConfigError("labels", f"need a non-empty list of distinct finding names, got {labels}")
        self.config = config
        self.labels = labels
        self.derived = derived or NetworkDerived()
        self.image_encoder = ImageEncoder(config.image_encoder)
        self.radiomics = None
        if config.radiomics is not None:
            from medmm.models.radiomics import RadiomicsBranch

            enc = config.image_encoder
            self.radiomics = RadiomicsBranch(config.radiomics, self.derived, enc.embed_dim, enc.token_grid,
                                             enc.in_channels)
        self.text_encoder = TextEncoder(config.text_encoder) if config.fusion.use_text else None
        shared_tokenizer = None
        if config.report_generator.name_or_path is None:
            shared_tokenizer = (
                self.text_encoder.tokenizer
                if self.text_encoder is not None
                else load_tokenizer(config.text_encoder.name_or_path)
            )
        self.report_generator = ReportGenerator(config.report_generator, self.image_encoder.embed_dim, shared_tokenizer,
                                                self.derived.vocab_ids, n_findings=len(labels),
                                                n_image_tokens=config.image_encoder.n_tokens)
        text_dim = self.text_encoder.dim if self.text_encoder is not None else 0
        self.hierarchy = self._hierarchy()
        self.output_names = self.hierarchy.names if self.hierarchy is not None else list(labels)
        if config.fusion.head == "knowledge_queries":
            from medmm.models.query_head import KnowledgeQueryHead

            if self.derived.label_query_dim is None:
                raise MedmmConfigError("network.fusion.head", "knowledge_queries needs the derived label queries "
                                       "(build the model with derive_network(..., ontology=, labels=))")
            self.fusion = KnowledgeQueryHead(config.fusion, self.image_encoder.embed_dim, text_dim,
                                             len(self.output_names), self.derived.label_query_dim, label_embeddings)
        else:
            self.fusion = FusionHead(config.fusion, self.image_encoder.embed_dim, text_dim, len(self.output_names))

    def _hierarchy(self):
        """The `Hierarchy` of ``network.hierarchy`` from the derived groups/edges (None when off)."""
        if self.config.hierarchy is None:
            return None
        from medmm.knowledge.hierarchy import Hierarchy

        groups, edges = self.derived.hierarchy_groups, self.derived.hierarchy_edges
        if groups is None or edges is None:
            raise MedmmConfigError("network.hierarchy", "needs the derived group outputs "
                                   "(build the model with derive_network(..., ontology=, labels=))")
        n = len(self.labels) + len(groups)
        if any(not (0 <= a < n and 0 <= b < n) for a, b in edges):
            raise MedmmConfigError("network_derived.hierarchy_edges", f"indices outside the {n} outputs")
        hierarchy = Hierarchy(tuple(self.labels), tuple(groups), tuple((int(a), int(b)) for a, b in edges))
        # not persistent: rebuilt from the run's metadata, so older run dirs load unchanged
        self.register_buffer("hierarchy_matrix", hierarchy.matrix(), persistent=False)
        return hierarchy

    @property
    def uses_text(self) -> bool:
        return self.text_encoder is not None

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Fully convolutional image features ``[B, C, x, y, z]`` of ``x [B, 1, X, Y, Z]``: the
        encoder's channels, then (with a radiomics branch) its histogram maps on the same grid."""
        fmap = self.image_encoder.feature_map(x)
        if self.radiomics is None:
            return fmap
        return torch.cat([fmap, self.radiomics.maps(x, fmap.shape[2:]).to(fmap.dtype)], dim=1)

    def embed(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled [B, D], tokens [B, N, D])`` of a (possibly stitched) feature map."""
        if self.radiomics is None:
            return self.image_encoder.embed(fmap)
        cnn, maps = torch.split(fmap, [self.image_encoder.channels, self.radiomics.channels], dim=1)
        pooled, tokens = self.image_encoder.embed(cnn)
        extra_pooled, extra_tokens = self.radiomics.embed(maps)
        return pooled + extra_pooled, tokens if extra_tokens is None else tokens + extra_tokens

    def cache_fixed_inputs(self, enabled: bool = True) -> None:
        """Let parameter-free parts (the radiomics maps) reuse their values for inputs seen
        before (training and validation, where the same images recur every epoch)."""
        if self.radiomics is not None:
            self.radiomics.cache_enabled = enabled

    def report_loss(self, tokens: torch.Tensor, reports: Sequence[str], findings: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced LM loss of the reference ``reports`` given the image ``tokens`` (and, for a
        grounded generator, the training labels ``findings [B, L]``) (scalar)."""
        return self.report_generator.loss(tokens, reports, findings)

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
        """Logits ``[B, L]`` (one per label, in ``self.labels`` order; after the max-constraint)."""
        return self.constrain(self.fusion(pooled, text_emb, image_tokens))[:, : len(self.labels)]

    def constrain(self, raw: torch.Tensor) -> torch.Tensor:
        """Head outputs ``[B, L + G]`` → the same after the max-constraint module (identity when
        ``network.hierarchy`` is off): every output is at least as likely as its descendants."""
        if self.hierarchy is None:
            return raw
        from medmm.knowledge.hierarchy import max_constraint

        return max_constraint(raw, self.hierarchy_matrix)

    def predict_step(
        self,
        image: torch.Tensor | None = None,
        indications: Sequence[str | None] | None = None,
        *,
        feature_map: torch.Tensor | None = None,
        use_generated_report: bool = True,
        use_indication: bool = True,
        generate: bool = True,
        text_emb: torch.Tensor | None = None,
    ) -> StepOutput:
        """The one inference-time forward pass: image (or its feature map) → logits, report, text.

        Gradients flow from the logits to ``image`` / ``feature_map`` when enabled (adversarial
        attacks, Grad-CAM); report decoding is discrete and always runs without gradient.

        Args:
            image: preprocessed images ``[B, 1, X, Y, Z]`` (direct pass), or None with
                ``feature_map`` (e.g. a sliding-window stitched one).
            indications: one clinical indication (or None) per image; None = none at all.
            feature_map: precomputed ``[B, C, x, y, z]`` instead of ``image``.
            use_generated_report / use_indication: which parts the fusion head reads (the run's
                ``text`` settings).
            generate: decode reports; False leaves them empty (only when the fusion head does not
                read them, e.g. fast validation).
            text_emb: fixed fusion-text embeddings ``[B, T]`` of an earlier step (explanations):
                no report is generated or encoded.
        """
        if (image is None) == (feature_map is None):
            raise ValueError("give exactly one of image and feature_map")
        fmap = self.feature_map(image) if feature_map is None else feature_map
        pooled, tokens = self.embed(fmap)
        n = int(fmap.shape[0])
        reports, texts = [""] * n, [""] * n
        if text_emb is None:
            grounded = getattr(getattr(self, "report_generator", None), "grounded", False)
            if generate and not grounded:  # a grounded report is written from the decisions (predictor)
                reports = self.generate_reports(tokens)
            elif use_generated_report and self.uses_text:
                raise ValueError("the fusion head reads generated reports; generate=False would feed it empty ones")
            texts = fusion_texts(reports, list(indications or [None] * n), use_generated_report, use_indication)
            text_emb = self.encode_text(texts) if self.uses_text else None
        if getattr(self, "hierarchy", None) is None:  # (stand-in models in tests have no hierarchy)
            logits = self.classify(pooled, text_emb, tokens)
            return StepOutput(logits, list(reports), texts, fmap, tokens, text_emb)
        raw = self.fusion(pooled, text_emb, tokens)
        outputs = self.constrain(raw)
        n_labels = len(self.labels)
        return StepOutput(outputs[:, :n_labels], list(reports), texts, fmap, tokens, text_emb,
                          outputs[:, n_labels:], raw)

    def generate_reports(self, tokens: torch.Tensor, findings_probs: torch.Tensor | None = None,
                         **decode: object) -> list[str]:
        """Decode one report per image from its tokens (never differentiable).

        ``findings_probs`` ``[B, L]``: the finding states (decisions) a grounded generator reads
        (``medmm.models.grounding``); ``decode`` overrides ``max_new_tokens``, ``num_beams``, ....
        """
        with torch.no_grad():
            return [str(r) for r in self.report_generator.generate(tokens.detach(), findings=findings_probs, **decode)]

    def forward(self, image: torch.Tensor, texts: Sequence[str] | None = None) -> torch.Tensor:
        """Image (+ fusion texts, one per image) → logits ``[B, L]``; ``texts`` is ignored when image-only."""
        pooled, tokens = self.embed(self.feature_map(image))
        if self.text_encoder is None:
            return self.classify(pooled, None, tokens)
        if texts is None or len(texts) != image.shape[0]:
            got = None if texts is None else len(texts)
            raise ValueError(f"need one fusion text per image ({image.shape[0]}), got {got}")
        return self.classify(pooled, self.encode_text(texts), tokens)
