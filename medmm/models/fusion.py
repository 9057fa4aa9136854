"""Fusion classifier: image embedding ⊕ text embedding → one logit per finding.

The text the head sees must exist at inference time: the generated report and, optionally, the
clinical indication — :func:`fusion_text` builds that string identically for training and
inference. Three fusion modes:

- ``concat``: MLP over ``[image; text]`` (late fusion).
- ``gated``: a learned sigmoid gate mixes the projected image and text vectors per feature
  (gated multimodal unit, Arevalo et al. 2017, "Gated Multimodal Units for Information Fusion").
- ``cross_attention``: one learned query per finding attends over the modality tokens
  (pooled image, image tokens, text) and is read out by a per-finding linear layer
  (label-query decoding as in Query2Label, Liu et al. 2021).

With ``use_text: false`` the head is an image-only MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medmm.config.network import FusionConfig


def fusion_text(report: str | None, indication: str | None = None) -> str:
    """The fusion head's input text: the (generated) report, preceded by the indication if any.

    Training and inference both call this so the text format can never drift between them.

    >>> fusion_text("No effusion.", "Cough")
    'Indication: Cough\\nNo effusion.'
    """
    report = (report or "").strip()
    indication = (indication or "").strip()
    return f"Indication: {indication}\n{report}" if indication else report


def fusion_texts(reports: Sequence[str] | None, indications: Sequence[str | None], use_generated_report: bool,
                 use_indication: bool) -> list[str]:
    """Fusion-head texts of a batch (`fusion_text` of each), with the run's ``text`` settings.

    Args:
        reports: reports the model generated for these images (ignored when not used).
        indications: clinical indications (``""``/None when absent).
        use_generated_report / use_indication: which parts the workflow feeds to the fusion head.
    """
    n = len(indications)
    reports = list(reports) if use_generated_report and reports is not None else [""] * n
    indications = list(indications) if use_indication else [""] * n
    return [fusion_text(r, i or None) for r, i in zip(reports, indications)]


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class FusionHead(nn.Module):
    """Multi-label classifier over image (and text) embeddings.

    Args:
        cfg: fusion mode, hidden width, dropout, ``use_text``.
        image_dim: width ``D`` of the pooled image embedding and tokens.
        text_dim: width ``T`` of the text embedding (ignored when ``use_text`` is false).
        n_labels: number of findings ``L``.
    """

    def __init__(self, cfg: FusionConfig, image_dim: int, text_dim: int, n_labels: int):
        super().__init__()
        self.cfg = cfg
        self.n_labels = n_labels
        h = cfg.hidden
        if not cfg.use_text:
            self.head = _mlp(image_dim, h, n_labels, cfg.dropout)
        elif cfg.mode == "concat":
            self.head = _mlp(image_dim + text_dim, h, n_labels, cfg.dropout)
        elif cfg.mode == "gated":
            self.image_proj = nn.Linear(image_dim, h)
            self.text_proj = nn.Linear(text_dim, h)
            self.gate = nn.Linear(image_dim + text_dim, h)
            self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(h, n_labels))
        else:  # cross_attention
            self.image_proj = nn.Linear(image_dim, h)
            self.text_proj = nn.Linear(text_dim, h)
            self.modality = nn.Parameter(torch.zeros(3, h))  # pooled image / image token / text
            self.queries = nn.Parameter(torch.randn(n_labels, h) * 0.02)
            self.attn = nn.MultiheadAttention(h, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
            self.norm = nn.LayerNorm(h)
            self.readout_weight = nn.Parameter(torch.randn(n_labels, h) * h**-0.5)
            self.readout_bias = nn.Parameter(torch.zeros(n_labels))

    def forward(
        self,
        pooled: torch.Tensor,
        text_emb: torch.Tensor | None = None,
        image_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, L]`` from ``pooled [B, D]``, ``text_emb [B, T]`` and ``image_tokens [B, N, D]``.

        ``text_emb`` is needed unless ``use_text`` is false; ``image_tokens`` by ``cross_attention``.
        """
        if not self.cfg.use_text:
            return self.head(pooled)
        if text_emb is None:
            raise ValueError("this fusion head uses text (fusion.use_text: true) but no text embedding was given")
        if self.cfg.mode == "concat":
            return self.head(torch.cat([pooled, text_emb], dim=-1))
        if self.cfg.mode == "gated":
            z = torch.sigmoid(self.gate(torch.cat([pooled, text_emb], dim=-1)))
            fused = z * torch.tanh(self.image_proj(pooled)) + (1 - z) * torch.tanh(self.text_proj(text_emb))
            return self.head(fused)
        if image_tokens is None:
            raise ValueError("fusion mode 'cross_attention' needs the image tokens: classify(pooled, text_emb, tokens)")
        memory = [self.image_proj(pooled).unsqueeze(1) + self.modality[0]]
        memory.append(self.image_proj(image_tokens) + self.modality[1])
        memory.append(self.text_proj(text_emb).unsqueeze(1) + self.modality[2])
        memory_t = torch.cat(memory, dim=1)
        queries = self.queries.unsqueeze(0).expand(pooled.shape[0], -1, -1)
        attended, _ = self.attn(queries, memory_t, memory_t, need_weights=False)
        hidden = self.norm(attended + queries)
        return (hidden * self.readout_weight).sum(-1) + self.readout_bias
