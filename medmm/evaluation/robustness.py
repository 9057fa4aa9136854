"""Adversarial robustness: classification quality under FGSM / PGD at budgets given in HU.

Protocol: each scan is preprocessed exactly as at inference; the attack perturbs that
preprocessed image inside an L-infinity ball whose radius is the HU budget converted to
normalised intensity (``medmm.data.transforms.hu_to_intensity_eps``), using the training
module's :func:`medmm.models.adversarial.perturb` on the loss
BCE(logits(x_adv), labels) over the scan's known labels. The fusion-head text is held fixed at
the clean scan's generated report (+ indication): report decoding is discrete, so gradients cannot
flow through it, and fixing it isolates the image pathway. The attacked image is scored with the
same differentiable path; metrics are on raw sigmoid probabilities (before the consistency
operator) at the stored thresholds. ε = 0 is the clean reference of the same path.

References: Goodfellow et al., ICLR 2015 (FGSM); Madry et al., ICLR 2018 (PGD).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medmm.evaluation.metrics import auroc, label_accuracy

ATTACKS = ("fgsm", "pgd")
DEFAULT_EPS_HU = (0.0, 5.0, 10.0, 25.0, 50.0)

# logits_fn(x [B,1,X,Y,Z], indices of the scans in the batch) -> logits [B, L]
LogitsFn = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """One attack family and its budgets.

    Args:
        method: ``"fgsm"`` or ``"pgd"``.
        eps_hu: L-infinity budgets in Hounsfield units (0 = clean).
        steps: PGD iterations (FGSM uses one step).
        step_size: PGD step in normalised units; None lets ``perturb`` choose (its default).
    """

    method: str
    eps_hu: tuple[float, ...] = DEFAULT_EPS_HU
    steps: int = 10
    step_size: float | None = None

    def __post_init__(self) -> None:
        if self.method not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.method!r}")
        if any(e < 0 for e in self.eps_hu):
            raise ValueError(f"eps_hu must be >= 0, got {self.eps_hu}")


def _masked_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed BCE over known labels (sum, so each scan's gradient is independent of the batch)."""
    known = y >= 0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.clamp(min=0), reduction="none")
    return (loss * known).sum()


def _batches(images: Sequence[torch.Tensor], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of equal-shaped images (scans may differ in shape)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(tuple(img.shape), []).append(i)
    return [idx[k : k + batch_size] for idx in by_shape.values() for k in range(0, len(idx), batch_size)]


def attack_probabilities(
    logits_fn: LogitsFn,
    images: Sequence[torch.Tensor],
    y_true: np.ndarray,
    method: str,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    batch_size: int = 4,
    perturb: Callable[..., torch.Tensor] | None = None,
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Sigmoid probabilities ``[N, L]`` of every scan after an attack of radius ``eps`` (normalised).

    Args:
        logits_fn: differentiable model path (see :data:`LogitsFn`).
        images: preprocessed images ``[1, X, Y, Z]``, one per scan.
        y_true: ``[N, L]`` labels in {1, 0, -1}; the attack raises the loss on known ones.
        method, eps, steps, step_size: passed to ``perturb`` (eps in normalised intensity units).
        batch_size: scans attacked together.
        perturb: the attack function; default ``medmm.models.adversarial.perturb``.
        bounds: valid intensity range the adversarial image is clipped to (the HU window).
        seed: seeds PGD's random start (uniform in the ε-ball, Madry et al.).
    """
    if perturb is None:
        from medmm.models.adversarial import perturb
    y_all = torch.as_tensor(np.asarray(y_true), dtype=torch.float32)
    out = np.zeros(tuple(y_all.shape), dtype=np.float64)
    generator = torch.Generator().manual_seed(seed)
    for idx in _batches(images, batch_size):
        x = torch.stack([torch.as_tensor(images[i]) for i in idx]).float()
        y = y_all[idx]
        if eps > 0:
            def loss_fn(x_in: torch.Tensor, _idx=idx, _y=y) -> torch.Tensor:
                return _masked_bce(logits_fn(x_in, _idx), _y)

            x = perturb(
                loss_fn, x, method, eps, steps=steps if method == "pgd" else 1, step_size=step_size,
                bounds=bounds, random_start=method == "pgd", generator=generator,
            ).detach()
        with torch.no_grad():
            out[idx] = torch.sigmoid(logits_fn(x, idx)).double().cpu().numpy()
    return out


def robustness_sweep(
    logits_fn: LogitsFn,
    images: Sequence[torch.Tensor],
    y_true: np.ndarray,
    thresholds: Sequence[float],
    spec: AttackSpec,
    hu_to_eps: Callable[[float], float],
    batch_size: int = 4,
    perturb: Callable[..., torch.Tensor] | None = None,
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Macro AUROC, label accuracy and probability shift at every budget of ``spec``.

    Args:
        logits_fn, images, y_true, batch_size, perturb, bounds, seed: see :func:`attack_probabilities`.
        thresholds: per-finding decision thresholds (the model's stored ones).
        spec: attack family and budgets in HU.
        hu_to_eps: converts a budget in HU to normalised intensity units.

    Returns:
        One row per ε: ``method, eps_hu, eps_intensity, steps, n_scans, macro_auroc,
        label_accuracy, mean_abs_prob_change``.
    """
    y = np.asarray(y_true)
    clean = None
    rows = []
    for eps_hu in sorted(set(float(e) for e in spec.eps_hu) | {0.0}):
        eps = float(hu_to_eps(eps_hu)) if eps_hu > 0 else 0.0
        probs = attack_probabilities(
            logits_fn, images, y, spec.method, eps, spec.steps, spec.step_size, batch_size, perturb, bounds, seed
        )
        if clean is None:
            clean = probs
        aurocs = [auroc(y[:, j], probs[:, j]) for j in range(y.shape[1])]
        finite = [a for a in aurocs if np.isfinite(a)]
        rows.append({
            "method": spec.method,
            "eps_hu": eps_hu,
            "eps_intensity": eps,
            "steps": spec.steps if spec.method == "pgd" else 1,
            "n_scans": int(len(y)),
            "macro_auroc": float(np.mean(finite)) if finite else float("nan"),
            "label_accuracy": label_accuracy(y, probs, thresholds),
            "mean_abs_prob_change": float(np.abs(probs - clean).mean()),
        })
    return rows


def robustness_table(sweeps: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Long table of several models' sweeps: one row per (model, method, ε)."""
    return [{"model": name, **row} for name, rows in sweeps.items() for row in rows]


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of :func:`robustness_table` rows (for terminals and reports)."""
    head = f"{'model':<24} {'attack':<6} {'eps HU':>7} {'macro AUROC':>12} {'label acc':>10} {'|dp|':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{str(r.get('model', '')):<24} {r['method']:<6} {r['eps_hu']:>7.1f} "
            f"{r['macro_auroc']:>12.3f} {r['label_accuracy']:>10.3f} {r['mean_abs_prob_change']:>7.3f}"
        )
    return "\n".join(lines)
