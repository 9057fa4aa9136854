"""Structured and unstructured pruning of the image encoder (tiny untrained models, fast)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medmm.deploy.pruning import backbone_widths, structured_prune, unstructured_prune
from medmm.errors import MedmmConfigError
from medmm.config import ImageEncoderConfig
from medmm.models import ImageEncoder


class _Holder(nn.Module):
    """Just the parts pruning touches (image encoder + fusion), with a config like MedMM's."""

    def __init__(self, encoder_cfg: ImageEncoderConfig):
        super().__init__()
        from medmm.config import FusionConfig, ModelConfig
        from medmm.models import FusionHead

        self.config = ModelConfig(image_encoder=encoder_cfg, fusion=FusionConfig(use_text=False, hidden=8))
        self.image_encoder = ImageEncoder(encoder_cfg)
        self.fusion = FusionHead(self.config.fusion, encoder_cfg.embed_dim, 0, 3)

    def forward(self, x):
        pooled, _ = self.image_encoder(x)
        return self.fusion(pooled)


def _randomise_bn(module: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def _conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        macs += output.numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv3d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return macs


@pytest.mark.parametrize("name,widths", [("slim", [8, 8, 16, 16]), ("densenet121", [8, 4])])
def test_structured_pruning_shrinks_the_model_and_keeps_output_shape(name, widths):
    torch.manual_seed(0)
    cfg = ImageEncoderConfig(name=name, widths=widths, depth=[1, 1, 1, 1] if name == "slim" else [1, 2, 1, 1],
                             embed_dim=16, token_grid=(1, 1, 1))
    model = _Holder(cfg).eval()
    _randomise_bn(model)
    x = torch.rand(2, 1, 32, 32, 32)
    before_params = sum(p.numel() for p in model.parameters())
    before_macs = _conv_macs(model, x)
    pruned = structured_prune(model, 0.5)
    assert backbone_widths(pruned.image_encoder) == [w // 2 for w in widths]
    assert pruned.config.image_encoder.widths == [w // 2 for w in widths]
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert sum(p.numel() for p in pruned.parameters()) < 0.6 * before_params
    # inner convs lose half their inputs and outputs (1/4 of the MACs); the 1-channel stem only halves
    assert _conv_macs(pruned, x) < 0.55 * before_macs


def test_structured_pruning_removes_exactly_the_dead_channels():
    """Channels whose BatchNorm outputs are 0 everywhere contribute nothing: pruning half of the
    channels when exactly that half is dead must leave the logits unchanged (checks which channels
    are kept and how the residual stream, the inner block channels and the pooling head are sliced)."""
    torch.manual_seed(0)
    cfg = ImageEncoderConfig(name="slim", widths=[8, 8, 16, 16], depth=[1, 1, 1, 1], embed_dim=16, token_grid=(1, 1, 1))
    model = _Holder(cfg).eval()
    _randomise_bn(model)
    gen = torch.Generator().manual_seed(1)
    dead = {n: torch.randperm(n, generator=gen)[: n // 2] for n in (8, 16)}
    for m in model.image_encoder.backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data[dead[m.num_features]] = 0.0
            m.bias.data[dead[m.num_features]] = 0.0
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        expected = model(x)
        got = structured_prune(model, 0.5)(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_structured_pruning_refuses_unsupported_backbones_and_ratios():
    model = _Holder(ImageEncoderConfig(name="efficientnet-b0", embed_dim=16, token_grid=(1, 1, 1)))
    with pytest.raises(MedmmConfigError, match="structured"):
        structured_prune(model, 0.5)
    with pytest.raises(MedmmConfigError, match="fraction"):
        structured_prune(_Holder(ImageEncoderConfig(widths=[4, 4, 4, 4])), 1.0)


def test_unstructured_pruning_zeroes_the_smallest_weights_and_keeps_shapes():
    torch.manual_seed(0)
    model = _Holder(ImageEncoderConfig(widths=[8, 8, 8, 8], embed_dim=16, token_grid=(1, 1, 1))).eval()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    pruned, stats = unstructured_prune(model, 0.6)
    assert {k: v.shape for k, v in pruned.state_dict().items()} == shapes
    assert 0.59 <= stats["sparsity"] <= 0.61
    assert not any("mask" in k or "orig" in k for k in pruned.state_dict())  # baked in
    with torch.no_grad():
        assert pruned(torch.rand(1, 1, 16, 16, 16)).shape == (1, 3)
