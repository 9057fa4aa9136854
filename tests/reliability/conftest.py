"""Fixtures shared by the reliability corpus: one tiny trained model per module, and a way to
make `medmm infer` (in-process) use it instead of loading the run again."""

from __future__ import annotations

import pytest

from .realrun import shared_run


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from medmm.inference import load_model

    return load_model(shared_run(tmp_path_factory), device="cpu")


@pytest.fixture
def cached_model(predictor, monkeypatch):
    import medmm.inference

    monkeypatch.setattr(medmm.inference, "load_model", lambda *a, **k: predictor)
    return predictor
