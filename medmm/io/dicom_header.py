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
from medmm.io.text import safe_text

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
_EXECUTABLE_MAGIC = {b"MZ": "Windows (MZ)", b"\x7fELF": "Linux (ELF)"}
# (7FE0,0010) PixelData as read little-endian; big-endian files store it as E07F 1000.
_PIXEL_DATA_TAGS = ((0x7FE0, 0x0010), (0xE07F, 0x1000))


class NotDicomError(Exception):
    """Internal: the file is not a DICOM Part 10 file (no ``DICM`` magic); callers skip it."""


def _text(ds, keyword: str) -> str | None:
    """An element's value as text without pydicom's per-type conversion.

    Headers of a few hundred slices are read per load; pydicom's conversion of each DS/CS value
    into Python objects dominated that time, so the text-valued attributes medmm needs are read
    from the raw element bytes (ASCII by the standard for DS, IS, CS and UI) instead.
    """
    elem = ds.get_item(keyword)
    if elem is None or elem.value is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \x00")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _numbers(text: str | None, n: int) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return None
    return values if len(values) == n else None


def _int(ds, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ImageFields:
    """The header attributes medmm uses, parsed once per file (plain Python values)."""

    series_uid: str
    modality: str
    rows: int | None
    columns: int | None
    n_frames: int
    samples_per_pixel: int
    photometric: str
    bits_allocated: int | None
    bits_stored: int | None
    pixel_representation: int
    rescale_slope: str | None
    rescale_intercept: str | None
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    image_type: tuple[str, ...]
    transfer_syntax: str

    @classmethod
    def from_dataset(cls, ds) -> "ImageFields":
        meta = getattr(ds, "file_meta", None)
        frames = _int(ds, "NumberOfFrames")
        return cls(
            series_uid=_text(ds, "SeriesInstanceUID") or "",
            modality=(safe_text(_text(ds, "Modality"), 16) or "?").upper(),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            n_frames=max(1, frames or 1),
            samples_per_pixel=_int(ds, "SamplesPerPixel") or 1,
            photometric=(safe_text(_text(ds, "PhotometricInterpretation"), 16) or "MONOCHROME2").upper(),
            bits_allocated=_int(ds, "BitsAllocated"),
            bits_stored=_int(ds, "BitsStored"),
            pixel_representation=_int(ds, "PixelRepresentation") or 0,
            rescale_slope=_text(ds, "RescaleSlope"),
            rescale_intercept=_text(ds, "RescaleIntercept"),
            position=_numbers(_text(ds, "ImagePositionPatient"), 3),
            orientation=_numbers(_text(ds, "ImageOrientationPatient"), 6),
            pixel_spacing=_numbers(_text(ds, "PixelSpacing"), 2),
            image_type=tuple(v.strip().upper() for v in (_text(ds, "ImageType") or "").split("\\")),
            transfer_syntax=str(meta.get("TransferSyntaxUID", "")) if meta is not None else "",
        )


@dataclass
class SliceHeader:
    """A DICOM file's header (no pixel data) and where its pixel data element begins.

    Attributes:
        path: the file.
        ds: pydicom dataset read with ``stop_before_pixels=True`` (may hold PHI: never log it).
        pixel_offset: byte offset of the (7FE0,0010) element, or None if the file has none.
        file_size: size of the file in bytes (for truncation checks before decoding).
        f: the attributes medmm uses, parsed once.
        problem: why this image file cannot be used (e.g. truncated before its pixel data);
            raised only if the file belongs to the series being loaded.
    """

    path: Path
    ds: object
    pixel_offset: int | None
    file_size: int
    f: ImageFields
    problem: str | None = None

    @property
    def n_frames(self) -> int:
        return self.f.n_frames

    @property
    def series_uid(self) -> str:
        return self.f.series_uid

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
        return self.f.rows is not None and self.f.columns is not None


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
            if offset is not None and _tag_at(fp, offset) not in _PIXEL_DATA_TAGS:
                offset = None  # stopped at something else (e.g. FloatPixelData): no classic PixelData
    except (NotDicomError, MedmmInputError):
        raise
    except OSError as err:
        raise MedmmInputError(path, f"cannot read file ({err.strerror or type(err).__name__})") from None
    except Exception as err:  # pydicom raises many types on corrupt headers
        raise MedmmInputError(path, f"corrupt or truncated DICOM header ({type(err).__name__})") from None
    header = SliceHeader(path=path, ds=ds, pixel_offset=offset, file_size=size, f=ImageFields.from_dataset(ds))
    _check_complete(header)
    return header


def _check_complete(h: SliceHeader) -> None:
    """Catch truncated files: pydicom silently returns whatever elements precede the cut.

    A DICOM dataset (other than a DICOMDIR) must carry its SOP Class UID (else: error), and an
    object of an *Image Storage* SOP class must reach its pixel data (else: ``h.problem``).
    """
    if h.is_dicomdir:
        return
    sop = h.ds.get("SOPClassUID")
    if not sop:
        raise MedmmInputError(h.path, "corrupt or truncated DICOM header (no SOP Class UID)")
    if h.pixel_offset is None and "Image Storage" in getattr(sop, "name", ""):
        h.problem = "image object without pixel data (truncated file?)"


def _tag_at(fp, offset: int) -> tuple[int, int] | None:
    """(group, element) at ``offset``, read little-endian."""
    fp.seek(offset)
    raw = fp.read(4)
    if len(raw) < 4:
        return None
    return int.from_bytes(raw[0:2], "little"), int.from_bytes(raw[2:4], "little")


def read_dicom_header(path: str | Path):
    """Public helper: the header of one DICOM file as a pydicom ``Dataset`` (no pixel data).

    Used by writers (SR, SEG) that must reference the source series. Also accepts the
    ``<archive.zip>/<member>`` paths that `load_volume` puts in ``Volume.source_files`` for a
    zip input. The result may contain PHI: never log it.

    Raises:
        MedmmInputError: missing, not DICOM, executable preamble, or corrupt header.
    """
    path = Path(path)
    if not path.is_file():
        archive = next((p for p in path.parents if p.is_file()), None)
        if archive is None:
            raise MedmmInputError(path, "no such DICOM file")
        return _read_zip_member_header(archive, path.relative_to(archive).as_posix())
    try:
        return read_header(path).ds
    except NotDicomError:
        raise MedmmInputError(path, "not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None


def _read_zip_member_header(archive: Path, member: str):
    import io
    import zipfile

    import pydicom

    from medmm.io.archive import check_zip

    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as fh:
            check_zip(archive, zf)  # same name/size/bomb limits as load_volume
            head = fh.read(132)
            check_preamble(archive, head)
            data = head + fh.read()
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except NotDicomError:
        raise MedmmInputError(archive, f"member '{member[:80]}' is not a DICOM file") from None
    except MedmmInputError:
        raise
    except (KeyError, zipfile.BadZipFile) as err:
        raise MedmmInputError(archive, f"no readable member '{member[:80]}' ({type(err).__name__})") from None
    except Exception as err:  # pydicom raises many types on corrupt headers
        raise MedmmInputError(archive, f"member '{member[:80]}': corrupt DICOM header ({type(err).__name__})") from None
