"""Helpers for inference tests: a tiny stand-in model, a phantom, planted PHI (imported by conftest).

``TinyModel`` implements the ``medmm.models.MedMM`` building blocks (feature_map / embed /
generate_reports / encode_text / classify) with a few convolutions and runs them through the real
``MedMM.predict_step``, so
the pipeline, sliding window, Grad-CAM and writers are tested in milliseconds. End-to-end tests
with a really trained model are in ``test_end_to_end.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmm.labels import CT_RATE_FINDINGS
from medmm.models.medmm import MedMM

PHI = {
    "patient_name": "SENTINEL^PHI",
    "patient_id": "SENTINEL-ID-4711",
    "birth_date": "19010203",
    "study_date": "19020304",
}
PHI_STRINGS = ("SENTINEL", "19010203", "19020304")


class TinyModel(nn.Module):
    """Stand-in for ``MedMM``: stride-4 conv encoder, mean pooling, deterministic 'reports'."""

    def __init__(self, labels=CT_RATE_FINDINGS, channels: int = 8, text_dim: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.labels = list(labels)
        self.encoder = nn.Sequential(
            nn.Conv3d(1, channels, 3, stride=2, padding=1), nn.ReLU(), nn.Conv3d(channels, channels, 3, stride=2, padding=1)
        )
        self.text_dim = text_dim
        self.head = nn.Linear(channels + text_dim, len(self.labels))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def embed(self, fmap: torch.Tensor):
        return fmap.mean(dim=(2, 3, 4)), fmap.flatten(2).transpose(1, 2)

    def generate_reports(self, tokens: torch.Tensor, **decode) -> list[str]:
        level = tokens.mean(dim=(1, 2))
        return [f"Lungs {'show opacity' if v > 0 else 'are clear'}; activation {v:.3f}." for v in level.tolist()]

    def encode_text(self, texts) -> torch.Tensor:
        rows = [[len(t) / 100.0, t.count(" ") / 10.0, float("opacity" in t), float("Indication" in t)] for t in texts]
        return torch.tensor(rows, dtype=torch.float32, device=self.head.weight.device)

    def classify(self, pooled: torch.Tensor, text_emb: torch.Tensor | None = None, image_tokens=None) -> torch.Tensor:
        return self.head(torch.cat([pooled, text_emb], dim=1))

    uses_text = True
    predict_step = MedMM.predict_step  # the one inference forward pass, over the blocks above


def tiny_meta(roi=(16, 16, 16), spacing=(2.0, 2.0, 2.0), thresholds=None, **preprocessing):
    """The `RunMeta` of a tiny run (preprocessing, inferer, labels, thresholds)."""
    from medmm.config import WorkflowConfig
    from medmm.knowledge import load_ontology
    from medmm.models import RunMeta

    workflow = WorkflowConfig(
        name="tiny",
        preprocessing={"spacing": list(spacing), "hu_window": [-1000, 400], "roi_size": list(roi), **preprocessing},
        inferer={"roi_size": list(roi), "overlap": 0.25, "mode": "gaussian", "sw_batch_size": 2},
    )
    return RunMeta(name="tiny", run_id="run_tiny", workflow=workflow,
                   thresholds=thresholds or {label: 0.5 for label in CT_RATE_FINDINGS},
                   ontology={"sha256": load_ontology().sha256})


def make_predictor(tmp_path: Path, **meta_kwargs):
    from medmm.inference import Predictor
    from medmm.knowledge import load_ontology

    run_dir = tmp_path / "run_tiny"
    run_dir.mkdir(exist_ok=True)
    return Predictor(TinyModel(), tiny_meta(**meta_kwargs), run_dir, "best", torch.device("cpu"), load_ontology())


def phantom(shape=(24, 24, 12), seed=0) -> np.ndarray:
    """A body-like ellipsoid in air with two 'lungs', in HU."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    hu = np.full(shape, -1000.0, np.float32)
    body = (grid[0] ** 2 + grid[1] ** 2) < 0.8
    hu[body] = 40.0
    for cx in (-0.35, 0.35):
        lung = ((grid[0] - cx) ** 2 / 0.08 + grid[1] ** 2 / 0.3) < 1
        hu[lung] = -850.0
    return hu + rng.normal(0, 5, shape).astype(np.float32)


AFFINE = np.diag([1.5, 1.5, 2.5, 1.0])


def assert_no_phi(texts_or_paths) -> None:
    """No planted PHI string in any given text or file (binary files searched as latin-1)."""
    for item in texts_or_paths:
        if isinstance(item, Path):
            text = item.read_bytes().decode("latin-1")
            where = item.name
        else:
            text, where = item, "text"
        for s in PHI_STRINGS:
            assert s not in text, f"PHI {s!r} found in {where}"


def tiny_workflow(cache_dir: Path) -> dict:
    """A workflow that trains in ~15 s on one CPU core (32^3 synthetic cases, tiny network)."""
    return {
        "name": "tiny",
        "seed": 0,
        "data": {
            "source": "synthetic",
            "synthetic": {"n": 8, "size": 32, "seed": 0, "cache_dir": str(cache_dir), "format": "both"},
            "val_fraction": 0.25,
            "test_fraction": 0.25,
        },
        "preprocessing": {"spacing": [4.0, 4.0, 4.0], "roi_size": [32, 32, 32], "hu_window": [-1000, 400]},
        "network": {
            "image_encoder": {"widths": [8, 8, 8, 16], "depth": [1, 1, 1, 1], "embed_dim": 32},
            "report_generator": {"n_layer": 1, "n_embd": 32, "max_new_tokens": 16, "max_report_tokens": 32},
            "fusion": {"hidden": 16},
        },
        "training": {"epochs": 1, "batch_size": 4},
    }


def plant_phi(src: Path, dst: Path) -> Path:
    """Copy a DICOM folder, writing the PHI sentinels into every file's patient/study module."""
    import pydicom

    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.PatientName = PHI["patient_name"]
        ds.PatientID = PHI["patient_id"]
        ds.PatientBirthDate = PHI["birth_date"]
        ds.StudyDate = PHI["study_date"]
        ds.SeriesDate = PHI["study_date"]
        ds.save_as(dst / f.name)
    return dst
