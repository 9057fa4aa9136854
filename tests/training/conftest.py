"""Fixtures of the training tests: one tiny on-disk data set per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import make_tiny_dataset


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))
