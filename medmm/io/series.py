"""Find DICOM series under a path and choose the one to load.

Files are grouped by SeriesInstanceUID. Non-DICOM files, DICOMDIR and non-image objects are
skipped with a warning; localizers (ImageType LOCALIZER, or a few images whose size or plane
differs from the rest of their series) are excluded with a warning. Everything shown to the user
is de-identified: a short UID suffix, modality, slice count and series description.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medmm.errors import MedmmInputError
from medmm.io.dicom_header import NotDicomError, SliceHeader, read_header
from medmm.io.text import safe_text

log = logging.getLogger("medmm.io")

VOLUME_MODALITIES = ("CT", "MR")
MAX_LOCALIZER_IMAGES = 3  # a different-plane/size minority this small is a scout, not a 2nd stack
LOCALIZER_ANGLE_DEG = 30.0


def io_threads() -> int:
    """Worker threads for file reading/decoding (file I/O and numpy release the GIL)."""
    return min(8, (os.cpu_count() or 2) * 2)


@dataclass(frozen=True)
class SeriesInfo:
    """A de-identified summary of one DICOM series (what `list_series` returns)."""

    uid_suffix: str
    modality: str
    n_slices: int
    description: str
    rows: int = 0
    columns: int = 0
    n_files: int = 0
    multiframe: bool = False

    def __str__(self) -> str:
        kind = "multi-frame " if self.multiframe else ""
        return (
            f"...{self.uid_suffix} {self.modality} {self.n_slices} {kind}slices "
            f"{self.rows}x{self.columns} '{self.description}'"
        )


@dataclass
class Series:
    """Internal: one series' headers (may hold PHI, never shown) and what was excluded."""

    uid: str
    headers: list[SliceHeader]
    localizers: list[SliceHeader] = field(default_factory=list)

    @property
    def first(self) -> SliceHeader:
        return self.headers[0]

    @property
    def modality(self) -> str:
        return self.first.f.modality

    @property
    def multiframe(self) -> bool:
        return any(h.n_frames > 1 for h in self.headers)

    @property
    def n_slices(self) -> int:
        return sum(h.n_frames for h in self.headers)

    def info(self, suffix_len: int = 8) -> SeriesInfo:
        return SeriesInfo(
            uid_suffix=self.uid[-suffix_len:],
            modality=self.modality,
            n_slices=self.n_slices,
            description=safe_text(self.first.ds.get("SeriesDescription", "")),
            rows=self.first.f.rows or 0,
            columns=self.first.f.columns or 0,
            n_files=len(self.headers),
            multiframe=self.multiframe,
        )


@dataclass
class Scan:
    """Internal: every series found under a path, and what was skipped."""

    series: list[Series]
    warnings: list[str]


def _files_under(root: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(p for p in root.iterdir() if p.is_file())
    files = []
    for dirpath, dirnames, filenames in os.walk(root):  # no symlinked folders: no loops
        dirnames.sort()
        files.extend(Path(dirpath) / f for f in sorted(filenames))
    return [f for f in files if f.is_file()]


def _read_or_skip(path: Path) -> SliceHeader | str:
    try:
        return read_header(path)
    except NotDicomError:
        return "non-DICOM"


def _is_localizer(h: SliceHeader) -> bool:
    return "LOCALIZER" in h.f.image_type


def _normal(h: SliceHeader) -> tuple[float, float, float] | None:
    """Unit slice normal (row cosine × column cosine), in plain Python: called once per file."""
    o = h.f.orientation
    if o is None:
        return None
    n = (o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3])
    norm = (n[0] ** 2 + n[1] ** 2 + n[2] ** 2) ** 0.5
    return None if norm < 1e-6 else (n[0] / norm, n[1] / norm, n[2] / norm)


def _position(h: SliceHeader, normal) -> float | None:
    p = h.f.position
    return None if p is None or normal is None else p[0] * normal[0] + p[1] * normal[1] + p[2] * normal[2]


def _fills_gap(h: SliceHeader, main: list[SliceHeader], normal: np.ndarray | None) -> bool:
    """True if ``h`` sits inside the stack's extent but on no slice of it: a slot of the stack."""
    d = _position(h, normal)
    dists = [x for x in (_position(m, normal) for m in main) if x is not None]
    if d is None or len(dists) < 2:
        return False
    return min(dists) < d < max(dists) and min(abs(d - x) for x in dists) > 0.01


def _split_localizers(headers: list[SliceHeader]) -> tuple[list[SliceHeader], list[SliceHeader]]:
    """Separate scouts: ImageType LOCALIZER, or a tiny minority of another size or plane."""
    scouts = [h for h in headers if _is_localizer(h)]
    rest = [h for h in headers if not _is_localizer(h)]
    if len(rest) <= MAX_LOCALIZER_IMAGES or all(h.n_frames > 1 for h in rest):
        return rest, scouts

    def key(h: SliceHeader) -> tuple:
        n = _normal(h)
        axis = None if n is None else max(range(3), key=lambda i: abs(n[i]))
        return h.f.rows, h.f.columns, axis

    groups: dict[tuple, list[SliceHeader]] = {}
    for h in rest:
        groups.setdefault(key(h), []).append(h)
    main_key = max(groups, key=lambda k: len(groups[k]))
    main = groups[main_key]
    main_normal = _normal(main[0])
    keep = list(main)
    for k, members in groups.items():
        if k == main_key:
            continue
        other = _normal(members[0])
        angle = 90.0 if other is None or main_normal is None else float(
            np.degrees(np.arccos(min(1.0, abs(sum(a * b for a, b in zip(other, main_normal))))))
        )
        other_plane = angle > LOCALIZER_ANGLE_DEG
        other_size = k[:2] != main_key[:2] and not any(_fills_gap(h, main, main_normal) for h in members)
        if (other_plane or other_size) and len(members) <= MAX_LOCALIZER_IMAGES and len(main) > 2 * len(members):
            scouts.extend(members)
        else:
            keep.extend(members)  # geometry checks will explain why this is not one stack
    keep_set = {id(h) for h in keep}
    return [h for h in rest if id(h) in keep_set], scouts


def scan_files(files: list[Path], root: Path) -> Scan:
    """Read headers of ``files`` in parallel and group the image files into series."""
    warnings: list[str] = []
    with ThreadPoolExecutor(max_workers=io_threads()) as pool:
        results = list(pool.map(_read_or_skip, files))
    non_dicom = [f for f, r in zip(files, results) if isinstance(r, str)]
    headers = [r for r in results if isinstance(r, SliceHeader)]
    if non_dicom:
        names = ", ".join(f.name for f in non_dicom[:3]) + (" ..." if len(non_dicom) > 3 else "")
        warnings.append(f"skipped {len(non_dicom)} non-DICOM file(s): {names}")
    dicomdirs = [h for h in headers if h.is_dicomdir]
    if dicomdirs:
        warnings.append(f"skipped {len(dicomdirs)} DICOMDIR file(s) (the images are read directly)")
    broken = [h for h in headers if h.problem]
    non_image = [h for h in headers if not h.is_dicomdir and not h.has_image_header and not h.problem]
    if non_image:
        warnings.append(f"skipped {len(non_image)} DICOM object(s) without image pixel data")
    by_uid: dict[str, list[SliceHeader]] = {}
    for h in headers:
        if (h.has_image_header or h.problem) and not h.is_dicomdir:
            by_uid.setdefault(h.series_uid, []).append(h)
    series = []
    for uid, members in by_uid.items():
        if all(h.problem for h in members):
            warnings.append(f"skipped {len(members)} broken image file(s) of series ...{uid[-8:]}: {members[0].problem}")
            continue
        keep, scouts = _split_localizers(members)
        if scouts:
            warnings.append(
                f"excluded {len(scouts)} localizer/scout image(s) from series ...{uid[-8:]}: "
                + ", ".join(h.path.name for h in scouts[:3])
            )
        if keep:
            series.append(Series(uid=uid, headers=keep, localizers=scouts))
    series.sort(key=lambda s: (-s.n_slices, s.uid))
    for w in warnings:
        log.warning("%s: %s", root, w)
    return Scan(series=series, warnings=warnings)


def scan_path(root: Path, recursive: bool = True) -> Scan:
    """Scan a folder for DICOM series (recursively by default)."""
    return scan_files(_files_under(root, recursive), root)


def unique_suffixes(series: list[Series], min_len: int = 8) -> list[str]:
    """Shortest suffixes (≥ ``min_len`` chars) that tell the given series apart."""
    uids = [s.uid for s in series]
    n = min_len
    while n < max((len(u) for u in uids), default=0) and len({u[-n:] for u in uids}) < len(set(uids)):
        n += 1
    return [u[-n:] for u in uids]


def describe(series: list[Series]) -> str:
    """One line listing candidate series for an error: UID suffix, modality, slice count, matrix.

    Never the SeriesDescription: it is free text (the PS3.15 Basic Profile removes it) and may
    hold names or dates; `medmm info` shows it on request, errors never do.
    """
    parts = []
    for s, suffix in zip(series, unique_suffixes(series)):
        i = s.info()
        parts.append(f"...{suffix} {safe_text(i.modality, 8)} {i.n_slices} slices {i.rows}x{i.columns}")
    return "; ".join(parts)


def choose_series(scan: Scan, path: Path, series: str | None) -> Series:
    """Pick the requested series, else the single 3D CT/MR series.

    Raises:
        MedmmInputError: nothing loadable, no match, or several candidates (listed).
    """
    if not scan.series:
        skipped = f" ({'; '.join(scan.warnings)})" if scan.warnings else ""
        raise MedmmInputError(path, f"no DICOM images found{skipped}")
    if series:
        key = str(series).strip().lstrip(".")
        matches = [s for s in scan.series if s.uid == key or s.uid.endswith(key)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise MedmmInputError(path, f"no series matches '{safe_text(key, 16)}'; available: {describe(scan.series)}")
        raise MedmmInputError(path, f"series '{safe_text(key, 16)}' is ambiguous; candidates: {describe(matches)}")
    volumes = [s for s in scan.series if s.modality in VOLUME_MODALITIES and s.n_slices >= 4]
    if len(volumes) == 1:
        return volumes[0]
    if len(volumes) > 1:
        raise MedmmInputError(
            path, f"{len(volumes)} CT/MR series found; choose one with series=/--series <UID suffix>: {describe(volumes)}"
        )
    if len(scan.series) == 1:
        return scan.series[0]  # let the loader explain (too few slices, not CT/MR ...)
    raise MedmmInputError(
        path, f"no single CT/MR series with at least 4 slices; choose one with series=/--series: {describe(scan.series)}"
    )
