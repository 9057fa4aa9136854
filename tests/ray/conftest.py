"""Fixtures for the Ray tests: a local 2-CPU Ray instance per module, a tiny trained run, a cohort.

Ray starts in seconds and reserves memory, so each module starts one small instance (200 MB
object store, no dashboard) and shuts it down; every test here is marked slow.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_local():
    """``ray`` initialised with 2 CPUs; workers import medmm from this checkout."""
    import ray

    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                       "TRANSFORMERS_OFFLINE": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A really trained tiny model (one epoch on 8 synthetic 32^3 cases, seconds on one core)."""
    import torch

    from medmm.training import train

    root = tmp_path_factory.mktemp("ray_run")
    from serve.serving import tiny_workflow

    workflow = tiny_workflow(root / "synth")
    workflow["data"]["synthetic"]["format"] = "nifti"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(workflow, run_dir=root / "run", verbose=False).run_dir
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A manifest of 6 synthetic 32^3 NIfTI scans (a different seed from training) plus one broken file."""
    from medmm.data import synthesize

    root = tmp_path_factory.mktemp("ray_cohort")
    manifest = synthesize(root / "synth", 6, seed=7, size=32, fmt="nifti")
    with manifest.open(newline="") as f:
        rows = [{"case_id": r["case_id"], "patient_id": r["patient_id"],
                 "image": str((manifest.parent / r["image"]).resolve()), "indication": r["indication"]}
                for r in csv.DictReader(f)]
    broken = root / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    rows.append({"case_id": "broken_case", "patient_id": "broken", "image": str(broken), "indication": ""})
    out = root / "cohort.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["case_id", "patient_id", "image", "indication"])
        writer.writeheader()
        writer.writerows(rows)
    return out
