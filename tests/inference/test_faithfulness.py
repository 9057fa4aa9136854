"""Faithfulness of explanations on phantoms: pointing game, energy in lesion, counterfactual drops."""

from __future__ import annotations

import numpy as np
import pytest

from medmm.errors import MedmmInputError
from medmm.evaluation.faithfulness import evaluate_faithfulness, faithfulness_table, score_map, synthetic_params
from medmm.inference.evidence import localisation


def test_score_map_pointing_and_energy():
    lesion = np.zeros((16, 16, 16), bool)
    lesion[4:7, 4:7, 4:7] = True
    body = np.ones_like(lesion)
    heat = np.zeros(lesion.shape, np.float32)
    heat[5, 5, 5] = 1.0
    hit = score_map(heat, localisation(heat), lesion, body)
    assert hit["hit"] == 1.0 and hit["energy"] == pytest.approx(1.0)
    assert hit["lesion_fraction"] == pytest.approx(27 / 16**3)
    far = np.zeros_like(heat)
    far[12, 12, 12] = 1.0
    miss = score_map(far, localisation(far), lesion, body)
    assert miss["hit"] == 0.0 and miss["energy"] == 0.0
    flat = np.ones_like(heat)  # no localised evidence: a miss, whatever the lesion
    assert score_map(flat, localisation(flat), lesion, body)["hit"] == 0.0


def test_explain_needs_a_synthetic_manifest(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,image\n")
    with pytest.raises(MedmmInputError, match="synthetic manifest"):
        synthetic_params(manifest)


@pytest.mark.slow  # renders phantoms + one twin per finding and predicts each (minutes on a shared CPU)
def test_faithfulness_on_held_out_phantoms(tiny_predictor, tmp_path):
    from medmm.data.synth import synthesize

    manifest = synthesize(tmp_path / "synth", n=3, seed=4711, size=32)
    report = evaluate_faithfulness(tiny_predictor, manifest, split="all", methods=["gradcam", "saliency"], limit=1)
    assert report["n_scans"] == 1 and report["methods"] == ["gradcam", "saliency"]
    assert report["per_finding"], "the phantoms have positive findings"
    for row in report["per_finding"].values():
        assert row["n"] >= 1 and -1.0 <= row["prob_drop"] <= 1.0 and 0.0 <= row["other_shift"] <= 1.0
        for method in ("gradcam", "saliency"):
            if method in row:
                assert 0.0 <= row[method]["pointing"] <= 1.0 and 0.0 <= row[method]["energy"] <= 1.0
    table = faithfulness_table(report)
    assert "macro mean" in table and "saliency" in table
