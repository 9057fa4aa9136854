"""Joint soft histogram of each voxel's intensity and the mean intensity around it.

The global HU histogram (`intensity_histogram`) says how much tissue of each density a scan holds,
but not what surrounds it: a soft-tissue voxel inside aerated lung (nodule, fibrotic band, thick
bronchial wall) counts the same as one in the mediastinum, and air inside soft tissue (a
herniated stomach, a dilated bronchus) the same as lung. Binning every voxel jointly by its own
intensity and by the mean of its neighbourhoods at a few scales (a 3-voxel and a 9-voxel cube,
say) separates them: it is the multi-scale co-occurrence idea of radiomics texture features
(grey-level co-occurrence / size-zone matrices) in a form that is cheap, batched and has a
gradient. Measured on the demo phantoms (docs/training.md): a logistic regression on the
(intensity, 3-voxel mean, 9-voxel mean) histogram alone reaches fibrotic sequela 0.87, nodule
0.73 and bronchiectasis 0.81 validation AUROC, where the CNN had 0.52, 0.55 and 0.67.

Written by hand for the same reason as `intensity_histogram` (no torch/MONAI layer gives a
batched, differentiable, per-region joint histogram): every voxel is split multilinearly between
the neighbouring centres of each axis (triangular kernels, Wang et al. ECCV 2016). The forward
pass quantises each voxel's position between centres to ``1 / subdivisions`` of a bin, counts
the joint positions with one ``bincount`` and maps them to bins with one fixed matrix per axis;
when the input needs a gradient (adversarial attacks) the exact interpolation supplies it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from medmm.models.radiomics.intensity import _cells, _neighbours, as_centres, interpolation_weights

#: Fine uniform levels per axis used to look up a value's quantised position between centres.
LOOKUP_LEVELS = 8192


def box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of each voxel's ``size``³ neighbourhood in a ``[B, C, X, Y, Z]`` volume.

    Only voxels inside the volume count (``avg_pool3d(..., count_include_pad=False)`` semantics);
    computed as separable shifted sums, 3-5x faster than ``avg_pool3d`` on CPU.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"neighbourhood size must be a positive odd number of voxels, got {size}")
    r = size // 2
    for dim in (2, 3, 4):
        n = x.shape[dim]
        total = x.clone()
        for offset in range(1, min(r, n - 1) + 1):  # in place, no padding: 3x faster than out-of-place adds
            total.narrow(dim, offset, n - offset).add_(x.narrow(dim, 0, n - offset))
            total.narrow(dim, 0, n - offset).add_(x.narrow(dim, offset, n - offset))
        x = total.div_(_window_counts(n, r, x.device, x.dtype).view([-1] + [1] * (4 - dim)))
    return x


@lru_cache(maxsize=16)
def _window_counts(n: int, r: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Voxels of an axis of length ``n`` inside each voxel's ``2r + 1`` window."""
    with torch.inference_mode(False):  # cached: must stay usable by autograd after an inference-mode call
        i = torch.arange(n, device=device)
        return ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(dtype)


class ContextHistogram(nn.Module):
    """Fraction of each cell's voxels per (intensity, neighbourhood mean, ...) bin.

    Args:
        centres: ascending intensity bin centres (network input units).
        context_centres: ascending bin centres of the neighbourhood means (input units).
        context_sizes: odd neighbourhood edges in voxels, one joint axis each (e.g. ``[3, 9]``).
        subdivisions: quantisation steps per bin of the counted forward pass (the exact
            interpolation differs from it by at most ``1 / (2 * subdivisions)`` of a voxel per axis).

    Example:
        >>> hist = ContextHistogram([0.0, 1.0], [0.0, 1.0], [3])
        >>> hist(torch.zeros(1, 1, 4, 4, 4), grid=(1, 1, 1)).flatten().tolist()
        [1.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, centres: Sequence[float], context_centres: Sequence[float], context_sizes: Sequence[int],
                 subdivisions: int = 4):
        super().__init__()
        if not context_sizes or any(int(s) < 1 or int(s) % 2 == 0 for s in context_sizes):
            raise ValueError(f"context sizes must be >= 1 odd voxel counts, got {list(context_sizes)}")
        if subdivisions < 1:
            raise ValueError(f"subdivisions must be >= 1, got {subdivisions}")
        self.context_sizes = [int(s) for s in context_sizes]
        self.subdivisions = int(subdivisions)
        axes = [as_centres(centres).float()] + [as_centres(context_centres).float()] * len(self.context_sizes)
        for d, c in enumerate(axes):
            self.register_buffer(f"centres_{d}", c, persistent=False)
            lookup, weights = _quantiser(c, self.subdivisions)
            self.register_buffer(f"lookup_{d}", lookup, persistent=False)
            self.register_buffer(f"weights_{d}", weights, persistent=False)
        self.shape = tuple(len(c) for c in axes)

    @property
    def bins(self) -> int:
        return math.prod(self.shape)

    def _axis(self, name: str, d: int) -> torch.Tensor:
        return getattr(self, f"{name}_{d}")

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``[B, C, X, Y, Z]`` image → ``[B, C * bins, *grid]`` joint bin fractions (intensity-major order)."""
        b, c = x.shape[:2]
        grid = tuple(int(g) for g in grid)
        n_cells = math.prod(grid)
        cell, voxels = _cells(tuple(x.shape[2:]), grid, x.device)
        values = [x.flatten(2)] + [box_mean(x, s).flatten(2) for s in self.context_sizes]
        positions = [self._axis("weights", d).shape[0] for d in range(len(values))]
        with torch.no_grad():
            # int32 indices: gathers and arithmetic on 2M-voxel batches are ~4x faster than int64
            index = (cell.int() + torch.arange(b * c, device=x.device, dtype=torch.int32).view(b, c, 1) * n_cells).flatten()
            for d, v in enumerate(values):
                centres = self._axis("centres", d)
                lo, hi = float(centres[0]), float(centres[-1])
                level = (v.clamp(lo, hi) - lo).mul_(LOOKUP_LEVELS / (hi - lo)).round_().int().flatten()
                index = index.mul_(positions[d]).add_(self._axis("lookup", d).index_select(0, level))
            counts = torch.bincount(index, minlength=b * c * n_cells * math.prod(positions)).to(x.dtype)
            hist = counts.view(b * c * n_cells, *positions)
            for d in range(len(values)):  # contract one axis at a time; the new bin axis goes last
                hist = torch.tensordot(hist, self._axis("weights", d).to(x.dtype), dims=([1], [0]))
            hist = hist.reshape(b, c, n_cells, self.bins)
        if torch.is_grad_enabled() and any(v.requires_grad for v in values):
            exact = self._interpolated(values, cell, n_cells)
            hist = hist + (exact - exact.detach())  # values as counted, gradient of the interpolation
        hist = hist / voxels.to(x.dtype).view(1, 1, n_cells, 1)
        return hist.permute(0, 1, 3, 2).reshape(b, c * self.bins, *grid)

    def _interpolated(self, values: list[torch.Tensor], cell: torch.Tensor, n_cells: int) -> torch.Tensor:
        """Exact multilinear split of every voxel, scatter-added per cell: ``[B, C, cells, bins]`` counts."""
        b, c = values[0].shape[:2]
        split = []
        for d, v in enumerate(values):
            centres = self._axis("centres", d).to(v.dtype)
            split.append(_neighbours(v.clamp(float(centres[0]), float(centres[-1])), centres))
        out = values[0].new_zeros(b, c, n_cells * self.bins)
        for corner in itertools.product((0, 1), repeat=len(values)):
            target, weight = cell, 1.0
            for (lower, frac), size, up in zip(split, self.shape, corner):
                target = target * size + lower + up
                weight = weight * (frac if up else 1 - frac)
            out = out.scatter_add(2, target, weight)
        return out.view(b, c, n_cells, self.bins)


def _quantiser(centres: torch.Tensor, subdivisions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lookup from a value's fine level to its quantised position between centres, and the
    ``[positions, bins]`` linear split of each position."""
    c = centres.double()
    levels = c[0] + torch.arange(LOOKUP_LEVELS + 1, dtype=torch.float64) * ((c[-1] - c[0]) / LOOKUP_LEVELS)
    lower, frac = _neighbours(levels, c)
    lookup = ((lower + frac.clamp(0, 1)) * subdivisions).round().int()
    # positions are in bin coordinates (centre i at i), so their split is against centres 0, 1, ...
    positions = torch.arange((len(c) - 1) * subdivisions + 1, dtype=torch.float64) / subdivisions
    return lookup, interpolation_weights(positions, torch.arange(len(c), dtype=torch.float64)).float()
