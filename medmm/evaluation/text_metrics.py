"""Report-generation metrics: BLEU-4, ROUGE-L, METEOR and clinical-efficacy F1.

All run offline. Text is lower-cased and split with NLTK's regex ``wordpunct_tokenize`` (no
downloaded tokenizer models). METEOR needs WordNet for its synonym stage; WordNet data cannot be
downloaded at run time, so when it is absent the score is NLTK's METEOR with the synonym stage
disabled (exact + Porter-stem matching only, same alpha/beta/gamma) and is reported under the
name ``meteor_exact_stem`` with the variant written into the protocol. chrF (NLTK) is reported too
as a tokenisation-free cross-check.

References: Papineni et al. 2002 (BLEU); Chen & Cherry 2014 (smoothing method 1); Lin 2004
(ROUGE-L); Banerjee & Lavie 2005 (METEOR); Popovic 2015 (chrF).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from nltk.tokenize import wordpunct_tokenize
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
from nltk.translate.chrf_score import corpus_chrf
from nltk.translate.meteor_score import meteor_score
from rouge_score import rouge_scorer


class _NoSynonyms:
    """Stands in for NLTK's WordNet reader: no synonym sets, so METEOR matches exact + stem only."""

    def synsets(self, *args: Any, **kwargs: Any) -> list:
        return []


def _wordnet() -> Any | None:
    """NLTK's WordNet reader if its data is installed, else None (never downloads)."""
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("lung")
        return wordnet
    except LookupError:
        return None


def tokenize(text: str) -> list[str]:
    """Lower-case word/punctuation tokens (regex tokenizer, no model data needed)."""
    return wordpunct_tokenize((text or "").lower())


def bleu4(generated: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (uniform 1-4-gram weights, NLTK smoothing method 1)."""
    hyps = [tokenize(t) for t in generated]
    refs = [[tokenize(t)] for t in references]
    return float(corpus_bleu(refs, hyps, smoothing_function=SmoothingFunction().method1))


def rouge_l(generated: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over report pairs (``rouge-score``, Porter stemming)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref or "", gen or "")["rougeL"].fmeasure for gen, ref in zip(generated, references)]
    return float(np.mean(scores)) if scores else float("nan")


def meteor(generated: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Mean sentence METEOR and the name of the variant used (see module docstring)."""
    wn = _wordnet()
    variant = "meteor" if wn is not None else "meteor_exact_stem"
    wordnet = wn if wn is not None else _NoSynonyms()
    scores = [
        meteor_score([tokenize(ref)], tokenize(gen), wordnet=wordnet)
        for gen, ref in zip(generated, references)
    ]
    return (float(np.mean(scores)) if scores else float("nan")), variant


def chrf(generated: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (character n-gram F-score, NLTK defaults)."""
    return float(corpus_chrf([r or "" for r in references], [g or "" for g in generated]))


def report_metrics(
    generated: Sequence[str],
    references: Sequence[str],
    labeler: Callable[[str], dict[str, int]] | None = None,
    clinical_f1: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """NLG and clinical-efficacy metrics of generated vs reference reports.

    Args:
        generated: generated reports, one per scan.
        references: reference reports, same order (pairs with an empty reference are dropped).
        labeler: ontology report labeler (text -> {finding: 1/0}) for clinical efficacy.
        clinical_f1: ``medmm.knowledge.clinical_efficacy_f1``-compatible function
            ``(generated, reference, labeler) -> dict|float``; defaults to the knowledge one.

    Returns:
        ``{"n_reports", "bleu4", "rouge_l", <meteor variant>, "chrf", "clinical_efficacy", "protocol"}``.
    """
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated vs {len(references)} reference reports")
    pairs = [(g or "", r) for g, r in zip(generated, references) if r and r.strip()]
    gen = [g for g, _ in pairs]
    ref = [r for _, r in pairs]
    out: dict[str, Any] = {"n_reports": len(pairs)}
    if not pairs:
        return out | {"protocol": "no reference reports: report metrics not computed"}
    out["bleu4"] = bleu4(gen, ref)
    out["rouge_l"] = rouge_l(gen, ref)
    score, variant = meteor(gen, ref)
    out[variant] = score
    out["chrf"] = chrf(gen, ref)
    if labeler is not None:
        if clinical_f1 is None:
            from medmm.knowledge import clinical_efficacy_f1 as clinical_f1
        out["clinical_efficacy"] = _jsonable(clinical_f1(gen, ref, labeler))
    out["protocol"] = (
        "lower-cased NLTK wordpunct tokens; BLEU-4 = NLTK corpus_bleu, weights (.25,.25,.25,.25), "
        "smoothing method1; ROUGE-L = rouge-score F-measure with Porter stemmer, mean over reports; "
        + ("METEOR = NLTK meteor_score with WordNet synonyms" if variant == "meteor" else
           "METEOR substitute 'meteor_exact_stem' = NLTK meteor_score with the WordNet synonym stage "
           "disabled (WordNet data not installed; exact + Porter-stem matches only)")
        + "; chrF = NLTK corpus_chrf; clinical efficacy = findings extracted by the ontology report "
        "labeler from generated vs reference reports (positive = 1), micro- and macro-averaged precision/recall/F1 over the labels (terminal shows micro F1)."
    )
    return out


def _jsonable(value: Any) -> Any:
    """Floats/dicts/arrays from the knowledge module as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value
