"""The finding-supervision ablation runs end to end on a tiny synthetic set, and its finding maps
land on the preprocessed image where the findings are."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medmm.labels import CT_RATE_FINDINGS


def _overrides(cache: Path) -> list[str]:
    return ["data.synthetic.n=24", "data.synthetic.size=32", "preprocessing.roi_size=[32,32,32]",
            f"data.synthetic.cache_dir={cache}", "data.synthetic.workers=1", "training.batch_size=4"]


def test_maps_follow_the_image_pipeline(tmp_path, load_benchmark):
    from medmm.config import load_workflow

    bench = load_benchmark("finding_supervision")
    cfg = load_workflow(bench.ROOT / "workflows" / "ct_chest_demo.yaml", _overrides(tmp_path))
    splits, labels = bench.load_split(cfg)
    cases = splits["train"]
    images, y = bench.stack_images(cases, labels, cfg)
    bits = bench.stack_maps(cases, cfg)
    assert bits.shape == (len(cases), 32, 32, 32)
    nodule = CT_RATE_FINDINGS.index("Lung nodule")
    drawn = ((bits >> nodule) & 1).flatten(1).any(1)
    assert torch.equal(drawn, y[:, nodule] == 1)  # a map wherever the label is positive, none elsewhere
    lung = images[:, 0] < 0.05  # air / lung after the [-1000, 3000] window
    inside = ((bits >> nodule) & 1) > 0
    assert images[:, 0][inside].mean() > images[:, 0][lung].mean() + 0.1  # the map sits on the dense nodule
    grid = bench.pooled_targets(bits, len(labels), (4, 4, 4))
    assert grid.shape == (len(cases), len(labels), 4, 4, 4)
    assert torch.equal(grid[:, nodule].flatten(1).amax(1).bool(), drawn)


def test_tiny_ablation_writes_results(tmp_path, capsys, load_benchmark):
    bench = load_benchmark("finding_supervision")
    argv = ["--variants", "baseline,dense", "--epochs", "1", "--out", str(tmp_path / "out")]
    for item in _overrides(tmp_path / "cache"):
        argv += ["--set", item]
    assert bench.main(argv) == 0
    results = json.loads((tmp_path / "out" / "finding_supervision.json").read_text())
    assert [r["variant"] for r in results] == ["baseline", "dense"]
    for r in results:
        assert 0.0 <= r["val_macro_auroc"] <= 1.0 and r["val_auroc"]
    assert "vs baseline" in capsys.readouterr().out
