"""`medmm export`: ONNX and TorchScript parity with PyTorch, and the MONAI bundle command run by
an interpreter that cannot import medmm (slow: trains the tiny run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medmm.cli import main as cli_main
from training_helpers import TINY_LABELS

pytestmark = pytest.mark.slow

# Put first on PYTHONPATH, this sitecustomize makes `import medmm` fail in the bundle's interpreter.
# medmm is pip-installed (editable) in this environment, so clearing PYTHONPATH or `python -I`
# would still find it through site-packages; a meta-path blocker hides it whatever the install.
_BLOCK_MEDMM = '''
import sys
class _HideMedmm:
    def find_spec(self, name, path=None, target=None):
        if name == "medmm" or name.startswith("medmm."):
            raise ModuleNotFoundError("No module named 'medmm' (hidden for the bundle test)")
        return None
sys.meta_path.insert(0, _HideMedmm())
'''


@pytest.mark.parametrize("fmt,name", [("onnx", "model.onnx"), ("torchscript", "model.ts")])
def test_export_matches_pytorch_on_two_spatial_shapes(tiny_run, tmp_path, fmt, name, capsys):
    out = tmp_path / name
    cli_main(["export", str(tiny_run), "--format", fmt, "--out", str(out)])
    assert "max |p - p_pytorch|" in capsys.readouterr().out
    record = json.loads(out.with_name(name + ".json").read_text())
    assert record["max_abs_prob_diff"] <= 1e-4
    assert record["dynamic_spatial"] and record["shapes_checked"] == [[1, 1, 16, 16, 16], [1, 1, 24, 24, 24]]

    from medmm.deploy.image_path import load_image_path

    module, _ = load_image_path(tiny_run)
    x = torch.rand(2, 1, 20, 16, 24, generator=torch.Generator().manual_seed(3))  # batch 2, unseen shape
    with torch.inference_mode():
        expected = module(x).numpy()
    if fmt == "onnx":
        from medmm.deploy.export_formats import onnx_session

        got = onnx_session(out).run(["probabilities"], {"image": x.numpy()})[0]
    else:
        got = torch.jit.load(str(out)).eval()(x).detach().numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_image_path_is_the_models_prediction_without_indication(tiny_run, heldout_manifest):
    """The exported function is what the predictor computes for a scan without indication
    (the tiny run's fusion head reads the indication, not the report)."""
    import medmm
    from medmm.data import read_manifest
    from medmm.deploy.image_path import load_image_path

    predictor = medmm.load_model(tiny_run, device="cpu")
    assert not predictor.use_generated_report
    module, _ = load_image_path(tiny_run)
    case = next(iter(read_manifest(heldout_manifest, labels=TINY_LABELS)))
    x = predictor.preprocess(case.image)
    x = (x.as_tensor() if hasattr(x, "as_tensor") else x)[None].float()
    with torch.inference_mode():
        torch.testing.assert_close(module(x), predictor.predict_tensor(x, [None]).probs_raw, atol=1e-6, rtol=0)


def test_monai_bundle_runs_without_medmm(tiny_run, tmp_path, heldout_manifest):
    import medmm
    from medmm.data import read_manifest
    from medmm.deploy.image_path import load_image_path

    bundle = tmp_path / "bundle"
    cli_main(["export", str(tiny_run), "--format", "monai-bundle", "--out", str(bundle)])
    for part in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "docs/README.md",
                 "configs/thresholds.json", "configs/labels.json"):
        assert (bundle / part).is_file(), part
    assert list((bundle / "ontology").glob("*.ttl"))

    blocker = tmp_path / "hide_medmm"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCK_MEDMM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(blocker)
    probe = subprocess.run([sys.executable, "-c", "import medmm"], env=env, cwd=bundle, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'medmm'" in probe.stderr

    case = next(iter(read_manifest(heldout_manifest, labels=TINY_LABELS)))
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
               "--image", str(case.image)]
    done = subprocess.run(command, env=env, cwd=bundle, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads((bundle / "eval" / "probabilities.json").read_text())

    predictor = medmm.load_model(tiny_run, device="cpu")
    module, _ = load_image_path(tiny_run)
    x = predictor.preprocess(case.image)
    x = (x.as_tensor() if hasattr(x, "as_tensor") else x)[None].float()
    with torch.inference_mode():
        expected = module(x)[0].tolist()
    assert list(got) == predictor.labels
    assert np.abs(np.array(list(got.values())) - np.array(expected)).max() <= 1e-4


def test_int8_runs_are_not_exported(tiny_run, tmp_path):
    from medmm.deploy import compress_run, export_run
    from medmm.errors import MedmmInputError

    small = compress_run(tiny_run, tmp_path / "q", quantize="int8", calibration_scans=2, verbose=False)
    with pytest.raises(MedmmInputError, match="int8"):
        export_run(small, "onnx", tmp_path / "q.onnx")
