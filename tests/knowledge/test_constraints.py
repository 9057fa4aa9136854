"""Constraint extraction: transitive closure, inherited exclusions, tensors."""

from __future__ import annotations

import pytest
import torch

from medmm.errors import MedmmConfigError
from medmm.knowledge import Constraints, load_ontology

from .conftest import CHAIN_TTL


@pytest.mark.parametrize(
    "labels,implications,exclusions",
    [
        (["A", "B"], ["A ⇒ B"], []),  # closed through X, which is no output
        (["A", "X", "B"], ["A ⇒ B", "A ⇒ X", "X ⇒ B"], []),
        (["A", "B", "C"], ["A ⇒ B"], ["A ⊥ C", "B ⊥ C"]),  # C ⊥ B and A => B give A ⊥ C
        (["C", "D"], [], []),
        (["D", "B", "A"], ["A ⇒ B"], []),  # output order respected
    ],
)
def test_closure_and_inherited_exclusions(write_ttl, labels, implications, exclusions):
    c = load_ontology(write_ttl(CHAIN_TTL)).constraints(labels)
    assert sorted(c.implication_name(k) for k in range(len(c.implications))) == sorted(implications)
    assert sorted(c.exclusion_name(k) for k in range(len(c.exclusions))) == sorted(exclusions)
    assert c.implications.dtype == torch.long and c.implications.shape == (len(implications), 2)
    assert c.exclusions.shape == (len(exclusions), 2)
    assert c.labels == tuple(labels)


def test_indices_point_at_labels(write_ttl):
    c = load_ontology(write_ttl(CHAIN_TTL)).constraints(["D", "B", "A"])
    assert c.implications.tolist() == [[2, 1]]


def test_repeated_labels_rejected(write_ttl):
    with pytest.raises(MedmmConfigError, match="labels repeat"):
        load_ontology(write_ttl(CHAIN_TTL)).constraints(["A", "A"])


def test_from_names_and_device():
    c = Constraints.from_names(["a", "b", "c"], implications=[("a", "b")], exclusions=[("c", "a"), ("a", "c")])
    assert c.exclusions.tolist() == [[0, 2]] and len(c) == 2
    assert c.to("cpu").describe() == ["a ⇒ b", "a ⊥ c"]
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        c.check_probs(torch.zeros(2, 4))
