"""One synthetic scan: sample scanner settings, draw anatomy + findings, add blur and noise.

Randomness is split into independent streams keyed by (patient, scan, purpose), so the same
patient rescanned keeps its anatomy and chronic findings, and a test can switch one finding on
while everything else (anatomy, noise) stays bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from medmm.data.synth.anatomy import Landmarks, Patient, draw_anatomy, draw_lung_tree
from medmm.data.synth.context import Canvas
from medmm.data.synth.findings import anatomy_mods, draw_findings, sample_specs
from medmm.data.synth.geometry import Grid, smooth_noise

HU_MIN, HU_MAX = -1024.0, 3071.0


@dataclass(frozen=True)
class Scan:
    """Acquisition-level variation of one scan."""

    fov_mm: float  # square in-plane field of view
    length_mm: float  # cranio-caudal coverage
    offset_mm: tuple[float, float]  # body centre relative to the FOV centre (u, v)
    table_z: float  # world z of the scan centre
    noise_hu: float
    contrast: bool


def sample_scan(rng: np.random.Generator, patient: Patient) -> Scan:
    """Field of view, coverage, centring, noise and contrast of a scan."""
    outer = patient.half_width + patient.fat + patient.muscle
    return Scan(
        fov_mm=float(2 * outer * rng.uniform(1.08, 1.28)),
        length_mm=float((patient.lung_height + 75) * rng.uniform(1.0, 1.12)),
        offset_mm=(float(rng.uniform(-12, 12)), float(rng.uniform(-15, 15))),
        table_z=float(rng.uniform(-250, -100)),
        noise_hu=float(rng.uniform(6, 20)),
        contrast=bool(rng.random() < 0.45),
    )


def make_grid(patient: Patient, scan: Scan, size: int) -> Grid:
    """The scan's voxel grid in body mm (FOV centred off the body by ``scan.offset_mm``)."""
    dxy = scan.fov_mm / size
    dz = scan.length_mm / size
    centre = (scan.offset_mm[0], scan.offset_mm[1], (patient.lung_height - 65) / 2)
    origin = tuple(c - (size - 1) / 2 * d for c, d in zip(centre, (dxy, dxy, dz)))
    return Grid((size, size, size), origin, (dxy, dxy, dz))


@lru_cache(maxsize=8)
def _noise_gain(sigma: float) -> float:
    """Factor that restores unit std to white noise after a Gaussian blur of ``sigma`` voxels."""
    from scipy.ndimage import gaussian_filter1d

    delta = np.zeros(64)
    delta[32] = 1.0
    k = gaussian_filter1d(delta, sigma)
    return float(1.0 / np.sqrt(np.sum(k**2)) ** 3)


@dataclass
class Phantom:
    """A rendered scan with everything tests and reports need."""

    hu: np.ndarray  # float32 (X, Y, Z), clipped to [-1024, 3071]
    affine: np.ndarray  # voxel -> RAS mm
    tissue: np.ndarray  # uint8 tissue map before findings (Tissue enum)
    specs: dict[str, dict]
    grid: Grid
    landmarks: Landmarks
    effects: dict[str, np.ndarray] = field(default_factory=dict)


def render_phantom(patient: Patient, scan: Scan, labels: dict[str, int], size: int, entropy: int, scan_index: int = 0) -> Phantom:
    """Draw one scan of ``patient`` with the positive ``labels`` rendered.

    Args:
        entropy: patient-level seed; finding placement derives from it (stable across follow-ups).
        scan_index: 0 for the first scan, 1 for a follow-up (changes only the noise stream).
    """
    from scipy.ndimage import gaussian_filter

    specs = sample_specs(labels, patient, entropy)
    grid = make_grid(patient, scan, size)
    hu, tissue, lm = draw_anatomy(grid, patient, anatomy_mods(specs), scan.contrast)
    base_tissue = tissue.copy()
    canvas = Canvas(grid, hu, tissue, lm, patient, scan.contrast)
    rng = np.random.default_rng([entropy, scan_index, 5])
    if "Mosaic attenuation pattern" not in specs:  # mild normal heterogeneity, so mosaic is about amplitude
        cells = max(4, int(round(size * grid.spacing[0] / 35.0)))
        hu += 12.0 * np.tanh(smooth_noise(rng, grid.shape, cells)) * lm.lung
    canvas.airway_lumen = draw_lung_tree(grid, hu, tissue, lm, patient.tree_seed)
    draw_findings(canvas, specs, "lung", entropy)
    draw_findings(canvas, specs, "mediastinum", entropy)
    blur = 0.4  # scanner point-spread function, in voxels
    noise = np.random.default_rng([entropy, scan_index, 9]).standard_normal(grid.shape, dtype=np.float32)
    hu += noise * (scan.noise_hu * _noise_gain(blur))
    canvas.hu = hu = gaussian_filter(hu, blur, mode="nearest")
    draw_findings(canvas, specs, "dense", entropy)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    affine = grid.ras_affine((-scan.offset_mm[0], -scan.offset_mm[1], scan.table_z - grid.origin[2] - (size - 1) / 2 * grid.spacing[2]))
    return Phantom(hu.astype(np.float32), affine, base_tissue, specs, grid, lm, canvas.effects)
