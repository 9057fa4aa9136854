"""Evaluation: metrics with confidence intervals, calibration, report metrics, robustness, plots.

Public API: :func:`evaluate` (a run directory on a manifest, files + dict), and the array-level
building blocks :func:`classification_metrics`, :func:`bootstrap_auroc`, :func:`ctrate_metrics` (CT-RATE protocol), :func:`calibration_metrics`,
:func:`report_metrics`, :func:`robustness_sweep`.
"""

from medmm.evaluation.calibration import calibration_metrics, reliability
from medmm.evaluation.ctrate import ctrate_metrics
from medmm.evaluation.pipeline import evaluate
from medmm.evaluation.metrics import (
    auprc,
    auroc,
    bootstrap_auroc,
    classification_metrics,
    label_accuracy,
    threshold_metrics,
)
from medmm.evaluation.text_metrics import report_metrics
from medmm.evaluation.robustness import AttackSpec, robustness_sweep, robustness_table

__all__ = [
    "evaluate",
    "classification_metrics",
    "ctrate_metrics",
    "bootstrap_auroc",
    "auroc",
    "auprc",
    "threshold_metrics",
    "label_accuracy",
    "calibration_metrics",
    "reliability",
    "report_metrics",
    "AttackSpec",
    "robustness_sweep",
    "robustness_table",
]
