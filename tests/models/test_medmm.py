"""MedMM composition: the contract's methods on tiny random-weight parts."""

from __future__ import annotations

import pytest
import torch

from medmm.errors import MedmmConfigError
from medmm.models import MedMM

from .conftest import REPORTS

LABELS = ["Emphysema", "Cardiomegaly", "Atelectasis"]


@pytest.mark.parametrize("mode", ["concat", "gated", "cross_attention"])
def test_contract_methods_and_forward(tiny_config, image, mode):
    torch.manual_seed(0)
    model = MedMM(tiny_config(fusion={"mode": mode}), LABELS).eval()
    fmap = model.feature_map(image)
    assert fmap.shape == (2, 8, 1, 1, 1)
    pooled, tokens = model.embed(fmap)
    assert pooled.shape == (2, 16) and tokens.shape == (2, 8, 16)
    loss = model.report_loss(tokens, REPORTS)
    assert loss.ndim == 0 and torch.isfinite(loss)
    reports = model.generate_reports(tokens, max_new_tokens=5)
    assert len(reports) == 2 and all(isinstance(r, str) for r in reports)
    text_emb = model.encode_text(reports)
    assert text_emb.shape == (2, 32)
    logits = model.classify(pooled, text_emb, tokens)
    assert logits.shape == (2, 3)
    assert torch.allclose(model(image, reports), logits, atol=1e-6)


def test_backward_reaches_every_trainable_part(tiny_config, image):
    model = MedMM(tiny_config(), LABELS)
    pooled, tokens = model.embed(model.feature_map(image))
    loss = model.classify(pooled, model.encode_text(["a", "b"]), tokens).sum() + model.report_loss(tokens, REPORTS)
    loss.backward()
    for part in ("image_encoder", "report_generator", "fusion"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part
    assert not any(p.requires_grad for p in model.text_encoder.parameters())  # frozen by default


def test_image_only_model_has_no_text_encoder(tiny_config, image):
    model = MedMM(tiny_config(fusion={"use_text": False}), LABELS)
    assert model.text_encoder is None and not model.uses_text
    assert model(image).shape == (2, 3)
    with pytest.raises(MedmmConfigError, match="image-only"):
        model.encode_text(["x"])
    # the generator still reuses the configured tokenizer
    assert len(model.generate_reports(model.embed(model.feature_map(image))[1], max_new_tokens=3)) == 2


@pytest.mark.parametrize("labels", [[], ["A", "A"]])
def test_bad_labels_are_a_config_error(tiny_config, labels):
    with pytest.raises(MedmmConfigError, match="labels"):
        MedMM(tiny_config(), labels)


def test_forward_needs_one_text_per_image(tiny_config, image):
    model = MedMM(tiny_config(), LABELS)
    with pytest.raises(ValueError, match="one fusion text per image"):
        model(image, ["only one"])
