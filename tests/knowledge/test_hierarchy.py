"""C-HMCNN hierarchy: groups from the ontology, the max-constraint module (MCM) and MCLoss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medmm.knowledge.hierarchy import Hierarchy, max_constraint, max_constraint_loss
from medmm.labels import CT_RATE_FINDINGS

ROOT = "Chest CT finding"


def test_groups_and_edges_come_from_the_bundled_ontology(onto):
    h = Hierarchy.from_ontology(onto, CT_RATE_FINDINGS)
    assert set(h.groups) == {"Lung parenchyma finding", "Airway finding", "Pleural finding", "Cardiovascular finding",
                             "Mediastinal finding", "Devices and other findings", ROOT}
    assert h.groups[-1] == ROOT and h.names[: len(CT_RATE_FINDINGS)] == list(CT_RATE_FINDINGS)
    lines = set(h.describe())
    assert {"Consolidation ⇒ Lung opacity", "Consolidation ⇒ Lung parenchyma finding", "Consolidation ⇒ " + ROOT,
            "Pleural effusion ⇒ Pleural finding", "Coronary artery wall calcification ⇒ Arterial wall calcification",
            "Pleural finding ⇒ " + ROOT} <= lines
    assert all(f"{f} ⇒ {ROOT}" in lines for f in CT_RATE_FINDINGS)  # every finding implies "any abnormality"
    assert "Lung opacity ⇒ Consolidation" not in lines


def _chain() -> Hierarchy:
    # findings A (child of B), B, C; groups G (over A, B) and R (root over everything)
    names = ["A", "B", "C", "G", "R"]
    pairs = [("A", "B"), ("A", "G"), ("B", "G"), ("A", "R"), ("B", "R"), ("C", "R"), ("G", "R")]
    return Hierarchy(("A", "B", "C"), ("G", "R"), tuple((names.index(d), names.index(a)) for d, a in pairs))


def test_mcm_outputs_satisfy_the_hierarchy_by_construction():
    h = _chain()
    r = h.matrix()
    logits = torch.randn(256, len(h), generator=torch.Generator().manual_seed(0)) * 4
    out = max_constraint(logits, r)
    for d, a in h.edges:
        assert bool((out[:, a] >= out[:, d]).all())
    assert torch.equal(out[:, 2], logits[:, 2])  # a leaf with no descendants keeps its own output
    assert torch.equal(out[:, 4], logits.max(dim=1).values)  # the root is the max of everything


def test_mcm_is_the_identity_without_edges():
    logits = torch.randn(4, 3)
    assert torch.equal(max_constraint(logits, torch.eye(3, dtype=torch.bool)), logits)


def test_targets_are_closed_up_the_hierarchy():
    h = _chain()
    y = torch.tensor([[1.0, 0.0, 0.0],   # A => B and G, R positive (B's 0 is overruled)
                      [0.0, 0.0, 0.0],   # all known negative
                      [-1.0, 0.0, 0.0],  # unknown A: G and R unknown, B keeps its own 0
                      [-1.0, -1.0, 1.0]])
    assert h.extend_targets(y).tolist() == [[1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [-1, 0, 0, -1, -1], [-1, -1, 1, -1, 1]]


def test_mcloss_is_plain_bce_without_a_hierarchy():
    z = torch.randn(5, 3)
    y = torch.tensor([[1.0, 0.0, 1.0]] * 5)
    expected = F.binary_cross_entropy_with_logits(z, y)
    assert torch.allclose(max_constraint_loss(z, y, torch.eye(3, dtype=torch.bool)), expected)


def test_mcloss_credits_a_positive_parent_only_through_positive_descendants():
    """The paper's point: with a positive parent, a high-scoring *negative* child must not be
    rewarded (plain BCE on MCM outputs would push it up); the parent's own output is trained."""
    h = Hierarchy(("child", "parent"), (), ((0, 1),))
    r = h.matrix()
    raw = torch.tensor([[3.0, -2.0]], requires_grad=True)  # negative child scores high, positive parent low
    target = torch.tensor([[0.0, 1.0]])
    max_constraint_loss(raw, target, r).backward()
    child_grad, parent_grad = raw.grad[0].tolist()
    assert parent_grad < 0  # gradient descent raises the parent's own raw output
    assert child_grad > 0  # and lowers the negative child (its own negative term), never raises it
    # BCE on the MCM outputs would instead send the parent's positive signal to the child
    naive = torch.tensor([[3.0, -2.0]], requires_grad=True)
    F.binary_cross_entropy_with_logits(max_constraint(naive, r), target).backward()
    assert naive.grad[0, 1] == 0


def test_mcloss_negative_parent_pulls_down_the_responsible_descendant():
    h = Hierarchy(("child", "parent"), (), ((0, 1),))
    raw = torch.tensor([[2.0, -1.0]], requires_grad=True)  # both negative; the child dominates the parent
    max_constraint_loss(raw, torch.tensor([[0.0, 0.0]]), h.matrix()).backward()
    assert raw.grad[0, 0] > 0 and raw.grad[0, 1] == 0  # only the arg-max (child) is lowered


def test_mcloss_skips_unknown_targets_and_weights_columns():
    r = torch.eye(2, dtype=torch.bool)
    z = torch.tensor([[0.5, -0.5]])
    only_first = max_constraint_loss(z, torch.tensor([[1.0, -1.0]]), r)
    assert torch.allclose(only_first, F.binary_cross_entropy_with_logits(z[:, :1], torch.ones(1, 1)))
    weighted = max_constraint_loss(z, torch.tensor([[1.0, 0.0]]), r, column_weight=torch.tensor([1.0, 0.0]))
    assert torch.allclose(weighted, only_first)
    none_known = max_constraint_loss(z.requires_grad_(), torch.full((1, 2), -1.0), r)
    assert float(none_known.detach()) == 0.0 and none_known.requires_grad


def test_extend_targets_checks_the_shape():
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        _chain().extend_targets(torch.zeros(2, 4))
