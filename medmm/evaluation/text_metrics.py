"""Report-generation metrics: BLEU-4, ROUGE-L, METEOR, chrF and clinical-efficacy F1 against the
references, and, on the generated reports alone, agreement with the decisions, truncation,
distinct-4 and length.

All run offline. Text is lower-cased and split with NLTK's regex ``wordpunct_tokenize`` (no
downloaded tokenizer models). METEOR needs WordNet for its synonym stage; WordNet data cannot be
downloaded at run time, so when it is absent the score is NLTK's METEOR with the synonym stage
disabled (exact + Porter-stem matching only, same alpha/beta/gamma) and is reported under the
name ``meteor_exact_stem`` with the variant written into the protocol. chrF (NLTK) is reported too
as a tokenisation-free cross-check.

Reference-free metrics (every generated report, with or without a reference): ``agreement`` =
fraction of (scan, finding) pairs where the report labeler's reading of the generated report equals
the model's decision (the findings table); ``truncated`` = fraction of reports whose last
non-space character does not end a sentence (``. ! ?``, optionally followed by a closing quote or
bracket; an empty report counts as truncated); ``distinct_4`` = distinct 4-grams / all 4-grams
over the corpus of generated reports (Li et al. 2016); ``mean_tokens`` = mean number of
word/punctuation tokens (the tokenizer above).

References: Papineni et al. 2002 (BLEU); Chen & Cherry 2014 (smoothing method 1); Lin 2004
(ROUGE-L); Banerjee & Lavie 2005 (METEOR); Popovic 2015 (chrF); Li et al. 2016 (distinct-n).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
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


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s*$")


def is_truncated(report: str | None) -> bool:
    """True when the report does not end a sentence (cut off by the length limit), or is empty."""
    return not _SENTENCE_END.search(report or "")


def truncated_fraction(reports: Sequence[str | None]) -> float:
    """Fraction of reports that do not end a sentence (NaN for no reports)."""
    return float(np.mean([is_truncated(r) for r in reports])) if reports else float("nan")


def distinct_n(reports: Sequence[str | None], n: int = 4) -> float:
    """Distinct n-grams / all n-grams over the whole corpus of reports (0 when there is no n-gram)."""
    grams = [tuple(tokens[i:i + n]) for tokens in map(tokenize, reports) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_tokens(reports: Sequence[str | None]) -> float:
    """Mean number of word/punctuation tokens per report (NaN for no reports)."""
    return float(np.mean([len(tokenize(r)) for r in reports])) if reports else float("nan")


def agreement(report_labels: Sequence[Mapping[str, int]], decisions: Any, labels: Sequence[str]) -> dict[str, Any]:
    """Agreement of labelled reports with the decisions ``[N, L]`` (truthy = positive).

    A report label counts as positive only when it is 1 (an uncertain mention counts as the
    labeler's ``uncertain_as``). Returns ``{"agreement", "per_finding": {label: fraction}, "n_pairs",
    "disagreements": {"unstated": pairs decided positive but not reported, "contradicted": reported but decided negative}}``.
    """
    decided = np.asarray(decisions, dtype=bool)
    if decided.shape != (len(report_labels), len(labels)):
        raise ValueError(f"decisions of shape {decided.shape} for {len(report_labels)} reports and {len(labels)} labels")
    stated = np.array([[row.get(lab, 0) == 1 for lab in labels] for row in report_labels], dtype=bool).reshape(decided.shape)
    same = stated == decided
    return {
        "agreement": float(same.mean()) if same.size else float("nan"),
        "per_finding": {lab: float(same[:, j].mean()) if len(same) else float("nan") for j, lab in enumerate(labels)},
        "n_pairs": int(same.size),
        "disagreements": {"unstated": int((decided & ~stated).sum()), "contradicted": int((stated & ~decided).sum())},
    }


def generation_metrics(generated: Sequence[str | None], labeler: Callable[[str], Mapping[str, int]] | None = None,
                       decisions: Any = None, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Reference-free metrics of the generated reports (see the module docstring)."""
    out: dict[str, Any] = {"truncated": truncated_fraction(generated), "distinct_4": distinct_n(generated, 4),
                           "mean_tokens": mean_tokens(generated)}
    if labeler is not None and decisions is not None:
        labels = list(labels if labels is not None else getattr(labeler, "labels"))
        agree = agreement([labeler(g or "") for g in generated], decisions, labels)
        out["agreement"] = agree["agreement"]
        out["agreement_detail"] = {k: v for k, v in agree.items() if k != "agreement"}
    return out


def report_metrics(
    generated: Sequence[str],
    references: Sequence[str],
    labeler: Callable[[str], dict[str, int]] | None = None,
    clinical_f1: Callable[..., Any] | None = None,
    decisions: Any = None,
    labels: Sequence[str] | None = None,
    truth: Any = None,
) -> dict[str, Any]:
    """NLG and clinical-efficacy metrics of generated vs reference reports.

    Args:
        generated: generated reports, one per scan.
        references: reference reports, same order (pairs with an empty reference are dropped).
        labeler: ontology report labeler (text -> {finding: 1/0}) for clinical efficacy.
        clinical_f1: ``medmm.knowledge.clinical_efficacy_f1``-compatible function
            ``(generated, reference, labeler) -> dict|float``; defaults to the knowledge one.
        decisions: the model's decisions ``[N, L]`` for every generated report (for ``agreement``).
        labels: the decisions' label order (default: ``labeler.labels``).
        truth: the true labels ``[N, L]`` (1 positive; 0/-1 not): adds ``classifier_f1``, the
            micro/macro F1 of the decisions themselves, the ceiling of clinical-efficacy F1 when
            every report agrees with its decisions.

    Returns:
        ``{"n_reports", "bleu4", "rouge_l", <meteor variant>, "chrf", "clinical_efficacy",
        "n_generated", "agreement", "truncated", "distinct_4", "mean_tokens", "protocol"}``; the last
        four (see :func:`generation_metrics`) over every generated report, references or not.
    """
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated vs {len(references)} reference reports")
    pairs = [(g or "", r) for g, r in zip(generated, references) if r and r.strip()]
    gen = [g for g, _ in pairs]
    ref = [r for _, r in pairs]
    out: dict[str, Any] = {"n_reports": len(pairs), "n_generated": len(generated)}
    out.update(generation_metrics(generated, labeler, decisions, labels))
    if truth is not None and decisions is not None:
        out["classifier_f1"] = decision_f1(decisions, truth, list(labels if labels is not None else labeler.labels))
    if not pairs:
        return out | {"protocol": "no reference reports: reference-based report metrics not computed; " + _GEN_PROTOCOL}
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
        "labeler from generated vs reference reports (positive = 1), micro- and macro-averaged precision/recall/F1 over the labels (terminal shows micro F1); "
        + _GEN_PROTOCOL
    )
    return out


def decision_f1(decisions: Any, truth: Any, labels: Sequence[str]) -> dict[str, float]:
    """``{"micro", "macro"}`` F1 of the decisions ``[N, L]`` against the true labels (1 = positive)."""
    from medmm.knowledge.label_scores import label_f1

    as_dicts = lambda m: [dict(zip(labels, (int(v == 1) for v in row))) for row in np.asarray(m).tolist()]  # noqa: E731
    scores = label_f1(as_dicts(np.asarray(decisions).astype(int)), as_dicts(truth), labels)
    return {"micro": scores["micro"]["f1"], "macro": scores["macro"]["f1"]}


_GEN_PROTOCOL = (
    "over every generated report: agreement = fraction of (scan, finding) pairs where the report labeler's "
    "reading of the generated report (positive = 1) equals the model's ontology-consistent decision; truncated = "
    "fraction of reports not ending with . ! or ? (empty = truncated); distinct_4 = distinct/total word 4-grams "
    "over all generated reports; mean_tokens = mean wordpunct tokens per report; classifier_f1 = micro/macro F1 "
    "of the decisions against the true labels (the ceiling of clinical-efficacy F1 when agreement is 1)"
)


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
