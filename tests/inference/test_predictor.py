"""Predictor pipeline with a stand-in model: inputs of every kind, sliding window, explain, tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.errors import MedmmInputError
from medmm.inference import RESULT_SCHEMA
from medmm.inference.schema import RESULT_JSON_SCHEMA
from medmm.io import Volume, load_volume

from inference_helpers import AFFINE, make_predictor, phantom


@pytest.mark.parametrize("kind", ["dicom", "zip", "nifti"])
def test_predict_paths(tiny_predictor, scans, kind):
    import jsonschema

    result = tiny_predictor.predict(scans[kind], indication="cough")
    doc = result.to_dict()
    jsonschema.validate(doc, RESULT_JSON_SCHEMA)
    assert doc["schema"] == RESULT_SCHEMA and doc["indication"] == "cough"
    assert result.labels == tiny_predictor.labels and result.report
    assert doc["input"]["shape"] == [24, 24, 12] and doc["input"]["orientation"] in ("RAS", "LPS")
    for row in result.findings:
        assert 0 <= row["probability_raw"] <= 1 and row["ontology_path"][0] == row["finding"]
    assert [row["positive"] for row in result.findings] == tiny_predictor.decide(
        torch.tensor([[row["probability"] for row in result.findings]]))[0].tolist()


def test_decisions_obey_the_ontology_with_per_finding_thresholds(tiny_predictor):
    """Consistent probabilities can still give inconsistent decisions when thresholds differ;
    the predictor's decisions never do (child positive => parent positive)."""
    labels = tiny_predictor.labels
    cons = tiny_predictor.constraints
    assert len(cons.implications) > 0
    saved = dict(tiny_predictor.thresholds)
    try:
        for child, parent in cons.implications.tolist():
            tiny_predictor.thresholds[labels[child]] = 0.3
            tiny_predictor.thresholds[labels[parent]] = 0.7
        probs = torch.full((1, len(labels)), 0.5)  # consistent (p_child <= p_parent) but split by the thresholds
        decisions = tiny_predictor.decide(probs)[0]
        for child, parent in cons.implications.tolist():
            assert not (decisions[child] and not decisions[parent])
    finally:
        tiny_predictor.thresholds.clear()
        tiny_predictor.thresholds.update(saved)


def test_same_image_same_result_across_formats(tiny_predictor, scans):
    a = tiny_predictor.predict(scans["dicom"]).to_dataframe()
    b = tiny_predictor.predict(scans["nifti"]).to_dataframe()
    np.testing.assert_allclose(a["probability"], b["probability"], atol=1e-3)


def test_consistency_is_applied(tmp_path, scans):
    # bias one child finding high: its ontology parents must rise to at least its probability
    predictor = make_predictor(tmp_path)
    child = "Consolidation"
    with torch.no_grad():
        predictor.model.head.bias[predictor.labels.index(child)] = 8.0
    result = predictor.predict(scans["nifti"])
    row = result.finding(child)
    implied = predictor.ontology.constraints(predictor.labels)
    parents = [predictor.labels[b] for a, b in implied.implications.tolist() if predictor.labels[a] == child]
    assert parents, "ontology should give Consolidation an implied finding"
    for parent in parents:
        prow = result.finding(parent)
        assert prow["probability"] >= row["probability"] - 1e-6
    assert result.consistency["n_repairs"] == sum(len(r["repaired"]) for r in result.findings)


def test_sliding_window_path_on_large_volume(tmp_path):
    predictor = make_predictor(tmp_path, roi=(8, 8, 8))
    vol = Volume(phantom((40, 40, 16)), AFFINE)
    result = predictor.predict(vol)
    assert result.inference["sliding_window"] is True
    small = make_predictor(tmp_path, roi=(64, 64, 64)).predict(vol)
    assert small.inference["sliding_window"] is False
    assert result.preprocessed["shape"] == small.preprocessed["shape"]


def test_explain_returns_heatmap_volume(tiny_predictor, scans):
    result = tiny_predictor.predict(scans["nifti"])
    exp = result.explain("Pleural effusion")
    assert exp.heatmap.shape == tuple(result.preprocessed["shape"])
    arr = exp.heatmap.array
    assert np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1
    assert exp.ontology_path[0] == "Pleural effusion" and "path" in exp.details
    with pytest.raises(KeyError, match="did you mean"):
        result.explain("Pleural efusion")


def test_forward_tensor_is_differentiable(tiny_predictor, scans):
    x = tiny_predictor.preprocess(scans["nifti"])[None].requires_grad_(True)
    logits = tiny_predictor.forward_tensor(x, indications=["dyspnea"])
    assert logits.shape == (1, len(tiny_predictor.labels))
    logits[0, 3].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    out = tiny_predictor.predict_tensor(x.detach(), indications=["dyspnea"])
    torch.testing.assert_close(out.probs_raw, torch.sigmoid(logits.detach()), atol=1e-5, rtol=1e-5)
    assert (out.probs >= 0).all() and len(out.reports) == 1


def test_probabilities_without_reports_match_the_full_prediction(tiny_predictor, scans):
    """``reports=False`` (faithfulness twins) skips the report, never changes the probabilities."""
    full = tiny_predictor.predict(scans["nifti"], indication="cough")
    x = tiny_predictor.preprocess(scans["nifti"])[None].float()
    quick = tiny_predictor.predict_tensor(x, indications=["cough"], reports=False)
    np.testing.assert_allclose(quick.probs[0].numpy(), [r["probability"] for r in full.findings], atol=1e-5)
    assert quick.reports == [""] and quick.report_checks == [] and full.report


def test_missing_input_is_input_error(tiny_predictor, tmp_path):
    with pytest.raises(MedmmInputError):
        tiny_predictor.predict(tmp_path / "nope.nii.gz")


def test_repr_html_and_summary(tiny_predictor, scans):
    result = tiny_predictor.predict(load_volume(scans["dicom"]))
    html = result._repr_html_()
    assert "<table" in html and "Pleural effusion" in html
    assert "Report:" in result.summary()


def test_explain_keeps_model_in_eval_mode(tiny_predictor, scans):
    result = tiny_predictor.predict(scans["nifti"])
    result.explain("Emphysema")
    assert not tiny_predictor.model.training


@pytest.mark.gpu
def test_cuda_windows_with_cpu_stitching_match_cpu(tmp_path):
    from medmm.inference import Predictor

    cpu = make_predictor(tmp_path, roi=(8, 8, 8))
    gpu = Predictor(cpu.model, dict(cpu.meta), cpu.run_dir, "best", torch.device("cuda"), cpu.ontology)
    gpu.inferer = gpu.inferer.model_copy(update={"device": "cpu"})  # stitch in host memory
    vol = Volume(phantom((40, 40, 16)), AFFINE)
    on_gpu = gpu.predict(vol).to_dataframe()["probability_raw"]
    cpu_model = make_predictor(tmp_path, roi=(8, 8, 8))
    on_cpu = cpu_model.predict(vol).to_dataframe()["probability_raw"]
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)


def test_predict_leaves_callers_volume_untouched(tiny_predictor):
    vol = Volume(phantom((16, 16, 8)), np.diag([2.0, 2.0, 2.0, 1.0]))
    before = vol.array.copy()
    first = tiny_predictor.predict(vol).to_dataframe()
    np.testing.assert_array_equal(vol.array, before)
    np.testing.assert_allclose(tiny_predictor.predict(vol).to_dataframe()["probability"], first["probability"])
