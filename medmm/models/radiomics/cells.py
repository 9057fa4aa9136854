"""Histogram cells finer than the CNN's feature map, carried as channels of it.

The context histogram can be computed on cells ``split`` times finer than the feature map along
each axis; `pack_cells` folds those sub-cells into channels so the sliding-window inferer stitches
them with their feature-map cell, and `unpack_cells` restores the grid. `central_mean` pools the
cells of a centred box (e.g. mediastinum, hila and heart).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pack_cells(cells: torch.Tensor, split: int) -> torch.Tensor:
    """``[B, C, g0*s, g1*s, g2*s]`` → ``[B, C*s³, g0, g1, g2]``: the ``s³`` finer cells inside each
    feature-map cell become channels (sliding-window stitching then keeps them with their cell)."""
    if split == 1:
        return cells
    b, c, *fine = cells.shape
    g = [n // split for n in fine]
    out = cells.reshape(b, c, g[0], split, g[1], split, g[2], split).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return out.reshape(b, c * split**3, *g)


def unpack_cells(channels: torch.Tensor, split: int) -> torch.Tensor:
    """Inverse of `pack_cells`."""
    if split == 1:
        return channels
    b, cs, *g = channels.shape
    out = channels.reshape(b, cs // split**3, split, split, split, *g).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return out.reshape(b, cs // split**3, *(n * split for n in g))


def central_mean(cells: torch.Tensor, fractions: Sequence[float]) -> torch.Tensor:
    """Mean ``[B, C]`` over the cells of ``[B, C, X, Y, Z]`` whose centres lie in the centred box
    spanning ``fractions`` of each axis (at least the middle cell of an axis)."""
    for axis, fraction in enumerate(fractions, start=2):
        n = cells.shape[axis]
        centre = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        keep = torch.nonzero((centre - 0.5).abs() <= fraction / 2 + 1e-9).flatten()
        if keep.numel() == 0:
            keep = torch.tensor([n // 2])
        cells = cells.index_select(axis, keep.to(cells.device))
    return cells.mean(dim=(2, 3, 4))
