"""Slice geometry: order 2D slices in 3D and refuse stacks that are not a regular grid.

Slices are sorted by ImagePositionPatient projected on the slice normal (row cosine × column
cosine), never by InstanceNumber or file name. The stack must then be a regular grid:

* one orientation (cosines equal within ``ORIENTATION_TOL``) and one PixelSpacing (relative
  ``PIXEL_SPACING_RTOL``);
* no two slices at the same position, every gap equal to the median gap within
  ``spacing_tolerance(median) = max(0.01 mm, 1 % of the median)`` (a gap of ~k× the median
  means k-1 missing slices);
* slice positions on a line parallel to the normal (a step leaning more than ``TILT_TOL_DEG``
  is gantry tilt / a sheared stack), each position within the spacing tolerance of that line.

All positions are DICOM LPS millimetres; the returned affine is voxel → LPS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmm.errors import MedmmInputError

MIN_SLICES = 4
ORIENTATION_TOL = 1e-3
PIXEL_SPACING_RTOL = 1e-3
TILT_TOL_DEG = 0.05


def spacing_tolerance(median_gap: float) -> float:
    """Allowed deviation of a slice gap from the median gap (mm)."""
    return max(0.01, 0.01 * abs(median_gap))


@dataclass
class StackGeometry:
    """Result of `stack_geometry`.

    Attributes:
        order: indices of the input slices, sorted along the slice normal.
        affine_lps: 4×4 voxel (column i, row j, slice k) → LPS mm.
        slice_gap: distance between consecutive slices (mm).
    """

    order: np.ndarray
    affine_lps: np.ndarray
    slice_gap: float


def _name(names: list[str], i: int) -> str:
    return Path(names[i]).name


def stack_geometry(
    positions: np.ndarray,
    orientations: np.ndarray,
    pixel_spacings: np.ndarray,
    names: list[str],
    path: str | Path,
    *,
    what: str = "slices",
) -> StackGeometry:
    """Sort slices along their normal, validate the grid and build the voxel → LPS affine.

    Args:
        positions: ``(N, 3)`` ImagePositionPatient per slice.
        orientations: ``(N, 6)`` ImageOrientationPatient per slice.
        pixel_spacings: ``(N, 2)`` PixelSpacing per slice (row spacing, column spacing).
        names: per-slice labels for messages (file names, or "frame 3").
        path: what the user pointed at (named in errors).
        what: "slices" or "frames", for messages.

    Raises:
        MedmmInputError: too few slices, inconsistent orientation or pixel spacing, duplicate
            positions, gantry tilt, missing slices or otherwise non-uniform spacing.
    """
    positions = np.asarray(positions, dtype=np.float64)
    orientations = np.asarray(orientations, dtype=np.float64)
    pixel_spacings = np.asarray(pixel_spacings, dtype=np.float64)
    n = len(positions)
    if n < MIN_SLICES:
        raise MedmmInputError(path, f"only {n} {what}; a 3D volume needs at least {MIN_SLICES}")
    if positions.shape != (n, 3) or orientations.shape != (n, 6) or pixel_spacings.shape != (n, 2):
        raise MedmmInputError(path, f"malformed ImagePositionPatient/ImageOrientationPatient/PixelSpacing in the {what}")
    if not (np.isfinite(positions).all() and np.isfinite(orientations).all() and np.isfinite(pixel_spacings).all()):
        raise MedmmInputError(path, f"non-finite geometry values in the {what}")

    bad = np.flatnonzero(np.abs(orientations - orientations[0]).max(axis=1) > ORIENTATION_TOL)
    if bad.size:
        raise MedmmInputError(
            path, f"inconsistent ImageOrientationPatient: {_name(names, int(bad[0]))} differs from "
            f"{_name(names, 0)} ({bad.size} of {n} {what}); not one 3D stack",
        )
    row_cos, col_cos = orientations[0, :3], orientations[0, 3:]
    nr, nc = np.linalg.norm(row_cos), np.linalg.norm(col_cos)
    if min(nr, nc) < 0.5 or abs(row_cos @ col_cos) / (nr * nc) > ORIENTATION_TOL * 10:
        raise MedmmInputError(path, "invalid ImageOrientationPatient (cosines not unit/orthogonal)")
    row_cos, col_cos = row_cos / nr, col_cos / nc
    normal = np.cross(row_cos, col_cos)

    ps = pixel_spacings[0]
    if (ps <= 0).any():
        raise MedmmInputError(path, f"invalid PixelSpacing {ps.tolist()}")
    bad = np.flatnonzero((np.abs(pixel_spacings - ps) > PIXEL_SPACING_RTOL * ps).any(axis=1))
    if bad.size:
        raise MedmmInputError(
            path, f"inconsistent PixelSpacing: {_name(names, int(bad[0]))} has "
            f"{pixel_spacings[bad[0]].round(4).tolist()} mm, {_name(names, 0)} has {ps.round(4).tolist()} mm",
        )

    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist, pos = dist[order], positions[order]
    gaps = np.diff(dist)
    median = float(np.median(gaps))
    tol = spacing_tolerance(median)
    dup = np.flatnonzero(gaps <= tol if median > tol else gaps <= 0.01)
    if dup.size or median <= 0.01:
        k = int(dup[0]) if dup.size else 0
        raise MedmmInputError(
            path, f"{max(dup.size, 1)} duplicate slice position(s), e.g. {_name(names, int(order[k]))} and "
            f"{_name(names, int(order[k + 1]))}; several phases/echoes in one series? (pick one, or split them)",
        )

    step = (pos[-1] - pos[0]) / (n - 1)
    along = float(step @ normal)
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(step - along * normal), along)))
    if tilt > TILT_TOL_DEG:
        raise MedmmInputError(
            path, f"gantry tilt / sheared stack: slices advance {tilt:.2f} degrees off the slice normal; "
            "resample to an orthogonal grid first (medmm does not resample tilted stacks)",
        )
    off_line_inplane = np.linalg.norm(
        (pos - pos[0]) - np.outer((pos - pos[0]) @ normal, normal), axis=1
    )
    if off_line_inplane.max() > tol:
        i = int(np.argmax(off_line_inplane))
        raise MedmmInputError(
            path, f"slice positions are not on one line: {_name(names, int(order[i]))} is shifted "
            f"{off_line_inplane[i]:.2f} mm in-plane",
        )

    bad = np.flatnonzero(np.abs(gaps - median) > tol)
    if bad.size:
        i = int(bad[0])
        g = float(gaps[i])
        if g > 1.5 * median:
            missing = int(round(g / median)) - 1
            raise MedmmInputError(
                path, f"missing slice(s): gap of {g:.3g} mm between {_name(names, int(order[i]))} and "
                f"{_name(names, int(order[i + 1]))} where the spacing is {median:.3g} mm "
                f"(about {missing} slice(s) missing)",
            )
        raise MedmmInputError(
            path, f"non-uniform slice spacing: gaps from {gaps.min():.3g} to {gaps.max():.3g} mm "
            f"(tolerance {tol:.3g} mm around the median {median:.3g} mm)",
        )

    gap = float((dist[-1] - dist[0]) / (n - 1))
    affine = np.eye(4)
    affine[:3, 0] = row_cos * ps[1]  # i = column index advances along the row cosine
    affine[:3, 1] = col_cos * ps[0]  # j = row index advances along the column cosine
    affine[:3, 2] = normal * gap
    affine[:3, 3] = pos[0]
    return StackGeometry(order=order, affine_lps=affine, slice_gap=gap)
