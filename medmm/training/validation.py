"""Validation: predict with inference-time text only, macro AUROC, per-finding thresholds.

The fusion head sees exactly what it would see at inference: the report the model generates
from the image, plus the optional clinical indication — never the reference report. That is
what ``tests/training/test_leakage.py`` checks (shuffling reference reports changes nothing).

Thresholds (one per finding) are chosen on validation and stored in ``medmm.json``:
``f1`` maximises F1 over the observed scores (ties → the lower threshold, favouring
sensitivity); ``youden`` maximises sensitivity + specificity − 1 on the ROC curve
(scikit-learn ``roc_curve``); ``fixed`` keeps 0.5 on the calibrated probability for every finding.
Findings without both classes in validation keep 0.5.

An arg-max over a small validation split fits its noise: on a 1280-phantom demo run (193
validation scans, about 10–60 positives per finding) F1-optimal thresholds gave micro F1 0.73 on
200 phantoms of another seed, 0.5 gave 0.77 (docs/reports.md). Per-finding temperature scaling does not move 0.5 (logit 0), so
``fixed`` decides at the model's own boundary, which ``loss.pos_weight: auto`` trains for balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def predict(model: Any, loader: Any, device: torch.device, use_generated_report: bool = True,
            use_indication: bool = True, amp: bool = False) -> dict[str, Any]:
    """Probabilities, labels and generated reports for every item of ``loader`` (through
    `MedMM.predict_step`, the one inference forward pass).

    Returns:
        ``{"probs": [N, L] float64, "labels": [N, L] (1/0/-1), "logits": [N, L], "case_ids": [...],
        "reports": [...], "raw_probs": [N, L]}`` in loader order; ``raw_probs`` are the finding
        probabilities before the hierarchy's max-constraint (= ``probs`` without one). The items'
        ``report`` field is never read.
    """
    was_training = model.training
    model.eval()
    probs, labels, logits_all, case_ids, generated, raw_probs = [], [], [], [], [], []
    for batch in loader:
        x = batch["image"].to(device)
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            out = model.predict_step(x, list(batch["indication"]),
                                     use_generated_report=use_generated_report, use_indication=use_indication,
                                     generate=use_generated_report)
            logits, reports = out.logits.float(), out.reports
        logits_all.append(logits.cpu())
        probs.append(torch.sigmoid(logits).cpu())
        raw = logits if out.raw_logits is None else out.raw_logits[:, : logits.shape[1]].float()
        raw_probs.append(torch.sigmoid(raw).cpu())
        labels.append(batch["label"].cpu())
        case_ids += list(batch["case_id"])
        generated += list(reports)
    model.train(was_training)
    cat = (lambda xs: torch.cat(xs).double().numpy()) if probs else (lambda xs: np.zeros((0, 0)))
    return {"probs": cat(probs), "labels": cat(labels), "logits": cat(logits_all), "case_ids": case_ids,
            "reports": generated, "raw_probs": cat(raw_probs)}


def per_label_auroc(y: np.ndarray, p: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """AUROC of each label that has both classes among its known (>= 0) entries
    (`medmm.evaluation.metrics.auroc`, the one AUROC)."""
    from medmm.evaluation.metrics import auroc

    scores = {name: auroc(y[:, j], p[:, j]) for j, name in enumerate(labels)}
    return {name: value for name, value in scores.items() if not np.isnan(value)}


def macro_auroc(per_label: dict[str, float], subset: Sequence[str] | None = None) -> float | None:
    """Mean AUROC over ``subset`` (or all) labels present in ``per_label``; None if none is."""
    names = [n for n in (subset if subset is not None else per_label) if n in per_label]
    return float(np.mean([per_label[n] for n in names])) if names else None


def choose_thresholds(y: np.ndarray, p: np.ndarray, labels: Sequence[str], rule: str = "f1") -> dict[str, float]:
    """One decision threshold per label, chosen on validation (see module docstring)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    out: dict[str, float] = {}
    for j, name in enumerate(labels):
        known = y[:, j] >= 0
        yj, pj = y[known, j], p[known, j]
        if rule == "fixed" or not (yj.size and 0 < yj.sum() < yj.size):
            out[name] = 0.5
            continue
        if rule == "youden":
            fpr, tpr, thr = roc_curve(yj, pj)
            k = int(np.argmax(tpr - fpr))
            out[name] = float(min(thr[k], 1.0))
        else:
            precision, recall, thr = precision_recall_curve(yj, pj)
            f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
            best = np.flatnonzero(f1 >= f1.max() - 1e-12)
            out[name] = float(thr[best[0]])
    return out


def validation_metrics(pred: dict[str, Any], labels: Sequence[str], eval_labels: Sequence[str] | None,
                       constraints: Any = None) -> dict[str, Any]:
    """Macro AUROC (evaluated labels and all labels), per-label AUROC, BCE and violation rate."""
    y, p = pred["labels"], pred["probs"]
    per_label = per_label_auroc(y, p, labels)
    known = y >= 0
    logits = torch.as_tensor(pred["logits"])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.as_tensor(np.clip(y, 0, 1)), reduction="none")
    metrics = {
        "val_macro_auroc": macro_auroc(per_label, eval_labels),
        "val_macro_auroc_all": macro_auroc(per_label),
        "val_auroc": per_label,
        "val_bce": float((bce * torch.as_tensor(known)).sum() / max(1, int(known.sum()))),
        "val_n_eval_labels": len([n for n in (eval_labels or labels) if n in per_label]),
    }
    if constraints is not None and len(p):
        from medmm.knowledge import violation_rate

        metrics["val_violation_rate"] = float(violation_rate(torch.as_tensor(p, dtype=torch.float32), constraints))
    return metrics
