"""Logical constraints between model outputs, as index tensors.

:class:`Constraints` is what the loss, the consistency operator and the metrics consume: it
knows nothing about RDF, only which output index implies or excludes which. It is produced by
:meth:`medmm.knowledge.Ontology.constraints`, which has already closed the implications
transitively, so every consumer can treat each pair independently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Constraints:
    """Implications (a => b) and exclusions (not both a and b) over ``labels``.

    Attributes:
        labels: output labels, in model output order.
        implications: LongTensor [K, 2]; row ``(a, b)`` means p(a) <= p(b) must hold.
        exclusions: LongTensor [M, 2]; row ``(a, b)`` means p(a) + p(b) <= 1 must hold.
    """

    labels: tuple[str, ...]
    implications: torch.Tensor
    exclusions: torch.Tensor

    @classmethod
    def from_pairs(cls, labels: Sequence[str], implications: Sequence[tuple[int, int]],
                   exclusions: Sequence[tuple[int, int]]) -> Constraints:
        """Build from lists of index pairs (exclusions are stored with a < b, de-duplicated)."""
        excl = sorted({(min(a, b), max(a, b)) for a, b in exclusions})
        impl = sorted(set(map(tuple, implications)))
        return cls(tuple(labels), _pairs(impl), _pairs(excl))

    @classmethod
    def from_names(cls, labels: Sequence[str], implications: Sequence[tuple[str, str]] = (),
                   exclusions: Sequence[tuple[str, str]] = ()) -> Constraints:
        """Build from label-name pairs (handy in tests and notebooks; no closure is applied)."""
        index = {lab: i for i, lab in enumerate(labels)}
        return cls.from_pairs(labels, [(index[a], index[b]) for a, b in implications],
                              [(index[a], index[b]) for a, b in exclusions])

    def __len__(self) -> int:
        return len(self.implications) + len(self.exclusions)

    def __repr__(self) -> str:
        return f"Constraints(labels={len(self.labels)}, implications={len(self.implications)}, exclusions={len(self.exclusions)})"

    def describe(self) -> list[str]:
        """Human-readable constraints: implications first (``a ⇒ b``), then exclusions (``a ⊥ b``)."""
        return [self.implication_name(k) for k in range(len(self.implications))] + [
            self.exclusion_name(k) for k in range(len(self.exclusions))]

    def implication_name(self, k: int) -> str:
        a, b = self.implications[k].tolist()
        return f"{self.labels[a]} ⇒ {self.labels[b]}"

    def exclusion_name(self, k: int) -> str:
        a, b = self.exclusions[k].tolist()
        return f"{self.labels[a]} ⊥ {self.labels[b]}"

    def to(self, device: torch.device | str) -> Constraints:
        """The same constraints with index tensors on ``device``."""
        return Constraints(self.labels, self.implications.to(device), self.exclusions.to(device))

    def check_probs(self, probs: torch.Tensor) -> None:
        """Raise ValueError unless ``probs`` is [B, len(labels)] (a programming error, not user input)."""
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise ValueError(f"expected probabilities of shape [B, {len(self.labels)}], got {tuple(probs.shape)}")


def _pairs(pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    return torch.tensor(list(pairs), dtype=torch.long).reshape(-1, 2)
