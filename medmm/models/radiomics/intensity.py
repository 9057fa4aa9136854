"""Soft intensity histogram per feature-map cell: the "how much calcium / air / fluid" pathway.

CT intensities are calibrated (Hounsfield units), so the amount of tissue in an HU band is itself
diagnostic: a few voxels at 900-1300 HU on the aortic wall are calcified plaque, extra voxels just
above air are emphysema, a lung full of -500 HU voxels is ground glass. A strided CNN stem mixes
each small bright or dark voxel with its neighbours before any non-linearity, and with ~450
training scans it does not learn these band counts (measured on the demo phantoms: val AUROC of
arterial / coronary calcification 0.62 / 0.72 from the CNN alone, 0.99 / 0.99 with a logistic
regression on the global HU histogram).

Written by hand because no torch/MONAI layer computes a differentiable, batched, per-region
histogram (``torch.histc`` is neither): each voxel's intensity is split linearly between its two
neighbouring bin centres (the triangular kernels of Wang et al., "Learnable histogram", ECCV 2016,
with fixed centres). The forward pass counts intensities quantised to fine levels with one
``bincount`` and maps level counts to bins with a fixed matrix (4x faster than interpolating each
voxel, which made a demo epoch 40 % slower); when the input needs a gradient (adversarial attacks)
the exact per-voxel interpolation supplies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn


def cell_index(shape: Sequence[int], grid: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Flat cell number of every voxel of a ``shape`` volume divided into a ``grid`` of cells.

    Voxel ``i`` of an axis of length ``n`` falls in cell ``floor(i * g / n)``: equal cells when
    ``g`` divides ``n``, otherwise cells that differ by at most one voxel.
    """
    per_axis = [torch.div(torch.arange(n, device=device) * g, n, rounding_mode="floor") for n, g in zip(shape, grid)]
    ix, iy, iz = torch.meshgrid(*per_axis, indexing="ij")
    return ((ix * grid[1] + iy) * grid[2] + iz).flatten()


@lru_cache(maxsize=8)
def _cells(shape: tuple[int, ...], grid: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cell index per voxel, voxels per cell)``, cached: every training batch has the same shape.

    Built outside inference mode, so a first call under ``torch.inference_mode`` (evaluation) does
    not leave tensors that a later attack's autograd pass cannot use."""
    with torch.inference_mode(False):
        cell = cell_index(shape, grid, device)
        return cell, torch.bincount(cell, minlength=math.prod(grid))


def as_centres(values: Sequence[float]) -> torch.Tensor:
    """Bin centres as a float64 tensor; an error unless they are >= 2 strictly increasing values."""
    c = torch.as_tensor(list(values), dtype=torch.float64)
    if c.ndim != 1 or len(c) < 2 or not bool((c[1:] > c[:-1]).all()):
        raise ValueError(f"histogram centres must be >= 2 strictly increasing values, got {list(values)}")
    return c


def _neighbours(values: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the centre at or below each value and the value's fraction of the way to the next one
    (values must lie within ``[centres[0], centres[-1]]``)."""
    lower = (torch.bucketize(values.detach(), centres, right=True) - 1).clamp(0, len(centres) - 2)
    return lower, (values - centres[lower]) / (centres[lower + 1] - centres[lower])


class IntensityHistogram(nn.Module):
    """Fraction of each cell's voxels in each intensity bin (linear interpolation between centres).

    Args:
        centres: ascending bin centres in the network's input units (after HU windowing);
            intensities outside ``[centres[0], centres[-1]]`` count in the end bins.

    Example:
        >>> hist = IntensityHistogram([0.0, 0.5, 1.0])
        >>> hist(torch.full((1, 1, 4, 4, 4), 0.25), grid=(1, 1, 1)).flatten().tolist()
        [0.5, 0.5, 0.0]
    """

    def __init__(self, centres: Sequence[float]):
        super().__init__()
        c = as_centres(centres)
        self.register_buffer("centres", c.float(), persistent=False)
        # quantisation levels: >= 100 per narrowest bin, so a voxel's split is off by <= 0.5 %
        span = float(c[-1] - c[0])
        self.levels = int(min(max(4096, math.ceil(100 * span / float((c[1:] - c[:-1]).min()))), 2**20))
        grid = c[0] + torch.arange(self.levels + 1, dtype=torch.float64) * (span / self.levels)
        self.register_buffer("level_weights", interpolation_weights(grid, c).float(), persistent=False)

    @property
    def bins(self) -> int:
        return len(self.centres)

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``[B, C, X, Y, Z]`` image → ``[B, C * bins, *grid]`` bin fractions (each cell sums to 1 per channel)."""
        b, c = x.shape[:2]
        grid = tuple(int(g) for g in grid)
        n_cells = math.prod(grid)
        cell, voxels = _cells(tuple(x.shape[2:]), grid, x.device)
        lo, hi = float(self.centres[0]), float(self.centres[-1])
        with torch.no_grad():
            level = ((x.flatten(2).clamp(lo, hi) - lo) * (self.levels / (hi - lo))).round_().long()
            level += cell * (self.levels + 1)
            level += torch.arange(b * c, device=x.device).view(b, c, 1) * (n_cells * (self.levels + 1))
            counts = torch.bincount(level.flatten(), minlength=b * c * n_cells * (self.levels + 1))
            hist = counts.view(b, c, n_cells, self.levels + 1).to(x.dtype) @ self.level_weights.to(x.dtype)
        if torch.is_grad_enabled() and x.requires_grad:
            exact = self._interpolated(x, cell, n_cells)
            hist = hist + (exact - exact.detach())  # values as counted, gradient of the interpolation
        hist = hist / voxels.to(x.dtype).view(1, 1, n_cells, 1)
        return hist.permute(0, 1, 3, 2).reshape(b, c * self.bins, *grid)

    def _interpolated(self, x: torch.Tensor, cell: torch.Tensor, n_cells: int) -> torch.Tensor:
        """Per-voxel linear split between neighbouring centres, scatter-added per cell: ``[B, C, cells, bins]`` counts."""
        b, c = x.shape[:2]
        k, centres = self.bins, self.centres.to(x.dtype)
        lower, frac = _neighbours(x.flatten(2).clamp(float(centres[0]), float(centres[-1])), centres)  # [B, C, N]
        target = cell * k + lower
        out = x.new_zeros(b, c, n_cells * k)
        out = out.scatter_add(2, target, 1 - frac).scatter_add(2, target + 1, frac)
        return out.view(b, c, n_cells, k)


def interpolation_weights(values: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``[len(values), bins]``: each value's linear split between its two neighbouring centres."""
    lower, frac = _neighbours(values, centres)
    frac = frac.clamp(0, 1)  # rounding at the last level
    rows = torch.arange(len(values))
    weights = torch.zeros(len(values), len(centres), dtype=values.dtype)
    weights[rows, lower] = 1 - frac
    weights[rows, lower + 1] += frac
    return weights
