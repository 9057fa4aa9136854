"""Shared by the security/fault/determinism tests: a real (untrained) MedMM run directory and a
DICOM series carrying planted PHI sentinels.

The run is written by training's own writer (`medmm.training.rundir.run_meta` +
``medmm.models.save_checkpoint``), so ``load_model`` / ``medmm infer`` / ``medmm evaluate`` load it exactly like a trained
run; training itself is not needed (and would cost minutes of CPU in every test session).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PHI = {
    "patient_name": "SENTINEL^PHINAME",
    "patient_id": "SENTINELPID4711",
    "birth_date": "19010203",
    "study_date": "19020304",
}
UID_SEED = "reliability-phi-sentinel"
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def phantom(shape=(24, 24, 16), seed: int = 0) -> np.ndarray:
    """Body ellipse in air with two darker lungs (HU)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    hu = np.full(shape, -1000.0, np.float32)
    hu[(grid[0] ** 2 + grid[1] ** 2) < 0.8] = 40.0
    for cx in (-0.35, 0.35):
        hu[((grid[0] - cx) ** 2 / 0.08 + grid[1] ** 2 / 0.3) < 1] = -850.0
    return hu + rng.normal(0, 5, shape).astype(np.float32)


def write_phi_series(out_dir: Path) -> tuple[Path, list[str]]:
    """A DICOM series with PHI sentinels; returns (folder, sentinel strings: identity, dates, then
    the source Study/Series/SOP Instance UIDs as the last three)."""
    import pydicom

    from medmm.io import write_dicom_series

    files = write_dicom_series(phantom(), AFFINE, out_dir, series_description="chest", uid_seed=UID_SEED, **PHI)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    sentinels = ["SENTINEL", PHI["patient_id"], PHI["birth_date"], PHI["study_date"],
                 str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    return out_dir, sentinels


def make_run(run_dir: Path, train_patient_ids=("train-patient",), roi=(16, 16, 16)) -> Path:
    """Save an untrained default MedMM with the RunMeta training writes; return ``run_dir``."""
    from types import SimpleNamespace

    import torch

    from medmm.config import WorkflowConfig
    from medmm.knowledge import load_ontology
    from medmm.models import MedMM, NetworkDerived, save_checkpoint
    from medmm.training.rundir import run_meta

    torch.manual_seed(0)
    cfg = WorkflowConfig(name="reliability-run",
                         preprocessing={"spacing": [2.0, 2.0, 2.0], "hu_window": [-1000, 1000], "roi_size": list(roi)},
                         inferer={"roi_size": list(roi), "overlap": 0.25, "mode": "gaussian", "sw_batch_size": 1})
    model = MedMM(cfg.network, labels=cfg.data.labels)
    splits = {"train": [SimpleNamespace(patient_id=p) for p in train_patient_ids], "val": []}
    meta = run_meta(cfg, run_dir, NetworkDerived(), load_ontology(), splits, progress={})
    save_checkpoint(model, run_dir, "best", meta)
    return run_dir


_SHARED: dict[str, Path] = {}


def shared_run(tmp_path_factory) -> Path:
    """One run directory per test session (building and saving a MedMM costs seconds)."""
    if "run" not in _SHARED:
        _SHARED["run"] = make_run(tmp_path_factory.mktemp("shared_run") / "run")
    return _SHARED["run"]


def shared_phi_scan(tmp_path_factory) -> tuple[Path, list[str]]:
    """One PHI-carrying DICOM series per test session: (folder, sentinels)."""
    if "scan" not in _SHARED:
        _SHARED["scan"], sentinels = write_phi_series(tmp_path_factory.mktemp("shared_scan") / "dicom")
        _SHARED["sentinels"] = sentinels  # type: ignore[assignment]
    return _SHARED["scan"], list(_SHARED["sentinels"])  # type: ignore[arg-type]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the ``medmm`` entry point in-process: (exit code, stdout, stderr)."""
    from medmm.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(stderr: str) -> bool:
    """True when stderr holds exactly one ``error: ...`` line and no traceback (progress bars of
    third-party loaders are ignored)."""
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    return "Traceback" not in stderr and sum(ln.startswith("error:") for ln in lines) == 1
