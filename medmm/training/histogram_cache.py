"""Per-case cache of the image encoder's histogram channels for images that never change.

The intensity and context histograms (`medmm.models.intensity_histogram`,
`medmm.models.context_histogram`) have no trainable parameters, so for an un-augmented training or
validation image they give the same channels in every epoch. On the CPU demo they were about a
quarter of a training step, so the training engine computes them once per case and reuses them
(like MONAI's ``CacheDataset`` keeps the output of deterministic transforms).

Each case is computed on its own, so a cached value never depends on which other cases shared its
first batch: a resumed run caches exactly what an uninterrupted one does. Values are kept on the
CPU up to ``max_bytes``; cases beyond that are computed every time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from medmm.models.image_encoder import ImageEncoder


class HistogramCache:
    """Histogram channels of fixed images, keyed by case id.

    Args:
        encoder: the image encoder whose `ImageEncoder.histogram_maps` are cached.
        max_bytes: memory budget for the cached tensors.

    Example:
        >>> cache = HistogramCache(model.image_encoder, max_bytes=2**30)
        >>> fmap = model.feature_map(x, cache.lookup(x, batch["case_id"]))
    """

    def __init__(self, encoder: ImageEncoder, max_bytes: int):
        self.encoder = encoder
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._store: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    def lookup(self, x: torch.Tensor, case_ids: Sequence[str]) -> Callable[[tuple[int, ...]], torch.Tensor | None]:
        """A ``histograms`` argument for `ImageEncoder.feature_map`: the grid's channels for the
        images ``x`` of ``case_ids`` (row ``i`` of ``x`` is case ``case_ids[i]``)."""
        if len(case_ids) != x.shape[0]:
            raise ValueError(f"need one case id per image ({x.shape[0]}), got {len(case_ids)}")

        def channels(grid: tuple[int, ...]) -> torch.Tensor | None:
            if not self.encoder.has_histograms:
                return None
            rows = [self._channels(x[i:i + 1], str(case_id), grid) for i, case_id in enumerate(case_ids)]
            return torch.cat(rows).to(x.device)

        return channels

    def _channels(self, image: torch.Tensor, case_id: str, grid: tuple[int, ...]) -> torch.Tensor:
        key = (case_id, grid)
        cached = self._store.get(key)
        if cached is not None:
            return cached
        with torch.no_grad():
            value = self.encoder.histogram_maps(image.detach(), grid).float().cpu().clone()
        size = value.numel() * value.element_size()
        if self.nbytes + size <= self.max_bytes:
            self._store[key] = value
            self.nbytes += size
        return value
