"""Build a `Volume` from a DICOM series (single-frame files) or one enhanced multi-frame file."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medmm.errors import MedmmInputError
from medmm.io.dicom_header import SliceHeader
from medmm.io.geometry import stack_geometry
from medmm.io.meta import dicom_meta
from medmm.io.multiframe import frame_geometry, frame_rescale, frame_thickness, is_enhanced
from medmm.io.pixels import (
    SIGNED_MISREAD_NOTE,
    check_pixel_size,
    read_stored,
    rescale_params,
    signed_misread,
    to_float,
    to_signed,
)
from medmm.io.series import VOLUME_MODALITIES, Series, io_threads
from medmm.io.volume import MAX_VOXELS, Volume, lps_to_ras

log = logging.getLogger("medmm.io")


def _geometry_values(h: SliceHeader, name: str) -> tuple[float, ...]:
    value = {"ImagePositionPatient": h.f.position, "ImageOrientationPatient": h.f.orientation,
             "PixelSpacing": h.f.pixel_spacing}[name]
    if value is None:
        raise MedmmInputError(h.path, f"missing or malformed {name}; cannot place the slice in 3D")
    return value


def _check_same_image_format(headers: list[SliceHeader], path: Path) -> None:
    ref = headers[0]
    for h in headers[1:]:
        if (h.f.rows, h.f.columns) != (ref.f.rows, ref.f.columns):
            raise MedmmInputError(
                path, f"inconsistent image size in one series: {h.path.name} is {h.f.rows}x{h.f.columns}, "
                f"{ref.path.name} is {ref.f.rows}x{ref.f.columns}",
            )


def _warn_modality(modality: str, warnings: list[str], path: Path) -> None:
    if modality not in VOLUME_MODALITIES:
        msg = f"modality {modality} is not CT or MR; values are loaded as stored (no HU semantics)"
        warnings.append(msg)
        log.warning("%s: %s", path, msg)


def _check_voxels(n: int, what: str, path: Path) -> None:
    """Refuse to allocate a volume beyond `MAX_VOXELS` (compressed slices can declare any size)."""
    if n > MAX_VOXELS:
        raise MedmmInputError(path, f"{what} = {n} voxels is beyond the {MAX_VOXELS}-voxel limit; not a plausible scan")


def _misread_note(n: int, total: int, warnings: list[str], path: Path) -> list[str]:
    """Record that ``n`` of ``total`` slices were read as signed (see `signed_misread`)."""
    if not n:
        return []
    note = f"{SIGNED_MISREAD_NOTE} ({n} of {total} slices)"
    warnings.append(note)
    log.warning("%s: %s", path, note)
    return [note]


def load_series(series: Series, path: Path, warnings: list[str], source_format: str = "dicom") -> Volume:
    """Sort, validate and decode a series of single-frame DICOM files into a `Volume`.

    Slices are decoded in parallel threads straight into one preallocated ``(Z, Y, X)`` float32
    buffer; the returned array is its ``(X, Y, Z)`` transpose (a view, no copy).

    Raises:
        MedmmInputError: see `stack_geometry`, `read_stored` and `rescale_params`.
    """
    headers = series.headers
    if any(h.n_frames > 1 for h in headers):
        if len(headers) == 1:
            return load_multiframe(headers[0], path, warnings, source_format=source_format)
        raise MedmmInputError(
            path, f"series ...{series.uid[-8:]} holds {len(headers)} multi-frame files; load one file at a time"
        )
    for h in headers:
        if h.problem:
            raise MedmmInputError(h.path, h.problem)
    _check_same_image_format(headers, path)
    positions = np.array([_geometry_values(h, "ImagePositionPatient") for h in headers])
    orientations = np.array([_geometry_values(h, "ImageOrientationPatient") for h in headers])
    spacings = np.array([_geometry_values(h, "PixelSpacing") for h in headers])
    geo = stack_geometry(positions, orientations, spacings, [str(h.path) for h in headers], path)
    ordered = [headers[i] for i in geo.order]
    rescale = [rescale_params(h.f.rescale_slope, h.f.rescale_intercept, h.path) for h in ordered]
    for h in ordered:  # every slice's size is checked before the volume buffer is allocated
        check_pixel_size(h)

    rows, cols = ordered[0].f.rows, ordered[0].f.columns
    _check_voxels(rows * cols * len(ordered), f"{len(ordered)} slices of {rows}x{cols}", path)
    buf = np.empty((len(ordered), rows, cols), dtype=np.float32)
    misread: list[int] = []

    def decode(k: int) -> None:
        h = ordered[k]
        stored = read_stored(h)[0]
        if signed_misread(stored, h.f, *rescale[k]):
            stored = to_signed(stored, h.f)
            misread.append(k)
        to_float(stored, h.f, *rescale[k], out=buf[k])

    with ThreadPoolExecutor(max_workers=io_threads()) as pool:
        list(pool.map(decode, range(len(ordered))))  # list() re-raises the first worker error
    value_warnings = _misread_note(len(misread), len(ordered), warnings, path)

    first = ordered[0].ds
    _warn_modality(ordered[0].f.modality, warnings, path)
    meta = dicom_meta(
        first, source_format=source_format, n_files=len(ordered), n_slices=len(ordered),
        slice_spacing=round(geo.slice_gap, 6), excluded_localizers=len(series.localizers),
        warnings=list(warnings), value_warnings=value_warnings or None,
    )
    return Volume(
        array=buf.transpose(2, 1, 0),
        affine=lps_to_ras(geo.affine_lps),
        meta=meta,
        source_files=[h.path for h in ordered],
    )


def load_multiframe(h: SliceHeader, path: Path, warnings: list[str], source_format: str = "dicom") -> Volume:
    """Build a `Volume` from one enhanced multi-frame CT/MR file using its functional groups.

    Raises:
        MedmmInputError: no functional groups, bad per-frame geometry, colour, truncation, codec.
    """
    if not is_enhanced(h):
        raise MedmmInputError(
            h.path, f"multi-frame file ({h.n_frames} frames) without per-frame functional groups; "
            "cannot place its frames in 3D",
        )
    check_pixel_size(h)
    _check_voxels(h.f.rows * h.f.columns * h.n_frames, f"{h.n_frames} frames of {h.f.rows}x{h.f.columns}", h.path)
    positions, orientations, spacings = frame_geometry(h)
    names = [f"frame {i + 1}" for i in range(h.n_frames)]
    geo = stack_geometry(positions, orientations, spacings, names, path, what="frames")
    stored = read_stored(h)
    slopes, intercepts = frame_rescale(h)
    buf = np.empty(stored.shape, dtype=np.float32)
    n_misread = 0
    for k, f in enumerate(geo.order):
        frame = stored[f]
        if signed_misread(frame, h.f, slopes[f], intercepts[f]):
            frame, n_misread = to_signed(frame, h.f), n_misread + 1
        to_float(frame, h.f, slopes[f], intercepts[f], out=buf[k])
    value_warnings = _misread_note(n_misread, h.n_frames, warnings, path)
    _warn_modality(h.f.modality, warnings, path)
    meta = dicom_meta(
        h.ds, source_format=f"{source_format}-multiframe", n_files=1, n_slices=h.n_frames,
        slice_spacing=round(geo.slice_gap, 6), slice_thickness=frame_thickness(h),
        warnings=list(warnings), value_warnings=value_warnings or None,
    )
    return Volume(array=buf.transpose(2, 1, 0), affine=lps_to_ras(geo.affine_lps), meta=meta, source_files=[h.path])
