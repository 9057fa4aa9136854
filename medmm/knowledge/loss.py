"""Knowledge-regularisation (KR) loss: a differentiable penalty for violating the ontology.

Added to the BCE with a weight from the workflow (``loss.kr_weight``), it teaches the model the
implications and exclusions even for labels that are missing in the training data.

Two forms, both zero exactly when a constraint holds on hard 0/1 outputs:

``hinge`` (Lukasiewicz-style, as in the max-constraint view of C-HMCNN, Giunchiglia &
Lukasiewicz, NeurIPS 2020):
    implication a => b:  relu(p_a - p_b)          (zero iff p_a <= p_b)
    exclusion  a ⊥ b:    relu(p_a + p_b - 1)      (zero iff p_a + p_b <= 1)

``product`` (semantic loss with the product t-norm, Xu et al., ICML 2018, under independent
Bernoulli outputs):
    implication a => b:  -log(1 - p_a (1 - p_b))  (-log P[constraint satisfied])
    exclusion  a ⊥ b:    -log(1 - p_a p_b)

The loss is the mean over all (sample, constraint) pairs.
"""

from __future__ import annotations

import torch

from medmm.knowledge.constraints import Constraints

FORMS = ("hinge", "product")
_EPS = 1e-7  # keeps -log finite when a constraint is violated with certainty


def constraint_terms(probs: torch.Tensor, constraints: Constraints, form: str = "hinge") -> torch.Tensor:
    """Per-(sample, constraint) penalties, implications first then exclusions.

    Args:
        probs: [B, L] probabilities in [0, 1], columns in ``constraints.labels`` order.
        constraints: from :meth:`Ontology.constraints`.
        form: ``"hinge"`` or ``"product"``.

    Returns:
        [B, K + M] tensor of non-negative penalties.

    Raises:
        ValueError: for an unknown form or a shape mismatch.
    """
    if form not in FORMS:
        raise ValueError(f"unknown knowledge-loss form {form!r}; expected one of {FORMS}")
    constraints.check_probs(probs)
    imp = constraints.implications.to(probs.device)
    exc = constraints.exclusions.to(probs.device)
    pa, pb = probs[:, imp[:, 0]], probs[:, imp[:, 1]]
    qa, qb = probs[:, exc[:, 0]], probs[:, exc[:, 1]]
    if form == "hinge":
        terms = [torch.relu(pa - pb), torch.relu(qa + qb - 1.0)]
    else:
        terms = [-torch.log((1.0 - pa * (1.0 - pb)).clamp_min(_EPS)),
                 -torch.log((1.0 - qa * qb).clamp_min(_EPS))]
    return torch.cat(terms, dim=1)


def knowledge_loss(probs: torch.Tensor, constraints: Constraints, form: str = "hinge") -> torch.Tensor:
    """Mean constraint-violation penalty over the batch and all constraints.

    Args:
        probs: [B, L] probabilities (e.g. ``torch.sigmoid(logits)``).
        constraints: implication/exclusion pairs over the same L labels.
        form: ``"hinge"`` (relu of the violation) or ``"product"`` (product t-norm semantic loss).

    Returns:
        Scalar tensor; zero (still attached to the graph) when there are no constraints.

    >>> from medmm.knowledge import Constraints
    >>> c = Constraints.from_names(["A", "B"], implications=[("A", "B")])
    >>> round(float(knowledge_loss(torch.tensor([[0.9, 0.4]]), c)), 4)  # relu(0.9 - 0.4)
    0.5
    """
    terms = constraint_terms(probs, constraints, form)
    if terms.numel() == 0:
        return probs.sum() * 0.0
    return terms.mean()
