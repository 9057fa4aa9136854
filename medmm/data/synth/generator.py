"""Synthetic chest-CT data set: phantom volumes (NIfTI and/or DICOM) + reports + a manifest.

``synthesize(out_dir, n, seed)`` writes ``manifest.csv`` (one row per scan, patient-level split),
``images/<case>.nii.gz`` and/or ``dicom/<case>/slice_*.dcm`` and ``synth.json`` (parameters and
prevalences). Every random choice derives from ``seed`` through per-(patient, scan, purpose)
streams, so the output is byte-identical for the same arguments, with or without worker processes.

``counterfactuals=k`` adds, for every *training* scan, k re-renderings of the same patient and scan
(same anatomy, noise and other findings) with one finding switched on or off: pairs that differ
only in one finding show the network that finding's own image evidence instead of the findings it
co-occurs with. Validation and test scans are untouched, so metrics stay on natural data.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from medmm.data.case import Case
from medmm.data.manifest import write_manifest
from medmm.data.splits import split_patients
from medmm.data.synth.anatomy import sample_patient
from medmm.data.synth.findings import RENDERED_FINDINGS, UNRENDERED_FINDINGS
from medmm.data.synth.identity import sample_identity, study_dates
from medmm.data.synth.labels import IMPLICATIONS, close_implications, follow_up_labels, sample_age_sex, sample_labels
from medmm.data.synth.phantom import Phantom, render_phantom, sample_scan
from medmm.data.synth.reports import write_indication, write_report
from medmm.labels import CT_RATE_FINDINGS

GENERATOR_VERSION = 3  # bump when the output for a given seed changes (3: ids carry the seed)
FORMATS = ("nifti", "dicom", "both")
FOLLOW_UP_FRACTION = 0.25
MARKER = ".medmm_synth_complete.json"


def _patient_state(entropy: int):
    rng = np.random.default_rng([entropy, 1])
    age, sex = sample_age_sex(rng)
    return age, sex, sample_patient(rng, age, sex)


def _scan_labels(entropy: int, age: int, n_scans: int) -> list[dict[str, int]]:
    labels = [sample_labels(np.random.default_rng([entropy, 3, 0]), age)]
    for s in range(1, n_scans):
        labels.append(follow_up_labels(np.random.default_rng([entropy, 3, s]), labels[-1], age))
    return labels


def render_scan(entropy: int, size: int, labels: dict[str, int] | None = None, scan_index: int = 0,
                n_scans: int = 1) -> tuple[Phantom, dict[str, int], str, str | None]:
    """Render scan ``scan_index`` of the patient seeded by ``entropy`` (labels sampled if None)."""
    age, _, patient = _patient_state(entropy)
    if labels is None:
        labels = _scan_labels(entropy, age, max(n_scans, scan_index + 1))[scan_index]
    else:
        unknown = set(labels) - set(CT_RATE_FINDINGS)
        if unknown:
            raise ValueError(f"unknown finding(s): {sorted(unknown)}; expected names from CT_RATE_FINDINGS")
        labels = close_implications({k: int(labels.get(k, 0)) for k in CT_RATE_FINDINGS})
    scan = sample_scan(np.random.default_rng([entropy, 2, scan_index]), patient)
    phantom = render_phantom(patient, scan, labels, size, entropy, scan_index)
    text_rng = np.random.default_rng([entropy, 4, scan_index])
    report = write_report(labels, phantom.specs, text_rng)
    indication = write_indication(labels, scan_index > 0, text_rng)
    return phantom, labels, report, indication


def render_case(seed: int, size: int = 64, labels: dict[str, int] | None = None):
    """Render one synthetic scan in memory.

    Args:
        seed: patient seed (same seed -> same anatomy, labels, report, noise).
        size: volume edge in voxels (the anatomy is in mm; voxels grow as size shrinks).
        labels: finding -> 0/1 to force (missing = 0; implied parents are switched on);
            None samples them with CT-RATE-like prevalences.

    Returns:
        ``(hu, affine, labels, report, indication)``: float32 HU ``(X, Y, Z)`` (X → patient left,
        Y → posterior, Z → superior), 4×4 voxel → RAS affine, the 18 labels, report text and
        indication (or None).

    >>> hu, affine, labels, report, indication = render_case(0, size=32)
    >>> hu.shape, sorted(labels) == sorted(CT_RATE_FINDINGS)
    ((32, 32, 32), True)
    """
    phantom, labels, report, indication = render_scan(int(seed), int(size), labels)
    return phantom.hu, phantom.affine, labels, report, indication


def _plan(n: int, seed: int) -> list[tuple[int, int, int]]:
    """(patient number, scan index, scans of that patient) for ``n`` scans; ~25 % of patients rescanned."""
    rng = np.random.default_rng([seed, 0])
    plan, p = [], 0
    while len(plan) < n:
        scans = min(2 if rng.random() < FOLLOW_UP_FRACTION else 1, n - len(plan))
        p += 1
        plan.extend((p, s, scans) for s in range(scans))
    return plan


def _entropy(seed: int, patient: int) -> int:
    return int(np.random.SeedSequence([seed, patient]).generate_state(1, dtype=np.uint64)[0] >> 2)


def counterfactual_labels(labels: dict[str, int], rng: np.random.Generator) -> tuple[dict[str, int], str]:
    """``labels`` with one finding (drawn uniformly) switched; switching a parent off also
    switches off the findings that imply it, so the ontology's implications still hold."""
    name = CT_RATE_FINDINGS[int(rng.integers(len(CT_RATE_FINDINGS)))]
    new = dict(labels)
    new[name] = 1 - labels[name]
    if new[name] == 0:
        for child, parent in IMPLICATIONS:
            if parent == name:
                new[child] = 0
    return close_implications(new), name


def _make_case(job: tuple) -> dict:
    """Render one scan (or its ``twin``-th counterfactual) and write its files; runs in a worker process when asked."""
    from medmm.io.writers import write_dicom_series, write_nifti

    out_dir, seed, patient_no, scan_index, n_scans, size, fmt, twin = job
    entropy = _entropy(seed, patient_no)
    labels, switched = None, None
    if twin:
        age, _, _ = _patient_state(entropy)
        natural = _scan_labels(entropy, age, max(n_scans, scan_index + 1))[scan_index]
        labels, switched = counterfactual_labels(natural, np.random.default_rng([entropy, 7, scan_index, twin]))
    phantom, labels, report, indication = render_scan(entropy, size, labels, scan_index, n_scans)
    pid = patient_id(seed, patient_no)
    case_id = f"{pid}_{scan_index + 1}" + (f"_cf{twin}" if twin else "")
    stored = np.rint(phantom.hu).astype(np.int16)  # HU as int16, like scanners store them
    out = Path(out_dir)
    row = dict(case_id=case_id, patient_id=pid, labels=labels, report=report, indication=indication,
               meta={"counterfactual": switched} if twin else {})
    if fmt in ("nifti", "both"):
        row["image"] = f"images/{case_id}.nii.gz"
        write_nifti(stored, phantom.affine, out / row["image"])
    if fmt in ("dicom", "both"):
        age, _, _ = _patient_state(entropy)
        id_rng = np.random.default_rng([entropy, 6])
        dates = study_dates(id_rng, n_scans)
        who = sample_identity(id_rng, age, dates[0])
        folder = f"dicom/{case_id}"
        write_dicom_series(
            stored.astype(np.float32), phantom.affine, out / folder,
            patient_name=who.name, patient_id=who.patient_id, birth_date=who.birth_date,
            study_date=dates[scan_index].strftime("%Y%m%d"), series_description="CHEST CT SYNTHETIC",
            uid_seed=f"medmm-synth/{seed}/{case_id}", study_uid_seed=f"medmm-synth/{seed}/{case_id}/study",
        )
        if fmt == "dicom":
            row["image"] = folder
        else:
            row["meta"]["image_dicom"] = folder
    return row


def write_case_dicom(out_dir: str | Path, case_id: str, n: int, seed: int = 0, size: int = 64) -> Path:
    """Write one case of the ``(n, seed, size)`` synthetic set as a DICOM series under ``out_dir``.

    Renders the case again (deterministic), so the series is byte-identical to the one
    ``synthesize(..., fmt="dicom" | "both")`` writes, including its fake patient identity — without
    paying for DICOM files of every case (the demo needs one held-out series).

    Returns:
        The series folder ``out_dir/dicom/<case_id>``.

    Raises:
        ValueError: ``case_id`` is not part of that set.
    """
    patient_no, scan_index, n_scans = locate(case_id, n, seed)
    row = _make_case((str(out_dir), int(seed), patient_no, scan_index, n_scans, int(size), "dicom", 0))
    return Path(out_dir) / row["image"]


def patient_id(seed: int, patient_no: int) -> str:
    """Pseudonymous patient id of a synthetic patient, e.g. ``P0007-s0``: unique per generation
    seed, so sets made with different seeds never share ids (an evaluation would call that a leak)."""
    return f"P{int(patient_no):04d}-s{int(seed)}"


def locate(case_id: str, n: int, seed: int) -> tuple[int, int, int]:
    """``(patient number, scan index, scans of that patient)`` of ``case_id`` in the ``(n, seed)`` set."""
    for patient_no, scan_index, n_scans in _plan(int(n), int(seed)):
        if f"{patient_id(seed, patient_no)}_{scan_index + 1}" == case_id:
            return patient_no, scan_index, n_scans
    raise ValueError(f"case {case_id!r} is not in the synthetic set n={n}, seed={seed}")


def prevalence(cases: list[Case], labels=CT_RATE_FINDINGS) -> dict[str, float]:
    """Fraction of cases positive per label."""
    n = max(len(cases), 1)
    return {k: sum(c.labels.get(k, 0) == 1 for c in cases) / n for k in labels}


def synthesize(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: int = 64,
    fmt: str = "nifti",
    *,
    counterfactuals: int = 0,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Generate ``n`` synthetic chest-CT scans with reports and a patient-level split.

    Args:
        out_dir: folder to write into (created).
        n: number of scans (about a quarter of patients get a follow-up scan).
        seed: everything derives from it; same arguments -> byte-identical files.
        size: volume edge in voxels.
        fmt: ``"nifti"``, ``"dicom"`` or ``"both"`` (manifest ``image`` = NIfTI, ``image_dicom`` = DICOM folder).
        counterfactuals: re-renderings per training scan with one finding switched (case ids
            ``<case>_cf<k>``, same patient, manifest column ``counterfactual`` = the finding).
        workers: processes to render with (output does not depend on it).
        progress: called with 1 after each scan (e.g. ``tqdm.update``).

    Returns:
        Path of ``manifest.csv``.

    Raises:
        ValueError: bad ``n``, ``size`` or ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int(n) < 1 or int(size) < 8 or int(counterfactuals) < 0:
        raise ValueError(f"need n >= 1, size >= 8 and counterfactuals >= 0, got n={n}, size={size}, "
                         f"counterfactuals={counterfactuals}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan(int(n), int(seed))
    jobs = [(str(out), int(seed), p, s, k, int(size), fmt, 0) for p, s, k in plan]
    rows = _render(jobs, workers, progress)
    splits = split_patients([r["patient_id"] for r in rows], seed=int(seed))
    if counterfactuals:  # patient-level split first: only training patients get twins
        twins = [(*job[:-1], t) for job in jobs if splits[patient_id(seed, job[2])] == "train"
                 for t in range(1, int(counterfactuals) + 1)]
        rows += _render(twins, workers, progress)
    cases = [Case(r["case_id"], r["patient_id"], str(out / r["image"]), r["report"], r["indication"],
                  r["labels"], splits[r["patient_id"]], r["meta"]) for r in rows]
    manifest = write_manifest(cases, out / "manifest.csv", labels=CT_RATE_FINDINGS)
    natural = [c for c in cases if "counterfactual" not in c.meta]
    info = dict(params=_params(n, seed, size, fmt, counterfactuals), n_cases=len(natural), n_patients=len(splits),
                n_counterfactuals=len(cases) - len(natural),
                splits={s: sum(c.split == s for c in natural) for s in ("train", "val", "test")},
                prevalence={k: round(v, 4) for k, v in prevalence(natural).items()},
                rendered_findings=list(RENDERED_FINDINGS), unrendered_findings=UNRENDERED_FINDINGS)
    from medmm.io.writers import atomic_write_bytes

    atomic_write_bytes(out / "synth.json", (json.dumps(info, indent=2) + "\n").encode())
    return manifest


def _render(jobs: list[tuple], workers: int, progress: Callable[[int], None] | None) -> list[dict]:
    """Run `_make_case` over ``jobs`` (in ``workers`` processes when > 1), in order."""
    rows = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(_make_case, jobs, chunksize=4):
                rows.append(row)
                if progress:
                    progress(1)
    else:
        for job in jobs:
            rows.append(_make_case(job))
            if progress:
                progress(1)
    return rows


def _params(n, seed, size, fmt, counterfactuals=0) -> dict:
    params = dict(n=int(n), seed=int(seed), size=int(size), fmt=fmt, version=GENERATOR_VERSION)
    if counterfactuals:  # absent when 0, so existing caches keep their marker and folder name
        params["counterfactuals"] = int(counterfactuals)
    return params


def ensure_synthetic(cache_dir: str | Path, n: int, seed: int = 0, size: int = 64, fmt: str = "nifti",
                     counterfactuals: int = 0, **kwargs) -> Path:
    """The manifest of a synthetic data set in ``cache_dir``, generated only if not there yet.

    A complete generation is recognised by a marker file holding its parameters (written last,
    atomically, after the folder is moved into place), so an interrupted run is regenerated and
    concurrent callers never see half a data set.

    Returns:
        Path of the manifest.
    """
    params = _params(n, seed, size, fmt, counterfactuals)
    cache = Path(cache_dir).expanduser()
    suffix = f"_cf{int(counterfactuals)}" if counterfactuals else ""
    target = cache / f"synth_n{params['n']}_seed{params['seed']}_size{params['size']}_{fmt}_v{GENERATOR_VERSION}{suffix}"
    if _complete(target, params):
        return target / "manifest.csv"
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    try:
        synthesize(tmp, n, seed, size, fmt, counterfactuals=counterfactuals, **kwargs)
        from medmm.io.writers import atomic_write_bytes

        atomic_write_bytes(tmp / MARKER, json.dumps(params, sort_keys=True).encode())
        if not _complete(target, params):  # another process may have finished meanwhile: keep theirs
            if target.exists():
                shutil.rmtree(target)  # an interrupted generation
            try:
                tmp.rename(target)
            except OSError:
                if not _complete(target, params):
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target / "manifest.csv"


def _complete(target: Path, params: dict) -> bool:
    """Whether ``target`` holds a finished generation with exactly these parameters."""
    try:
        return json.loads((target / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False
