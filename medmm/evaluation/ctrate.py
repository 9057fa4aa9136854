"""The CT-RATE classification protocol: the numbers CT-CLIP and the papers after it report.

Hamamci et al., "Developing generalist foundation models from a multimodal dataset for 3D computed
tomography" (CT-CLIP, arXiv:2403.17834), report on the CT-RATE validation set, per finding and as
the mean over the 18 findings: AUROC, and F1, accuracy and precision at one threshold per finding.
Their released evaluation (github.com/ibrahimethemhamamci/CT-CLIP,
``src/ct_clip/scripts/bootstrap_values.py``) chooses that threshold **on the evaluated set
itself**: of the 100 thresholds ``numpy.linspace(0, 1, 100)``, the one whose operating point
(predicted positive = ``score > threshold``) lies closest to the ROC curve's top-left corner,
``sqrt((1 - TPR)^2 + FPR^2)``, the largest such threshold on a tie; F1 is scikit-learn's
``f1_score(average="weighted")`` (F1 of the positive and of the negative class weighted by their
support), precision is the positive class's ``precision_score``, accuracy is ``accuracy_score``.
Later public CT-RATE code copies this function "following CT-CLIP's evaluation protocol".

Thresholds picked on the evaluated scans flatter F1/accuracy/precision; this module reproduces the
protocol so numbers sit next to the literature, and the evaluation keeps its honest metrics at the
run's validation-chosen thresholds alongside (``classification``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score

from medmm.evaluation.metrics import UNKNOWN, _check, _resample_counts, auroc
from medmm.labels import CT_RATE_FINDINGS

#: The thresholds CT-CLIP's evaluation tries (``numpy.linspace(0, 1, 100)``).
THRESHOLD_GRID = np.linspace(0.0, 1.0, 100)

PROTOCOL = (
    "CT-RATE protocol (CT-CLIP, Hamamci et al. 2024, arXiv:2403.17834; released bootstrap_values.py): "
    "per finding, AUROC, and at the threshold of numpy.linspace(0, 1, 100) closest to the ROC corner "
    "(min sqrt((1-TPR)^2 + FPR^2), predicted positive = score > threshold, largest threshold on a tie) "
    "chosen ON THE EVALUATED SCANS: weighted F1 (sklearn average='weighted'), accuracy, precision "
    "(positive class), recall, specificity; macro = mean over the CT-RATE findings the model predicts "
    "(comparable with published numbers only when all 18 are present); unknown labels dropped per finding; "
    "macro *_ci: percentile bootstrap over scans (the AUROC bootstrap's draws) with the thresholds fixed"
)


def corner_threshold(y_true: np.ndarray, y_score: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> float:
    """CT-CLIP's threshold: the grid value whose (FPR, TPR) is closest to (0, 1); NaN with one class.

    All thresholds are scored at once (a ``[T, N]`` comparison); ties go to the largest threshold,
    as CT-CLIP's ``<=`` loop does.
    """
    y, p = _known(y_true, y_score)
    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any():
        return float("nan")
    predicted = p[None, :] > grid[:, None]
    tpr = predicted[:, pos].sum(1) / pos.sum()
    fpr = predicted[:, neg].sum(1) / neg.sum()
    distance = np.sqrt((1.0 - tpr) ** 2 + fpr**2)
    return float(grid[np.flatnonzero(distance == distance.min())[-1]])


def _known(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    keep = y != UNKNOWN
    return y[keep].astype(np.int64), p[keep]


def finding_metrics(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """The protocol's metrics of one finding (NaN everywhere when it lacks a class)."""
    y, p = _known(y_true, y_score)
    threshold = corner_threshold(y, p)
    row: dict[str, float] = {"auroc": auroc(y, p), "threshold": threshold}
    if not np.isfinite(threshold):
        return row | dict.fromkeys(("f1_weighted", "accuracy", "precision", "recall", "specificity"), float("nan"))
    pred = (p > threshold).astype(np.int64)
    negatives = y == 0
    return row | {
        "f1_weighted": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),  # sklearn's default 0 when nothing is predicted
        "recall": float(pred[y == 1].mean()),
        "specificity": float(1.0 - pred[negatives].mean()),
    }


THRESHOLD_KEYS = ("f1_weighted", "accuracy", "precision", "recall")


def resampled_threshold_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float,
                                counts: np.ndarray) -> dict[str, np.ndarray]:
    """`THRESHOLD_KEYS` of one finding on every resample at a fixed threshold, each ``[B]``.

    ``counts [B, N]``: how often each scan is drawn per resample. Why hand-written: the confusion
    counts of all resamples are four matrix products, where calling scikit-learn per resample costs
    ~1000 x 18 x 3 calls; the formulas are scikit-learn's (weighted F1 = support-weighted F1 of both
    classes; an undefined precision/F1 is 0, its ``zero_division=0``) and the tests compare them.
    """
    y, p = _known(y_true, y_score)
    counts = counts[:, np.asarray(y_true) != UNKNOWN]
    pred, pos = p > threshold, y == 1
    tp, fp = counts @ (pred & pos), counts @ (pred & ~pos)
    fn, tn = counts @ (~pred & pos), counts @ (~pred & ~pos)
    n, n_pos, n_neg = tp + fp + fn + tn, tp + fn, tn + fp

    def ratio(a: np.ndarray, b: np.ndarray, undefined: float) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1), undefined)

    f1_weighted = (n_pos * ratio(2 * tp, 2 * tp + fp + fn, 0.0) + n_neg * ratio(2 * tn, 2 * tn + fn + fp, 0.0)) / n
    return {"f1_weighted": f1_weighted, "accuracy": (tp + tn) / n, "precision": ratio(tp, tp + fp, 0.0),
            "recall": ratio(tp, n_pos, np.nan)}


def _macro_cis(y: np.ndarray, p: np.ndarray, used: Sequence[int], thresholds: Sequence[float],
               n_bootstrap: int, seed: int, alpha: float) -> dict[str, list[float]]:
    """Percentile CIs of the macro threshold metrics, resampling scans with the thresholds fixed
    (the draws of `medmm.evaluation.metrics.bootstrap_auroc` for the same seed)."""
    counts = _resample_counts(len(y), n_bootstrap, seed)
    stacks: dict[str, list[np.ndarray]] = {key: [] for key in THRESHOLD_KEYS}
    for j, threshold in zip(used, thresholds):
        if np.isfinite(threshold):
            for key, values in resampled_threshold_metrics(y[:, j], p[:, j], threshold, counts).items():
                stacks[key].append(values)
    out = {}
    for key, columns in stacks.items():
        if not columns:
            out[f"{key}_ci"] = [float("nan"), float("nan")]
            continue
        with warnings.catch_warnings():  # a resample where every finding lacks positives: NaN, dropped
            warnings.simplefilter("ignore", RuntimeWarning)
            macro = np.nanmean(np.stack(columns, 1), axis=1)
        macro = macro[np.isfinite(macro)]
        lo, hi = np.percentile(macro, (100 * alpha / 2, 100 * (1 - alpha / 2))) if len(macro) else (np.nan, np.nan)
        out[f"{key}_ci"] = [float(lo), float(hi)]
    return out


def ctrate_metrics(y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str],
                   findings: Sequence[str] = CT_RATE_FINDINGS, n_bootstrap: int = 1000, seed: int = 0,
                   alpha: float = 0.05) -> dict[str, Any]:
    """Per-finding and macro metrics of the CT-RATE protocol on the model's CT-RATE findings.

    Args:
        y_true: ``[N, L]`` labels in {1, 0, -1}; y_score: ``[N, L]`` probabilities (in [0, 1], the
            threshold grid's range); labels: the ``L`` finding names of the model.
        findings: the protocol's finding list (CT-RATE's 18).
        n_bootstrap, seed, alpha: percentile CIs of the macro threshold metrics over resampled
            scans, thresholds fixed (``*_ci``; 0 resamples = none).

    Returns:
        ``{"per_finding": [...], "macro": {...}, "findings_missing": [...], "comparable": bool,
        "protocol": str}``; macro values average the findings where they are defined.
    """
    y, p = _check(y_true, y_score)
    if len(labels) != y.shape[1]:
        raise ValueError(f"{len(labels)} labels for {y.shape[1]} columns")
    wanted = {name.lower(): name for name in findings}
    used = [j for j, name in enumerate(labels) if name.lower() in wanted]
    rows = [{"finding": labels[j], **finding_metrics(y[:, j], p[:, j])} for j in used]
    macro: dict[str, Any] = {}
    for key in ("auroc", "f1_weighted", "accuracy", "precision", "recall", "specificity"):
        values = [r[key] for r in rows if np.isfinite(r[key])]
        macro[key] = float(np.mean(values)) if values else float("nan")
    macro["n_findings"] = sum(np.isfinite(r["auroc"]) for r in rows)
    if n_bootstrap > 0:
        macro.update(_macro_cis(y, p, used, [r["threshold"] for r in rows], n_bootstrap, seed, alpha))
    present = {labels[j].lower() for j in used}
    missing = [name for name in findings if name.lower() not in present]
    return {"per_finding": rows, "macro": macro, "findings_missing": missing,
            "comparable": not missing and macro["n_findings"] == len(findings), "protocol": PROTOCOL}


def ctrate_table(result: dict[str, Any]) -> str:
    """Plain-text table of the protocol's metrics (``medmm evaluate --protocol ctrate``)."""
    def f(v: float) -> str:
        return f"{v:>8.3f}" if np.isfinite(v) else f"{'–':>8}"

    cols = ("auroc", "threshold", "f1_weighted", "accuracy", "precision", "recall")
    heads = ("AUROC", "thresh", "F1(w)", "acc", "prec", "recall")
    lines = ["CT-RATE protocol (thresholds chosen on these scans, as CT-CLIP does; F1 weighted over both classes):",
             f"{'finding':<36}" + "".join(f"{h:>9}" for h in heads)]
    lines += [f"{r['finding'][:35]:<36}" + "".join(f" {f(r[c])}" for c in cols) for r in result["per_finding"]]
    m = result["macro"]
    lines.append(f"{'macro (' + str(m['n_findings']) + ' findings)':<36} {f(m['auroc'])} {'':>8} "
                 + " ".join(f(m[c]) for c in cols[2:]))
    if "f1_weighted_ci" in m:
        lines.append("95% CI (scans resampled, thresholds fixed): " + ", ".join(
            f"{h} [{m[c + '_ci'][0]:.3f}, {m[c + '_ci'][1]:.3f}]" for c, h in zip(cols[2:], heads[2:])))
    if not result["comparable"]:
        lines.append(f"not directly comparable with published CT-RATE numbers: {len(result['findings_missing'])} "
                     "of the 18 findings missing or without both classes")
    return "\n".join(lines)
