"""Safe extraction of a ``.zip`` of DICOM files into a temporary folder.

Refused before anything is written: absolute member names, ``..`` components, drive letters,
symlinks, more than ``MAX_MEMBERS`` members, more than ``MAX_TOTAL_BYTES`` declared uncompressed,
and zip bombs (a member that declares more than ``BOMB_MIN_BYTES`` at a compression ratio above
``MAX_RATIO``). While extracting, the bytes actually produced are counted as well, so a member
that lies about its size cannot exceed the limits either.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from medmm.errors import MedmmInputError

MAX_MEMBERS = 50_000
MAX_TOTAL_BYTES = 8 * 1024**3
MAX_RATIO = 200
BOMB_MIN_BYTES = 16 * 1024**2
_CHUNK = 1024 * 1024


def _check_name(zip_path: Path, name: str) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise MedmmInputError(zip_path, f"zip member '{name[:80]}' escapes the archive (absolute path or '..'); refusing it")


def check_zip(zip_path: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Validate every member's name, type and size; return the regular files to extract."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise MedmmInputError(zip_path, f"zip has {len(infos)} members (limit {MAX_MEMBERS})")
    total = 0
    files = []
    for info in infos:
        _check_name(zip_path, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise MedmmInputError(zip_path, f"zip member '{info.filename[:80]}' is a symbolic link; refusing it")
        if info.is_dir():
            continue
        total += info.file_size
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > BOMB_MIN_BYTES and ratio > MAX_RATIO:
            raise MedmmInputError(
                zip_path, f"zip member '{info.filename[:80]}' expands {ratio:.0f}x to {info.file_size} bytes (zip bomb?)"
            )
        files.append(info)
    if total > MAX_TOTAL_BYTES:
        raise MedmmInputError(zip_path, f"zip declares {total} uncompressed bytes (limit {MAX_TOTAL_BYTES})")
    return files


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
            written = 0
            members: dict[Path, str] = {}
            for i, info in enumerate(files):
                # Members are renamed to their index: names only matter for messages, and this
                # rules out every path trick left (case clashes, reserved names, long paths).
                rel = PurePosixPath(info.filename.replace("\\", "/"))
                target = dest / f"{i:06d}_{rel.name}"[:200]
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
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError) as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise MedmmInputError(zip_path, f"corrupt or unsupported zip archive ({type(err).__name__})") from None
