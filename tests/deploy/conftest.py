"""Fixtures for deploy tests: a tiny trained run (16³, slim [4, 8, 8, 8]) and a held-out manifest."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_helpers import make_tiny_dataset, tiny_workflow  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A really trained (2 epochs) tiny run dir; its workflow's data is the training data."""
    from medmm.training import train

    root = tmp_path_factory.mktemp("deploy_run")
    manifest = make_tiny_dataset(root / "data", n=12)
    workflow = tiny_workflow(manifest, **{"training.epochs": 2})
    workflow["preprocessing"]["augmentation"] = {"flip_prob": 0.0}
    # like the demo: the fusion head reads the indication, not the generated report
    workflow["training"]["text"] = {"use_generated_report": False, "use_indication": True}
    return train(workflow, run_dir=root / "run", verbose=False).run_dir


@pytest.fixture(scope="session")
def heldout_manifest(tmp_path_factory) -> Path:
    """Tiny scans from another seed, with patient ids no training patient has (split 'test')."""
    root = tmp_path_factory.mktemp("deploy_heldout")
    manifest = make_tiny_dataset(root, n=8, seed=99)
    rows = list(csv.DictReader(manifest.open()))
    for row in rows:
        row["patient_id"] = "held-" + row["patient_id"]
        row["case_id"] = "held-" + row["case_id"]
        row["split"] = "test"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest
