"""`Volume`: one 3D image together with its geometry and de-identified metadata.

Like TorchIO's ``ScalarImage``, the voxels never travel without the affine, so whoever holds a
`Volume` can always ask for spacing and orientation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Largest volume medmm allocates (1024³ voxels, 4 GiB as float32; a 512 x 512 x 2000 chest CT has
# 5.2e8). Headers declaring more are not believed: NIfTI, DICOM series and multi-frame alike.
MAX_VOXELS = 2**30

# DICOM patient coordinates are LPS; medmm (like nibabel and MONAI's default) uses RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a voxel→LPS affine into a voxel→RAS affine (the flip is its own inverse)."""
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


ras_to_lps = lps_to_ras


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter axis code of a voxel→RAS affine, e.g. ``"RAS"`` or ``"LPS"`` (via nibabel)."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


@dataclass(eq=False)
class Volume:
    """A 3D scalar image in world space.

    Attributes:
        array: float32 array ``(X, Y, Z)``: i = DICOM column, j = DICOM row, k = slice. HU for CT.
        affine: 4×4 float64, voxel index ``(i, j, k, 1)`` → RAS world millimetres.
        meta: de-identified metadata (modality, manufacturer, series_description,
            slice_thickness, source_format, n_files, ...); never names, IDs, dates or UIDs.
        source_files: DICOM files in slice order (empty for NIfTI).

    >>> import numpy as np
    >>> v = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.7, 0.7, 2.0, 1.0]))
    >>> v.spacing
    (0.7, 0.7, 2.0)
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    source_files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D (X, Y, Z), got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got {self.affine.shape}")
        self.source_files = [Path(p) for p in self.source_files]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (norms of the affine's columns)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(round(n, 6)) for n in norms)  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Axis code such as ``"LPS"``: the world direction each array axis increases towards."""
        return orientation_code(self.affine)

    def hu_range(self) -> tuple[float, float]:
        """(min, max) of the voxel values."""
        return float(self.array.min()), float(self.array.max())

    def to_nifti(self, path: str | Path) -> Path:
        """Write this volume as NIfTI (``.nii`` or ``.nii.gz``) with the same voxel→RAS affine."""
        from medmm.io.writers import write_nifti

        return write_nifti(self.array, self.affine, path)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        modality = self.meta.get("modality", "?")
        return (
            f"Volume(shape={self.shape}, spacing=({sp}) mm, orientation={self.orientation}, "
            f"modality={modality}, source={self.meta.get('source_format', '?')})"
        )
