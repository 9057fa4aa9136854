"""Inference-time consistency: turn any probability vector into one that obeys the ontology.

:func:`make_consistent` runs two passes whose order makes one pass of each sufficient:

1. **Implications, upward max-propagation** (the max constraint module of C-HMCNN, Giunchiglia &
   Lukasiewicz, NeurIPS 2020): ``p_b := max(p_b, max{p_a : a =>+ b})`` over the transitive
   closure. Afterwards every implication holds, because p_b is at least every p_a below it.
2. **Exclusions, "most confident wins"**: for each exclusion (a, b), in a fixed order, with
   ``p_a + p_b > 1``: keep the higher of the two (ties keep the first in label order), lower the
   other to ``1 - p_higher``, and lower everything that implies the lowered label to at most its
   new value (min-propagation downward).

Why one pass is enough: step 2 only ever *lowers* values, and lowering never breaks an exclusion
already resolved; lowering a label together with all of its antecedents never breaks an
implication (antecedents stay <= consequents, consequents are untouched). Hence after step 2
every exclusion and every implication holds. Input that already satisfies every constraint passes
both steps unchanged (the max is a no-op and no exclusion triggers).

:func:`violation_rate` counts violations, thresholded (as evaluation reports them) or on the raw
probabilities (what the operator guarantees to be zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from medmm.knowledge.constraints import Constraints

# No tolerance is needed for exclusions: a violated pair has p_high > 0.5, and for x in [0.5, 1]
# the float subtraction 1 - x is exact (Sterbenz lemma), so p_high + (1 - p_high) == 1 exactly.


class Repair(NamedTuple):
    """One change the consistency operator made to one sample's probability of one label."""

    constraint: str  # e.g. "Consolidation ⇒ Lung opacity" or "No abnormality ⊥ Emphysema"
    label: str  # the label whose probability changed
    before: float
    after: float


@dataclass
class ConsistencyResult:
    """Output of :func:`make_consistent`.

    Attributes:
        probs: [B, L] probabilities satisfying every constraint.
        repairs: per sample, the list of :class:`Repair` made (empty when already consistent).
    """

    probs: torch.Tensor
    repairs: list[list[Repair]]


def implication_closure(constraints: Constraints) -> torch.Tensor:
    """Boolean [L, L] matrix ``R[a, b]`` = a =>+ b (transitive closure of the implication pairs).

    :meth:`Ontology.constraints` already returns closed pairs; closing again here (Warshall on an
    L x L boolean matrix, L is tiny) keeps the operator correct for hand-built constraints too.
    """
    n = len(constraints.labels)
    reach = torch.zeros(n, n, dtype=torch.bool)
    imp = constraints.implications.cpu()
    reach[imp[:, 0], imp[:, 1]] = True
    for k in range(n):
        reach |= reach[:, k : k + 1] & reach[k : k + 1, :]
    return reach


def make_consistent(probs: torch.Tensor, constraints: Constraints, track_repairs: bool = True) -> ConsistencyResult:
    """Project probabilities onto the constraints (implications upward, then exclusions).

    Args:
        probs: [B, L] probabilities, columns in ``constraints.labels`` order.
        constraints: implications/exclusions from :meth:`Ontology.constraints`.
        track_repairs: record what changed per sample (set False in tight loops).

    Returns:
        :class:`ConsistencyResult` with the repaired probabilities (same dtype/device; a new
        tensor, differentiable where max/min are) and per-sample repairs.

    Raises:
        ValueError: for a shape mismatch or constraints that contradict themselves
            (an exclusion between a label and something it implies).

    >>> from medmm.knowledge import Constraints
    >>> c = Constraints.from_names(["A", "B"], implications=[("A", "B")])
    >>> out = make_consistent(torch.tensor([[0.75, 0.25]]), c)
    >>> out.probs.tolist(), out.repairs[0][0].constraint
    ([[0.75, 0.75]], 'A ⇒ B')
    """
    constraints.check_probs(probs)
    reach = implication_closure(constraints).to(probs.device)
    exc = constraints.exclusions.tolist()
    for a, b in exc:
        if a == b or reach[a, b] or reach[b, a]:
            raise ValueError(f"contradictory constraints: {constraints.labels[a]} and {constraints.labels[b]} "
                             "are exclusive but one implies the other")
    batch = probs.shape[0]
    repairs: list[list[Repair]] = [[] for _ in range(batch)]
    labels = constraints.labels

    # Step 1: p_b := max(p_b, p_a for every a =>+ b).
    below = torch.where(reach.unsqueeze(0), probs.unsqueeze(2), torch.full_like(probs, -1.0).unsqueeze(2))
    best, source = below.max(dim=1)  # [B, L]: highest antecedent probability per label
    p = torch.maximum(probs, best)
    if track_repairs:
        for i, j in (best > probs).nonzero().tolist():
            name = f"{labels[source[i, j]]} ⇒ {labels[j]}"
            repairs[i].append(Repair(name, labels[j], float(probs[i, j]), float(p[i, j])))

    # Step 2: exclusions, most confident wins, then min-propagate to antecedents of the lowered one.
    for a, b in exc:
        pa, pb = p[:, a], p[:, b]
        violated = pa + pb > 1.0
        if not bool(violated.any()):
            continue
        keep_a = pa >= pb
        for low, high, mask in ((b, a, violated & keep_a), (a, b, violated & ~keep_a)):
            if not bool(mask.any()):
                continue
            before = p.clone() if track_repairs else None
            new_low = torch.where(mask, torch.minimum(p[:, low], 1.0 - p[:, high]), p[:, low])
            p = p.clone()
            p[:, low] = new_low
            for c in reach[:, low].nonzero().flatten().tolist():
                p[:, c] = torch.where(mask, torch.minimum(p[:, c], new_low), p[:, c])
            if track_repairs:
                _record(repairs, before, p, mask, low, f"{labels[a]} ⊥ {labels[b]}", reach, labels)
    return ConsistencyResult(p, repairs)


def threshold_scores(probs: torch.Tensor, thresholds: float | torch.Tensor) -> torch.Tensor:
    """Map probabilities to scores with a common decision point 0.5: ``z > 0.5`` iff ``p > t``.

    Piecewise linear and increasing per label: ``[0, t] -> [0, 0.5]`` and ``[t, 1] -> [0.5, 1]``.
    """
    t = torch.as_tensor(thresholds, dtype=probs.dtype, device=probs.device).clamp(1e-6, 1 - 1e-6)
    return torch.where(probs > t, 0.5 + 0.5 * (probs - t) / (1 - t), 0.5 * probs / t)


def consistent_decisions(probs: torch.Tensor, constraints: Constraints,
                         thresholds: float | torch.Tensor = 0.5) -> tuple[torch.Tensor, ConsistencyResult]:
    """Positive/negative decisions that obey every constraint, also with per-label thresholds.

    Consistent probabilities can still give inconsistent decisions when labels have different
    thresholds (p_a = p_b = 0.6 with t_a = 0.5 < t_b = 0.7 makes a positive and b not). The
    probabilities are first mapped by :func:`threshold_scores` to a common threshold of 0.5, the
    operator is applied to those scores, and a finding is positive when its score is > 0.5.

    Returns:
        ``(decisions, result)``: bool [B, L] decisions and the :class:`ConsistencyResult` on the
        threshold-calibrated scores (its repairs are in score units).
    """
    result = make_consistent(threshold_scores(probs, thresholds), constraints)
    return result.probs > 0.5, result


def _record(repairs, before, after, mask, low, exclusion, reach, labels) -> None:
    for i in mask.nonzero().flatten().tolist():
        repairs[i].append(Repair(exclusion, labels[low], float(before[i, low]), float(after[i, low])))
        for c in reach[:, low].nonzero().flatten().tolist():
            if after[i, c] < before[i, c]:
                name = f"{labels[c]} ⇒ {labels[low]} (after {exclusion})"
                repairs[i].append(Repair(name, labels[c], float(before[i, c]), float(after[i, c])))


def violations(probs: torch.Tensor, constraints: Constraints, threshold: float | torch.Tensor | None = 0.5) -> torch.Tensor:
    """Boolean [B, K + M] matrix of violated constraints (implications first, then exclusions).

    Args:
        probs: [B, L] probabilities.
        constraints: the constraints to check.
        threshold: a label is positive when ``p > threshold`` (a float or a per-label [L] tensor);
            ``None`` checks the probabilities themselves (``p_a <= p_b``, ``p_a + p_b <= 1``, exactly).
    """
    constraints.check_probs(probs)
    imp = constraints.implications.to(probs.device)
    exc = constraints.exclusions.to(probs.device)
    if threshold is None:
        bad_imp = probs[:, imp[:, 0]] > probs[:, imp[:, 1]]
        bad_exc = probs[:, exc[:, 0]] + probs[:, exc[:, 1]] > 1.0
    else:
        positive = probs > torch.as_tensor(threshold, dtype=probs.dtype, device=probs.device)
        bad_imp = positive[:, imp[:, 0]] & ~positive[:, imp[:, 1]]
        bad_exc = positive[:, exc[:, 0]] & positive[:, exc[:, 1]]
    return torch.cat([bad_imp, bad_exc], dim=1)


def violation_rate(probs: torch.Tensor, constraints: Constraints, threshold: float | torch.Tensor | None = 0.5,
                   per: str = "constraint") -> float:
    """Fraction of violated constraints.

    Args:
        probs: [B, L] probabilities (before or after :func:`make_consistent`).
        constraints: the constraints to check.
        threshold: positivity threshold (``p > threshold``), or ``None`` for the continuous check
            on probabilities.
        per: ``"constraint"`` = violated (sample, constraint) pairs / all pairs;
            ``"sample"`` = samples with at least one violation / all samples.

    Returns:
        A float in [0, 1]; 0.0 when there are no constraints or no samples.
    """
    bad = violations(probs, constraints, threshold)
    if bad.numel() == 0:
        return 0.0
    if per == "constraint":
        return float(bad.float().mean())
    if per == "sample":
        return float(bad.any(dim=1).float().mean())
    raise ValueError(f"per must be 'constraint' or 'sample', got {per!r}")
