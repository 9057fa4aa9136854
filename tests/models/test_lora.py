"""Pretrained causal LMs (tiny random GPT-2 / Llama saved to disk) as report LM, with LoRA via peft."""

from __future__ import annotations

import json

import pytest
import torch

from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.models import MedMM, ModelConfig, load_checkpoint, save_checkpoint

from .conftest import meta_for
from .lm_helpers import save_tiny_lm

LABELS = ["Pleural effusion", "Lung nodule", "Emphysema"]


def _config(path, lora=True, **generator) -> ModelConfig:
    gen = {"name_or_path": str(path), "grounding": "findings", "max_report_tokens": 32, "max_new_tokens": 12, **generator}
    if lora:
        gen["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0}
    return ModelConfig.model_validate({
        "image_encoder": {"name": "slim", "widths": [4, 8, 8, 8], "depth": [1, 1, 1, 1], "embed_dim": 16, "token_grid": 1},
        "report_generator": gen,
        "fusion": {"use_text": False, "hidden": 8},
    })


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm_folder(request, tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp(request.param), request.param)


def test_lora_freezes_the_base_and_trains_adapter_projector_prompt(lm_folder):
    model = MedMM(_config(lm_folder), LABELS)
    gen = model.report_generator
    trainable = {n for n, p in gen.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert all("lora_" in n or n.startswith(("projector", "findings_prompt")) for n in trainable)
    tokens = torch.randn(2, 1, 16)
    loss = model.report_loss(tokens, ["FINDINGS: No pleural effusion.", "FINDINGS: The heart is enlarged."],
                             torch.tensor([[0, 1, 0], [1, 0, 1]]))
    loss.backward()
    assert all(p.grad is None for n, p in gen.named_parameters() if not p.requires_grad)
    out = model.generate_reports(tokens, findings_probs=torch.tensor([[0.0, 1, 0], [1, 0, 1]]))
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_run_dir_holds_only_adapter_and_base_identity(lm_folder, tmp_path):
    from safetensors import safe_open

    torch.manual_seed(0)
    model = MedMM(_config(lm_folder), LABELS)
    with torch.no_grad():
        for name, p in model.report_generator.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter is not zero
    path = save_checkpoint(model, tmp_path / "run", "best", meta_for(model))
    with safe_open(str(path), "pt") as fh:
        lm_keys = [k for k in fh.keys() if k.startswith("report_generator.lm.")]
    assert lm_keys and all("lora_" in k for k in lm_keys)
    meta = json.loads((tmp_path / "run" / "medmm.json").read_text())
    record = meta["report_lm"]
    assert record["saved"] == "adapter" and len(record["weights_sha256"]) == 64 and record["model_type"] in ("llama", "gpt2")

    loaded, _ = load_checkpoint(tmp_path / "run", "best")
    tokens = torch.randn(1, 1, 16)
    states = torch.tensor([[1.0, 0.0, 1.0]])
    assert loaded.generate_reports(tokens, findings_probs=states) == model.eval().generate_reports(tokens, findings_probs=states)


def test_a_different_base_is_refused(lm_folder, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(lm_folder, base)
    model = MedMM(_config(base), LABELS)
    save_checkpoint(model, tmp_path / "run", "best", meta_for(model))
    arch = json.loads((base / "config.json").read_text())["model_type"]
    save_tiny_lm(base, "llama" if arch == "llama" else "gpt2", seed=1)  # same folder, other weights
    with pytest.raises(MedmmInputError, match="different weights") as err:
        load_checkpoint(tmp_path / "run", "best")
    assert "\n" not in str(err.value)


def test_lora_needs_a_pretrained_lm():
    with pytest.raises(ValueError, match="lora needs a pretrained LM"):
        ModelConfig.model_validate({"report_generator": {"lora": {"r": 4}}})


def test_missing_lm_folder_is_a_config_error(tmp_path):
    with pytest.raises(MedmmConfigError, match="name_or_path"):
        MedMM(_config(tmp_path / "nope"), LABELS)


@pytest.mark.slow
def test_lora_tiny_llama_trains_an_epoch_on_phantoms(tmp_path):
    """`medmm train` with a LoRA tiny-Llama on synthetic phantoms; predict loads base + adapter."""
    from medmm.config import WorkflowConfig
    from medmm.data import ensure_synthetic
    from medmm.inference import load_model
    from medmm.training import train

    lm = save_tiny_lm(tmp_path / "llama", "llama")
    manifest = ensure_synthetic(tmp_path / "data", n=24, seed=3, size=16, fmt="nifti")
    wf = WorkflowConfig.model_validate({
        "name": "lora", "seed": 0,
        "data": {"source": "manifest", "manifest": {"path": str(manifest)}},
        "preprocessing": {"spacing": None, "hu_window": [-1000, 3000], "roi_size": [16, 16, 16]},
        "network": {
            "image_encoder": {"name": "slim", "widths": [4, 8, 8, 8], "depth": [1, 1, 1, 1], "embed_dim": 16, "token_grid": 1},
            "report_generator": {"name_or_path": str(lm), "grounding": "findings", "length_percentile": 99,
                                 "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}},
            "fusion": {"use_text": False, "hidden": 8},
        },
        "loss": {"lm_weight": 0.5},
        "training": {"epochs": 1, "batch_size": 4, "text": {"use_generated_report": False, "use_indication": False}},
    })
    train(wf, run_dir=tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "medmm.json").read_text())
    assert meta["report_lm"]["saved"] == "adapter"
    assert meta["workflow"]["network"]["report_generator"]["max_new_tokens"] > 50  # whole reports, from the length percentile
    predictor = load_model(tmp_path / "run", device="cpu")
    case = sorted(p for p in (tmp_path / "data").rglob("*.nii.gz"))[0]
    result = predictor.predict(case)
    assert result.report_check["agrees"] and result.report.startswith("FINDINGS: ")
