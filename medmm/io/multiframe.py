"""Per-frame geometry and rescale of enhanced multi-frame DICOM (Enhanced CT/MR Image Storage).

Enhanced objects keep position, orientation, pixel spacing and rescale in functional group
sequences: a value in a frame's ``PerFrameFunctionalGroupsSequence`` item overrides the one in
``SharedFunctionalGroupsSequence``, which overrides the top-level attribute.
"""

from __future__ import annotations

import numpy as np

from medmm.errors import MedmmInputError
from medmm.io.dicom_header import SliceHeader
from medmm.io.pixels import rescale_params


def _group_value(ds, frame: int, sequence: str, keyword: str):
    """Look ``sequence[0].keyword`` up in per-frame group ``frame``, then the shared group."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if not items or index >= len(items):
            continue
        seq = items[index].get(sequence)
        if seq and keyword in seq[0]:
            return seq[0].get(keyword)
    return None


def is_enhanced(h: SliceHeader) -> bool:
    """True for a multi-frame file that carries functional groups."""
    return h.n_frames > 1 and (
        "PerFrameFunctionalGroupsSequence" in h.ds or "SharedFunctionalGroupsSequence" in h.ds
    )


def frame_rescale(h: SliceHeader) -> tuple[list[float], list[float]]:
    """Rescale slope and intercept for each frame (functional groups first, then top level)."""
    ds, n = h.ds, h.n_frames
    if not is_enhanced(h):
        slope, intercept = rescale_params(h.f.rescale_slope, h.f.rescale_intercept, h.path)
        return [slope] * n, [intercept] * n
    slopes, intercepts = [], []
    for f in range(n):
        s = _group_value(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
        i = _group_value(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
        slope, intercept = rescale_params(
            h.f.rescale_slope if s is None else s, h.f.rescale_intercept if i is None else i, h.path
        )
        slopes.append(slope)
        intercepts.append(intercept)
    return slopes, intercepts


def frame_geometry(h: SliceHeader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame ``positions (F,3)``, ``orientations (F,6)``, ``pixel_spacings (F,2)`` in LPS mm.

    Raises:
        MedmmInputError: a frame lacks position, orientation or pixel spacing.
    """
    ds, n = h.ds, h.n_frames
    positions, orientations, spacings = [], [], []
    for f in range(n):
        ipp = _group_value(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        iop = _group_value(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
        if iop is None:
            iop = ds.get("ImageOrientationPatient")
        spacing = _group_value(ds, f, "PixelMeasuresSequence", "PixelSpacing")
        if spacing is None:
            spacing = ds.get("PixelSpacing")
        if ipp is None or iop is None or spacing is None:
            missing = [name for name, v in (("position", ipp), ("orientation", iop), ("pixel spacing", spacing)) if v is None]
            raise MedmmInputError(h.path, f"multi-frame file: frame {f + 1} has no plane {', '.join(missing)}")
        try:
            positions.append([float(v) for v in ipp])
            orientations.append([float(v) for v in iop])
            spacings.append([float(v) for v in spacing])
        except (TypeError, ValueError):
            raise MedmmInputError(h.path, f"multi-frame file: frame {f + 1} has unreadable geometry") from None
    try:
        return np.array(positions, float), np.array(orientations, float), np.array(spacings, float)
    except ValueError:
        raise MedmmInputError(h.path, "multi-frame file: malformed plane geometry") from None


def frame_thickness(h: SliceHeader) -> float | None:
    """SliceThickness from the functional groups (frame 1) or the top level."""
    value = _group_value(h.ds, 0, "PixelMeasuresSequence", "SliceThickness") if is_enhanced(h) else None
    value = value if value is not None else h.ds.get("SliceThickness")
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
