"""The fusion head never sees reference reports: shuffling them leaves validation metrics unchanged."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch

from medmm.training import train

from training_helpers import tiny_workflow


def _shuffled_val_reports(manifest, out, val_case_ids):
    rows = list(csv.DictReader(manifest.open()))
    val_rows = [r for r in rows if r["case_id"] in val_case_ids]
    reports = [r["report"] for r in val_rows]
    random.Random(1).shuffle(reports)
    reports = reports[1:] + reports[:1]  # guarantee every report moves
    for row, report in zip(val_rows, reports):
        row["report"] = report
    for row in rows:  # the new manifest lives elsewhere: keep pointing at the same images
        row["image"] = str(manifest.parent / row["image"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.mark.slow
def test_predictions_ignore_reference_reports(tiny_manifest, tmp_path):
    from monai.data import DataLoader

    from medmm.data.dataset import build_dataset, load_cases, split_cases
    from medmm.training.validation import predict

    run = train(tiny_workflow(tiny_manifest), run_dir=tmp_path / "run", verbose=False)
    cfg = run.config
    val = split_cases(load_cases(cfg.data), cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)["val"]
    shuffled = [type(c)(**{**c.__dict__, "report": "Findings: " + "large pleural effusion. " * (i + 1)})
                for i, c in enumerate(val)]
    outputs = []
    for cases in (val, shuffled):
        ds = build_dataset(cases, cfg.data.labels, cfg.preprocessing, train=False, cache="none")
        outputs.append(predict(run.model, DataLoader(ds, batch_size=2), torch.device("cpu")))
    np.testing.assert_array_equal(outputs[0]["probs"], outputs[1]["probs"])
    assert outputs[0]["reports"] == outputs[1]["reports"]


@pytest.mark.slow
def test_training_with_shuffled_val_reports_gives_identical_val_metrics(tiny_manifest, tmp_path):
    from medmm.data.dataset import load_cases, split_cases

    wf = tiny_workflow(tiny_manifest)
    a = train(wf, run_dir=tmp_path / "a", verbose=False)
    cfg = a.config
    val_ids = {c.case_id for c in split_cases(load_cases(cfg.data), cfg.data.val_fraction, 0.0, cfg.seed)["val"]}
    other = _shuffled_val_reports(tiny_manifest, tiny_manifest.parent / "shuffled" / "manifest.csv", val_ids)
    wf_b = tiny_workflow(tiny_manifest)
    wf_b["data"]["manifest"]["path"] = str(other)
    b = train(wf_b, run_dir=tmp_path / "b", verbose=False)
    val_keys = [k for k in a.metrics[0] if k.startswith("val_")]
    assert [{k: r[k] for k in val_keys} for r in a.metrics] == [{k: r[k] for k in val_keys} for r in b.metrics]
    assert a.meta.thresholds == b.meta.thresholds
