"""Evaluation figures as PNG bytes: ROC curves, reliability diagram, robustness curve.

Figures are rendered with matplotlib's non-interactive Agg canvas into memory; the caller writes
the bytes atomically (see :mod:`medmm.evaluation.report`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve


def _figure(width: float = 6.0, height: float = 5.0):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def roc_curves_png(y_true: np.ndarray, y_score: np.ndarray, labels: Sequence[str], aurocs: Sequence[float]) -> bytes:
    """One ROC curve per evaluable finding (unknown labels dropped), legend with AUROC."""
    fig = _figure(7.5, 6.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    for j, name in enumerate(labels):
        if not np.isfinite(aurocs[j]):
            continue
        keep = y_true[:, j] != -1
        fpr, tpr, _ = roc_curve(y_true[keep, j], y_score[keep, j])
        ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({aurocs[j]:.2f})")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title="ROC curves")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="lower right")
    return _png(fig)


def reliability_png(pooled: dict[str, Any]) -> bytes:
    """Reliability diagram from :func:`medmm.evaluation.calibration.reliability` output."""
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    edges = np.asarray(pooled["bin_edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    frac = np.asarray(pooled["fraction_positive"], dtype=float)
    mean_p = np.asarray(pooled["mean_predicted"], dtype=float)
    ok = np.isfinite(frac)
    ax.bar(centers[ok], frac[ok], width=np.diff(edges)[ok], edgecolor="k", alpha=0.6, label="observed")
    ax.plot(mean_p[ok], frac[ok], "o-", color="C3", label="mean predicted vs observed")
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfect calibration")
    ax.set(xlabel="predicted probability", ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability (ECE {pooled['ece']:.3f}, n={pooled['n']})")
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def robustness_png(rows: list[dict[str, Any]]) -> bytes:
    """Macro AUROC and label accuracy against ε (HU), one line per (model, attack)."""
    fig = _figure(9.0, 4.0)
    axes = fig.subplots(1, 2)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(f"{r.get('model', 'model')} / {r['method']}", []).append(r)
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["eps_hu"])
        eps = [r["eps_hu"] for r in rs]
        axes[0].plot(eps, [r["macro_auroc"] for r in rs], "o-", label=name)
        axes[1].plot(eps, [r["label_accuracy"] for r in rs], "o-", label=name)
    axes[0].set(xlabel="ε (HU)", ylabel="macro AUROC", title="AUROC under attack")
    axes[1].set(xlabel="ε (HU)", ylabel="label accuracy", title="Accuracy under attack")
    axes[0].legend(fontsize=7)
    return _png(fig)
