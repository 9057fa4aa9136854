"""Image encoder: every MONAI backbone option builds, is fully convolutional and embeds."""

from __future__ import annotations

import pytest
import torch

from medmm.config import ImageEncoderConfig
from medmm.models import ImageEncoder

# name -> feature-map channels of the default widths
BACKBONES = [
    ("slim", 128),
    ("resnet10", 512),
    ("resnet18", 512),
    ("seresnet50", 2048),
    ("densenet121", 1024),
    ("efficientnet-b0", 1280),
]


@pytest.mark.parametrize(("name", "channels"), BACKBONES)
def test_backbone_feature_map_and_embedding_shapes(name, channels):
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig(name=name, embed_dim=32)).eval()
    with torch.no_grad():
        fmap = enc.feature_map(torch.rand(2, 1, 32, 32, 32))
        pooled, tokens = enc.embed(fmap)
    assert fmap.shape[:2] == (2, channels) and fmap.ndim == 5
    assert enc.channels == channels
    assert pooled.shape == (2, 32)
    assert tokens.shape == (2, 8, 32)
    assert torch.isfinite(pooled).all() and torch.isfinite(tokens).all()


@pytest.mark.parametrize(
    ("cfg", "channels"),
    [
        ({"name": "slim", "widths": [4, 8, 8, 16], "depth": [1, 2, 1, 1]}, 16),
        ({"name": "resnet10", "widths": [8, 8, 16, 24]}, 24),
        # densenet: 8 -> +4 -> /2 -> 6 -> +4 -> /2 -> 5 -> +4 -> /2 -> 4 -> +4 = 8
        ({"name": "densenet121", "widths": [8, 4], "depth": [1, 1, 1, 1]}, 8),
        ({"name": "seresnet50", "widths": [16], "depth": [1, 1, 1, 1]}, 2048),
        # issue 19 (pretrained CT weights): Swin-ViT = 16 x feature_size; SegResNet(DS) = init x 2^(levels-1)
        ({"name": "swin_vit", "widths": [12], "depth": [1, 1, 1, 1]}, 192),
        ({"name": "segresnet", "widths": [8], "depth": [1, 1, 1]}, 32),
        ({"name": "segresnet_ds", "widths": [4], "depth": [1, 1, 1, 1]}, 32),
    ],
)
def test_widths_and_depth_are_configurable(cfg, channels):
    enc = ImageEncoder(ImageEncoderConfig(**cfg)).eval()
    with torch.no_grad():
        fmap = enc.feature_map(torch.rand(2, 1, 32, 32, 32))
    assert fmap.shape[1] == enc.channels == channels


def test_slim_is_fully_convolutional_and_embeds_any_map_size():
    enc = ImageEncoder(ImageEncoderConfig(widths=[4, 8, 8, 8], embed_dim=16)).eval()
    with torch.no_grad():
        small = enc.feature_map(torch.rand(1, 1, 64, 64, 64))
        large = enc.feature_map(torch.rand(1, 1, 128, 64, 96))
        assert small.shape[2:] == (2, 2, 2)
        assert large.shape[2:] == (4, 2, 3)  # output stride 32 in every direction
        for fmap in (small, large):
            pooled, tokens = enc.embed(fmap)
            assert pooled.shape == (1, 16) and tokens.shape == (1, 8, 16)


def test_same_seed_same_weights_and_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        enc = ImageEncoder(ImageEncoderConfig(widths=[4, 8, 8, 8], embed_dim=16)).eval()
        with torch.no_grad():
            outs.append(enc(torch.ones(1, 1, 32, 32, 32))[0])
    assert torch.equal(outs[0], outs[1])


def test_gradients_reach_the_input():
    enc = ImageEncoder(ImageEncoderConfig(widths=[4, 8, 8, 8], embed_dim=16))
    x = torch.rand(2, 1, 32, 32, 32, requires_grad=True)
    pooled, tokens = enc(x)
    (pooled.sum() + tokens.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rejects_a_4d_image():
    enc = ImageEncoder(ImageEncoderConfig(widths=[4, 8, 8, 8], embed_dim=16))
    with pytest.raises(ValueError, match=r"\[B, C, X, Y, Z\]"):
        enc.feature_map(torch.rand(1, 32, 32, 32))
