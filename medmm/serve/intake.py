"""Uploads into the spool: stream to disk with a byte limit, recognise the format, check limits.

The body is never held whole in memory: chunks go to ``spool/<job>/upload.part`` while the
SHA-256 and the size are counted, and the file is renamed to its final name only when complete.
Formats are recognised by content, not by a client-supplied name: a zip (``PK\\x03\\x04``), a
gzip stream (``.nii.gz``) or an uncompressed NIfTI-1/2 header.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

from medmm.errors import MedmmInputError


class LimitExceeded(MedmmInputError):
    """An upload or archive is over a configured limit (HTTP 413)."""


INPUT_NAMES = {"zip": "input.zip", "nifti_gz": "input.nii.gz", "nifti": "input.nii"}


async def stream_to_file(chunks: AsyncIterator[bytes], target: Path, max_bytes: int) -> tuple[int, str]:
    """Write ``chunks`` to ``target``; returns (bytes, sha256 hex).

    Raises:
        LimitExceeded: more than ``max_bytes`` arrived (the partial file is deleted).
    """
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with target.open("wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise LimitExceeded(None, f"request body is over the {max_bytes}-byte limit")
                digest.update(chunk)
                fh.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def sniff_kind(path: Path) -> str:
    """``zip``, ``nifti_gz`` or ``nifti`` from the first bytes of ``path``.

    Raises:
        MedmmInputError: empty, or none of those formats.
    """
    with path.open("rb") as fh:
        head = fh.read(352)
    if not head:
        raise MedmmInputError(None, "empty request body; send a zip of one DICOM series or a NIfTI file")
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "nifti_gz"
    if len(head) >= 348 and _nifti_header_size(head) in (348, 540):
        return "nifti"
    raise MedmmInputError(None, "body is neither a zip of a DICOM series nor a NIfTI file (.nii / .nii.gz)")


def _nifti_header_size(head: bytes) -> int:
    little, big = struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]
    return little if little in (348, 540) else big


def check_input(path: Path, kind: str, max_members: int, max_bytes: int) -> None:
    """Cheap checks before a job is accepted: archive limits and safety, a readable NIfTI header.

    The full reading happens in the worker with the same checks as ``medmm infer``; these catch
    what should be refused at once (400/413) rather than become a failed job.

    Raises:
        LimitExceeded: more members, more declared bytes or a higher compression ratio than allowed.
        MedmmInputError: unsafe or corrupt zip, or a NIfTI whose header nibabel cannot read.
    """
    if kind == "zip":
        _check_zip(path, max_members, max_bytes)
    elif kind == "nifti_gz":
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(352)
        except (OSError, EOFError) as err:
            raise MedmmInputError(None, f"gzip body is corrupt ({type(err).__name__})") from None
        if len(head) < 348 or _nifti_header_size(head) not in (348, 540):
            raise MedmmInputError(None, "gzip body is not a NIfTI file (.nii.gz)")


def _check_zip(path: Path, max_members: int, max_bytes: int) -> None:
    from medmm.io.archive import BOMB_MIN_BYTES, MAX_RATIO, check_zip

    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise LimitExceeded(None, f"zip has {len(infos)} members (limit {max_members})")
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise LimitExceeded(None, f"zip declares {total} uncompressed bytes (limit {max_bytes})")
            for info in infos:
                ratio = info.file_size / max(1, info.compress_size)
                if info.file_size > BOMB_MIN_BYTES and ratio > MAX_RATIO:
                    raise LimitExceeded(None, f"a zip member expands {ratio:.0f}x (zip bomb?)")
            files = check_zip(Path("upload.zip"), zf)  # names, links: medmm.io's own rules
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise MedmmInputError(None, f"corrupt or unsupported zip archive ({type(err).__name__})") from None
    if not files:
        raise MedmmInputError(None, "zip holds no files; send a zip of one DICOM series")
