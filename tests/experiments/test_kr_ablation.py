"""The KR ablation benchmark runs end to end in its --tiny form (4 short trainings)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medmm.labels import CT_RATE_FINDINGS


def _manifest(folder: Path, n: int = 32, size: int = 24) -> Path:
    """Tiny volumes whose labels obey the ontology's implications; two findings are visible."""
    from medmm.io import write_nifti

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        labels = {name: int(rng.random() < 0.3) for name in CT_RATE_FINDINGS}
        labels["Lung opacity"] |= labels["Consolidation"]
        labels["Arterial wall calcification"] |= labels["Coronary artery wall calcification"]
        array = np.full((size,) * 3, -800.0, np.float32) + rng.normal(0, 20, (size,) * 3).astype(np.float32)
        if labels["Consolidation"]:
            array[: size // 2, : size // 2] = 20.0
        if labels["Lung opacity"]:
            array[size // 2:, size // 2:] += 200.0
        write_nifti(array, np.diag([1.5, 1.5, 1.5, 1.0]), folder / f"c{i}.nii.gz")
        rows.append({"case_id": f"c{i}", "patient_id": f"p{i}", "image": f"c{i}.nii.gz", "report": "",
                     "indication": "", "split": "", **labels})
    path = folder / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_tiny_flag_shrinks_the_run(load_experiment):
    bench = load_experiment("kr_ablation")
    args = bench.parse_args(["--tiny"])
    assert (args.n, args.size, args.epochs) == (32, 24, 2)
    wf = bench.workflow(args, 0.1, 1.0)
    assert wf["training"]["label_fraction"] == 0.1 and wf["ontology"]["kr_weight"] == 1.0
    assert wf["data"]["test_fraction"] > 0  # metrics come from the held-out test split


@pytest.mark.slow
def test_tiny_ablation_runs(tmp_path, capsys, load_experiment):
    manifest = _manifest(tmp_path / "data")
    out = tmp_path / "out"
    code = load_experiment("kr_ablation").main(["--tiny", "--manifest", str(manifest), "--out", str(out), "--threads", "1"])
    assert code == 0
    results = json.loads((out / "kr_ablation.json").read_text())["results"]
    assert [(r["label_fraction"], r["kr_weight"]) for r in results] == [(0.1, 0.0), (0.1, 1.0), (1.0, 0.0), (1.0, 1.0)]
    for r in results:
        assert r["n_test"] > 0 and r["n_auroc_labels"] == len(r["per_label_auroc"])
        assert r["macro_auroc"] == pytest.approx(np.mean(list(r["per_label_auroc"].values())))
        assert r["violation_rate_after_consistency"] == 0.0
        assert sorted(r["constraints"]) == ["Consolidation ⇒ Lung opacity",
                                            "Coronary artery wall calcification ⇒ Arterial wall calcification"]
    assert "test macro AUROC" in capsys.readouterr().out
