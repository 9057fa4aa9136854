"""The ontology's grouping hierarchy as model outputs (C-HMCNN, Giunchiglia & Lukasiewicz, NeurIPS 2020).

Every ancestor of a finding in the ontology (``rdfs:subClassOf`` / ``ct:implies``, transitively)
that is not itself a finding becomes a *group* output — "Lung parenchyma finding", "Pleural
finding", ..., and the root "Chest CT finding" (any abnormality). Outputs are ordered findings
first, then groups. The hierarchy is one boolean matrix ``R [N, N]`` with ``R[a, d]`` true when
output ``d`` is ``a`` or implies ``a``; it is computed from the ontology, so adding a concept to the
``.ttl`` changes the outputs and the constraints without code.

* :func:`max_constraint` (MCM): an output's logit is the max over itself and its descendants, so
  ``p(child) <= p(ancestor)`` holds by construction, in training and at inference.
* :func:`max_constraint_loss` (MCLoss): the paper's loss — a positive output is credited only
  through its *positive* descendants (``max_d y_d * h_d``), a negative one through the MCM output —
  so the gradient of a wrong prediction reaches the raw output responsible for it.

Both are written in logit space (max commutes with the monotone sigmoid), which keeps the BCE
numerically stable; the reference implementation (github.com/EGiunchiglia/C-HMCNN) works on
probabilities, with the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Hierarchy:
    """Finding + group outputs and their descendant matrix.

    Attributes:
        findings: the model's finding labels (first outputs, in order).
        groups: ontology ancestors of the findings that are not findings (last outputs).
        edges: ``(descendant, ancestor)`` output-index pairs, transitively closed.
    """

    findings: tuple[str, ...]
    groups: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]

    @classmethod
    def from_ontology(cls, ontology, findings: Sequence[str]) -> Hierarchy:
        """Groups and edges from an :class:`~medmm.knowledge.Ontology` (root group last).

        Groups are ordered by depth in the hierarchy (deepest first), then by label, so that the
        "any abnormality" root, which every finding implies, is the last output.
        """
        findings = list(findings)
        ontology.require(findings)
        ancestors = set().union(*(ontology.ancestors(f) for f in findings)) - set(findings)
        depth = {g: len(ontology.ancestors(g)) for g in ancestors}
        groups = sorted(ancestors, key=lambda g: (-depth[g], g))
        names = findings + groups
        edges = [(d, a) for d, dn in enumerate(names) for a, an in enumerate(names)
                 if d != a and ontology.implies(dn, an)]
        return cls(tuple(findings), tuple(groups), tuple(edges))

    @property
    def names(self) -> list[str]:
        """All output names: findings, then groups."""
        return [*self.findings, *self.groups]

    def __len__(self) -> int:
        return len(self.findings) + len(self.groups)

    def matrix(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``R [N, N]`` bool: ``R[a, d]`` when ``d`` is ``a`` or one of its descendants."""
        n = len(self)
        r = torch.eye(n, dtype=torch.bool)
        if self.edges:
            idx = torch.tensor(self.edges, dtype=torch.long)
            r[idx[:, 1], idx[:, 0]] = True
        return r if device is None else r.to(device)

    def extend_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Finding targets ``[B, L]`` (1, 0, -1 unknown) → ``[B, N]``, closed up the hierarchy.

        An output is 1 when it or any descendant finding is known 1 (every finding implies its
        ancestors). Otherwise a finding keeps its own target, and a group is 0 when all its
        descendant findings are known 0, else unknown (-1).
        """
        n_find = len(self.findings)
        if targets.ndim != 2 or targets.shape[1] != n_find:
            raise ValueError(f"expected targets [B, {n_find}], got {tuple(targets.shape)}")
        r = self.matrix(targets.device)[:, :n_find].float()  # [N, L]: which findings each output covers
        t = targets.float()
        pos = ((t == 1).float() @ r.T) > 0  # [B, N]
        unknown = ((t < 0).float() @ r.T) > 0
        own = torch.cat([t, torch.where(unknown[:, n_find:], -1.0, 0.0)], dim=1)
        return torch.where(pos, torch.ones_like(own), own).to(targets.dtype)

    def describe(self) -> list[str]:
        """Direct-or-transitive ``child ⇒ ancestor`` lines (for docs and run metadata)."""
        names = self.names
        return [f"{names[d]} ⇒ {names[a]}" for d, a in self.edges]


def max_constraint(logits: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """MCM: ``out[:, a] = max_{d: R[a, d]} logits[:, d]`` (``logits [B, N]``, ``r [N, N]`` bool).

    Written as a masked ``amax`` over an ``[B, N, N]`` view; N is a few dozen outputs, so this is
    cheaper than any sparse formulation. Gradients flow to the arg-max raw output only.
    """
    masked = logits.unsqueeze(1).masked_fill(~r.to(logits.device).unsqueeze(0), float("-inf"))
    return masked.amax(dim=2)


def max_constraint_loss(raw_logits: torch.Tensor, targets: torch.Tensor, r: torch.Tensor,
                        pos_weight: torch.Tensor | None = None,
                        column_weight: torch.Tensor | None = None) -> torch.Tensor:
    """MCLoss (C-HMCNN): masked BCE of the hierarchy-constrained outputs.

    For a positive output ``a`` the logit is ``max_{d in D(a), y_d = 1} h_d`` (only positive
    descendants, ``a`` itself included), for a negative one the MCM logit ``max_{d in D(a)} h_d``.
    Unknown targets (-1) are skipped, and an unknown descendant never credits a positive ancestor.

    Args:
        raw_logits: ``[B, N]`` head outputs before MCM.
        targets: ``[B, N]`` with 1, 0 or -1 (see :meth:`Hierarchy.extend_targets`).
        r: ``[N, N]`` descendant matrix (:meth:`Hierarchy.matrix`).
        pos_weight: optional ``[N]`` positive-class weight.
        column_weight: optional ``[N]`` weight of each output's terms (e.g. groups vs findings).

    Returns:
        Scalar weighted mean over known entries (0 with a gradient path when none is known).
    """
    r = r.to(raw_logits.device)
    raw = raw_logits.float()
    constrained = max_constraint(raw, r)
    positive = targets == 1
    only_pos = raw.masked_fill(~positive, float("-inf"))  # y_d * h_d in probability space
    credited = max_constraint(only_pos, r)
    use = torch.where(positive, credited, constrained)
    known = (targets >= 0).float()
    if column_weight is not None:
        known = known * column_weight.to(raw.device).float()
    per_entry = F.binary_cross_entropy_with_logits(
        use.masked_fill(~torch.isfinite(use), 0.0), positive.float(),
        pos_weight=None if pos_weight is None else pos_weight.to(raw.device), reduction="none")
    return (per_entry * known).sum() / known.sum().clamp_min(1.0)


def group_rows(hierarchy: Hierarchy | None, group_logits: torch.Tensor | None,
               finding_probs: torch.Tensor) -> list[dict]:
    """``result.json`` rows of the group outputs of one scan (empty without a hierarchy).

    A group's probability is its max-constrained output, raised to the largest final probability
    of its findings (after calibration and the consistency step), so a reported group is never
    less likely than a finding it contains.

    Args:
        hierarchy: the model's `Hierarchy` (None: no group outputs).
        group_logits: ``[1, G]`` group logits after the max-constraint.
        finding_probs: ``[1, L]`` final finding probabilities.
    """
    if hierarchy is None or group_logits is None:
        return []
    n_find = len(hierarchy.findings)
    covers = hierarchy.matrix()[n_find:, :n_find]  # [G, L]
    own = torch.sigmoid(group_logits.detach().float().cpu())[0]
    probs = finding_probs.detach().float().cpu()[0]
    rows = []
    for g, name in enumerate(hierarchy.groups):
        members = covers[g].nonzero().flatten().tolist()
        p = max([float(own[g])] + [float(probs[j]) for j in members])
        rows.append({"group": name, "probability": round(p, 6), "findings": [hierarchy.findings[j] for j in members]})
    return rows
