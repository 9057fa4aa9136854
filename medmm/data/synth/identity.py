"""Fake but realistic patient identities for the DICOM headers (so de-identification can be tested).

Names, IDs and dates are drawn from the generator seed; none belong to a real person. They go
into DICOM only: manifests carry the pseudonymous ``P0007-s0``-style id instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

FIRST = ["Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Karin", "Lukas",
         "Maria", "Noah", "Olga", "Paul", "Rosa", "Simon", "Tara", "Viktor", "Wanda", "Yusuf", "Zoe", "Aylin"]
LAST = ["Meyer", "Schneider", "Rossi", "Novak", "Jensen", "Garcia", "Kowalski", "Dubois", "Yilmaz", "Horvat",
        "Lindqvist", "Costa", "Fischer", "Moreau", "Papadopoulos", "Kaya", "Berg", "Silva", "Weber", "Brandt"]


@dataclass(frozen=True)
class Identity:
    """DICOM-level PHI of a synthetic patient."""

    name: str  # DICOM PN, "Family^Given"
    patient_id: str  # hospital-style MRN
    birth_date: str  # YYYYMMDD


def sample_identity(rng: np.random.Generator, age: int, first_study: dt.date) -> Identity:
    """A name, an MRN and a birth date consistent with ``age`` at ``first_study``."""
    birth = first_study - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    return Identity(
        name=f"{LAST[int(rng.integers(len(LAST)))]}^{FIRST[int(rng.integers(len(FIRST)))]}",
        patient_id=f"MRN{int(rng.integers(10**6, 10**7))}",
        birth_date=birth.strftime("%Y%m%d"),
    )


def study_dates(rng: np.random.Generator, n_scans: int) -> list[dt.date]:
    """First study in 2018-2024, follow-ups 3-14 months apart."""
    first = dt.date(2018, 1, 1) + dt.timedelta(days=int(rng.integers(0, 7 * 365)))
    dates = [first]
    for _ in range(n_scans - 1):
        dates.append(dates[-1] + dt.timedelta(days=int(rng.integers(90, 420))))
    return dates
