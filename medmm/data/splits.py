"""Patient-level train/val/test splits: every scan of a patient lands in the same split.

Follow-up scans of one patient are nearly identical images; putting them on both sides of a split
would leak. Assignment is a seeded permutation of the sorted patient ids, so it is deterministic
and independent of the order cases arrive in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from medmm.data.case import SPLITS, Case

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.70, 0.15, 0.15)


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``fractions`` (largest remainder); each non-zero share gets >= 1 if n allows."""
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in range(len(counts)):  # small n: don't leave a requested split empty
        if fractions[i] > 0 and counts[i] == 0 and n >= sum(f > 0 for f in fractions):
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def split_patients(
    patient_ids: Iterable[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, str]:
    """Assign each distinct patient id to ``"train"``, ``"val"`` or ``"test"``.

    Args:
        patient_ids: ids (duplicates allowed; one scan each).
        fractions: shares of patients for train/val/test; must be >= 0 and sum to 1.
        seed: permutation seed; same ids + seed -> same assignment.

    Returns:
        patient id -> split name.

    Raises:
        ValueError: fractions of the wrong length, negative, or not summing to 1.

    >>> split_patients(["a", "b", "c"], seed=0)  # doctest: +SKIP
    {'b': 'train', 'a': 'val', 'c': 'test'}
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    ids = sorted(set(patient_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    counts = _counts(len(ids), fractions)
    assignment: dict[str, str] = {}
    start = 0
    for split, count in zip(SPLITS, counts):
        for idx in order[start : start + count]:
            assignment[ids[idx]] = split
        start += count
    return assignment


def assign_splits(
    cases: Sequence[Case],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> list[Case]:
    """Copies of ``cases`` with ``split`` set per patient (see `split_patients`)."""
    assignment = split_patients((c.patient_id for c in cases), fractions, seed)
    return [replace(c, split=assignment[c.patient_id]) for c in cases]


def split_overlap(cases: Iterable[Case]) -> dict[str, set[str]]:
    """Patients whose scans fall into more than one split: patient id -> set of splits."""
    seen: dict[str, set[str]] = {}
    for c in cases:
        if c.split is not None:
            seen.setdefault(c.patient_id, set()).add(c.split)
    return {pid: splits for pid, splits in seen.items() if len(splits) > 1}
