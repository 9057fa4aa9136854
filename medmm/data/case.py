"""`Case`: one scan with its report, indication, labels and split, as one typed record.

Every data source (generic manifest, CT-RATE, synthetic phantoms) produces `Case` objects, so the
rest of medmm never has to know where a scan came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class Case:
    """One chest-CT scan and everything known about it.

    Attributes:
        case_id: unique id of the scan (e.g. ``"P0007-s0_1"``).
        patient_id: pseudonymous patient id; splits are made per patient, never per scan.
        image: path of the volume (NIfTI file or DICOM folder/file), absolute once read from a manifest.
        report: free-text radiology report (FINDINGS + IMPRESSION) or None.
        indication: clinical indication line or None.
        labels: finding name -> 1 (present), 0 (absent) or -1 (unknown).
        split: ``"train"``, ``"val"``, ``"test"`` or None (not assigned).
        meta: further manifest columns, kept as strings (e.g. ``image_dicom``).

    >>> c = Case("P0001-s0_1", "P0001-s0", "images/P0001-s0_1.nii.gz", labels={"Emphysema": 1})
    >>> c.positives()
    ['Emphysema']
    """

    case_id: str
    patient_id: str
    image: str
    report: str | None = None
    indication: str | None = None
    labels: dict[str, int] = field(default_factory=dict)
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def positives(self) -> list[str]:
        """Names of the findings labelled present, in label order."""
        return [name for name, value in self.labels.items() if value == 1]
