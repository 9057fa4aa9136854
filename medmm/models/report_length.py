"""Report length limits from the training reports' token-length distribution.

A limit fixed by hand cut the demo's reports off mid-sentence at 48 tokens. With
``network.report_generator.length_percentile: p`` training sets ``max_new_tokens`` (decoding) to
the p-th percentile of the training reports' token lengths and ``max_report_tokens`` (teacher
forcing) to their maximum, so the LM learns every report to its end; both are saved in the run's
config with the percentile. Reports longer than the decoding limit are rare (100 - p percent of
the training reports) and lose only their unfinished last sentence (``medmm.models.report_verifier``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medmm.errors import MedmmConfigError


def report_token_lengths(reports: Sequence[str], tokenizer: Any) -> np.ndarray:
    """Token count of each non-empty report (without special tokens)."""
    texts = [r for r in reports if r]
    lengths: list[int] = []
    for start in range(0, len(texts), 512):
        lengths += [len(ids) for ids in tokenizer(texts[start:start + 512], add_special_tokens=False)["input_ids"]]
    return np.asarray(lengths, dtype=np.int64)


def resolve_report_length(generator: Any, reports: Sequence[str], tokenizer: Any, reserved: int) -> None:
    """Fill ``generator.max_new_tokens`` / ``max_report_tokens`` from ``reports`` (see module docstring).

    Args:
        generator: the workflow's ``ReportGeneratorConfig`` (changed in place when
            ``length_percentile`` is set).
        reserved: prompt positions before the report (image + finding tokens, bos/eos); a
            from-scratch LM must fit them and the report in ``n_positions``.

    Raises:
        MedmmConfigError: the limits do not fit ``n_positions``.
    """
    if generator.length_percentile is None:
        return
    lengths = report_token_lengths(reports, tokenizer)
    if not lengths.size:
        return
    generator.max_new_tokens = int(math.ceil(np.percentile(lengths, generator.length_percentile)))
    generator.max_report_tokens = int(lengths.max())
    if generator.name_or_path is None and reserved + generator.max_report_tokens > generator.n_positions:
        raise MedmmConfigError(
            "network.report_generator.n_positions",
            f"{generator.n_positions} positions cannot hold the longest training report ({generator.max_report_tokens} "
            f"tokens) after {reserved} prompt positions; set n_positions >= {reserved + generator.max_report_tokens}")


def check_grounding(workflow: Any) -> None:
    """A findings-grounded report cannot also feed the findings head (it is written from its decisions).

    Raises:
        MedmmConfigError: ``grounding: findings`` with ``training.text.use_generated_report: true``.
    """
    if workflow.network.report_generator.grounding == "findings" and workflow.training.text.use_generated_report:
        raise MedmmConfigError(
            "training.text.use_generated_report",
            "must be false with network.report_generator.grounding: findings (the report is written from the "
            "findings head's decisions, so it cannot also be an input of that head)")


def lm_positions(lm_config: Any) -> int:
    """How many positions a causal LM attends to (``n_positions`` / ``max_position_embeddings``;
    a large number when its config names no limit): decoding must stop there."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(lm_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30
