"""Read DICOM headers cheaply and safely, remembering where the pixel data starts.

Only files with the standard 128-byte preamble + ``DICM`` magic are treated as DICOM: reading
arbitrary bytes with ``force=True`` would turn any junk into a "dataset". A preamble that starts
like a Windows (``MZ``) or Linux (``\\x7fELF``) executable marks a DICOM/executable polyglot
(CVE-2019-11687) and is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medmm.errors import MedmmInputError

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
_EXECUTABLE_MAGIC = {b"MZ": "Windows (MZ)", b"\x7fELF": "Linux (ELF)"}


class NotDicomError(Exception):
    """Internal: the file is not a DICOM Part 10 file (no ``DICM`` magic); callers skip it."""


@dataclass
class SliceHeader:
    """A DICOM file's header (no pixel data) and where its pixel data element begins.

    Attributes:
        path: the file.
        ds: pydicom dataset read with ``stop_before_pixels=True``.
        pixel_offset: byte offset of the (7FE0,0010) element, or None if the file has none.
        file_size: size of the file in bytes (for truncation checks before decoding).
    """

    path: Path
    ds: object
    pixel_offset: int | None
    file_size: int

    @property
    def n_frames(self) -> int:
        try:
            return max(1, int(self.ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            return 1

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "") or "")

    @property
    def is_dicomdir(self) -> bool:
        meta = getattr(self.ds, "file_meta", None)
        sop = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
        return sop == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in self.ds

    @property
    def is_image(self) -> bool:
        return self.pixel_offset is not None and self.has_image_header

    @property
    def has_image_header(self) -> bool:
        """Rows/Columns present: an image, even if its pixel data is missing (then it is broken)."""
        return "Rows" in self.ds and "Columns" in self.ds


def check_preamble(path: Path, head: bytes) -> None:
    """Raise `NotDicomError` without ``DICM`` magic, `MedmmInputError` for an executable preamble."""
    if len(head) < 132 or head[128:132] != b"DICM":
        raise NotDicomError(str(path))
    for magic, kind in _EXECUTABLE_MAGIC.items():
        if head.startswith(magic):
            raise MedmmInputError(
                path, f"DICOM preamble holds a {kind} executable header (DICOM/executable polyglot); refusing to read it"
            )


def read_header(path: str | Path) -> SliceHeader:
    """Read one DICOM file's header, stopping before the pixel data.

    Raises:
        NotDicomError: not a DICOM Part 10 file (caller decides whether to skip it).
        MedmmInputError: executable preamble, or a DICOM file whose header is corrupt/truncated.
    """
    import pydicom

    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fp:
            check_preamble(path, fp.read(132))
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            offset = fp.tell() if fp.tell() < size else None
    except (NotDicomError, MedmmInputError):
        raise
    except OSError as err:
        raise MedmmInputError(path, f"cannot read file ({err.strerror or type(err).__name__})") from None
    except Exception as err:  # pydicom raises many types on corrupt headers
        raise MedmmInputError(path, f"corrupt or truncated DICOM header ({type(err).__name__})") from None
    if offset is not None and _peek_tag(path, offset) not in ((0x7FE0, 0x0010), (0xE07F, 0x1000)):
        offset = None  # stopped at something else (e.g. FloatPixelData): no classic PixelData
    return SliceHeader(path=path, ds=ds, pixel_offset=offset, file_size=size)


def _peek_tag(path: Path, offset: int) -> tuple[int, int] | None:
    """(group, element) read little-endian; big-endian PixelData reads as (0xE07F, 0x1000)."""
    with open(path, "rb") as fp:
        fp.seek(offset)
        raw = fp.read(4)
    if len(raw) < 4:
        return None
    return int.from_bytes(raw[0:2], "little"), int.from_bytes(raw[2:4], "little")


def read_dicom_header(path: str | Path):
    """Public helper: the header of one DICOM file as a pydicom ``Dataset`` (no pixel data).

    Used by writers (SR, SEG) that must reference the source series. May contain PHI: never log it.

    Raises:
        MedmmInputError: not DICOM, executable preamble, or corrupt header.
    """
    try:
        return read_header(path).ds
    except NotDicomError:
        raise MedmmInputError(path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
