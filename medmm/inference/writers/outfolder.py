"""`OutputFolder`: one scan's output set, written all-or-nothing into a locked folder.

The contract (``docs/inference.md``, "Output folder"):

* **Locked.** While a run uses ``--out``, it holds an exclusive ``flock`` on the folder itself
  (no lock file is left behind; the kernel drops the lock when the process dies, even by
  ``kill -9``). A second run into the same folder waits for the first, then replaces its set.
* **All or nothing.** The outputs are written into a hidden staging folder next to ``--out``
  (``.<name>.medmm-staging-*`` in its parent, so a killed run leaves nothing inside ``--out``;
  inside ``--out`` when the parent is not writable or on another file system) and moved into
  place at the end: ``result.json`` (the completion marker) is removed first and put
  back last, so a folder holding ``result.json`` always holds one complete set of one scan.
* **No stale files.** Outputs of a previous run that this run does not write (``report.html``
  after ``--no-html``, ``fhir.json`` without ``--fhir``) are removed when the new set is put in
  place; staging folders and ``.*.tmp`` files left by a killed run, and the incomplete set such a
  run leaves (no ``result.json``), are removed when the next run starts. medmm owns the four
  output names in ``--out``; other files are never touched.
* **Checked first.** The folder must not be (inside) the input series, must be creatable and
  writable, and ``--dicom-sr`` needs a DICOM input: all checked before the model is loaded.

Written by hand: no well-kept library offers a multi-file atomic commit with a folder lock.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from medmm.errors import MedmmInputError

log = logging.getLogger("medmm.inference")

# format -> file name (result.json is the completion marker and is always written)
OUTPUT_FILES = {"dicom_sr": "report_sr.dcm", "fhir": "fhir.json", "html": "report.html", "json": "result.json"}
MARKER = OUTPUT_FILES["json"]
STAGING_PREFIX = ".medmm-staging-"
LOCK_TIMEOUT_S = 900.0
_local = threading.local()  # folders this thread has locked -> nesting depth (re-entrant per thread)


def _held() -> dict[Path, int]:
    if not hasattr(_local, "held"):
        _local.held = {}
    return _local.held


def _sibling_prefix(out: Path) -> str:
    return f".{out.name}{STAGING_PREFIX}"


def _debris(out: Path) -> list[Path]:
    """Leftovers of a killed run: staging folders (inside ``out`` or next to it) and atomic-write
    temp files of our outputs. Only called while holding the folder's lock."""
    found = []
    for entry in out.iterdir():
        name = entry.name
        if name.startswith(STAGING_PREFIX) and not entry.is_symlink():
            found.append(entry)
        elif name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in OUTPUT_FILES.values()):
            found.append(entry)
    try:
        found += [e for e in out.parent.glob(f"{_sibling_prefix(out)}*") if e.is_dir() and not e.is_symlink()]
    except OSError:
        pass
    return found


def _staging_dir(out: Path) -> Path:
    """A fresh staging folder: next to ``out`` when possible (same file system), else inside it."""
    try:
        if os.stat(out.parent).st_dev == os.stat(out).st_dev:
            return Path(tempfile.mkdtemp(prefix=f"{_sibling_prefix(out)}{os.getpid()}-", dir=out.parent))
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class OutputFolder:
    """Context manager: lock ``out_dir``, clean debris, then :meth:`write` one complete output set.

    Args:
        out_dir: the output folder (created if missing; removed again if it stays empty).
        input_path: the scanned path (outputs may not go inside it), or None.
        dicom_sr: whether an SR will be written (needs a DICOM input).
        batch: ``out_dir`` is a batch root holding per-scan folders (locked, not cleaned).
        on_wait: called once with a message when another run holds the folder.

    Raises:
        MedmmInputError: on entering, for every problem :func:`prepare` finds; a folder still
            locked after ``LOCK_TIMEOUT_S``.
    """

    def __init__(self, out_dir: str | Path, input_path: str | Path | None = None, *, dicom_sr: bool = False,
                 batch: bool = False, on_wait=None, timeout: float = LOCK_TIMEOUT_S):
        self.out_dir = Path(out_dir)
        self.input_path = input_path
        self.dicom_sr = dicom_sr
        self.batch = batch
        self.on_wait = on_wait
        self.timeout = timeout
        self.out: Path | None = None
        self._fd: int | None = None
        self._created = False

    # ---------------------------------------------------------------- enter/exit
    def __enter__(self) -> OutputFolder:
        from medmm.inference.writers.files import check_out_dir

        out = check_out_dir(self.out_dir, self.input_path)
        check_sr_input(self.input_path, self.dicom_sr)
        self._created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.out = out
            self._lock(out)
            if not self.batch:
                self._clean(out)
            _probe_writable(out)
        except OSError as err:
            self._release()
            raise MedmmInputError(self.out_dir, f"cannot write outputs here ({err.strerror or type(err).__name__})") from None
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release()

    def _release(self) -> None:
        out = self.out
        if out is None:
            return
        self._unlock(out)
        if self._created:
            try:
                out.rmdir()  # only if empty: a failed run leaves no empty folder behind
            except OSError:
                pass
        self.out = None

    # ---------------------------------------------------------------- locking
    def _lock(self, out: Path) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no folder locking
            return
        held = _held()
        if out in held:  # this thread already holds it (the CLI around write_outputs)
            held[out] += 1
            self._fd = -1
            return
        fd = os.open(out, os.O_RDONLY)  # flock is per open file: other threads/processes wait
        deadline = time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # another run holds the folder: wait for it
                pass
            except OSError as err:  # a file system without flock (some network mounts): go on unlocked
                log.warning("%s: cannot lock the output folder (%s); not protected against concurrent runs",
                            out, err.strerror or type(err).__name__)
                os.close(fd)
                return
            if not told and self.on_wait is not None:
                self.on_wait(f"waiting for another medmm run writing to {out}")
            told = True
            if time.monotonic() > deadline:
                os.close(fd)
                raise MedmmInputError(
                    self.out_dir, f"output folder is in use by another medmm run (waited {self.timeout:.0f} s)"
                ) from None
            time.sleep(0.1)
        held[out] = 1
        self._fd = fd

    def _unlock(self, out: Path) -> None:
        if self._fd is None:
            return
        held = _held()
        held[out] = held.get(out, 1) - 1
        if held[out] <= 0:
            held.pop(out, None)
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    # ---------------------------------------------------------------- cleaning
    def _clean(self, out: Path) -> None:
        """Remove what a killed run left: debris, and (if there was debris) a set without its marker."""
        debris = _debris(out)
        for entry in debris:
            _remove(entry)
        if debris and not (out / MARKER).exists():  # killed mid-commit: the rest is half a set
            for name in OUTPUT_FILES.values():
                target = out / name
                if target.is_file() or target.is_symlink():
                    target.unlink()

    # ---------------------------------------------------------------- writing
    def write(self, result: Any, html: bool = True, dicom_sr: bool = False, fhir: bool = False,
              keep_phi: bool = False, json_writer=None) -> dict[str, Path]:
        """Write the requested formats into staging, then swap the whole set in (see module doc).

        Returns:
            Format name -> final path.
        """
        if self.out is None:
            raise RuntimeError("OutputFolder.write outside its `with` block")
        out = self.out
        staging = _staging_dir(out)
        try:
            staged = _write_formats(result, staging, html, dicom_sr, fhir, keep_phi, json_writer)
            return _commit(out, staging, staged)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _write_formats(result: Any, staging: Path, html: bool, dicom_sr: bool, fhir: bool, keep_phi: bool,
                   json_writer) -> dict[str, Path]:
    staged: dict[str, Path] = {}
    if hasattr(result, "explain_positives"):  # i20 hook: evidence + site check into result.json and report.html
        from medmm.inference.writers.html import MAX_CAM_FINDINGS

        result.explain_positives(MAX_CAM_FINDINGS)
    if dicom_sr:
        from medmm.inference.writers.dicom_sr import write_dicom_sr

        staged["dicom_sr"] = write_dicom_sr(result, staging / OUTPUT_FILES["dicom_sr"], keep_phi=keep_phi)
    if fhir:
        from medmm.inference.writers.fhir import write_fhir

        staged["fhir"] = write_fhir(result, staging / OUTPUT_FILES["fhir"])
    if html:
        from medmm.inference.writers.html import write_html

        staged["html"] = write_html(result, staging / OUTPUT_FILES["html"])
    staged["json"] = json_writer(staging / MARKER, result.to_json())
    return staged


def _commit(out: Path, staging: Path, staged: dict[str, Path]) -> dict[str, Path]:
    """Marker out, stale outputs out, new files in, marker in last."""
    (out / MARKER).unlink(missing_ok=True)
    for kind, name in OUTPUT_FILES.items():
        target = out / name
        if kind not in staged and (target.is_file() or target.is_symlink()):
            target.unlink()
    final: dict[str, Path] = {}
    for kind in sorted(staged, key=lambda k: k == "json"):  # result.json last
        final[kind] = out / OUTPUT_FILES[kind]
        os.replace(staged[kind], final[kind])
    return final


def _probe_writable(out: Path) -> None:
    """Create and delete a file: a read-only or full folder fails now, not after inference."""
    fd, probe = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}probe-", dir=out)
    os.close(fd)
    os.unlink(probe)


def check_sr_input(input_path: str | Path | None, dicom_sr: bool) -> None:
    """``--dicom-sr`` references the source DICOM instances: refuse a NIfTI input up front."""
    if not dicom_sr or input_path is None:
        return
    from medmm.io.nifti import is_nifti_path

    p = Path(input_path)
    if p.is_file() and is_nifti_path(p):
        raise MedmmInputError(p, "--dicom-sr needs a DICOM input (a DICOM SR references the source images); "
                                 "this is NIfTI: drop --dicom-sr or use --fhir")
