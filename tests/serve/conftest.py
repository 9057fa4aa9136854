"""Fixtures for the serve tests: one tiny trained run per session, token files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="medmm[serve] extra not installed")
pytest.importorskip("pynetdicom", reason="medmm[serve] extra not installed")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A really trained tiny model (one epoch on 8 synthetic 32^3 cases, seconds on one core)."""
    import torch

    from medmm.training import train
    from serving import tiny_workflow

    root = tmp_path_factory.mktemp("serve_run")
    torch.set_num_threads(1)
    return train(tiny_workflow(root / "synth"), run_dir=root / "run", verbose=False).run_dir


@pytest.fixture
def make_tokens():
    """``make_tokens(path, alice=("jobs", "predict", "metrics"), ...)`` → name → token."""
    from medmm.serve.tokens import TokenStore

    def make(path: Path, **scopes) -> dict[str, str]:
        store = TokenStore(path)
        return {name: store.add(name, scopes=list(s)) for name, s in scopes.items()}

    return make
