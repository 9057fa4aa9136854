"""Tests of the research harnesses in ``experiments/``: every one trains, so all are marked slow."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))  # training_helpers


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    from training_helpers import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture
def load_experiment():
    """Import an ``experiments/<name>.py`` script as a module (they are scripts, not a package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
