"""Knowledge-initialised label queries (as KAD, Zhang et al. 2023, and MedKLIP, Wu et al. 2023).

Each output (finding, and ontology group when the hierarchy is on) has a query vector that starts
as the text encoder's embedding of its ontology entry — preferred label, definition, synonyms —
so findings that the ontology describes alike start alike, which is what should help rare
findings and scarce labels. The queries cross-attend the image tokens (the encoder's feature map
pooled onto ``token_grid`` cells, plus the pooled embedding, plus the fusion text's embedding when
the head reads text) and one readout MLP *shared by all outputs* turns each attended query into a
logit (with a per-output bias).

The embeddings are computed once when a model is built (:func:`label_query_embeddings`) and kept
as a buffer, so they are saved in the checkpoint: inference needs no text encoder unless the
fusion itself reads text.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from medmm.config.network import FusionConfig, TextEncoderConfig

_MAX_SYNONYMS = 12  # MiniLM reads 256 word pieces; the first synonyms carry the meaning


def label_query_text(ontology, label: str) -> str:
    """``"<label>. <definition> Also: <synonyms>."`` of an ontology concept (what the query encodes)."""
    parts = [f"{label}."]
    definition = ontology.definition(label)
    if definition:
        parts.append(definition.strip())
    synonyms = ontology.synonyms(label)[:_MAX_SYNONYMS]
    if synonyms:
        parts.append("Also: " + ", ".join(synonyms) + ".")
    return " ".join(parts)


def label_query_embeddings(texts: Sequence[str], text_cfg: TextEncoderConfig) -> torch.Tensor:
    """Embeddings ``[N, T]`` of ``texts`` by the (frozen, offline) text encoder of ``text_cfg``."""
    frozen = text_cfg.model_copy(update={"max_length": 256, "tuning": "frozen"})
    return _embed(tuple(texts), frozen.model_dump_json()).clone()


@lru_cache(maxsize=8)
def _embed(texts: tuple[str, ...], cfg_json: str) -> torch.Tensor:
    # cached: an ablation builds many models from the same ontology; the encoder is loaded once each
    from medmm.models.text_encoder import TextEncoder

    encoder = TextEncoder(TextEncoderConfig.model_validate_json(cfg_json)).eval()
    with torch.no_grad():
        return encoder(list(texts)).float().cpu()


class KnowledgeQueryHead(nn.Module):
    """Label queries cross-attending image (and text) tokens → one logit per output.

    Args:
        cfg: the fusion section (``hidden``, ``n_heads``, ``dropout``, ``use_text``).
        image_dim: width of the pooled embedding and image tokens.
        text_dim: width of the fusion-text embedding (ignored without ``use_text``).
        n_outputs: number of outputs ``N`` (findings, then groups).
        query_dim: width ``T`` of the label embeddings.
        label_embeddings: ``[N, T]`` initial queries (a fresh model); None when the weights will be
            loaded from a checkpoint.
    """

    def __init__(self, cfg: FusionConfig, image_dim: int, text_dim: int, n_outputs: int, query_dim: int,
                 label_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_labels = n_outputs
        h = cfg.hidden
        # persistent buffer: saved in the checkpoint, so inference never re-encodes the ontology
        self.register_buffer("label_embeddings", torch.zeros(n_outputs, query_dim))
        if label_embeddings is not None:
            if tuple(label_embeddings.shape) != (n_outputs, query_dim):
                raise ValueError(f"label_embeddings must be [{n_outputs}, {query_dim}], "
                                 f"got {tuple(label_embeddings.shape)}")
            self.label_embeddings.copy_(label_embeddings)
        self.query_proj = nn.Linear(query_dim, h)
        self.query_delta = nn.Parameter(torch.zeros(n_outputs, h))  # learned per-output correction, starts at 0
        self.image_proj = nn.Linear(image_dim, h)
        self.text_proj = nn.Linear(text_dim, h) if cfg.use_text else None
        self.modality = nn.Parameter(torch.zeros(3, h))  # pooled image / image token / text
        self.attn = nn.MultiheadAttention(h, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.norm = nn.LayerNorm(h)
        self.readout = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(h, 1))
        self.bias = nn.Parameter(torch.zeros(n_outputs))

    def queries(self) -> torch.Tensor:
        """The current query vectors ``[N, hidden]``."""
        return self.query_proj(self.label_embeddings) + self.query_delta

    def forward(self, pooled: torch.Tensor, text_emb: torch.Tensor | None = None,
                image_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, N]`` from ``pooled [B, D]``, ``image_tokens [B, n, D]`` (and ``text_emb [B, T]``)."""
        if image_tokens is None:
            raise ValueError("the knowledge-query head needs the image tokens: classify(pooled, text_emb, tokens)")
        memory = [self.image_proj(pooled).unsqueeze(1) + self.modality[0],
                  self.image_proj(image_tokens) + self.modality[1]]
        if self.text_proj is not None:
            if text_emb is None:
                raise ValueError("this head uses text (fusion.use_text: true) but no text embedding was given")
            memory.append(self.text_proj(text_emb).unsqueeze(1) + self.modality[2])
        memory_t = torch.cat(memory, dim=1)
        queries = self.queries().unsqueeze(0).expand(pooled.shape[0], -1, -1)
        attended, _ = self.attn(queries, memory_t, memory_t, need_weights=False)
        hidden = self.norm(attended + queries)
        return self.readout(hidden).squeeze(-1) + self.bias
