"""Volume I/O: load DICOM (file, folder, zip) and NIfTI into a `Volume`; write DICOM series and NIfTI.

>>> import medmm
>>> vol = medmm.load_volume("scan_dir/")          # doctest: +SKIP
>>> vol                                            # doctest: +SKIP
Volume(shape=(512, 512, 200), spacing=(0.7, 0.7, 1.25) mm, orientation=LPS, ...)
"""

from __future__ import annotations

from medmm.io.dicom_header import read_dicom_header
from medmm.io.loader import list_series, load_volume
from medmm.io.series import SeriesInfo
from medmm.io.volume import Volume, lps_to_ras, orientation_code, ras_to_lps
from medmm.io.writers import write_dicom_series, write_nifti

__all__ = [
    "Volume",
    "load_volume",
    "list_series",
    "SeriesInfo",
    "read_dicom_header",
    "lps_to_ras",
    "ras_to_lps",
    "orientation_code",
    "write_dicom_series",
    "write_nifti",
]

import logging as _logging

# Library logging is quiet by default (warnings also land in Volume.meta["warnings"]).
_logging.getLogger("medmm.io").addHandler(_logging.NullHandler())
