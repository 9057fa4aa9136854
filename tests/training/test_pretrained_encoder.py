"""A tiny training run from pretrained encoder weights: the load report lands in the run dir, the
weights file is not needed afterwards, and strict refusal stops training before it starts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from medmm.errors import MedmmConfigError
from medmm.training import train

from training_helpers import tiny_workflow

ENCODER = {"name": "segresnet_ds", "widths": [4], "depth": [1, 1], "embed_dim": 16, "token_grid": 1}


def _ct_fm_like_weights(path, extra: dict | None = None):
    """A CT-FM-layout file (MONAI SegResEncoder keys, safetensors) from a randomly initialised encoder."""
    from monai.networks.nets.segresnet_ds import SegResEncoder

    torch.manual_seed(0)
    state = SegResEncoder(spatial_dims=3, init_filters=4, in_channels=1, blocks_down=(1, 1)).state_dict()
    save_file({k: v.contiguous() for k, v in {**state, **(extra or {})}.items()}, path)
    return state


@pytest.mark.slow
def test_run_dir_holds_the_load_report_and_needs_no_weights_file(tiny_manifest, tmp_path):
    from medmm.inference import load_model
    from medmm.models import load_checkpoint

    weights = tmp_path / "weights" / "ct_fm.safetensors"
    weights.parent.mkdir()
    source = _ct_fm_like_weights(weights)
    encoder = {**ENCODER, "pretrained": {"path": str(weights)}}
    run = train(tiny_workflow(tiny_manifest, **{"network.image_encoder": encoder}), run_dir=tmp_path / "run",
                verbose=False)
    report = json.loads((run.run_dir / "encoder_weights.json").read_text())
    assert report["file"] == "ct_fm.safetensors" and report["key_prefix"] == ""
    assert len(report["matched"]) == len(source) and not (report["missing"] or report["unexpected"])
    trained = run.meta.model_history[0]
    assert trained.action == "trained"
    record = trained.details["pretrained_image_encoder"]
    assert record["report"] == "encoder_weights.json" and record["matched"] == len(source)
    assert record["sha256"] == report["sha256"]
    # the weights were used: the initial conv of the trained model started from the file
    model, _ = load_checkpoint(run.run_dir, "best")
    init = source["conv_init.weight"]
    drift = (model.image_encoder.backbone.conv_init.weight - init).abs().max()
    assert drift < 0.1 * init.abs().max()
    # inference never reads the pretrained file: the trained encoder is in the checkpoint
    weights.unlink()
    weights.parent.rmdir()
    predictor = load_model(run.run_dir)
    probs = predictor.predict_tensor(torch.zeros(1, 1, 16, 16, 16), [None]).probs
    assert probs.shape == (1, 3) and torch.isfinite(probs).all()
    # nor does fine-tuning the run (medmm compress --finetune-epochs): it starts from the run's weights
    from medmm.deploy.compress import compress_run

    tuned = compress_run(run.run_dir, tmp_path / "tuned", finetune_epochs=1, verbose=False)
    assert (tuned / "medmm.json").is_file() and not (tuned / "encoder_weights.json").exists()


def test_strict_mismatch_stops_training_before_it_starts(tiny_manifest, tmp_path):
    weights = tmp_path / "wrong.safetensors"
    _ct_fm_like_weights(weights, extra={"projection.weight": torch.zeros(4)})
    encoder = {**ENCODER, "pretrained": {"path": str(weights), "strict": True}}
    with pytest.raises(MedmmConfigError, match="1 unexpected") as err:
        train(tiny_workflow(tiny_manifest, **{"network.image_encoder": encoder}), run_dir=tmp_path / "run",
              verbose=False)
    assert "wrong.safetensors" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "best.safetensors").exists()


@pytest.mark.slow
def test_swin_vit_from_ssl_layout_trains_and_predicts(tiny_manifest, tmp_path):
    """SwinUNETR's Swin-ViT from a `model_swinvit.pt`-layout file through a whole (tiny) run at 32³."""
    from monai.networks.nets.swin_unetr import SwinTransformer

    from medmm.inference import load_model

    torch.manual_seed(0)
    net = SwinTransformer(1, 12, (7, 7, 7), (2, 2, 2), (1, 1, 1, 1), (3, 6, 12, 24))
    state = {"module." + k.replace(".mlp.linear", ".mlp.fc"): v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    encoder = {"name": "swin_vit", "widths": [12], "depth": [1, 1, 1, 1], "embed_dim": 16, "token_grid": 1,
               "pretrained": {"path": str(tmp_path / "model_swinvit.pt")}}
    wf = tiny_workflow(tiny_manifest, **{"network.image_encoder": encoder, "preprocessing.roi_size": [32, 32, 32]})
    run = train(wf, run_dir=tmp_path / "run", verbose=False)
    report = json.loads((run.run_dir / "encoder_weights.json").read_text())
    assert report["key_prefix"] == "module." and len(report["matched"]) == len(state)
    assert any(k.endswith("mlp.linear1.weight") for k in report["matched"])
    # logits with a fixed fusion text (the tiny 40-position LM's report continuation is not under test)
    logits = load_model(run.run_dir).forward_tensor(torch.zeros(1, 1, 32, 32, 32), texts=["Findings: none."])
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()


def test_cli_missing_weights_file_is_exit_2_with_one_line(tiny_manifest, tmp_path, capsys):
    import yaml

    from medmm.cli import main

    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump(tiny_workflow(tiny_manifest, **{"network.image_encoder": ENCODER})))
    with pytest.raises(SystemExit) as info:
        main(["train", str(wf), "--run-dir", str(tmp_path / "run"), "--quiet", "--device", "cpu",
              "--set", f"network.image_encoder.pretrained.path={tmp_path / 'nope.pt'}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "nope.pt" in err[0] and "no such file" in err[0]
