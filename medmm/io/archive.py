"""Safe extraction of a ``.zip`` of DICOM files into a temporary folder.

Refused before anything is written: absolute member names, ``..`` components, drive letters,
symlinks, encrypted members, more than ``MAX_MEMBERS`` members, more than ``MAX_TOTAL_BYTES``
declared uncompressed (or more than the free space of the temporary folder), and zip bombs: the
*whole archive's* declared size over ``BOMB_MIN_BYTES`` at a compression ratio above ``MAX_RATIO``
(many moderately sized members add up: 60 x 15 MiB of zeros is a 0.9 MB zip), or one member
above ``MAX_RATIO``. While extracting, the bytes actually produced are counted as well, so a
member that lies about its size cannot exceed the limits either.

Members are extracted under their index (``000007.dcm``), never under their own names: names only
matter for messages, and this rules out every path trick left (case clashes, reserved names,
long or non-ASCII names over the file system's 255-byte limit).

Python's ``zipfile`` decodes lazily, so corrupt members surface as ``zlib.error``, ``EOFError``
or ``BadZipFile`` (CRC) mid-copy; all of them become one `MedmmInputError` naming the archive.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from medmm.errors import MedmmInputError

MAX_MEMBERS = 50_000
MAX_TOTAL_BYTES = 8 * 1024**3
MAX_RATIO = 200
BOMB_MIN_BYTES = 16 * 1024**2
_CHUNK = 1024 * 1024
_ENCRYPTED = 0x1  # general purpose bit 0
_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError,
           zlib.error, RuntimeError, UnicodeDecodeError, KeyError, IndexError, OverflowError)


def _check_name(zip_path: Path, name: str) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise MedmmInputError(zip_path, f"zip member '{name[:80]}' escapes the archive (absolute path or '..'); refusing it")


def check_zip(zip_path: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Validate every member's name, type and size; return the regular files to extract."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise MedmmInputError(zip_path, f"zip has {len(infos)} members (limit {MAX_MEMBERS})")
    total = packed = 0
    files = []
    for info in infos:
        _check_name(zip_path, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise MedmmInputError(zip_path, f"zip member '{_name(info)}' is a symbolic link; refusing it")
        if info.is_dir():
            continue
        if info.flag_bits & _ENCRYPTED:
            raise MedmmInputError(
                zip_path, f"zip member '{_name(info)}' is encrypted; medmm does not read password-protected archives"
            )
        total += info.file_size
        packed += info.compress_size
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > BOMB_MIN_BYTES and ratio > MAX_RATIO:
            raise MedmmInputError(
                zip_path, f"zip member '{_name(info)}' expands {ratio:.0f}x to {info.file_size} bytes (zip bomb?)"
            )
        files.append(info)
    if total > MAX_TOTAL_BYTES:
        raise MedmmInputError(zip_path, f"zip declares {total} uncompressed bytes (limit {MAX_TOTAL_BYTES})")
    if total > BOMB_MIN_BYTES and total / max(1, packed) > MAX_RATIO:
        raise MedmmInputError(
            zip_path, f"zip expands {total / max(1, packed):.0f}x to {total} bytes in {len(files)} members "
            f"(limit {MAX_RATIO}x; zip bomb?)",
        )
    return files


def _name(info: zipfile.ZipInfo) -> str:
    from medmm.io.text import one_line

    return one_line(info.filename[:80])


def _target_name(i: int, member: str) -> str:
    """``000007.dcm``: the member's index and, if short and plain ASCII, its extension."""
    suffix = PurePosixPath(member.replace("\\", "/")).suffix.lower()
    ok = len(suffix) <= 8 and suffix[1:].isascii() and suffix[1:].isalnum()
    return f"{i:06d}{suffix if ok else ''}"


def check_free_space(zip_path: Path, dest: Path, needed: int) -> None:
    """Refuse to extract more than the temporary folder's file system can hold."""
    try:
        free = shutil.disk_usage(dest).free
    except OSError:
        return
    if needed > free:
        raise MedmmInputError(
            zip_path, f"zip needs {needed} bytes extracted but the temporary folder ({tempfile.gettempdir()}) "
            f"has {free} free; set TMPDIR to a larger disk",
        )


def extract_zip(zip_path: Path, dest: Path) -> dict[Path, str]:
    """Extract a validated zip into ``dest`` (an empty folder), counting the real bytes written.

    Returns:
        extracted file -> member name in the archive.

    Raises:
        MedmmInputError: not a zip, corrupt, unsafe member, or over the limits.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            files = check_zip(zip_path, zf)
            declared = sum(f.file_size for f in files)
            check_free_space(zip_path, dest, declared)
            written = 0
            members: dict[Path, str] = {}
            for i, info in enumerate(files):
                target = dest / _target_name(i, info.filename)  # see module docstring
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > MAX_TOTAL_BYTES or written > declared:
                            raise MedmmInputError(zip_path, "zip members expand beyond their declared sizes (zip bomb?)")
                        out.write(chunk)
                members[target] = info.filename
            return members
    except MedmmInputError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except _ERRORS as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise MedmmInputError(zip_path, f"corrupt or unsupported zip archive ({_zip_reason(err)})") from None


def _zip_reason(err: BaseException) -> str:
    if isinstance(err, zlib.error):
        return "compressed data is damaged (zlib error)"
    if isinstance(err, zipfile.BadZipFile) and "CRC" in str(err):
        return "a member fails its CRC check"
    if isinstance(err, NotImplementedError):
        return "compression method not supported"
    return type(err).__name__
