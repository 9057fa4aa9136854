"""Batch inference: many scans from a manifest or a folder, resumable, one bad scan never fatal.

A scan is *finished* when ``<out>/<scan name>/result.json`` exists and names the same model id,
so re-running the same command skips it; a different model re-does it. Each failure is kept as
one line (scan name + reason) and reported in the summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmm.errors import MedmmError, MedmmInputError
from medmm.inference.writers.files import scan_name, write_outputs

MANIFEST_SUFFIXES = (".csv", ".jsonl")
_SCAN_SUFFIXES = (".nii", ".nii.gz", ".zip")


@dataclass
class ScanJob:
    """One scan to diagnose: output name, input path, optional indication and series."""

    name: str
    path: Path
    indication: str | None = None
    series: str | None = None


@dataclass
class BatchSummary:
    """Counts of a batch run and its one-line failures."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def record(self, name: str, reason: str | None, echo: Callable[[str], None] = print) -> None:
        """Count scan ``name`` as done (``reason`` None) or failed (echoing its one-line reason)."""
        if reason is None:
            self.done.append(name)
            return
        self.failed.append((name, reason))
        echo(f"failed {name}: {reason}")

    def lines(self) -> list[str]:
        """Human summary: totals, then one line per failure."""
        head = f"{len(self.done)} done, {len(self.skipped)} skipped (already finished), {len(self.failed)} failed"
        return [head, *(f"  failed {name}: {reason}" for name, reason in self.failed)]


def _is_scan_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_SCAN_SUFFIXES)


def is_batch_input(path: str | Path) -> bool:
    """True for a manifest (CSV/JSONL) or a folder of scans (sub-folders and/or NIfTI/zip files).

    A folder that directly holds other files (e.g. DICOM slices) is one scan, not a batch.
    """
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in MANIFEST_SUFFIXES
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        return False
    return all(p.is_dir() or _is_scan_file(p) for p in entries)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count + 1}")
    return out


def discover_jobs(path: str | Path) -> list[ScanJob]:
    """Scans of a manifest (``image`` + optional ``indication``, named by ``case_id``) or folder.

    Raises:
        MedmmInputError: unreadable manifest, or an empty folder.
    """
    path = Path(path)
    if path.is_file():
        from medmm.data import read_manifest

        # inference needs no labels; a missing image fails only its own scan
        cases = read_manifest(path, labels=(), check_files=False)
        names = _unique([scan_name(str(c.case_id)) for c in cases])
        return [ScanJob(n, Path(c.image), getattr(c, "indication", None)) for n, c in zip(names, cases)]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith(".") and (p.is_dir() or _is_scan_file(p)))
    if not entries:
        raise MedmmInputError(path, "no scans found (expected sub-folders, NIfTI or zip files)")
    names = _unique([scan_name(p) for p in entries])
    return [ScanJob(n, p) for n, p in zip(names, entries)]


def is_finished(out_dir: Path, model_id: str) -> bool:
    """True when ``out_dir/result.json`` exists and was written by the model ``model_id``."""
    result_json = out_dir / "result.json"
    if not result_json.is_file():
        return False
    try:
        return json.loads(result_json.read_text()).get("model", {}).get("id") == model_id
    except (OSError, ValueError):
        return False


def run_batch(
    predictor: Any,
    jobs: list[ScanJob],
    out_root: str | Path,
    writer_options: dict[str, Any] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    force: bool = False,
) -> BatchSummary:
    """Diagnose ``jobs`` into ``out_root/<name>/``, skipping finished scans, surviving failures.

    Args:
        predictor: a :class:`~medmm.inference.Predictor`.
        jobs: from :func:`discover_jobs`.
        out_root: parent folder of the per-scan output folders.
        writer_options: extra :func:`~medmm.inference.writers.write_outputs` arguments.
        progress: show a tqdm progress bar (stderr).
        echo: where one-line failure messages go.
        force: diagnose inputs the plausibility gate refuses (see ``inference/plausibility.py``).
    """
    from tqdm.auto import tqdm

    out_root = Path(out_root)
    summary = BatchSummary()
    for job in tqdm(jobs, desc="medmm infer", unit="scan", disable=not progress):
        out_dir = out_root / job.name
        if is_finished(out_dir, predictor.model_id):
            summary.skipped.append(job.name)
            continue
        summary.record(job.name, diagnose_job(predictor, job, out_dir, writer_options, force), echo)
    return summary


def diagnose_job(
    predictor: Any, job: ScanJob, out_dir: str | Path, writer_options: dict[str, Any] | None = None, force: bool = False
) -> str | None:
    """Diagnose one scan into ``out_dir``: None when its outputs are written, else the one-line reason.

    The one per-case step of every batch mode (this process, or a Ray worker in ``medmm.scale``):
    any error of one scan becomes its reason, never an exception that would stop the batch.
    """
    from medmm.inference.writers.outfolder import check_sr_input

    options = dict(writer_options or {})
    try:
        check_sr_input(job.path, bool(options.get("dicom_sr")))  # before inference, not after
        result = predictor.predict(job.path, indication=job.indication, series=job.series, force=force)
        write_outputs(result, Path(out_dir), input_path=job.path, **options)
    except MedmmError as err:
        return str(getattr(err, "reason", err))
    except Exception as err:  # a bad scan must not stop the batch; name the error type
        return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    return None
