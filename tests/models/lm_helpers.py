"""Tiny randomly-initialised causal LMs (GPT-2, Llama) with their own BPE tokenizer, saved to disk.

The tokenizer is a byte-level BPE trained here (``tokenizers``) on synthetic report sentences;
nothing is downloaded. Tests load the folders through the real ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

from medmm.data.synth.reports import FILLER, NEGATIVES


def report_corpus() -> list[str]:
    """Sentences in the style of the synthetic reports (for training the tiny tokenizer)."""
    texts = [s for options in NEGATIVES.values() for s in options] + list(FILLER)
    texts += ["FINDINGS: The heart is enlarged. A small right pleural effusion.",
              "IMPRESSION: 1. Cardiomegaly. 2. Pleural effusion. 3. Lung nodule. 4. Emphysema.",
              "Pleural effusion is present. Lung nodule in the right upper lobe. Emphysema is present."]
    return texts


def save_tokenizer(folder: Path, vocab_size: int = 400) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(report_corpus() * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def save_tiny_lm(folder: Path, arch: str = "llama", seed: int = 0) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` or ``GPT2LMHeadModel`` + tokenizer into ``folder``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = save_tokenizer(folder)
    torch.manual_seed(seed)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, **ids)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=512, **ids)
        model = GPT2LMHeadModel(cfg)
    model.save_pretrained(folder)
    return folder
