"""Consistency operator: every constraint holds afterwards; consistent input is left alone."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medmm.knowledge import (
    Constraints,
    consistent_decisions,
    make_consistent,
    threshold_scores,
    violation_rate,
    violations,
)
from medmm.labels import CT_RATE_FINDINGS

# A small DAG with shared consequents and exclusions at several levels:
# a => b => c, d => c, e ⊥ c (hence e ⊥ a, b, d), f ⊥ d, g free.
LABELS = ["a", "b", "c", "d", "e", "f", "g"]
C = Constraints.from_names(LABELS, implications=[("a", "b"), ("b", "c"), ("d", "c")],
                           exclusions=[("e", "c"), ("f", "d")])


@pytest.fixture(scope="module")
def bundled(onto):
    return onto.constraints([*CT_RATE_FINDINGS, "No abnormality"])


logits = st.lists(st.floats(-8, 8, allow_nan=False), min_size=len(LABELS), max_size=len(LABELS))


@settings(max_examples=200, deadline=None)
@given(st.lists(logits, min_size=1, max_size=6))
def test_random_logits_become_consistent(batch):
    probs = torch.sigmoid(torch.tensor(batch))
    out = make_consistent(probs, C)
    assert violation_rate(out.probs, C, threshold=None) == 0.0
    assert violation_rate(out.probs, C, threshold=0.5) == 0.0
    assert ((out.probs >= 0) & (out.probs <= 1)).all()
    # idempotent: a consistent input is returned unchanged, with no repairs
    again = make_consistent(out.probs, C)
    assert torch.equal(again.probs, out.probs) and again.repairs == [[] for _ in batch]
    # a repair is recorded for every changed entry of every sample
    for i, repairs in enumerate(out.repairs):
        changed = {LABELS[j] for j in (out.probs[i] != probs[i]).nonzero().flatten().tolist()}
        assert changed <= {r.label for r in repairs}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-6, 6, allow_nan=False), min_size=19, max_size=19), min_size=1, max_size=4))
def test_bundled_ontology_property(bundled, batch):
    out = make_consistent(torch.sigmoid(torch.tensor(batch)), bundled)
    assert violation_rate(out.probs, bundled, threshold=None) == 0.0


def test_consistent_input_unchanged():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.25, 0.6, 0.7, 0.99]])
    assert violation_rate(probs, C, threshold=None) == 0.0
    out = make_consistent(probs, C)
    assert torch.equal(out.probs, probs) and out.repairs == [[]]


def test_implication_max_propagation_and_repairs():
    probs = torch.tensor([[0.9, 0.2, 0.1, 0.5, 0.0, 0.0, 0.5]])
    out = make_consistent(probs, C)
    assert out.probs[0, :4].tolist() == pytest.approx([0.9, 0.9, 0.9, 0.5])
    assert {(r.constraint, r.label) for r in out.repairs[0]} == {("a ⇒ b", "b"), ("a ⇒ c", "c")}


def test_exclusion_keeps_higher_and_lowers_antecedents():
    # c is raised to 0.7 by a; e (0.8) beats c: c -> 0.2, and a, b, d (which imply c) -> <= 0.2
    probs = torch.tensor([[0.7, 0.5, 0.1, 0.4, 0.8, 0.0, 0.5]])
    out = make_consistent(probs, C)
    p = out.probs[0].tolist()
    assert p[4] == pytest.approx(0.8) and p[2] == pytest.approx(0.2)
    assert p[0] == pytest.approx(0.2) and p[1] == pytest.approx(0.2) and p[3] == pytest.approx(0.2)
    names = [r.constraint for r in out.repairs[0]]
    assert "c ⊥ e" in names and any(n.endswith("(after c ⊥ e)") for n in names)


def test_exclusion_tie_keeps_first_label():
    c = Constraints.from_names(["x", "y"], exclusions=[("x", "y")])
    out = make_consistent(torch.tensor([[0.75, 0.75]]), c)
    assert out.probs[0].tolist() == pytest.approx([0.75, 0.25])


def test_contradictory_constraints_rejected():
    c = Constraints.from_names(["x", "y"], implications=[("x", "y")], exclusions=[("x", "y")])
    with pytest.raises(ValueError, match="contradictory"):
        make_consistent(torch.rand(1, 2), c)


def test_gradients_flow():
    probs = torch.tensor([[0.9, 0.2, 0.1, 0.5, 0.3, 0.2, 0.5]], requires_grad=True)
    make_consistent(probs, C, track_repairs=False).probs.sum().backward()
    assert probs.grad is not None and probs.grad[0, 0] > 1  # a feeds a, b and c


@pytest.mark.parametrize(
    "probs,threshold,per,expected",
    [
        ([[0.9, 0.2, 0.1, 0.5, 0.0, 0.0, 0.5]], 0.5, "constraint", 1 / 5),  # a=>b only (d=0.5 is not > 0.5)
        ([[0.9, 0.2, 0.1, 0.5, 0.0, 0.0, 0.5]], None, "constraint", 3 / 5),  # a=>b, b=>c, d=>c (continuous)
        ([[0.9, 0.2, 0.1, 0.5, 0.0, 0.0, 0.5], [0.0] * 7], 0.5, "sample", 1 / 2),
        ([[0.0, 0.0, 0.6, 0.0, 0.6, 0.0, 0.0]], 0.5, "constraint", 1 / 5),  # e ⊥ c
    ],
)
def test_violation_rate(probs, threshold, per, expected):
    assert violation_rate(torch.tensor(probs), C, threshold=threshold, per=per) == pytest.approx(expected)


def test_violations_matrix_and_per_label_thresholds():
    probs = torch.tensor([[0.9, 0.2, 0.1, 0.5, 0.0, 0.0, 0.5]])
    assert violations(probs, C).shape == (1, 5)
    high = torch.full((7,), 0.95)
    assert violation_rate(probs, C, threshold=high) == 0.0
    assert violation_rate(torch.zeros(0, 7), C) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(logits, min_size=1, max_size=4),
       st.lists(st.floats(0.05, 0.95), min_size=len(LABELS), max_size=len(LABELS)))
def test_decisions_consistent_with_per_label_thresholds(batch, thresholds):
    probs = torch.sigmoid(torch.tensor(batch))
    t = torch.tensor(thresholds)
    decisions, _ = consistent_decisions(probs, C, t)
    assert violation_rate(decisions.float(), C, threshold=0.5) == 0.0
    # labels no constraint touches keep their plain thresholded decision
    assert torch.equal(decisions[:, 6], probs[:, 6] > t[6])


def test_threshold_scores_keep_decisions():
    probs = torch.tensor([[0.1, 0.3, 0.7, 0.95]])
    t = torch.tensor([0.2, 0.3, 0.6, 0.9])
    z = threshold_scores(probs, t)
    assert torch.equal(z > 0.5, probs > t)
    assert z[0].tolist() == pytest.approx([0.25, 0.5, 0.625, 0.75])


def test_per_label_thresholds_need_decision_consistency():
    c = Constraints.from_names(["a", "b"], implications=[("a", "b")])
    probs = torch.tensor([[0.6, 0.6]])  # consistent probabilities...
    t = torch.tensor([0.5, 0.7])
    assert violation_rate(probs, c, threshold=t) == 1.0  # ...inconsistent decisions
    decisions, result = consistent_decisions(probs, c, t)
    assert decisions.tolist() == [[True, True]] and result.repairs[0][0].constraint == "a ⇒ b"
