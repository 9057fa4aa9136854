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
        # >= ~2 voxels across: a 1-voxel nodule is indistinguishable from a vessel cross-section
        sl, f = sphere(canvas.grid, centre, max(r, 1.0 * canvas.grid.voxel))
        if sl is not None:
            paint(canvas.hu, sl, np.minimum(1.3 * f, 1.0), 45.0 + (25.0 if canvas.contrast else 0.0))
            canvas.record("Lung nodule", sl, f)


# ---------------------------------------------------------------- emphysema
def sample_emphysema(rng, patient) -> dict:
    kind = str(rng.choice(["centrilobular", "centrilobular", "paraseptal", "panlobular"]))
    severity = str(rng.choice(["mild", "moderate", "severe"], p=[0.45, 0.35, 0.2]))
    return dict(kind=kind, severity=severity, seed=int(rng.integers(2**31)))


def draw_emphysema(canvas: Canvas, spec: dict, rng) -> None:
    rng = np.random.default_rng(spec["seed"])
    count = {"mild": 45, "moderate": 75, "severe": 110}[spec["severity"]]
    pts = canvas.lung_points
    depth = canvas.lung_points_depth
    w_rel = pts[:, 2] / canvas.lm.lung_height
    if spec["kind"] == "centrilobular":
        weight = np.clip(w_rel, 0.05, 1.0) ** 2 * (depth > 6)
    elif spec["kind"] == "paraseptal":
        weight = (depth <= max(9.0, 1.01 * canvas.grid.voxel)).astype(float) * (0.3 + np.clip(w_rel, 0, 1))
    else:
        weight = np.clip(1.2 - w_rel, 0.1, 1.2) ** 2
    weight = weight / weight.sum()
    centres = pts[rng.choice(len(pts), size=count, p=weight)]
    radii = np.maximum(rng.uniform(5.0, 12.0, count), 1.0 * canvas.grid.voxel) * (1.3 if spec["kind"] == "panlobular" else 1.0)
    for c, r in zip(centres, radii):
        sl, f = sphere(canvas.grid, c, r)
        if sl is None:
            continue
        f = np.minimum(1.4 * f, 1.0) * canvas.is_parenchyma(sl)
        paint(canvas.hu, sl, f, -1000.0)
        canvas.record("Emphysema", sl, f)


# ---------------------------------------------------------------- mosaic attenuation
def sample_mosaic(rng, patient) -> dict:
    return dict(amplitude=float(rng.uniform(100, 140)), seed=int(rng.integers(2**31)),
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
    """Ground glass: hazy patches (-550..-380 HU) made of a few overlapping lobulated blobs."""
    rng = np.random.default_rng(spec["seed"])
    for lobe, jit in zip(spec["lobes"], spec["jitter"]):
        c = canvas.lobe_point(lobe, np.asarray(jit) * 0.5)
        for _ in range(int(rng.integers(3, 6))):
            offset = rng.normal(0, 0.5, 3) * spec["radius"]
            r = spec["radius"] * rng.uniform(0.55, 0.9, 3)
            sl, f, _ = ellipsoid(canvas.grid, canvas.nearest_lung(c + offset), r)
            if sl is None:
                continue
            f = _irregular(canvas, sl, f, rng, 0.6) * canvas.is_parenchyma(sl) * 0.85
            region = canvas.hu[sl]
            region += np.maximum(f * (spec["hu"] - region), 0)  # overlapping patches do not add up
            canvas.record(name, sl, f)


# ---------------------------------------------------------------- consolidation
def sample_consolidation(rng, patient) -> dict:
    lobes = _lobes(rng, 2, LOWER_WEIGHTED)
    return dict(lobes=lobes, radius=float(rng.uniform(24, 42)), seed=int(rng.integers(2**31)))


def draw_consolidation(canvas: Canvas, spec: dict, rng) -> None:
    """Segmental airspace consolidation: a wedge around a segmental bronchus, widening to a broad
    pleural base, with lobulated margins, a faint ground-glass rim and air bronchograms kept."""
    rng = np.random.default_rng(spec["seed"])
    dense = 35.0 + (35.0 if canvas.contrast else 0.0)
    for lobe in spec["lobes"]:
        segs = [s for s in canvas.lm.airways if s["lobe"] == lobe and s["gen"] == 2]
        seg = segs[int(rng.integers(len(segs)))]
        axis = seg["p1"] - seg["p0"]
        axis = axis / max(float(np.linalg.norm(axis)), 1e-3)
        start = seg["p0"] + axis * 10.0
        end = seg["p0"] + axis * (spec["radius"] * 2.8)  # runs out to (and is cut by) the pleura
        r_far = spec["radius"]
        sl_h, halo = segment(canvas.grid, start, end, 14.0, r_far + 10.0)
        sl, wedge = segment(canvas.grid, start, end, 10.0, r_far)
        if sl is None or sl_h is None:
            continue
        airspace = (canvas.tissue == Tissue.LUNG) | (canvas.tissue == Tissue.AIRWAY)
        paint(canvas.hu, sl_h, _irregular(canvas, sl_h, halo, rng, 0.6) * airspace[sl_h] * 0.45, -500.0)
        core = _irregular(canvas, sl, wedge, rng, 0.3) * airspace[sl]
        paint(canvas.hu, sl, core, dense)
        if canvas.airway_lumen is not None:  # air bronchograms: lumens stay dark inside the opacity
            paint(canvas.hu, sl, core * canvas.airway_lumen[sl], -950.0)
            sl_in, inside = segment(canvas.grid, start, end, 6.0, r_far - 6.0)
            for s in segs:
                sl2, f2 = segment(canvas.grid, s["p0"], s["p1"], 3.5)
                if sl2 is not None and sl_in is not None:
                    paint(canvas.hu, sl2, f2 * _crop_to(canvas, sl_in, inside, sl2), -900.0)
        canvas.record("Consolidation", sl, core)


def _crop_to(canvas: Canvas, sl_from, values, sl_to) -> np.ndarray:
    """Re-index a crop computed on ``sl_from`` onto ``sl_to`` (zeros where they do not overlap)."""
    full = np.zeros(canvas.grid.shape, np.float32)
    full[sl_from] = values
    return full[sl_to]


# ---------------------------------------------------------------- atelectasis
def sample_atelectasis(rng, patient) -> dict:
    kind = str(rng.choice(["basal", "basal", "linear"]))
    side = str(rng.choice(["right", "left", "bilateral"], p=[0.35, 0.3, 0.35]))
    return dict(kind=kind, side=side, thickness=float(rng.uniform(14, 24) if kind == "basal" else rng.uniform(10, 14)),
                elevation=float(rng.uniform(8, 16) if kind == "basal" else 0.0), seed=int(rng.integers(2**31)))


def draw_atelectasis(canvas: Canvas, spec: dict, rng) -> None:
    """Basal: a dense band hugging the posterior pleura of the lower lobe (dome raised = volume
    loss). Linear: a thin oblique plate in the lower lung."""
    rng = np.random.default_rng(spec["seed"])
    lm = canvas.lm
    value = 55.0 + (45.0 if canvas.contrast else 0.0)
    sides = ["right", "left"] if spec["side"] == "bilateral" else [spec["side"]]
    u, v, w = canvas.mesh
    lung = lm.lung
    for side in sides:
        sgn = -1.0 if side == "right" else 1.0
        if spec["kind"] == "basal":
            # posterior lung boundary per (u, w) column: the largest v that is still lung
            v_axis = canvas.grid.axes[1]
            has = lung.any(axis=1)
            back = np.where(has, v_axis[lung.shape[1] - 1 - np.argmax(lung[:, ::-1, :], axis=1)], -1e6)
            depth = back[:, None, :] - v  # mm in front of the posterior pleura
            dome = (0.0 if side == "right" else -canvas.patient.left_dome_drop) + spec["elevation"]
            top = dome + 0.2 * lm.lung_height
            f = soft(spec["thickness"] - depth, canvas.grid.voxel) * (depth >= -1)
            f = f * soft(top - w, canvas.grid.voxel) * (sgn * u > 0.15 * lm.half_width)
            f = f * canvas.is_parenchyma()
            paint(canvas.hu, None, f, value)
            canvas.record("Atelectasis", None, f)
        else:
            target = np.array([sgn * 0.5 * lm.half_width, rng.uniform(-0.1, 0.4) * lm.half_depth, 0.22 * lm.lung_height])
            c = canvas.nearest_lung(target, min_depth=15.0)
            tilt = rng.uniform(-0.3, 0.3)
            rot = np.array([[1, 0, 0], [0, np.cos(tilt), np.sin(tilt)], [0, -np.sin(tilt), np.cos(tilt)]], np.float32)
            sl, f, _ = ellipsoid(canvas.grid, c, (0.3 * lm.half_width, 0.45 * lm.half_depth, spec["thickness"] / 2), rot)
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
    return dict(lobes=lobes, bands=int(rng.integers(5, 9)), seed=int(rng.integers(2**31)))


def draw_fibrosis(canvas: Canvas, spec: dict, rng) -> None:
    """Parenchymal bands: dense streaks from the pleura inwards, with subpleural reticulation."""
    rng = np.random.default_rng(spec["seed"])
    lm = canvas.lm
    pts = canvas.lung_points
    shallow = canvas.lung_points_depth <= max(8.0, 1.01 * canvas.grid.voxel)
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
            thick = max(rng.uniform(2.5, 3.5), 0.55 * canvas.grid.voxel)  # survive the scanner blur
            sl, f = segment(canvas.grid, start, end, thick, 1.8)
            if sl is None:
                continue
            f = f * canvas.is_parenchyma(sl)
            paint(canvas.hu, sl, np.minimum(1.3 * f, 1.0), 30.0)
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
    band = lm.lung & (canvas.lung_depth < 22)
    if spec["zone"] == "lower":
        band &= canvas.mesh[2] < 0.55 * lm.lung_height
    idx = np.argwhere(band)
    if len(idx) == 0:
        return
    u, v, w = canvas.grid.axes
    pts = np.stack([u[idx[:, 0]], v[idx[:, 1]], w[idx[:, 2]]], axis=1)
    # at most one seed per band voxel: tiny grids (16³) have fewer band voxels than 8 cells
    n_seeds = min(max(8, int(len(pts) * np.prod(canvas.grid.spacing) / spec["cell_mm"] ** 3)), len(pts))
    seeds = pts[rng.choice(len(pts), size=n_seeds, replace=False)] + rng.normal(0, 2.0, (n_seeds, 3))
    d, _ = cKDTree(seeds).query(pts, k=2)
    f = soft(2.2 - (d[:, 1] - d[:, 0]), canvas.grid.voxel * 0.8) * 0.9
    f = f * (canvas.tissue[tuple(idx.T)] == Tissue.LUNG)
    region = canvas.hu[tuple(idx.T)]
    canvas.hu[tuple(idx.T)] = region + f * (-250.0 - region)
    full = np.zeros(canvas.grid.shape, np.float32)
    full[tuple(idx.T)] = f
    canvas.record("Interlobular septal thickening", None, full)
