"""Fusion head: every mode gives per-label logits and really uses both modalities."""

from __future__ import annotations

import pytest
import torch

from medmm.config import FusionConfig
from medmm.models import FusionHead, fusion_text

D, T, L, N = 16, 12, 5, 8


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, D, generator=g), torch.randn(3, T, generator=g), torch.randn(3, N, D, generator=g)


@pytest.mark.parametrize("mode", ["concat", "gated", "cross_attention"])
def test_text_modes_use_image_and_text(mode):
    torch.manual_seed(0)
    head = FusionHead(FusionConfig(mode=mode, hidden=16), D, T, L).eval()
    pooled, text, tokens = _inputs()
    pooled.requires_grad_(True)
    text.requires_grad_(True)
    logits = head(pooled, text, tokens)
    assert logits.shape == (3, L)
    logits.sum().backward()
    assert pooled.grad.abs().sum() > 0 and text.grad.abs().sum() > 0
    _, other_text, _ = _inputs(seed=1)
    assert not torch.allclose(head(pooled, other_text, tokens), logits)


def test_cross_attention_needs_image_tokens():
    head = FusionHead(FusionConfig(mode="cross_attention", hidden=16), D, T, L)
    pooled, text, _ = _inputs()
    with pytest.raises(ValueError, match="image tokens"):
        head(pooled, text)


@pytest.mark.parametrize("mode", ["concat", "gated", "cross_attention"])
def test_image_only_head_ignores_text(mode):
    head = FusionHead(FusionConfig(mode=mode, hidden=16, use_text=False), D, 0, L).eval()
    pooled, text, tokens = _inputs()
    assert torch.equal(head(pooled), head(pooled, text, tokens))
    assert head(pooled).shape == (3, L)


def test_text_head_without_text_is_an_error():
    head = FusionHead(FusionConfig(), D, T, L)
    with pytest.raises(ValueError, match="no text embedding"):
        head(_inputs()[0])


@pytest.mark.parametrize(
    ("report", "indication", "text"),
    [
        ("No effusion.", None, "No effusion."),
        ("No effusion.", "", "No effusion."),
        ("No effusion.", " Cough ", "Indication: Cough\nNo effusion."),
        (None, "Cough", "Indication: Cough\n"),
        ("", None, ""),
    ],
)
def test_fusion_text(report, indication, text):
    assert fusion_text(report, indication) == text
