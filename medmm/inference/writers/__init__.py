"""Writers of a :class:`~medmm.inference.Result`: ``result.json``, ``report.html``, DICOM SR, FHIR.

Every file is written atomically (temp file in the target folder, then ``os.replace``), never
inside the input's folder, and carries no PHI (see ``docs/inference.md``).
"""

from __future__ import annotations

from medmm.inference.writers.files import (
    atomic_write_bytes,
    atomic_write_text,
    check_out_dir,
    default_out_dir,
    scan_name,
    write_outputs,
)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "check_out_dir",
    "default_out_dir",
    "scan_name",
    "write_outputs",
]
