"""Renderers of the parenchymal and pleural findings (what a 64³ chest CT can show of them).

Each finding has a ``sample_*`` (draws a JSON-able spec: where, how big, how many — the report
text is written from the same spec) and a ``draw_*`` (deterministic given spec and canvas).
Signatures follow the Fleischner Society glossary (Hansell et al., Radiology 2008), exaggerated
to the phantom's ~5 mm voxels where the real feature is sub-millimetre.
"""

from __future__ import annotations

import numpy as np

from medmm.data.synth.anatomy import Tissue
from medmm.data.synth.context import LOBE_CENTRES, Canvas, lobe_side
from medmm.data.synth.geometry import ellipsoid, mark, paint, segment, smooth_noise, soft, sphere

LOBE_NAMES = list(LOBE_CENTRES)
LOWER_WEIGHTED = np.array([1, 1, 2.5, 1, 1, 2.5]) / 9.0
UPPER_WEIGHTED = np.array([3, 0.5, 1, 3, 0.5, 1]) / 9.0


def _lobes(rng, k_max: int, weights=None) -> list[str]:
    k = int(rng.integers(1, k_max + 1))
    return sorted(rng.choice(LOBE_NAMES, size=k, replace=False, p=weights).tolist(), key=LOBE_NAMES.index)


def _irregular(canvas: Canvas, sl, frac, rng, roughness=0.35):
    """Break a smooth blob's edge with low-frequency noise (lobulated, geographic margins)."""
    noise = smooth_noise(rng, frac.shape, 4)
    return np.clip(frac * (1 + roughness * noise) - roughness * 0.3, 0, 1) * (frac > 0)


# ---------------------------------------------------------------- lung nodule
def sample_nodule(rng, patient) -> dict:
    n = int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
    nodules = [dict(lobe=str(rng.choice(LOBE_NAMES, p=UPPER_WEIGHTED)),
                    size_mm=int(np.clip(rng.gamma(4.0, 3.0) + 5, 6, 26)),
                    jitter=rng.uniform(-0.2, 0.2, 3).round(3).tolist()) for _ in range(n)]
    return dict(nodules=nodules)


def draw_nodule(canvas: Canvas, spec: dict, rng) -> None:
    for nod in spec["nodules"]:
        r = nod["size_mm"] / 2
        centre = canvas.lobe_point(nod["lobe"], np.asarray(nod["jitter"]) * 0.6)
        centre = canvas.nearest_lung(centre, min_depth=min(r, 8.0))
        sl, f = sphere(canvas.grid, centre, max(r, 0.6 * canvas.grid.voxel))
        if sl is not None:
            paint(canvas.hu, sl, f, 45.0 + (25.0 if canvas.contrast else 0.0))
            canvas.record("Lung nodule", sl, f)


# ---------------------------------------------------------------- emphysema
def sample_emphysema(rng, patient) -> dict:
    kind = str(rng.choice(["centrilobular", "centrilobular", "paraseptal", "panlobular"]))
    severity = str(rng.choice(["mild", "moderate", "severe"], p=[0.45, 0.35, 0.2]))
    return dict(kind=kind, severity=severity, seed=int(rng.integers(2**31)))


def draw_emphysema(canvas: Canvas, spec: dict, rng) -> None:
    rng = np.random.default_rng(spec["seed"])
    count = {"mild": 30, "moderate": 55, "severe": 90}[spec["severity"]]
    pts = canvas.lung_points
    depth = canvas.lung_points_depth
    w_rel = pts[:, 2] / canvas.lm.lung_height
    if spec["kind"] == "centrilobular":
        weight = np.clip(w_rel, 0.05, 1.0) ** 2 * (depth > 6)
    elif spec["kind"] == "paraseptal":
        weight = (depth < 9).astype(float) * (0.3 + np.clip(w_rel, 0, 1))
    else:
        weight = np.clip(1.2 - w_rel, 0.1, 1.2) ** 2
    weight = weight / weight.sum()
    centres = pts[rng.choice(len(pts), size=count, p=weight)]
    radii = rng.uniform(4.0, 11.0, count) * (1.3 if spec["kind"] == "panlobular" else 1.0)
    for c, r in zip(centres, radii):
        sl, f = sphere(canvas.grid, c, r)
        if sl is None:
            continue
        f = f * canvas.is_parenchyma(sl) * 0.95
        paint(canvas.hu, sl, f, -990.0)
        canvas.record("Emphysema", sl, f)


# ---------------------------------------------------------------- mosaic attenuation
def sample_mosaic(rng, patient) -> dict:
    return dict(amplitude=float(rng.uniform(70, 100)), seed=int(rng.integers(2**31)),
                distribution=str(rng.choice(["bilateral", "diffuse"])))


def draw_mosaic(canvas: Canvas, spec: dict, rng) -> None:
    rng = np.random.default_rng(spec["seed"])
    cells = max(4, int(round(canvas.grid.shape[0] * canvas.grid.spacing[0] / 35.0)))
    field = np.tanh(3.0 * smooth_noise(rng, canvas.grid.shape, cells))
    parenchyma = canvas.is_parenchyma() & (canvas.hu < -600)
    canvas.hu += spec["amplitude"] * field * parenchyma
    canvas.record("Mosaic attenuation pattern", None, np.abs(field) * parenchyma)


# ---------------------------------------------------------------- ground-glass opacity
def sample_opacity(rng, patient) -> dict:
    lobes = _lobes(rng, 3, LOWER_WEIGHTED)
    return dict(lobes=lobes, radius=float(rng.uniform(18, 38)), hu=float(rng.uniform(-560, -380)),
                jitter=rng.uniform(-0.2, 0.2, (len(lobes), 3)).round(3).tolist(), seed=int(rng.integers(2**31)))


def draw_opacity(canvas: Canvas, spec: dict, rng, name="Lung opacity") -> None:
    rng = np.random.default_rng(spec["seed"])
    for lobe, jit in zip(spec["lobes"], spec["jitter"]):
        c = canvas.lobe_point(lobe, np.asarray(jit) * 0.5)
        r = spec["radius"] * rng.uniform(0.8, 1.2, 3)
        sl, f, _ = ellipsoid(canvas.grid, c, r)
        if sl is None:
            continue
        f = _irregular(canvas, sl, f, rng) * canvas.is_parenchyma(sl) * 0.9
        paint(canvas.hu, sl, f, spec["hu"])
        canvas.record(name, sl, f)


# ---------------------------------------------------------------- consolidation
def sample_consolidation(rng, patient) -> dict:
    lobes = _lobes(rng, 2, LOWER_WEIGHTED)
    return dict(lobes=lobes, radius=float(rng.uniform(24, 42)), seed=int(rng.integers(2**31)))


def draw_consolidation(canvas: Canvas, spec: dict, rng) -> None:
    """Dense airspace opacity around a segmental bronchus, GGO halo, air bronchograms kept."""
    rng = np.random.default_rng(spec["seed"])
    dense = 35.0 + (35.0 if canvas.contrast else 0.0)
    for lobe in spec["lobes"]:
        segs = [s for s in canvas.lm.airways if s["lobe"] == lobe and s["gen"] == 2]
        seg = segs[int(rng.integers(len(segs)))]
        c = canvas.nearest_lung(seg["p1"], min_depth=10.0)
        r = spec["radius"] * rng.uniform(0.85, 1.15, 3)
        sl, halo, _ = ellipsoid(canvas.grid, c, r * 1.3)
        if sl is None:
            continue
        lung = (canvas.tissue[sl] == Tissue.LUNG) | (canvas.tissue[sl] == Tissue.AIRWAY)
        paint(canvas.hu, sl, _irregular(canvas, sl, halo, rng) * lung * 0.6, -450.0)
        _, core, _ = ellipsoid(canvas.grid, c, r, sl=sl)
        core = _irregular(canvas, sl, core, rng, 0.25) * lung
        paint(canvas.hu, sl, core, dense)
        if canvas.airway_lumen is not None:  # air bronchograms: lumens stay dark inside the opacity
            paint(canvas.hu, sl, core * canvas.airway_lumen[sl], -950.0)
            for s in segs:  # bronchograms of the lobe's peripheral airways, drawn visible
                sl2, f2 = segment(canvas.grid, s["p0"], s["p1"], 2.5)
                if sl2 is not None:
                    _, inside, _ = ellipsoid(canvas.grid, c, r * 0.9, sl=sl2)
                    paint(canvas.hu, sl2, f2 * inside, -900.0)
        canvas.record("Consolidation", sl, core)


# ---------------------------------------------------------------- atelectasis
def sample_atelectasis(rng, patient) -> dict:
    kind = str(rng.choice(["basal", "basal", "linear"]))
    side = str(rng.choice(["right", "left", "bilateral"], p=[0.35, 0.3, 0.35]))
    return dict(kind=kind, side=side, thickness=float(rng.uniform(14, 24) if kind == "basal" else rng.uniform(8, 11)),
                elevation=float(rng.uniform(8, 16) if kind == "basal" else 0.0), seed=int(rng.integers(2**31)))


def draw_atelectasis(canvas: Canvas, spec: dict, rng) -> None:
    """Dense band/wedge against the posterior pleura at the lung base (volume loss: dome raised)."""
    rng = np.random.default_rng(spec["seed"])
    lm = canvas.lm
    value = 55.0 + (45.0 if canvas.contrast else 0.0)
    sides = ["right", "left"] if spec["side"] == "bilateral" else [spec["side"]]
    for side in sides:
        sgn = -1.0 if side == "right" else 1.0
        if spec["kind"] == "basal":
            target = np.array([sgn * 0.5 * lm.half_width, 0.85 * lm.half_depth, 0.08 * lm.lung_height])
            radii = (0.32 * lm.half_width, spec["thickness"], 0.16 * lm.lung_height)
        else:
            target = np.array([sgn * 0.5 * lm.half_width, rng.uniform(-0.1, 0.4) * lm.half_depth, 0.22 * lm.lung_height])
            radii = (0.3 * lm.half_width, 0.45 * lm.half_depth, spec["thickness"] / 2)
        c = canvas.nearest_lung(target)
        sl, f, _ = ellipsoid(canvas.grid, c, radii)
        if sl is None:
            continue
        f = f * canvas.is_parenchyma(sl)
        paint(canvas.hu, sl, f, value)
        canvas.record("Atelectasis", sl, f)


# ---------------------------------------------------------------- pleural effusion
def sample_pleural_effusion(rng, patient) -> dict:
    side = str(rng.choice(["right", "left", "bilateral"], p=[0.35, 0.25, 0.4]))
    depth = float(rng.uniform(25, 70))
    return dict(side=side, depth=depth, height=float(rng.uniform(50, 110)), hu=float(rng.uniform(4, 18)),
                amount="small" if depth < 40 else ("moderate" if depth < 58 else "large"))


def draw_pleural_effusion(canvas: Canvas, spec: dict, rng) -> None:
    """Dependent fluid: the lung behind a horizontal (coronal) level, deepest at the base.

    ``depth`` is measured from the most posterior lung point of the side (the paravertebral
    gutter); the layer keeps its depth up to the dome and thins out ``height`` mm above it.
    """
    u, v, w = canvas.mesh
    lm = canvas.lm
    sides = ["right", "left"] if spec["side"] == "bilateral" else [spec["side"]]
    pts = canvas.lung_points
    for side in sides:
        on_side = pts[:, 0] < 0 if side == "right" else pts[:, 0] > 0
        if not on_side.any():
            continue
        back = float(pts[on_side, 1].max())
        dome = 0.0 if side == "right" else -canvas.patient.left_dome_drop
        depth = spec["depth"] * (1.0 if side == "right" or spec["side"] != "bilateral" else 0.85)
        ramp = np.clip(1.0 - (w - dome) / spec["height"], 0.0, 1.0)
        f = soft(v - (back - depth * ramp), canvas.grid.voxel) * canvas.side_mask(side)
        f = f * ((canvas.tissue == Tissue.LUNG) | (canvas.tissue == Tissue.AIRWAY))
        paint(canvas.hu, None, f, spec["hu"])
        mark(canvas.tissue, None, f, Tissue.MUSCLE)
        canvas.record("Pleural effusion", None, f)


# ---------------------------------------------------------------- fibrotic sequela
def sample_fibrosis(rng, patient) -> dict:
    lobes = _lobes(rng, 2, UPPER_WEIGHTED)
    return dict(lobes=lobes, bands=int(rng.integers(3, 7)), seed=int(rng.integers(2**31)))


def draw_fibrosis(canvas: Canvas, spec: dict, rng) -> None:
    """Parenchymal bands: dense streaks from the pleura inwards, with subpleural reticulation."""
    rng = np.random.default_rng(spec["seed"])
    lm = canvas.lm
    pts = canvas.lung_points
    shallow = canvas.lung_points_depth < 8
    for lobe in spec["lobes"]:
        frac = np.asarray(LOBE_CENTRES[lobe]) * [lm.half_width, lm.half_depth, lm.lung_height]
        near = shallow & (np.sign(pts[:, 0]) == (-1 if lobe_side(lobe) == "right" else 1))
        cand = pts[near]
        if len(cand) == 0:
            continue
        order = np.argsort(((cand - frac) ** 2).sum(axis=1))[:60]
        for k in rng.choice(order, size=min(spec["bands"], len(order)), replace=False):
            start = cand[k]
            inward = lm.hila[lobe_side(lobe)] - start
            inward = inward / max(np.linalg.norm(inward), 1e-3) + rng.normal(0, 0.35, 3)
            inward /= np.linalg.norm(inward)
            end = start + inward * rng.uniform(22, 45)
            sl, f = segment(canvas.grid, start, end, rng.uniform(2.5, 3.5), 1.8)
            if sl is None:
                continue
            f = f * canvas.is_parenchyma(sl)
            paint(canvas.hu, sl, f, 20.0)
            canvas.record("Pulmonary fibrotic sequela", sl, f)


# ---------------------------------------------------------------- interlobular septal thickening
def sample_septal(rng, patient) -> dict:
    return dict(zone=str(rng.choice(["lower", "diffuse"], p=[0.6, 0.4])), cell_mm=float(rng.uniform(17, 24)),
                seed=int(rng.integers(2**31)))


def draw_septal(canvas: Canvas, spec: dict, rng) -> None:
    """Polygonal network (Voronoi cell walls ~ secondary lobule borders) in the peripheral lung."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(spec["seed"])
    lm = canvas.lm
    band = lm.lung & (canvas.lung_depth < 28)
    if spec["zone"] == "lower":
        band &= canvas.mesh[2] < 0.55 * lm.lung_height
    idx = np.argwhere(band)
    if len(idx) == 0:
        return
    u, v, w = canvas.grid.axes
    pts = np.stack([u[idx[:, 0]], v[idx[:, 1]], w[idx[:, 2]]], axis=1)
    n_seeds = max(8, int(len(pts) * np.prod(canvas.grid.spacing) / spec["cell_mm"] ** 3))
    seeds = pts[rng.choice(len(pts), size=n_seeds, replace=False)] + rng.normal(0, 2.0, (n_seeds, 3))
    d, _ = cKDTree(seeds).query(pts, k=2)
    f = soft(2.2 - (d[:, 1] - d[:, 0]), canvas.grid.voxel * 0.8) * 0.9
    f = f * (canvas.tissue[tuple(idx.T)] == Tissue.LUNG)
    region = canvas.hu[tuple(idx.T)]
    canvas.hu[tuple(idx.T)] = region + f * (-120.0 - region)
    full = np.zeros(canvas.grid.shape, np.float32)
    full[tuple(idx.T)] = f
    canvas.record("Interlobular septal thickening", None, full)
