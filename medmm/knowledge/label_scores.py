"""Scores of report labels: precision/recall/F1 of label dicts, clinical-efficacy F1, and the
reader of the hand-labelled sentence files the labelers are measured on."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medmm.labels import CT_RATE_FINDINGS

if TYPE_CHECKING:
    from medmm.knowledge.labeler import ReportLabeler


def read_sentence_tsv(path: str | Path, labels: Sequence[str] = CT_RATE_FINDINGS,
                      uncertain_as: int = 1) -> list[tuple[str, dict[str, int]]]:
    """(sentence, expected labels) rows of a labelled sentence file.

    The file is tab-separated with a header ``sentence  positive  uncertain``; the last two hold
    ';'-separated label names; lines starting with ``#`` are comments. A label in ``uncertain``
    (and not in ``positive``) gets ``uncertain_as``.
    """
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t") if r and not r[0].startswith("#")][1:]
    out = []
    for row in rows:
        sentence, positive, uncertain = (row + ["", ""])[:3]
        pos = set(filter(None, positive.split(";")))
        unc = set(filter(None, uncertain.split(";"))) - pos
        unknown = (pos | unc) - set(labels)
        if unknown:
            raise ValueError(f"{path}: unknown label(s) {sorted(unknown)} in {sentence!r}")
        out.append((sentence, {lab: 1 if lab in pos else (uncertain_as if lab in unc else 0) for lab in labels}))
    return out


def label_f1(predicted: Sequence[Mapping[str, int]], expected: Sequence[Mapping[str, int]],
             labels: Sequence[str]) -> dict:
    """Micro / macro / per-label precision, recall and F1 of binary label dicts.

    Values other than 1 (0, -1) count as negative. Macro averages over labels with at least one
    expected positive (labels absent from the reference set carry no information).

    Returns:
        ``{"micro": {...}, "macro": {...}, "per_label": {label: {precision, recall, f1, support}}, "n": N}``
    """
    from sklearn.metrics import precision_recall_fscore_support  # slow import, only needed here

    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions but {len(expected)} references")
    y_pred = [[int(p.get(lab, 0) == 1) for lab in labels] for p in predicted]
    y_true = [[int(t.get(lab, 0) == 1) for lab in labels] for t in expected]
    if not y_true:
        raise ValueError("no reports to score")
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    per_label = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                 for i, lab in enumerate(labels)}
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    present = [lab for lab in labels if per_label[lab]["support"] > 0]
    macro = {k: (sum(per_label[lab][k] for lab in present) / len(present) if present else 0.0)
             for k in ("precision", "recall", "f1")}
    return {"micro": {"precision": float(mp), "recall": float(mr), "f1": float(mf)},
            "macro": macro, "per_label": per_label, "n": len(y_true)}


def clinical_efficacy_f1(generated: Sequence[str], references: Sequence[str], labeler: "ReportLabeler") -> dict:
    """Clinical-efficacy F1: label generated and reference reports with the same labeler, compare.

    Args:
        generated: generated report texts.
        references: reference report texts, same order.
        labeler: the :class:`ReportLabeler` (its ``uncertain_as`` decides uncertain mentions).

    Returns:
        :func:`label_f1` dict (micro/macro/per-label precision, recall, F1).
    """
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    return label_f1([labeler(t) for t in generated], [labeler(t) for t in references], labeler.labels)
