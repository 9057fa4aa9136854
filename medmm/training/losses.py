"""Training objective: masked multi-label BCE + KR loss + report language-model loss.

``total = BCE(masked) + loss.kr_weight * knowledge_loss(sigmoid(logits)) + loss.lm_weight * LM``

With ``network.hierarchy`` the BCE is C-HMCNN's MCLoss over findings and ontology groups
(:func:`hierarchy_bce`, `medmm.knowledge.hierarchy`).

The BCE ignores unknown labels (``-1`` in the manifest) and, for the label-efficiency ablation,
entries hidden by ``training.label_fraction``; the KR loss applies to every case, which is how the
ontology can teach labels the BCE never sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def label_fraction_mask(n_cases: int, n_labels: int, fraction: float, seed: int) -> torch.Tensor:
    """Fixed Bernoulli(``fraction``) mask ``[n_cases, n_labels]`` of label entries the BCE may see.

    Drawn once per run from ``seed`` (independent of the model's RNG), so the same run hides
    the same entries on every epoch, rank and resume.
    """
    if fraction >= 1.0:
        return torch.ones(n_cases, n_labels, dtype=torch.bool)
    gen = torch.Generator().manual_seed(int(seed) + 104_729)
    return torch.rand(n_cases, n_labels, generator=gen) < fraction


def auto_pos_weight(labels: torch.Tensor, mask: torch.Tensor | None = None, cap: float = 100.0) -> torch.Tensor:
    """Per-label ``negatives / positives`` over known (and visible) entries, clamped to ``[1/cap, cap]``.

    Labels lacking either class get 1 (no re-weighting).
    """
    known = labels >= 0 if mask is None else (labels >= 0) & mask
    pos = ((labels == 1) & known).sum(0).float()
    neg = ((labels == 0) & known).sum(0).float()
    return (neg / pos.clamp_min(1.0)).clamp(1.0 / cap, cap).where((pos > 0) & (neg > 0), torch.ones_like(pos))


def resolve_pos_weight(setting: float | Sequence[float] | str | None, labels: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor | None:
    """Turn the workflow's ``loss.pos_weight`` into a tensor (or None)."""
    n_labels = labels.shape[1]
    if setting is None:
        return None
    if setting == "auto":
        return auto_pos_weight(labels, mask)
    if isinstance(setting, (int, float)):
        return torch.full((n_labels,), float(setting))
    return torch.tensor([float(v) for v in setting])


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
               pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE-with-logits over entries whose target is known (>= 0) and ``mask`` allows.

    Args:
        logits: ``[B, L]``.
        targets: ``[B, L]`` with 1, 0 or -1 (unknown).
        mask: optional bool ``[B, L]`` of entries to include (label_fraction).
        pos_weight: optional ``[L]`` positive-class weight.

    Returns:
        Scalar; exactly 0 (with a gradient path) when no entry is usable.
    """
    keep = targets >= 0
    if mask is not None:
        keep = keep & mask.to(keep.device)
    per_entry = F.binary_cross_entropy_with_logits(
        logits.float(), targets.clamp_min(0).float(),
        pos_weight=None if pos_weight is None else pos_weight.to(logits.device), reduction="none")
    weights = keep.float()
    return (per_entry * weights).sum() / weights.sum().clamp_min(1.0)


def hierarchy_bce(raw_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None,
                  pos_weight: torch.Tensor | None, hierarchy, matrix: torch.Tensor,
                  group_weight: float = 1.0) -> torch.Tensor:
    """MCLoss over findings + groups: the visible finding labels (``mask``) are closed up the
    hierarchy (`Hierarchy.extend_targets`), group terms weighted by ``group_weight``.

    Args:
        raw_logits: ``[B, L + G]`` head outputs before the max-constraint.
        targets: ``[B, L]`` finding labels (1, 0, -1 unknown); mask: visible entries or None.
        pos_weight: ``[L]`` finding positive weights (groups get 1) or None.
    """
    from medmm.knowledge.hierarchy import max_constraint_loss

    visible = targets if mask is None else targets.masked_fill(~mask.to(targets.device).bool(), -1)
    full = hierarchy.extend_targets(visible)
    n_labels, n_groups = targets.shape[1], len(hierarchy.groups)
    if pos_weight is not None:
        pos_weight = torch.cat([pos_weight.to(raw_logits.device), torch.ones(n_groups, device=raw_logits.device)])
    column_weight = torch.cat([torch.ones(n_labels), torch.full((n_groups,), float(group_weight))])
    return max_constraint_loss(raw_logits, full, matrix, pos_weight, column_weight.to(raw_logits.device))
