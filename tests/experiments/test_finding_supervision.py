"""The finding-supervision ablation runs end to end on a tiny synthetic set, and its finding maps
land on the preprocessed image where the findings are."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import numpy as np
import pytest

from medmm.labels import CT_RATE_FINDINGS


def _overrides(cache: Path) -> list[str]:
    return ["data.synthetic.n=24", "data.synthetic.size=32", "preprocessing.roi_size=[32,32,32]",
            f"data.synthetic.cache_dir={cache}", "data.synthetic.workers=1", "training.batch_size=4"]


def test_maps_follow_the_image_pipeline(tmp_path, load_experiment):
    from medmm.config import load_workflow

    bench = load_experiment("finding_supervision")
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


def test_tiny_ablation_writes_results(tmp_path, capsys, load_experiment):
    bench = load_experiment("finding_supervision")
    argv = ["--variants", "baseline,dense", "--epochs", "1", "--out", str(tmp_path / "out")]
    for item in _overrides(tmp_path / "cache"):
        argv += ["--set", item]
    assert bench.main(argv) == 0
    results = json.loads((tmp_path / "out" / "finding_supervision.json").read_text())
    assert [r["variant"] for r in results] == ["baseline", "dense"]
    for r in results:
        assert r["val_auroc"] and r["val_macro_auroc"] == pytest.approx(np.mean(list(r["val_auroc"].values())))
    assert "vs baseline" in capsys.readouterr().out


def test_finding_map_marks_exactly_the_positive_findings(tmp_path, load_experiment):
    """A case's bitmask lies on its image grid and has a bit set for every positive finding that
    is drawn as a lesion, and none for negative findings."""
    import nibabel as nib

    from medmm.data import read_manifest, synthesize

    finding_map = load_experiment("finding_supervision").finding_map

    cases = read_manifest(synthesize(tmp_path, 8, 0, 24, "nifti"))
    metal = CT_RATE_FINDINGS.index("Medical material")
    for case in cases:
        bits, affine = finding_map(case.case_id, n=8, seed=0, size=24)
        image = nib.load(case.image)
        assert bits.shape == image.shape and bits.dtype == np.int32
        np.testing.assert_allclose(affine, image.affine, atol=1e-4)
        for k, name in enumerate(CT_RATE_FINDINGS):
            drawn = bool(((bits >> k) & 1).any())
            if case.labels[name] == 0:
                assert not drawn, (case.case_id, name)
            elif name in ("Lung nodule", "Pleural effusion", "Consolidation", "Medical material"):
                assert drawn, (case.case_id, name)
        if case.labels["Medical material"] == 1:  # the map sits on the metal in the image
            hu = np.asarray(image.dataobj)
            assert hu[((bits >> metal) & 1) > 0].max() > 400  # partial-volume metal, far above soft tissue
    with pytest.raises(ValueError, match="not in the synthetic set"):
        finding_map("P0999-s0_1", n=8, seed=0, size=24)
