"""Tiny random-weight pretrained models written with ``save_pretrained``, for medmm.models tests.

They go through the same ``from_pretrained(local_files_only=True)`` code path as real models.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmm.config import FusionConfig, ImageEncoderConfig, ModelConfig, ReportGeneratorConfig, TextEncoderConfig

WORDS = (
    "no pleural effusion mild moderate emphysema nodule ##s in the right left upper lower lobe lobes "
    "normal chest ct heart size is cardiomegaly atelectasis consolidation present indication cough "
    "fever and both lung lungs of seen there . , :"
).split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", *WORDS]

REPORTS = [
    "No pleural effusion. Mild emphysema in both upper lobes.",
    "Cardiomegaly is present. Right lower lobe atelectasis.",
]


def _tokenizer():
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(VOCAB)}, do_lower_case=True)
    assert "[UNK]" not in tokenizer.tokenize(" ".join(WORDS[:5]))
    return tokenizer


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BertModel + WordPiece tokenizer saved with save_pretrained."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A 1-layer GPT2LMHeadModel + tokenizer saved with save_pretrained (a 'local causal LM')."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny_gpt2")
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(VOCAB),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_config(tiny_bert_dir):
    """Factory of a tiny ModelConfig; keyword sections override the tiny defaults."""

    def make(image=None, text=None, generator=None, fusion=None, radiomics=None) -> ModelConfig:
        return ModelConfig(
            image_encoder=ImageEncoderConfig(**{"widths": [4, 8, 8, 8], "embed_dim": 16, **(image or {})}),
            text_encoder=TextEncoderConfig(**{"name_or_path": str(tiny_bert_dir), **(text or {})}),
            report_generator=ReportGeneratorConfig(
                **{
                    "n_layer": 1,
                    "n_head": 2,
                    "n_embd": 16,
                    "n_positions": 64,
                    "max_report_tokens": 24,
                    "max_new_tokens": 12,
                    **(generator or {}),
                }
            ),
            fusion=FusionConfig(**{"hidden": 16, **(fusion or {})}),
            radiomics=radiomics,
        )

    return make


@pytest.fixture
def image() -> torch.Tensor:
    """Two seeded 32^3 single-channel volumes."""
    return torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def radiomics_model(tiny_config):
    """Factory of a tiny MedMM with a radiomics branch whose centres are given in input units."""
    from medmm.models import MedMM, NetworkDerived

    def make(intensity=None, context=None, labels=("Emphysema", "Cardiomegaly")):
        section = {}
        derived = {}
        if intensity is not None:
            section["intensity_hu"] = list(intensity)
            derived["histogram_centres"] = list(intensity)
        if context is not None:
            context = dict(context)
            derived["context_centres"] = context.pop("centres")
            derived["context_context_centres"] = context.pop("context_centres")
            section["context"] = {"hu": derived["context_centres"], "context_hu": derived["context_context_centres"],
                                  **context}
        torch.manual_seed(0)
        return MedMM(tiny_config(radiomics=section), list(labels), NetworkDerived(**derived))

    return make


def meta_for(model, thresholds=None, **fields):
    """A `RunMeta` describing ``model`` (its network, labels and derived values) for checkpoint tests."""
    from medmm.config import WorkflowConfig
    from medmm.models import RunMeta

    workflow = WorkflowConfig(name="test-run", network=model.config, data={"labels": list(model.labels)},
                              preprocessing={"roi_size": [32, 32, 32]})
    return RunMeta(name="test-run", run_id="r1", workflow=workflow, network_derived=model.derived,
                   thresholds=thresholds or {label: 0.5 for label in model.labels},
                   ontology={"sha256": "0" * 64}, **fields)
