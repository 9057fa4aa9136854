"""Checkpoints: safetensors + RunMeta round trip, pretrained weights skipped, pickle refused."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from medmm.errors import MedmmInputError
from medmm.models import MedMM, load_checkpoint, save_checkpoint

from .conftest import REPORTS, meta_for

LABELS = ["Emphysema", "Cardiomegaly", "Atelectasis"]


def _outputs(model: MedMM, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    model.eval()
    with torch.no_grad():
        pooled, tokens = model.embed(model.feature_map(image))
        reports = model.generate_reports(tokens, max_new_tokens=6)
        texts = [f"indication: cough\n{r}" for r in reports]
        logits = model(image, texts) if model.uses_text else model(image)
        return logits, model.report_loss(tokens, REPORTS), reports


def _trained(model: MedMM, image: torch.Tensor) -> MedMM:
    """Two optimiser steps so saved weights differ from a fresh initialisation."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        pooled, tokens = model.embed(model.feature_map(image))
        text_emb = model.encode_text(["a", "b"]) if model.uses_text else None
        loss = model.classify(pooled, text_emb, tokens).sum() + model.report_loss(tokens, REPORTS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as fh:
        return list(fh.keys())


@pytest.mark.parametrize(
    ("text", "fusion", "encoder_keys_saved"),
    [
        ({"tuning": "frozen"}, {}, "none"),
        ({"tuning": "partial", "trainable_layers": 1}, {"mode": "gated"}, "layer1"),
        ({"tuning": "full"}, {"mode": "cross_attention"}, "all"),
        ({}, {"use_text": False}, "none"),
    ],
)
def test_round_trip_gives_identical_outputs(tiny_config, image, tmp_path, text, fusion, encoder_keys_saved):
    torch.manual_seed(0)
    model = _trained(MedMM(tiny_config(text=text, fusion=fusion), LABELS), image)
    path = save_checkpoint(model, tmp_path, "best", meta_for(model, best_epoch=3))
    assert path == tmp_path / "best.safetensors"
    encoder_keys = [k for k in _keys(path) if k.startswith("text_encoder.")]
    if encoder_keys_saved == "none":
        assert encoder_keys == []
    elif encoder_keys_saved == "layer1":
        assert encoder_keys and all(k.startswith("text_encoder.model.encoder.layer.1.") for k in encoder_keys)
    else:
        assert any(k.startswith("text_encoder.model.embeddings.") for k in encoder_keys)

    expected = _outputs(model, image)
    loaded, meta = load_checkpoint(tmp_path, "best")
    got = _outputs(loaded, image)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]) and got[2] == expected[2]
    assert not loaded.training
    assert meta.labels == LABELS and meta.best_epoch == 3 and meta.thresholds["Emphysema"] == 0.5
    assert meta.network == model.config
    assert {"torch", "monai", "transformers", "medmm"} <= set(meta.versions)


def test_medmm_json_is_the_latest_meta_and_tracks_each_checkpoint(tiny_config, image, tmp_path):
    model = MedMM(tiny_config(), LABELS)
    save_checkpoint(model, tmp_path, "last", meta_for(model, last_epoch=1))
    save_checkpoint(model, tmp_path, "best", meta_for(model, last_epoch=2))
    meta = json.loads((tmp_path / "medmm.json").read_text())
    assert meta["schema"] == "medmm.run/2" and meta["last_epoch"] == 2 and meta["run_id"] == "r1"
    assert set(meta["checkpoints"]) == {"last", "best"}
    te = meta["text_encoder"]
    assert te["saved"] == "none" and len(te["weights_sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "last.safetensors", "medmm.json"]


def test_weights_without_their_run_meta_are_refused(tiny_config, tmp_path):
    model = MedMM(tiny_config(), LABELS).eval()
    save_checkpoint(model, tmp_path, "best", meta_for(model))
    (tmp_path / "medmm.json").unlink()
    with pytest.raises(MedmmInputError, match="no medmm.json") as info:
        load_checkpoint(tmp_path, "best")
    assert "\n" not in str(info.value)


def test_the_header_keeps_only_labels_and_they_must_match(tiny_config, tmp_path):
    model = MedMM(tiny_config(), LABELS).eval()
    save_checkpoint(model, tmp_path, "best", meta_for(model))
    with safe_open(str(tmp_path / "best.safetensors"), framework="pt") as fh:
        header = fh.metadata()
    assert set(header) == {"format", "medmm_labels"} and json.loads(header["medmm_labels"]) == LABELS
    # a medmm.json of the same labels in another order would assign logits to the wrong findings
    other = MedMM(tiny_config(), list(reversed(LABELS)))
    save_checkpoint(other, tmp_path / "other", "best", meta_for(other))
    (tmp_path / "medmm.json").write_bytes((tmp_path / "other" / "medmm.json").read_bytes())
    with pytest.raises(MedmmInputError, match="another order"):
        load_checkpoint(tmp_path, "best")


def test_gpt2_from_a_local_folder_round_trips(tiny_config, image, tmp_path, tiny_gpt2_dir):
    torch.manual_seed(0)
    model = _trained(MedMM(tiny_config(generator={"name_or_path": str(tiny_gpt2_dir)}), LABELS), image)
    save_checkpoint(model, tmp_path, "best", meta_for(model))
    loaded, _ = load_checkpoint(tmp_path)
    assert torch.equal(_outputs(loaded, image)[1], _outputs(model, image)[1])


class _Exploit:
    """Unpickling this would create a marker file: proves the loader never unpickles."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_pickle_checkpoint_is_refused_and_never_unpickled(tmp_path, how):
    marker = tmp_path / "unpickled"
    exploit = _Exploit()
    exploit.marker = marker
    path = tmp_path / "best.safetensors"
    if how == "torch.save":
        torch.save({"w": torch.zeros(2), "x": exploit}, path)
    else:
        path.write_bytes(pickle.dumps(exploit))
    with pytest.raises(MedmmInputError, match="pickle") as info:
        load_checkpoint(tmp_path, "best")
    assert "\n" not in str(info.value)
    assert not marker.exists()
    if how == "pickle":  # the payload is live: unpickling it really would have run code
        pickle.loads(path.read_bytes())
        assert marker.exists()


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: shutil.rmtree(d), "checkpoint folder not found"),
        (lambda d: None, "no checkpoint named 'best'; available: none"),
        (lambda d: (d / "best.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{garbage"), "not a valid safetensors"),
        (lambda d: (d / "best.safetensors").write_bytes(b""), "not a valid safetensors"),
    ],
)
def test_missing_or_corrupt_checkpoint_is_an_input_error(tiny_config, tmp_path, setup, match):
    folder = tmp_path / "run"
    model = MedMM(tiny_config(), LABELS)
    save_checkpoint(model, folder, "last", meta_for(model))
    (folder / "last.safetensors").unlink()
    setup(folder)
    with pytest.raises(MedmmInputError, match=match):
        load_checkpoint(folder, "best")


def test_corrupt_medmm_json_is_an_input_error(tiny_config, tmp_path):
    model = MedMM(tiny_config(), LABELS)
    save_checkpoint(model, tmp_path, "best", meta_for(model))
    (tmp_path / "medmm.json").write_text("{not json")
    with pytest.raises(MedmmInputError, match="medmm.json.*metadata"):
        load_checkpoint(tmp_path, "best")


def test_weights_for_another_architecture_are_an_input_error(tiny_config, tmp_path):
    from safetensors.torch import save_file

    model = MedMM(tiny_config(), LABELS)
    save_checkpoint(model, tmp_path, "best", meta_for(model))
    header = {"format": "pt"}
    with safe_open(str(tmp_path / "best.safetensors"), framework="pt") as fh:
        header.update(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    tensors["fusion.head.3.weight"] = torch.zeros(7, 16)
    save_file(tensors, str(tmp_path / "best.safetensors"), metadata=header)
    with pytest.raises(MedmmInputError, match="do not fit"):
        load_checkpoint(tmp_path, "best")


def test_changed_pretrained_text_encoder_is_detected(tiny_config, tmp_path, tiny_bert_dir):
    encoder_copy = tmp_path / "bert"
    shutil.copytree(tiny_bert_dir, encoder_copy)
    model = MedMM(tiny_config(text={"name_or_path": str(encoder_copy)}), LABELS)
    save_checkpoint(model, tmp_path / "run", "best", meta_for(model))
    from transformers import BertModel

    torch.manual_seed(123)
    BertModel(BertModel.config_class.from_pretrained(encoder_copy)).save_pretrained(encoder_copy)
    with pytest.raises(MedmmInputError, match="text encoder .* different weights"):
        load_checkpoint(tmp_path / "run", "best")


@pytest.mark.gpu
def test_cuda_round_trip_and_decoding(tiny_config, image, tmp_path):
    torch.manual_seed(0)
    model = MedMM(tiny_config(fusion={"mode": "cross_attention"}), LABELS).eval()
    save_checkpoint(model, tmp_path, "best", meta_for(model))
    loaded, _ = load_checkpoint(tmp_path, "best", map_location="cuda")
    assert next(loaded.parameters()).is_cuda
    cpu_logits, _, cpu_reports = _outputs(model, image)
    gpu_logits, _, gpu_reports = _outputs(loaded, image.cuda())
    assert torch.allclose(gpu_logits.cpu(), cpu_logits, atol=1e-4)
    assert len(gpu_reports) == len(cpu_reports) == 2


@pytest.mark.parametrize("regions", [{}, {"cell_split": 2, "central_region": [0.5, 0.5, 1.0]}])
def test_round_trip_keeps_the_radiomics_branch(radiomics_model, image, tmp_path, regions):
    """Bin centres live in RunMeta.network_derived, the branch's normalisers in the weights."""
    context = {"centres": [0.0, 0.5, 1.0], "context_centres": [0.0, 0.5], "context_voxels": [3, 5], **regions}
    model = _trained(radiomics_model(intensity=[0.0, 0.2, 0.5, 0.8, 1.0], context=context, labels=LABELS), image)
    save_checkpoint(model, tmp_path, "best", meta_for(model))
    keys = _keys(tmp_path / "best.safetensors")
    assert any(k.startswith("radiomics.context_norm.") for k in keys)
    assert any(k.startswith("radiomics.histogram_norm.") for k in keys)
    expected = _outputs(model, image)
    loaded, meta = load_checkpoint(tmp_path, "best")
    assert meta.network_derived.histogram_centres == [0.0, 0.2, 0.5, 0.8, 1.0]
    assert loaded.radiomics.context_histogram.shape == (3, 2, 2)
    assert meta.network.radiomics.context.central_region == regions.get("central_region")
    got = _outputs(loaded, image)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
