"""Full-size smoke runs: CT-RATE-shaped 512 × 512 × 200-300 volumes through the production path.

Two synthetic volumes in CT-RATE's folder and CSV layout go through ``medmm data prepare``, one
training step of ``workflows/ct_chest.yaml`` as shipped (DenseNet121, 1.5 mm, 224 × 224 × 160,
body crop, augmentation, report generator; only the data location, epochs, batch size and worker
count are overridden) and ``medmm infer`` with sliding-window stitching, all on the CPU. Each
stage prints its wall time (``pytest -s``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scale_helpers import SHAPES, WALL, WORKFLOW, overrides, timed_cli

from medmm.data.synth.ctrate_layout import ctrate_names

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(ctrate, prepared) -> Path:
    run_dir = ctrate["root"] / "run"
    timed_cli("train 1 step", ["train", str(WORKFLOW), *overrides(ctrate), "--device", "cpu", "--quiet",
                            "--run-dir", str(run_dir)])
    return run_dir


def test_prepare_writes_one_roi_sized_entry_per_case(prepared):
    from safetensors import safe_open

    entries = sorted(prepared.glob("*/*.safetensors"))
    assert len(entries) == len(SHAPES)
    for entry in entries:
        with safe_open(str(entry), framework="pt") as fh:
            assert fh.get_slice("image").get_shape() == [1, 224, 224, 160]
    summary = json.loads(next(prepared.glob("*/prepare-shard-1-of-1.json")).read_text())
    assert summary["prepared"] == len(SHAPES) and not summary["failures"]


def test_one_training_step_of_ct_chest_reads_the_cache(trained, prepared):
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["epoch"] == 1
    assert any(trained.glob("**/*.safetensors"))  # checkpoints written
    assert len(list(prepared.glob("*/*.safetensors"))) == len(SHAPES)  # training added no entry: it read them
    workflow = (trained / "workflow.yaml").read_text()
    assert "densenet121" in workflow and "- 224" in workflow and "- 160" in workflow


def test_infer_slides_a_window_over_the_full_volume(ctrate, trained):
    from medmm.data.ctrate import volume_path

    scan = volume_path(ctrate["volumes_dir"], ctrate_names(len(SHAPES))[1])
    out = ctrate["root"] / "infer"
    timed_cli("infer (sliding window, CPU)", ["infer", str(scan), "--model", str(trained), "--device", "cpu",
                                            "--out", str(out), "--quiet"])
    result = json.loads((out / "result.json").read_text())
    assert result["input"]["shape"] == list(SHAPES[1])
    assert result["inference"]["sliding_window"] and result["inference"]["roi_size"] == [224, 224, 160]
    assert any(s > r for s, r in zip(result["preprocessed"]["shape"], [224, 224, 160]))  # several windows
    assert len(result["findings"]) == 18
    print(f"\n[full-size smoke] wall times: {json.dumps({k: round(v, 1) for k, v in WALL.items()})}")
