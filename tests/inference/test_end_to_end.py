"""End to end with a really trained tiny model (`medmm.train`): API and CLI on DICOM, zip, NIfTI."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile

import numpy as np
import pytest
import torch
from inference_helpers import assert_no_phi, plant_phi, tiny_workflow

from medmm.cli import main
from medmm.inference import compute_feature_map, load_model
from medmm.inference.schema import RESULT_JSON_SCHEMA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(run_dir, test-split case, its DICOM folder, zip, NIfTI) from one tiny training run."""
    from medmm.data import read_manifest
    from medmm.training import train

    root = tmp_path_factory.mktemp("e2e")
    torch.set_num_threads(1)
    run = train(tiny_workflow(root / "synth"), run_dir=root / "run", verbose=False)
    (manifest,) = (root / "synth").glob("*/manifest.csv")
    case = next(c for c in read_manifest(manifest) if c.split == "test")
    dicom = plant_phi(manifest.parent / case.meta["image_dicom"], root / "inputs" / "held_out")
    zip_path = root / "inputs" / "held_out.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(dicom.iterdir()):
            zf.write(f, f"study/{f.name}")
    return {"run": run.run_dir, "case": case, "dicom": dicom, "zip": zip_path, "nifti": manifest.parent / case.image}


@pytest.fixture(scope="session")
def predictor(trained):
    return load_model(trained["run"], device="cpu")


def test_api_all_formats_agree(predictor, trained):
    import jsonschema

    results = {kind: predictor.predict(trained[kind]) for kind in ("dicom", "zip", "nifti")}
    for result in results.values():
        jsonschema.validate(result.to_dict(), RESULT_JSON_SCHEMA)
        assert result.model["id"] == predictor.model_id and result.report
    probs = {k: r.to_dataframe()["probability"].to_numpy() for k, r in results.items()}
    np.testing.assert_allclose(probs["dicom"], probs["zip"], atol=1e-6)
    np.testing.assert_allclose(probs["dicom"], probs["nifti"], atol=2e-2)  # DICOM stores integer HU


def test_checkpoint_meta_drives_predictor(predictor, trained):
    meta = json.loads((trained["run"] / "medmm.json").read_text())
    workflow = meta["workflow"]
    assert predictor.labels == workflow["data"]["labels"]
    assert predictor.thresholds == {k: float(v) for k, v in meta["thresholds"].items()}
    assert list(predictor.inferer.roi_size) == (workflow["inferer"]["roi_size"] or workflow["preprocessing"]["roi_size"])
    assert predictor.preprocessing.model_dump(mode="json") == workflow["preprocessing"]


def test_ontology_mismatch_is_refused(trained, tmp_path):
    from medmm.errors import MedmmConfigError

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run, ignore=shutil.ignore_patterns("state*", "tb"))
    meta = json.loads((run / "medmm.json").read_text())
    meta["ontology"]["sha256"] = "0" * 64
    (run / "medmm.json").write_text(json.dumps(meta))
    with pytest.raises(MedmmConfigError, match="ontology"):
        load_model(run, device="cpu")
    assert load_model(run, device="cpu", allow_ontology_mismatch=True).labels == meta["workflow"]["data"]["labels"]


def test_sliding_window_matches_direct_pass_and_runs_large(predictor):
    from medmm.io import Volume

    roi = predictor.inferer.roi_size
    x = torch.rand(1, 1, *roi)
    with torch.inference_mode():
        direct = compute_feature_map(predictor.model.feature_map, x, predictor.inferer)
        stitched = compute_feature_map(predictor.model.feature_map, x, predictor.inferer, force_sliding=True)
    torch.testing.assert_close(stitched, direct, atol=1e-4, rtol=1e-4)

    rng = np.random.default_rng(0)
    big = Volume(rng.normal(-500, 300, (60, 52, 44)).astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0]))
    result = predictor.predict(big)
    assert result.inference["sliding_window"] and result.preprocessed["shape"] == [60, 52, 44]
    assert all(np.isfinite(r["probability"]) for r in result.findings)


def test_forward_tensor_gradients(predictor, trained):
    x = predictor.preprocess(trained["nifti"])[None].requires_grad_(True)
    logits = predictor.forward_tensor(x)
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_explain_real_model(predictor, trained):
    result = predictor.predict(trained["nifti"])
    exp = result.explain("Lung nodule")
    assert exp.heatmap.shape == tuple(result.preprocessed["shape"])
    assert 0 <= exp.heatmap.array.min() and exp.heatmap.array.max() <= 1
    assert exp.ontology_path[-1] == "Chest CT finding"


@pytest.mark.parametrize("kind", ["dicom", "zip"])
def test_cli_dicom_sr_fhir_no_phi(kind, trained, tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    args = ["infer", str(trained[kind]), "--model", str(trained["run"]), "--out", str(out), "--dicom-sr", "--fhir",
            "--indication", "shortness of breath", "--device", "cpu"]
    main(args)
    stdout, stderr = capfd.readouterr()
    assert {p.name for p in out.iterdir()} == {"result.json", "report.html", "report_sr.dcm", "fhir.json"}
    assert "Report:" in stdout and "Interlobular septal thickening" in stdout
    assert_no_phi([*out.iterdir(), stdout, stderr, caplog.text])


def test_cli_nifti_default_out(trained, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["infer", str(trained["nifti"]), "--model", str(trained["run"]), "-q"])
    name = trained["nifti"].name.split(".")[0]
    assert (tmp_path / "medmm_out" / name / "result.json").is_file()


def test_cli_batch_resume_real_model(trained, tmp_path, capfd):
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copytree(trained["dicom"], batch / "a")
    shutil.copy(trained["nifti"], batch / "b.nii.gz")
    out = tmp_path / "out"
    args = ["infer", str(batch), "--model", str(trained["run"]), "--out", str(out), "-q"]
    main(args)
    assert capfd.readouterr().out.startswith("2 done, 0 skipped")
    main(args)
    assert capfd.readouterr().out.startswith("0 done, 2 skipped")
