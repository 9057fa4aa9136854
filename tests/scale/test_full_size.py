"""Full-size smoke runs: CT-RATE-shaped 512 × 512 × 200-300 volumes through the production path.

Two synthetic volumes in CT-RATE's folder and CSV layout go through ``medmm data prepare``, one
training step of ``workflows/ct_chest.yaml`` as shipped (DenseNet121, 1.5 mm, 224 × 224 × 160,
body crop, augmentation, report generator; only the data location, epochs, batch size and worker
count are overridden) and ``medmm infer`` with sliding-window stitching, all on the CPU. Each
stage prints its wall time (``pytest -s``).
"""

from __future__ import annotations

import json

import pytest
from scale_helpers import SHAPES, WALL, WORKFLOW, overrides, timed_cli

from medmm.data.synth.ctrate_layout import ctrate_names

pytestmark = pytest.mark.slow


def test_ct_chest_full_size_path_on_cpu(ctrate, prepared):
    """prepare -> one training step -> sliding-window inference (one test: the stages share state,
    so ``pytest -n 2`` must not split them across workers)."""
    from safetensors import safe_open

    from medmm.data.ctrate import volume_path

    # medmm data prepare: one ROI-sized entry per case, no failure
    entries = sorted(prepared.glob("*/*.safetensors"))
    assert len(entries) == len(SHAPES)
    for entry in entries:
        with safe_open(str(entry), framework="pt") as fh:
            assert fh.get_slice("image").get_shape() == [1, 224, 224, 160]
    summary = json.loads(next(prepared.glob("*/prepare-shard-1-of-1.json")).read_text())
    assert summary["prepared"] == len(SHAPES) and not summary["failures"]

    # one training step of ct_chest.yaml, reading the prepared cache
    run_dir = ctrate["root"] / "run"
    timed_cli("train 1 step", ["train", str(WORKFLOW), *overrides(ctrate), "--device", "cpu", "--quiet",
                               "--run-dir", str(run_dir)])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["epoch"] == 1
    assert any(run_dir.glob("*.safetensors"))  # checkpoints written
    assert len(list(prepared.glob("*/*.safetensors"))) == len(SHAPES)  # training added no entry: it read them
    workflow = (run_dir / "workflow.yaml").read_text()
    assert "densenet121" in workflow and "- 224" in workflow and "- 160" in workflow

    # medmm infer slides 224 x 224 x 160 windows over the whole 512 x 512 x 280 volume
    scan = volume_path(ctrate["volumes_dir"], ctrate_names(len(SHAPES))[1])
    out = ctrate["root"] / "infer"
    timed_cli("infer (sliding window, CPU)", ["infer", str(scan), "--model", str(run_dir), "--device", "cpu",
                                              "--out", str(out), "--quiet"])
    result = json.loads((out / "result.json").read_text())
    assert result["input"]["shape"] == list(SHAPES[1])
    assert result["inference"]["sliding_window"] and result["inference"]["roi_size"] == [224, 224, 160]
    assert any(s > r for s, r in zip(result["preprocessed"]["shape"], [224, 224, 160]))  # several windows
    assert len(result["findings"]) == 18
    print(f"\n[full-size smoke] wall times: {json.dumps({k: round(v, 1) for k, v in WALL.items()})}")
