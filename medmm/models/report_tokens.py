"""Token-level helpers of the report LM: special ids, the compact decoder vocabulary, banned
tokens, and tidying decoded text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch


def special_token_ids(tokenizer: Any) -> tuple[int, int, int]:
    """``(bos, eos, pad)`` ids: GPT-style tokens when present, else BERT's [CLS]/[SEP]/[PAD]."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if bos is None:
        bos = eos
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither an eos nor a [SEP] token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return int(bos), int(eos), int(pad)


def report_vocabulary(reports: Sequence[str], tokenizer: Any) -> list[int]:
    """Sorted tokenizer ids that ``reports`` use, plus the special tokens a decoder needs.

    The compact vocabulary of a from-scratch decoder (``vocabulary: training_reports``).
    """
    ids = _decoder_specials(tokenizer)
    texts = [r for r in reports if r]
    for start in range(0, len(texts), 512):
        for seq in tokenizer(texts[start:start + 512], add_special_tokens=False)["input_ids"]:
            ids.update(seq)
    return sorted(ids)


def _decoder_specials(tokenizer: Any) -> set[int]:
    """bos, eos, pad and (if the tokenizer has one) [UNK]: every decoder vocabulary holds them."""
    unk = tokenizer.unk_token_id
    return set(special_token_ids(tokenizer)) | ({int(unk)} if unk is not None else set())


def _never_generate(tokenizer: Any, eos_id: int) -> list[int]:
    """Special and placeholder tokens a report must never contain ([CLS], [PAD], [MASK], [unusedN], ...)."""
    ids = set(tokenizer.all_special_ids) - {eos_id}
    ids |= {i for tok, i in tokenizer.get_vocab().items() if re.fullmatch(r"\[unused\d+\]", tok)}
    return sorted(ids)


class _MaskTokens:
    """Logits processor setting banned token ids to -inf.

    Hand-written rather than ``GenerationConfig.suppress_tokens`` because that one rebuilds its
    mask with ``torch.isin`` over the whole vocabulary at every step (~1000 banned ids x 30k
    vocabulary); here the index tensor is built once per device.
    """

    def __init__(self, ids: list[int]):
        self.ids = torch.tensor(ids, dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.ids.device != scores.device:
            self.ids = self.ids.to(scores.device)
        return scores.index_fill(1, self.ids, float("-inf"))


_SENTENCE_START = re.compile(r"(^|[.!?:]\s+)([a-z])")
_SECTION = re.compile(r"\b(findings|impression)\s*:\s*", re.IGNORECASE)


def tidy_report(text: str) -> str:
    """Readable report text from decoded tokens (an uncased WordPiece LM writes lowercase, spaced).

    Collapses whitespace, re-joins ``ground - glass`` / ``( x )``, writes the section headings
    as ``FINDINGS:`` / ``IMPRESSION:`` (the latter on its own paragraph) and capitalises
    sentence starts.
    """
    text = " ".join(text.split())
    text = re.sub(r"(?<=\w) - (?=\w)", "-", text)
    text = re.sub(r"\( ", "(", re.sub(r" \)", ")", text))
    text = re.sub(r" ([.,;:!?])", r"\1", text)
    text = _SECTION.sub(lambda m: f"{m.group(1).upper()}: ", text).strip()
    text = text.replace(" IMPRESSION:", "\n\nIMPRESSION:")
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)
