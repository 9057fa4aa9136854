"""Phantom chest anatomy: body wall, lungs, mediastinum, heart, great vessels, airways, skeleton.

A patient is a handful of sampled sizes (`Patient`); `draw_anatomy` rasterises it on a `Grid` in
Hounsfield units together with a tissue map. Sizes are in millimetres, so the same patient drawn
at 32³ or 64³ has the same anatomy at a different resolution. Typical HU (e.g. Lev & Gonzalez,
"CT Number", and any chest-CT atlas): air −1000, lung −850 with a dependent gradient, fat −100,
muscle/soft tissue +40…+60, blood +40 (≈ +250 with arterial contrast), bone +400…+1000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from medmm.data.synth.geometry import Grid, ellipsoid, mark, paint, rotation_z, segment, soft


class Tissue(IntEnum):
    """Tissue classes of the phantom's label map (used by tests and finding placement)."""

    OUTSIDE = 0
    FAT = 1
    MUSCLE = 2
    LUNG = 3
    HEART = 4
    VESSEL = 5
    BONE = 6
    AIRWAY = 7
    ABDOMEN = 8
    MEDIASTINUM = 9
    CARTILAGE = 10


LOBES: dict[str, tuple[float, float, float]] = {
    # lobe -> bronchial target as fractions of (cavity half-width, half-depth, lung height)
    "right upper lobe": (-0.55, -0.05, 0.85),
    "right middle lobe": (-0.60, -0.60, 0.36),
    "right lower lobe": (-0.55, 0.55, 0.12),
    "left upper lobe": (0.55, -0.10, 0.82),
    "lingula": (0.62, -0.55, 0.38),
    "left lower lobe": (0.55, 0.55, 0.12),
}


@dataclass(frozen=True)
class Patient:
    """Patient-level anatomy sizes (mm) and the seed of the airway/vessel tree."""

    age: int
    sex: str
    half_width: float  # thoracic cavity, lateral semi-axis
    half_depth: float  # thoracic cavity, antero-posterior semi-axis
    lung_height: float  # right dome to apex
    fat: float  # subcutaneous fat thickness
    muscle: float
    left_dome_drop: float
    heart_scale: float
    heart_angle: float
    aorta_radius: float
    lung_hu: float
    tree_seed: int


def sample_patient(rng: np.random.Generator, age: int, sex: str) -> Patient:
    """Draw a patient's anatomy (men larger on average; aorta widens with age)."""
    male = sex == "M"
    half_width = rng.normal(140 if male else 128, 8)
    return Patient(
        age=age,
        sex=sex,
        half_width=float(np.clip(half_width, 110, 165)),
        half_depth=float(np.clip(half_width * rng.uniform(0.66, 0.80), 80, 125)),
        lung_height=float(rng.uniform(215, 265) if male else rng.uniform(200, 245)),
        fat=float(rng.uniform(10, 35)),
        muscle=float(rng.uniform(7, 13)),
        left_dome_drop=float(rng.uniform(8, 22)),
        heart_scale=float(rng.uniform(0.92, 1.06)),
        heart_angle=float(np.deg2rad(rng.uniform(28, 45))),
        aorta_radius=float(np.clip(11 + (age - 40) * 0.06 + rng.normal(0, 1.0), 10, 17)),
        lung_hu=float(rng.uniform(-875, -835)),
        tree_seed=int(rng.integers(2**31)),
    )


@dataclass
class AnatomyMods:
    """Changes findings make to the anatomy itself (drawn with it, not on top of it)."""

    heart_scale: float = 1.0  # cardiomegaly
    pericardial_fluid_mm: float = 0.0  # pericardial effusion
    airway_dilation: dict[str, float] = field(default_factory=dict)  # bronchiectasis, lobe -> lumen factor
    airway_wall_mm: float = 0.0  # peribronchial thickening, extra wall
    dome_elevation: dict[str, float] = field(default_factory=dict)  # atelectasis volume loss, "right"/"left" -> mm


@dataclass
class Landmarks:
    """Where things are, for findings and tests (body mm)."""

    half_width: float
    half_depth: float
    lung_height: float
    heart_centre: np.ndarray
    heart_radii: np.ndarray
    heart_rotation: np.ndarray
    aorta: list[tuple[np.ndarray, np.ndarray, float]]
    hila: dict[str, np.ndarray]
    carina: np.ndarray
    spine: np.ndarray
    airways: list[dict]
    dome: np.ndarray  # diaphragm height w_d(u, v) on the grid, shape (X, Y, 1)
    lung: np.ndarray  # bool lung mask before lung findings
    contrast: bool
    blood_hu: float


def cavity_axes(p: Patient, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cavity semi-axes at height ``w``: the thorax narrows towards the apex."""
    t = np.clip((w - 0.45 * p.lung_height) / (0.6 * p.lung_height), 0.0, 1.0)
    return p.half_width * (1 - 0.38 * t**2), p.half_depth * (1 - 0.18 * t**2)


def diaphragm(p: Patient, u: np.ndarray, v: np.ndarray, mods: AnatomyMods) -> np.ndarray:
    """Diaphragm height: two domes (right higher), lower posteriorly (costophrenic recesses)."""
    a, b = p.half_width, p.half_depth
    right = mods.dome_elevation.get("right", 0.0) - 75 * ((u + 0.45 * a) / a) ** 2 - 70 * ((v + 0.1 * b) / b) ** 2
    left = -p.left_dome_drop + mods.dome_elevation.get("left", 0.0) - 75 * ((u - 0.45 * a) / a) ** 2 - 70 * ((v + 0.1 * b) / b) ** 2
    return np.maximum(right, left)


def _tree(p: Patient, hila: dict[str, np.ndarray], carina: np.ndarray, mods: AnatomyMods) -> list[dict]:
    """Bronchial tree: main, lobar, segmental and subsegmental segments with lumen/wall radii."""
    rng = np.random.default_rng(p.tree_seed)
    scale = np.array([p.half_width, p.half_depth, p.lung_height], np.float32)
    out = []
    for side in ("right", "left"):
        out.append(dict(p0=carina, p1=hila[side], lumen=6.5 if side == "right" else 6.0, wall=1.5, lobe=None, gen=0))
    for lobe, frac in LOBES.items():
        side = lobe.split()[0] if lobe != "lingula" else "left"
        hilum = hila[side]
        target = np.asarray(frac, np.float32) * scale
        dilate = mods.airway_dilation.get(lobe, 1.0)
        lobar_end = hilum + 0.42 * (target - hilum)
        out.append(dict(p0=hilum, p1=lobar_end, lumen=4.5, wall=1.2, lobe=lobe, gen=1))
        for _ in range(3):
            direction = (target - lobar_end) / max(np.linalg.norm(target - lobar_end), 1e-3)
            direction = direction + rng.normal(0, 0.45, 3).astype(np.float32)
            direction /= np.linalg.norm(direction)
            seg_end = lobar_end + direction * np.linalg.norm(target - lobar_end) * rng.uniform(0.55, 0.8)
            out.append(dict(p0=lobar_end, p1=seg_end, lumen=3.0 * dilate, wall=1.0, lobe=lobe, gen=2))
            for _ in range(2):
                d2 = direction + rng.normal(0, 0.5, 3).astype(np.float32)
                d2 /= np.linalg.norm(d2)
                sub_end = seg_end + d2 * rng.uniform(22, 38)
                out.append(dict(p0=seg_end, p1=sub_end, lumen=2.0 * dilate, wall=0.7, lobe=lobe, gen=3))
    for seg in out:
        seg["wall"] = seg["wall"] + (mods.airway_wall_mm if seg["gen"] >= 1 else 0.0)
        seg["p0"] = np.asarray(seg["p0"], np.float32)
        seg["p1"] = np.asarray(seg["p1"], np.float32)
    return out


def draw_anatomy(grid: Grid, p: Patient, mods: AnatomyMods, contrast: bool) -> tuple[np.ndarray, np.ndarray, Landmarks]:
    """Rasterise the patient's normal anatomy (plus anatomy-level finding changes).

    Returns:
        (hu float32 (X, Y, Z), tissue uint8 (X, Y, Z), landmarks). Lung vessels and airways are
        drawn separately by `draw_lung_tree`, after parenchymal findings, so air bronchograms
        and vessels stay visible inside opacities.
    """
    h = grid.voxel
    a, b, H = p.half_width, p.half_depth, p.lung_height
    U, V, W = grid.mesh()
    shape = grid.shape
    hu = np.full(shape, -1000.0, np.float32)
    tissue = np.zeros(shape, np.uint8)
    blood = float(250 + 40 * np.tanh((p.age - 50) / 30)) if contrast else 40.0

    ca, cb = cavity_axes(p, W)
    def ellipse_frac(extra_a, extra_b, dv=0.0):
        r = np.sqrt((U / (ca + extra_a)) ** 2 + ((V - dv) / (cb + extra_b)) ** 2)
        return soft((1 - r) * (cb + extra_b), h)

    body = ellipse_frac(p.muscle + p.fat, p.muscle + p.fat + 12, dv=6)
    paint(hu, None, body, -100.0)
    mark(tissue, None, body, Tissue.FAT)
    wall = ellipse_frac(p.muscle, p.muscle + 14, dv=6)
    paint(hu, None, wall, 50.0)
    mark(tissue, None, wall, Tissue.MUSCLE)
    cavity = ellipse_frac(0.0, 0.0)
    dome = diaphragm(p, U, V, mods)
    above = soft(W - dome, h)
    apex = soft(H - W - 40 * (np.abs(U) / ca - 0.5) ** 2 * 4 - 30 * (V / cb) ** 2, h)
    thorax = cavity * above
    abdomen = cavity * (1 - above)
    paint(hu, None, thorax, -90.0)
    mark(tissue, None, thorax, Tissue.MEDIASTINUM)
    paint(hu, None, abdomen, 100.0 if contrast else 58.0)  # liver / upper abdomen
    mark(tissue, None, abdomen, Tissue.ABDOMEN)

    # lungs: the thorax minus a central mediastinal column, under the apical domes
    med_half = 20.0 + 6.0 * np.clip((V + 0.2 * b) / b, 0, 1)
    lung_frac = thorax * apex * soft(np.abs(U) - med_half, h) * ellipse_frac(-3.0, -3.0)
    lung_hu = p.lung_hu + 30.0 * (V / b)  # dependent (posterior) lung is denser
    paint(hu, None, lung_frac, lung_hu)
    mark(tissue, None, lung_frac, Tissue.LUNG)

    # abdomen below the domes: stomach (left, fluid with an air cap) and spleen
    fluid_sl, f, _ = ellipsoid(grid, (0.45 * a, -0.15 * b, -38), (42, 36, 30))
    if fluid_sl is not None:
        f = f * (1 - above[fluid_sl])
        paint(hu, fluid_sl, f, 15.0)
        air = f * soft((-0.15 * b - 12) - V[:, fluid_sl[1], :], h)
        paint(hu, fluid_sl, air, -1000.0)
    sl, f, _ = ellipsoid(grid, (0.55 * a, 0.45 * b, -40), (30, 35, 35))
    if sl is not None:
        paint(hu, sl, f * (1 - above[sl]), 110.0 if contrast else 48.0)

    # heart inside its pericardium; pericardial fat outermost, then fluid, epicardial fat, muscle, blood
    scale = p.heart_scale * mods.heart_scale
    radii = np.array([0.43 * a * scale, 0.36 * b * scale, 0.21 * H * min(scale, 1.15)], np.float32)
    rot = rotation_z(p.heart_angle)
    centre = np.array([0.14 * a + 0.1 * (radii[0] - 0.43 * a), -0.32 * b, radii[2] * 0.75 - 18], np.float32)
    peri = mods.pericardial_fluid_mm
    layers = [(4.0 + peri + 5.0, -95.0, Tissue.MEDIASTINUM)]
    if peri > 0:
        layers.append((4.0 + peri, 12.0, Tissue.HEART))
    layers += [(4.0, -90.0, Tissue.MEDIASTINUM), (0.0, 45.0, Tissue.HEART)]
    for grow, value, label in layers:
        sl, f, _ = ellipsoid(grid, centre, radii + grow, rot)
        if sl is not None:
            f = f * soft(W[..., sl[2]] - dome[sl[0], sl[1], :] + 6, h)
            paint(hu, sl, f, value)
            mark(tissue, sl, f, label)
    sl, f, _ = ellipsoid(grid, centre, radii * 0.74, rot)
    if sl is not None:
        paint(hu, sl, f * above[sl], blood)

    # great vessels, trachea, oesophagus (as tube polylines)
    def tubes(points, radius, value, label, r_end=None):
        for k in range(len(points) - 1):
            r0 = radius if r_end is None else radius + (r_end - radius) * k / (len(points) - 1)
            r1 = radius if r_end is None else radius + (r_end - radius) * (k + 1) / (len(points) - 1)
            sl, f = segment(grid, points[k], points[k + 1], r0, r1)
            if sl is not None:
                paint(hu, sl, f, value)
                mark(tissue, sl, f, label)

    s = np.array([a, b, H], np.float32)
    aorta_pts = [np.array(q, np.float32) * s for q in
                 [(-0.06, -0.16, 0.40), (-0.10, -0.30, 0.64), (-0.02, -0.12, 0.76), (0.10, 0.30, 0.72),
                  (0.15, 0.52, 0.60), (0.13, 0.58, 0.25)]]
    aorta_pts.append(np.array([0.08 * a, 0.58 * b, -60], np.float32))
    r_ao = p.aorta_radius
    tubes(aorta_pts[:2], r_ao * 1.15, blood, Tissue.VESSEL)
    tubes(aorta_pts[1:], r_ao, blood, Tissue.VESSEL)
    for du in (-0.10, 0.0, 0.08):  # arch branches
        base = np.array([du * a, (-0.2 + 0.3 * (du + 0.1)) * b, 0.74 * H], np.float32)
        tubes([base, base + np.array([du * a * 0.6, 5, 0.35 * H], np.float32)], 5.5, blood, Tissue.VESSEL)
    tubes([np.array([-0.18 * a, -0.18 * b, 1.05 * H]), np.array([-0.17 * a, -0.2 * b, 0.48 * H])], 9.0,
          blood * 0.7 + 12 if contrast else blood, Tissue.VESSEL)  # superior vena cava
    trunk_top = np.array([0.10 * a, -0.18 * b, 0.60 * H], np.float32)
    tubes([np.array([0.10 * a, -0.45 * b, 0.46 * H], np.float32), trunk_top], 13.0, blood, Tissue.VESSEL)
    hila = {"right": np.array([-0.33 * a, 0.10 * b, 0.53 * H], np.float32),
            "left": np.array([0.33 * a, 0.14 * b, 0.55 * H], np.float32)}
    for side in ("right", "left"):
        tubes([trunk_top, hila[side]], 10.0, blood, Tissue.VESSEL)
    tubes([np.array([0.03 * a, 0.42 * b, 1.1 * H]), np.array([0.06 * a, 0.45 * b, 0.3 * H]),
           np.array([0.15 * a, 0.30 * b, -30.0])], 7.5, 45.0, Tissue.MUSCLE)  # oesophagus
    carina = np.array([0.0, 0.18 * b, 0.62 * H], np.float32)
    trachea = [np.array([0.0, 0.05 * b, 1.1 * H], np.float32), carina]
    tubes(trachea, 11.0, 45.0, Tissue.AIRWAY)
    tubes(trachea, 9.0, -1000.0, Tissue.AIRWAY)

    spine = _draw_skeleton(grid, p, hu, tissue, U, V, W)
    lung = tissue == Tissue.LUNG
    airways = _tree(p, hila, carina, mods)
    aorta = [(aorta_pts[k], aorta_pts[k + 1], r_ao) for k in range(len(aorta_pts) - 1)]
    lm = Landmarks(a, b, H, centre, radii, rot, aorta, hila, carina, spine, airways, dome, lung, contrast, blood)
    return hu, tissue, lm


def _draw_skeleton(grid: Grid, p: Patient, hu, tissue, U, V, W) -> np.ndarray:
    """Vertebrae with discs and canal, ribs with costal cartilage, sternum. Returns the spine axis."""
    h = grid.voxel
    a, b, H = p.half_width, p.half_depth, p.lung_height
    spine = np.array([0.0, 0.80 * b + 8], np.float32)
    w_axis = grid.axes[2]
    body_r = 17.0
    level_h = 26.0
    for z0 in np.arange(-80.0, 1.2 * H, level_h):
        if z0 + level_h < w_axis[0] - h or z0 > w_axis[-1] + h:
            continue
        p0 = np.array([spine[0], spine[1], z0 + 2.5], np.float32)
        p1 = np.array([spine[0], spine[1], z0 + level_h - 2.5], np.float32)
        sl, f = segment(grid, p0, p1, body_r)
        if sl is not None:
            paint(hu, sl, f, 950.0)  # cortex
            mark(tissue, sl, f, Tissue.BONE)
        sl, f = segment(grid, p0, p1, body_r - 3.0)
        if sl is not None:
            paint(hu, sl, f, 300.0)  # trabecular bone
    lo, hi = float(w_axis[0]) - 10, float(w_axis[-1]) + 10
    for du, dv, r in ((0, 28, 13.0), (0, 50, 6.0), (0, 62, 5.0), (-24, 30, 6.0), (24, 30, 6.0)):
        # posterior elements: lamina ring, spinous and transverse processes (continuous rods)
        sl, f = segment(grid, (du, spine[1] + dv, lo), (du, spine[1] + dv, hi), r)
        if sl is not None:
            paint(hu, sl, f, 700.0)
            mark(tissue, sl, f, Tissue.BONE)
    sl, f = segment(grid, (0, spine[1] + 28, lo), (0, spine[1] + 28, hi), 7.5)
    if sl is not None:
        paint(hu, sl, f, 15.0)  # spinal canal (CSF / cord)
        mark(tissue, sl, f, Tissue.MUSCLE)

    # ribs: bands on the cavity wall, sloping down towards the front
    ca, cb = cavity_axes(p, W)
    r = np.sqrt((U / ca) ** 2 + (V / cb) ** 2)
    shell = (r > 1.0) & (r < 1.0 + 14.0 / cb)
    idx = np.nonzero(shell)
    uu, vv, ww = U[idx[0], 0, 0], V[0, idx[1], 0], W[0, 0, idx[2]]
    theta = np.arctan2(np.abs(uu) / p.half_width, vv / p.half_depth)  # 0 at the back, pi at the front
    cbi = np.broadcast_to(cb, r.shape)[idx]
    radial = soft(np.minimum(r[idx] - 1.0 - 2.0 / cbi, 1.0 + 12.0 / cbi - r[idx]) * cbi, h)
    rib_hu = np.zeros(len(uu), np.float32)
    rib_frac = np.zeros(len(uu), np.float32)
    for z_back in np.arange(0.08 * H, 1.05 * H, 0.11 * H):
        z_rib = z_back - 0.33 * H * (1 - np.cos(theta)) / 2
        f = soft(4.0 - np.abs(ww - z_rib), h) * radial
        cartilage = theta > 0.78 * np.pi
        better = f > rib_frac
        rib_frac = np.where(better, f, rib_frac)
        rib_hu = np.where(better, np.where(cartilage, 150.0, 700.0), rib_hu)
    region = hu[idx]
    hu[idx] = region + rib_frac * (rib_hu - region)
    tissue[idx] = np.where(rib_frac > 0.5, np.where(rib_hu > 200, Tissue.BONE, Tissue.CARTILAGE), tissue[idx])

    # sternum: anterior midline, manubrium to xiphoid
    top = np.array([0.0, -p.half_depth - 5, 0.88 * H], np.float32)
    bottom = np.array([0.0, -p.half_depth - 3, 0.22 * H], np.float32)
    sl, f = segment(grid, top, bottom, 9.0)
    if sl is not None:
        paint(hu, sl, f, 600.0)
        mark(tissue, sl, f, Tissue.BONE)
    return spine


def draw_lung_tree(grid: Grid, hu: np.ndarray, tissue: np.ndarray, lm: Landmarks, seed: int) -> np.ndarray:
    """Pulmonary vessels (beside each bronchus, plus veins) and the bronchial tree.

    Args:
        seed: the patient's tree seed (veins are placed from it).

    Returns:
        The airway-lumen fraction (used to keep air bronchograms inside consolidation).
    """
    lung = lm.lung
    rng = np.random.default_rng([seed, 1])
    inside = np.zeros(grid.shape, np.float32)
    for seg in lm.airways:
        if seg["gen"] == 0:
            continue
        d = seg["p1"] - seg["p0"]
        perp = np.cross(d, np.array([0.3, 0.2, 1.0], np.float32))
        perp /= max(np.linalg.norm(perp), 1e-3)
        offset = perp * (seg["lumen"] + seg["wall"] + 2.5)
        r_art = 2.2 if seg["gen"] == 3 else (3.2 if seg["gen"] == 2 else 5.0)
        sl, f = segment(grid, seg["p0"] + offset, seg["p1"] + offset, r_art, r_art * 0.8)
        if sl is not None:
            f = f * lung[sl]
            paint(hu, sl, f, lm.blood_hu)
    heart_back = lm.heart_centre + np.array([0, 0.5 * lm.heart_radii[1], 0.3 * lm.heart_radii[2]], np.float32)
    for _ in range(14):  # veins: periphery -> left atrium
        side = rng.choice([-1.0, 1.0])
        start = np.array([side * rng.uniform(0.5, 0.8) * lm.half_width, rng.uniform(-0.5, 0.6) * lm.half_depth,
                          rng.uniform(0.1, 0.7) * lm.lung_height], np.float32)
        end = heart_back + np.array([side * 25, 0, 0], np.float32)
        sl, f = segment(grid, start, end, 1.8, 4.0)
        if sl is not None:
            paint(hu, sl, f * lung[sl], lm.blood_hu)
    for seg in lm.airways:
        sl, f = segment(grid, seg["p0"], seg["p1"], seg["lumen"] + seg["wall"])
        if sl is not None:
            if seg["gen"] >= 2:
                f = f * lung[sl]
            paint(hu, sl, f, 40.0)
    for seg in lm.airways:
        sl, f = segment(grid, seg["p0"], seg["p1"], seg["lumen"])
        if sl is not None:
            if seg["gen"] >= 2:
                f = f * lung[sl]
            paint(hu, sl, f, -1000.0)
            mark(tissue, sl, f, Tissue.AIRWAY)
            np.maximum(inside[sl], f, out=inside[sl])
    return inside
