"""A toy evaluation world: NIfTI phantoms whose brightness encodes the labels, and a tiny model.

``ToyModel`` implements the ``medmm.models.MedMM`` building blocks and runs them through the real
``MedMM.predict_step``; its logits rise
with the mean image intensity, so the model is good on clean scans and an L-inf attack of a few
tens of HU can flip it - which is what the evaluation tests need to see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmm.labels import CT_RATE_FINDINGS
from medmm.models.medmm import MedMM

SENTINEL = "SENTINEL-PHI-0815"
HU_HEALTHY, HU_SICK = -600.0, -520.0  # intensity gap 80 HU: a 50 HU attack can cross the middle


class ToyModel(nn.Module):
    def __init__(self, labels=CT_RATE_FINDINGS):
        super().__init__()
        self.labels = list(labels)
        self.pool = nn.AvgPool3d(4)
        self.scale = nn.Parameter(torch.full((len(self.labels),), 400.0))
        # intensity of (HU_HEALTHY + HU_SICK) / 2 in the window [-1000, 1000] -> [0, 1]
        self.centre = nn.Parameter(torch.full((len(self.labels),), ((HU_HEALTHY + HU_SICK) / 2 + 1000) / 2000))

    def feature_map(self, x):
        return self.pool(x)

    def embed(self, fmap):
        return fmap.mean(dim=(1, 2, 3, 4))[:, None], fmap.flatten(2).transpose(1, 2)

    def generate_reports(self, tokens, **decode):
        level = tokens.mean(dim=(1, 2)).tolist()
        return ["Emphysema and lung opacity." if v > float(self.centre[0]) else "No acute findings." for v in level]

    def encode_text(self, texts):
        return torch.zeros(len(texts), 1)

    def classify(self, pooled, text_emb=None, image_tokens=None):
        return (pooled - self.centre) * self.scale

    uses_text = True
    predict_step = MedMM.predict_step


def make_world(root: Path, n_train: int = 4, n_test: int = 16, seed: int = 0, size: int = 16):
    """Write phantoms + manifest; return (manifest path, cases)."""
    from medmm.data.case import Case
    from medmm.data.manifest import write_manifest
    from medmm.io import write_nifti

    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    cases = []
    for i in range(n_train + n_test):
        sick = i % 2
        labels = {name: int(sick if rng.random() > 0.1 else 1 - sick) for name in CT_RATE_FINDINGS}
        hu = (HU_SICK if sick else HU_HEALTHY) + rng.normal(0, 3, (size,) * 3).astype(np.float32)
        path = root / f"case{i:02d}.nii.gz"
        write_nifti(hu, affine, path)
        report = "Emphysema and lung opacity." if sick else "No acute findings."
        split = "train" if i < n_train else "test"
        cases.append(Case(f"c{i:02d}", f"{SENTINEL}-{i}" if i == n_train else f"p{i:02d}", str(path), report, None, labels, split))
    manifest = write_manifest(cases, root / "manifest.csv", labels=list(CT_RATE_FINDINGS))
    return manifest, cases


def toy_meta(train_patient_ids):
    """The run's `RunMeta`, written by training's own writer (`medmm.training.rundir.run_meta`)."""
    from types import SimpleNamespace

    from medmm.config import WorkflowConfig
    from medmm.knowledge import load_ontology
    from medmm.models import NetworkDerived
    from medmm.training.rundir import run_meta

    cfg = WorkflowConfig(
        name="toy",
        preprocessing={"spacing": [2.0, 2.0, 2.0], "hu_window": [-1000, 1000], "roi_size": [16, 16, 16]},
        inferer={"roi_size": [16, 16, 16], "overlap": 0.25, "mode": "gaussian", "sw_batch_size": 1},
    )
    splits = {"train": [SimpleNamespace(patient_id=p) for p in train_patient_ids], "val": []}
    return run_meta(cfg, Path("toy"), NetworkDerived(), load_ontology(), splits, progress={})


def toy_predictor(run_dir: Path, train_patient_ids):
    from medmm.inference import Predictor
    from medmm.knowledge import load_ontology

    run_dir.mkdir(parents=True, exist_ok=True)
    return Predictor(ToyModel(), toy_meta(train_patient_ids), run_dir, "best", torch.device("cpu"), load_ontology())
