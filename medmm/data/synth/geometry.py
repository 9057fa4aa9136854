"""Voxel grid and partial-volume drawing primitives for the synthetic phantom.

Everything is drawn in *body* millimetres (u → patient left, v → posterior, w → superior, i.e.
DICOM LPS axes centred on the body) and rasterised with a soft edge one voxel wide, which mimics
the partial-volume effect of a real scanner and keeps small structures visible at 64³.
Shapes are evaluated only inside their bounding box, so hundreds of tubes stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

Slices = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid in body mm: voxel (i, j, k) centre = origin + (i, j, k) * spacing."""

    shape: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]

    @cached_property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along u, v, w (float32, increasing)."""
        return tuple(
            (o + s * np.arange(n)).astype(np.float32) for o, s, n in zip(self.origin, self.spacing, self.shape)
        )  # type: ignore[return-value]

    @cached_property
    def voxel(self) -> float:
        """Mean voxel edge (mm): the width of the soft edge."""
        return float(np.mean(self.spacing))

    def mesh(self, sl: Slices | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (U, V, W) coordinate arrays for the whole grid or a crop."""
        u, v, w = self.axes
        if sl is not None:
            u, v, w = u[sl[0]], v[sl[1]], w[sl[2]]
        return u[:, None, None], v[None, :, None], w[None, None, :]

    def box(self, lo, hi) -> Slices | None:
        """Index slices covering the mm box [lo, hi]; None when it misses the grid."""
        out = []
        for a, b, o, s, n in zip(lo, hi, self.origin, self.spacing, self.shape):
            i0 = max(int(np.floor((a - o) / s)), 0)
            i1 = min(int(np.ceil((b - o) / s)) + 1, n)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]

    def ras_affine(self, table_shift: tuple[float, float, float]) -> np.ndarray:
        """4×4 voxel → RAS affine; the body centre sits at ``table_shift`` (LPS mm) in the world."""
        lps = np.eye(4)
        lps[:3, :3] = np.diag(self.spacing)
        lps[:3, 3] = np.asarray(self.origin) + np.asarray(table_shift)
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def soft(signed_inside_mm: np.ndarray, width: float) -> np.ndarray:
    """Fraction inside from a signed distance (> 0 inside), ramping over one ``width``."""
    return np.clip(signed_inside_mm / width + 0.5, 0.0, 1.0)


def paint(hu: np.ndarray, sl: Slices | None, frac: np.ndarray, value: float | np.ndarray) -> None:
    """Blend ``value`` into ``hu[sl]`` with weight ``frac`` (partial volume)."""
    if sl is None:
        hu += frac * (value - hu)
    else:
        region = hu[sl]
        region += frac * (value - region)


def mark(tissue: np.ndarray, sl: Slices | None, frac: np.ndarray, label: int, where: np.ndarray | None = None) -> None:
    """Set the tissue label where ``frac`` > 0.5 (and ``where``)."""
    target = tissue if sl is None else tissue[sl]
    m = frac > 0.5
    if where is not None:
        m &= where
    target[m] = label


def segment(grid: Grid, p0, p1, r0: float, r1: float | None = None) -> tuple[Slices | None, np.ndarray | None]:
    """Partial-volume fraction of a tapered tube from ``p0`` (radius r0) to ``p1`` (radius r1).

    Thin tubes are dimmed in proportion to their diameter over the voxel size, as the real
    partial-volume effect would, so a 2 mm vessel does not look like a 5 mm one.
    """
    r1 = r0 if r1 is None else r1
    p0 = np.asarray(p0, dtype=np.float32)
    p1 = np.asarray(p1, dtype=np.float32)
    h = grid.voxel
    pad = max(r0, r1) + h
    sl = grid.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
    if sl is None:
        return None, None
    u, v, w = grid.mesh(sl)
    d = p1 - p0
    dd = float(d @ d)
    du, dv, dw = u - p0[0], v - p0[1], w - p0[2]
    if dd > 0:
        t = np.clip((du * d[0] + dv * d[1] + dw * d[2]) / dd, 0.0, 1.0)
    else:
        t = np.zeros(np.broadcast_shapes(du.shape, dv.shape, dw.shape), np.float32)
    dist = np.sqrt((du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2 + (dw - t * d[2]) ** 2)
    r = r0 + t * (r1 - r0)
    frac = soft(r - dist, h) * np.minimum(1.0, 2.0 * r / h)
    return sl, frac.astype(np.float32)


def sphere(grid: Grid, centre, radius: float) -> tuple[Slices | None, np.ndarray | None]:
    """Partial-volume fraction of a ball."""
    return segment(grid, centre, centre, radius)


def ellipsoid(grid: Grid, centre, radii, rotation: np.ndarray | None = None, sl: Slices | None = None):
    """Partial-volume fraction of an (optionally rotated) ellipsoid, plus its normalised radius.

    Returns:
        (slices, frac, rho) where rho = 1 on the surface (used to draw shells around organs).
    """
    radii = np.asarray(radii, dtype=np.float32)
    c = np.asarray(centre, dtype=np.float32)
    if sl is None:
        pad = float(radii.max()) + grid.voxel
        sl = grid.box(c - pad, c + pad)
        if sl is None:
            return None, None, None
    u, v, w = grid.mesh(sl)
    du, dv, dw = u - c[0], v - c[1], w - c[2]
    if rotation is not None:  # rows of `rotation` are the ellipsoid's axes in body coordinates
        a = rotation
        du, dv, dw = (a[0, 0] * du + a[0, 1] * dv + a[0, 2] * dw,
                      a[1, 0] * du + a[1, 1] * dv + a[1, 2] * dw,
                      a[2, 0] * du + a[2, 1] * dv + a[2, 2] * dw)
    rho = np.sqrt((du / radii[0]) ** 2 + (dv / radii[1]) ** 2 + (dw / radii[2]) ** 2)
    frac = soft((1.0 - rho) * float(radii.mean()), grid.voxel)
    return sl, frac.astype(np.float32), rho.astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-scale low-frequency noise: a ``cells``³ random lattice upsampled (cubic)."""
    coarse = rng.standard_normal((cells, cells, cells)).astype(np.float32)
    # separable linear interpolation as three small matrix products (much faster than ndimage.zoom)
    mats = [_lerp_matrix(n, cells) for n in shape]
    out = np.tensordot(mats[0], coarse, axes=(1, 0))
    out = np.tensordot(out, mats[1], axes=(1, 1))
    out = np.tensordot(out, mats[2], axes=(1, 1))
    return out.astype(np.float32)


def _lerp_matrix(n: int, cells: int) -> np.ndarray:
    """(n, cells) weights interpolating a ``cells``-point lattice linearly onto ``n`` points."""
    x = (np.arange(n) + 0.5) / n * cells - 0.5
    x = np.clip(x, 0, cells - 1)
    i0 = np.minimum(np.floor(x).astype(int), cells - 2) if cells > 1 else np.zeros(n, int)
    t = x - i0
    m = np.zeros((n, cells), np.float32)
    m[np.arange(n), i0] = 1 - t
    if cells > 1:
        m[np.arange(n), i0 + 1] += t
    return m


def rotation_z(angle: float) -> np.ndarray:
    """Rows = axes of a frame rotated by ``angle`` (rad) about the superior axis."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
