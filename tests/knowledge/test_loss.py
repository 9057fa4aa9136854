"""Knowledge-regularisation loss: hand-computed values and gradient checks."""

from __future__ import annotations

import math

import pytest
import torch

from medmm.knowledge import Constraints, constraint_terms, knowledge_loss

# labels a, b, c: a => b, a ⊥ c
C = Constraints.from_names(["a", "b", "c"], implications=[("a", "b")], exclusions=[("a", "c")])


@pytest.mark.parametrize(
    "probs,form,expected",
    [
        ([[0.9, 0.6, 0.3]], "hinge", (0.3 + 0.2) / 2),  # relu(.9-.6), relu(.9+.3-1)
        ([[0.9, 0.6, 0.3]], "product", (-math.log(1 - 0.9 * 0.4) - math.log(1 - 0.9 * 0.3)) / 2),
        ([[0.9, 0.6, 0.3], [0.2, 0.5, 0.1]], "hinge", (0.3 + 0.2 + 0 + 0) / 4),
        ([[0.9, 0.6, 0.3], [0.2, 0.5, 0.1]], "product",
         (-math.log(0.64) - math.log(0.73) - math.log(1 - 0.2 * 0.5) - math.log(1 - 0.2 * 0.1)) / 4),
        ([[0.0, 1.0, 1.0]], "hinge", 0.0),  # satisfied on hard outputs
        ([[0.0, 1.0, 1.0]], "product", 0.0),
        ([[1.0, 0.0, 0.0]], "hinge", (1.0 + 0.0) / 2),
    ],
)
def test_hand_computed_values(probs, form, expected):
    value = knowledge_loss(torch.tensor(probs, dtype=torch.float64), C, form=form)
    assert value.ndim == 0
    assert value.item() == pytest.approx(expected, abs=1e-9)


def test_terms_layout():
    terms = constraint_terms(torch.tensor([[0.9, 0.6, 0.3]]), C, "hinge")
    assert terms.shape == (1, 2)
    assert terms[0].tolist() == pytest.approx([0.3, 0.2], abs=1e-6)


def test_certain_violation_is_finite():
    value = knowledge_loss(torch.tensor([[1.0, 0.0, 1.0]]), C, form="product")
    assert torch.isfinite(value) and value > 10


@pytest.mark.parametrize("form", ["hinge", "product"])
def test_gradcheck(form):
    torch.manual_seed(0)
    # away from the hinge kinks (p_a - p_b = 0, p_a + p_c = 1), where the loss is not differentiable
    probs = torch.tensor([[0.9, 0.55, 0.35], [0.2, 0.7, 0.1], [0.6, 0.3, 0.8]], dtype=torch.float64,
                         requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: knowledge_loss(p, C, form=form), (probs,))


def test_gradient_direction():
    """The hinge gradient lowers the antecedent and raises the consequent of a violated implication."""
    probs = torch.tensor([[0.9, 0.6, 0.05]], requires_grad=True)
    knowledge_loss(probs, C).backward()
    assert probs.grad[0, 0] > 0 and probs.grad[0, 1] < 0 and probs.grad[0, 2] == 0


def test_no_constraints_gives_attached_zero():
    empty = Constraints.from_names(["a", "b"])
    probs = torch.rand(4, 2, requires_grad=True)
    value = knowledge_loss(probs, empty)
    value.backward()
    assert value.item() == 0.0 and probs.grad is not None


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown knowledge-loss form 'fuzzy'"):
        knowledge_loss(torch.rand(1, 3), C, form="fuzzy")
    with pytest.raises(ValueError, match="shape"):
        knowledge_loss(torch.rand(1, 4), C)
