"""Fixtures: a toy run (Predictor over ToyModel) and a manifest of labelled phantoms."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from toy import make_world, toy_predictor  # noqa: E402


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_world")
    manifest, cases = make_world(root)
    return {"root": root, "manifest": manifest, "cases": cases}


@pytest.fixture
def toy_run(toy_world, tmp_path, monkeypatch):
    """Run dir whose `load_model` returns the toy Predictor (training patients = train split)."""
    import medmm.inference

    train_ids = [c.patient_id for c in toy_world["cases"] if c.split == "train"]
    run_dir = tmp_path / "toy_run"
    predictor = toy_predictor(run_dir, train_ids)
    monkeypatch.setattr(medmm.inference, "load_model", lambda path, device=None, **kw: predictor)
    return run_dir
