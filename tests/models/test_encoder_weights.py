"""Pretrained image-encoder weights: public CT weight layouts saved from randomly initialised MONAI
networks, loaded through `network.image_encoder.pretrained` (key mapping, report, strict refusal)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from medmm.config import ImageEncoderConfig
from medmm.errors import MedmmConfigError
from medmm.models import ImageEncoder
from medmm.models.encoder_weights import infer_prefix, load_encoder_weights, read_state_dict

SWIN = {"name": "swin_vit", "widths": [12], "depth": [1, 1, 1, 1], "embed_dim": 16}
SEGRESNET = {"name": "segresnet", "widths": [8], "depth": [1, 1, 1], "embed_dim": 16}
SEGRESNET_DS = {"name": "segresnet_ds", "widths": [4], "depth": [1, 1, 2], "embed_dim": 16}
DENSENET = {"name": "densenet121", "widths": [8, 4], "depth": [1, 1, 1, 1], "embed_dim": 16}


def _encoder(cfg: dict, path=None, **pretrained) -> ImageEncoder:
    torch.manual_seed(1)  # another init than the saved network, so a load is visible
    spec = None if path is None else {"path": str(path), **pretrained}
    return ImageEncoder(ImageEncoderConfig(**cfg, pretrained=spec))


def _load(cfg: dict, path, **pretrained):
    enc = _encoder(cfg, path, **pretrained)
    return enc, load_encoder_weights(enc.backbone, enc.cfg.pretrained, enc.cfg.name)


def _swin_ssl_file(tmp_path):
    """``model_swinvit.pt`` layout: {"state_dict": {"module.<swinViT key>"}} with MLP layers named fc1/fc2."""
    from monai.networks.nets.swin_unetr import SwinTransformer

    torch.manual_seed(0)
    net = SwinTransformer(1, 12, (7, 7, 7), (2, 2, 2), (1, 1, 1, 1), (3, 6, 12, 24), downsample="merging")
    state = {"module." + k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
             for k, v in net.state_dict().items()}
    path = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": state, "epoch": 100}, path)
    return path, net


def test_swin_ssl_weights_load_like_monai_load_from(tmp_path):
    from monai.networks.nets import SwinUNETR

    path, source = _swin_ssl_file(tmp_path)
    enc, report = _load(SWIN, path)
    assert report.key_prefix == "module." and not report.mismatches and not report.skipped
    assert len(report.matched) == len(source.state_dict())
    # MONAI's own SSL loader, given the same file, puts the same tensors into a SwinUNETR
    ref = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1))
    ref.load_from(torch.load(path, weights_only=True))
    for key, value in ref.swinViT.state_dict().items():
        assert torch.equal(enc.backbone.state_dict()[key], value), key
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc.feature_map(x), ref.swinViT(x, ref.normalize)[-1])


def test_finetuned_swinunetr_checkpoint_takes_the_swinvit_part(tmp_path):
    from monai.networks.nets import SwinUNETR

    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12, depths=(1, 1, 1, 1))
    torch.save({"model": net.state_dict()}, tmp_path / "swin_unetr_btcv.pt")
    enc, report = _load(SWIN, tmp_path / "swin_unetr_btcv.pt")
    assert report.key_prefix == "swinViT." and not report.mismatches
    assert report.skipped and all(not k.startswith("swinViT.") for k in report.skipped)  # decoder, head


def test_segresnet_bundle_folder_loads_the_encoder_and_skips_the_decoder(tmp_path):
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    net = SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=5, blocks_down=(1, 1, 1),
                    blocks_up=(1, 1)).eval()
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "bundle" / "models" / "model.pt")  # a MONAI bundle's layout
    assert "convInit.conv.weight" in net.state_dict() and "down_layers.0.1.conv1.conv.weight" in net.state_dict()
    enc, report = _load(SEGRESNET, tmp_path / "bundle")
    assert report.file == "model.pt" and report.key_prefix == "" and not report.mismatches
    assert report.skipped and all(k.startswith(("up_layers.", "up_samples.", "conv_final.")) for k in report.skipped)
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(enc.eval().feature_map(x), net.encode(x)[0])


def test_ct_fm_segresencoder_safetensors(tmp_path):
    from monai.networks.nets.segresnet_ds import SegResEncoder

    torch.manual_seed(0)
    net = SegResEncoder(spatial_dims=3, init_filters=4, in_channels=1, blocks_down=(1, 1, 2)).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "model.safetensors")
    enc, report = _load(SEGRESNET_DS, tmp_path)  # a Hugging Face model folder
    assert report.file == "model.safetensors" and not report.mismatches and report.matched
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(enc.eval().feature_map(x), net(x)[-1])


def test_densenet_checkpoint_with_wrapper_prefix_and_classifier(tmp_path):
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
                      block_config=(1, 1, 1, 1))
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "dn.pth")
    enc, report = _load(DENSENET, tmp_path / "dn.pth")
    assert report.key_prefix == "module." and not report.mismatches
    assert sorted(report.skipped) == ["module.class_layers.out.bias", "module.class_layers.out.weight"]
    assert torch.equal(enc.backbone.features.conv0.weight, net.features.conv0.weight)


def test_explicit_prefix_strip_and_add(tmp_path):
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
                      block_config=(1, 1, 1, 1))
    # only the `features` submodule, saved under a wrapper prefix of its own: strip "backbone.", add "features."
    state = {"backbone." + k: v for k, v in net.features.state_dict().items()}
    state["head.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "features.safetensors")
    enc, report = _load(DENSENET, tmp_path / "features.safetensors", key_prefix="backbone.", add_prefix="features.")
    assert report.skipped == ["head.weight"] and not report.mismatches
    assert torch.equal(enc.backbone.features.norm5.weight, net.features.norm5.weight)
    # the prefix is inferred the same way when not given
    assert infer_prefix(list(state), {k[len("features."):] for k in enc.backbone.state_dict()}) == "backbone."


def test_mismatches_are_reported_and_strict_refuses_them(tmp_path):
    from monai.networks.nets.segresnet_ds import SegResEncoder

    wider = SegResEncoder(spatial_dims=3, init_filters=4, in_channels=1, blocks_down=(1, 1, 1)).state_dict()
    wider["layers.2.blocks.0.conv1.weight"] = torch.zeros(8, 16, 3, 3, 3)
    wider["extra.weight"] = torch.zeros(2)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in wider.items()}, path)
    with pytest.raises(MedmmConfigError) as err:
        _load(SEGRESNET_DS, path)  # strict by default
    text = str(err.value)
    assert "\n" not in text and str(path) in text
    assert "missing" in text and "1 unexpected" in text and "1 shape-mismatched" in text
    enc, report = _load(SEGRESNET_DS, path, strict=False)
    assert report.unexpected == ["extra.weight"]
    assert report.shape_mismatched == [{"key": "layers.2.blocks.0.conv1.weight", "file_shape": [8, 16, 3, 3, 3],
                                        "model_shape": [16, 16, 3, 3, 3]}]
    assert any(k.startswith("layers.2.blocks.1.") for k in report.missing)  # depth 2 in the model, 1 in the file
    assert "1 shape-mismatched" in report.summary()
    # the mismatched tensor keeps its initial value; the matched ones are loaded
    assert torch.equal(enc.backbone.conv_init.weight, wider["conv_init.weight"])
    assert not torch.equal(enc.backbone.layers[2]["blocks"][0].conv1.weight, torch.zeros(16, 16, 3, 3, 3))


class _TouchOnLoad:
    """Unpickling this would create a file: a stand-in for a checkpoint that runs code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.path),))


def test_unusable_files_are_one_line_config_errors(tmp_path):
    sentinel = tmp_path / "code_ran"
    torch.save({"conv.weight": torch.zeros(1), "obj": _TouchOnLoad(sentinel)}, tmp_path / "pickle.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"epoch": 3, "config": {"lr": 1.0}}, tmp_path / "no_tensors.pt")
    save_file({"something.else": torch.zeros(2)}, tmp_path / "unrelated.safetensors")
    (tmp_path / "empty_dir").mkdir()
    cases = {"pickle.pt": "Weights only load failed", "garbage.pt": "cannot read", "no_tensors.pt": "no state dict",
             "unrelated.safetensors": "no key fits", "empty_dir": "folder without weights", "absent.pt": "no such file"}
    for name, message in cases.items():
        with pytest.raises(MedmmConfigError) as err:
            _load(SEGRESNET_DS, tmp_path / name)
        assert message in str(err.value) and name in str(err.value) and "\n" not in str(err.value), name
    assert not sentinel.exists()  # the pickle was refused, never executed


def test_read_state_dict_unwraps_nested_checkpoints(tmp_path):
    torch.save({"model": {"state_dict": {"a.weight": torch.ones(2)}}, "optimizer": {}}, tmp_path / "nested.pt")
    assert list(read_state_dict(tmp_path / "nested.pt")) == ["a.weight"]


def test_config_checks_and_json_report(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="multiple of 12"):
        ImageEncoderConfig(name="swin_vit", widths=[16])
    with pytest.raises(ValidationError, match="4 depth"):
        ImageEncoderConfig(name="swin_vit", depth=[1, 1])
    with pytest.raises(ValidationError, match="multiple of 8"):
        ImageEncoderConfig(name="segresnet", widths=[12])
    with pytest.raises(ValidationError, match="segresnet_ds only"):
        ImageEncoderConfig(name="densenet121", norm="instance")
    with pytest.raises(ValidationError, match="unknown key|Extra inputs"):
        ImageEncoderConfig(name="swin_vit", pretrained={"path": "x.pt", "prefix": "module."})
    enc = ImageEncoder(ImageEncoderConfig(**SWIN))
    with pytest.raises(MedmmConfigError, match="divisible by 32"):
        enc.feature_map(torch.zeros(1, 1, 32, 32, 16))
    from medmm.models.encoder_weights import write_report

    path, _ = _swin_ssl_file(tmp_path)
    _, report = _load(SWIN, path)
    data = json.loads(write_report(report, tmp_path / "run").read_text())
    assert data["file"] == "model_swinvit.pt" and str(tmp_path) not in json.dumps(data)
    assert len(data["sha256"]) == 64 and data["summary"].startswith("pretrained image encoder (swin_vit)")


def test_vista3d_image_encoder_layout_with_instance_norm(tmp_path):
    """VISTA3D's image encoder is a SegResNetDS2 (instance norm) whose encoder is a SegResEncoder."""
    from monai.networks.nets.segresnet_ds import SegResNetDS2

    torch.manual_seed(0)
    net = SegResNetDS2(in_channels=1, blocks_down=(1, 1, 2), norm="instance", out_channels=4, init_filters=4,
                       dsdepth=1).eval()
    save_file({"image_encoder." + k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "vista.safetensors")
    enc, report = _load({**SEGRESNET_DS, "norm": "instance"}, tmp_path / "vista.safetensors")
    assert report.key_prefix == "image_encoder.encoder." and not report.mismatches
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(enc.eval().feature_map(x), net.encoder(x)[-1])
    with pytest.raises(MedmmConfigError, match="running_mean"):  # the batch-norm default misses its statistics
        _load(SEGRESNET_DS, tmp_path / "vista.safetensors")
