"""Tiny on-disk data sets and workflows for the training tests (16³ NIfTI, a few cases)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

TINY_LABELS = ["Pleural effusion", "Lung nodule", "Emphysema"]


def make_tiny_dataset(folder: Path, n: int = 12, size: int = 16, seed: int = 0) -> Path:
    """Write ``n`` tiny CT-like volumes whose findings are visible blobs, plus a CSV manifest.

    Each finding brightens (effusion, nodule) or darkens (emphysema) its own region, so even a
    one-epoch model can separate some classes; reports mention the positive findings.
    """
    from medmm.io import write_nifti

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        labels = {name: int(rng.random() < 0.5) for name in TINY_LABELS}
        array = np.full((size, size, size), -800.0, np.float32) + rng.normal(0, 20, (size,) * 3).astype(np.float32)
        h = size // 2
        if labels["Pleural effusion"]:
            array[:h, :h, :] = 20.0
        if labels["Lung nodule"]:
            array[h:, h:, h - 2:h + 2] = 60.0
        if labels["Emphysema"]:
            array[h:, :h, :] = -980.0
        image = folder / f"case{i:02d}.nii.gz"
        write_nifti(array, np.diag([1.5, 1.5, 1.5, 1.0]), image)
        found = [name.lower() for name, v in labels.items() if v]
        report = ("Findings: " + ", ".join(found) + ".") if found else "Findings: no abnormality."
        rows.append({"case_id": f"c{i:02d}", "patient_id": f"p{i:02d}", "image": image.name, "report": report,
                     "indication": "dyspnea" if i % 2 else "", "split": "", **labels})
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def tiny_workflow(manifest: Path, **extra) -> dict:
    """A workflow dict small enough for a CPU test (16³, 1-layer LM, slim encoder)."""
    wf = {
        "name": "tiny",
        "seed": 0,
        "data": {"source": "manifest", "manifest": {"path": str(manifest)}, "labels": TINY_LABELS,
                 "val_fraction": 0.34},
        "preprocessing": {"spacing": [1.5, 1.5, 1.5], "hu_window": [-1000, 200], "roi_size": [16, 16, 16],
                          "augmentation": {"flip_prob": 0.5}},
        "network": {
            "image_encoder": {"name": "slim", "widths": [4, 8, 8, 8], "depth": [1, 1, 1, 1], "embed_dim": 16,
                              "token_grid": 1},
            "report_generator": {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 40,
                                 "max_report_tokens": 16, "max_new_tokens": 6},
            "fusion": {"hidden": 16},
        },
        "ontology": {"kr_weight": 0.1},
        "loss": {"lm_weight": 0.1},
        "optimizer": {"lr": 0.003},
        "training": {"epochs": 1, "batch_size": 4},
    }
    for dotted, value in extra.items():
        node = wf
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return wf


def interrupt_then_resume(workflow: dict, run_dir: Path, monkeypatch):
    """Train ``workflow`` into ``run_dir`` with a Ctrl-C at the start of its second epoch, then
    ``--resume`` it to the end.

    Returns ``(state, weights, run)``: the interrupted run's ``state.json`` and its
    ``last.safetensors`` tensors (both read before resuming), and the resumed `Run`.
    """
    import json

    import pytest
    from safetensors.torch import load_file

    from medmm.training import train
    from medmm.training.engine import Trainer

    original = Trainer._train_epoch

    def interrupt_in_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(workflow, run_dir=run_dir, verbose=False)
    state = json.loads((run_dir / "state.json").read_text())
    weights = load_file(str(run_dir / "last.safetensors"))
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    return state, weights, train(None, run_dir=run_dir, resume=True, verbose=False)
