"""Renderers of the mediastinal, cardiac, vascular and device findings (see `lung_findings`)."""

from __future__ import annotations

import numpy as np

from medmm.data.synth.anatomy import Tissue
from medmm.data.synth.context import Canvas
from medmm.data.synth.geometry import ellipsoid, mark, paint, segment, soft, sphere

NODE_STATIONS: dict[str, tuple[float, float, float]] = {
    # station -> centre as fractions of (half-width, half-depth, lung height)
    "right paratracheal": (-0.11, 0.02, 0.76),
    "subcarinal": (0.0, 0.33, 0.53),
    "prevascular": (0.02, -0.55, 0.72),
    "aortopulmonary window": (0.13, -0.02, 0.65),
    "right hilar": (-0.27, -0.04, 0.50),
    "left hilar": (0.27, 0.0, 0.52),
}


# ---------------------------------------------------------------- lymph nodes
def sample_lymphadenopathy(rng, patient) -> dict:
    k = int(rng.integers(2, 5))
    stations = sorted(rng.choice(list(NODE_STATIONS), size=k, replace=False).tolist(), key=list(NODE_STATIONS).index)
    return dict(stations=stations, short_axis_mm=[int(rng.uniform(18, 30)) for _ in stations])


def sample_normal_nodes(rng) -> dict:
    """Small (< 10 mm) nodes most normal mediastina have, so size, not presence, is the sign."""
    k = int(rng.integers(0, 3))
    stations = rng.choice(list(NODE_STATIONS), size=k, replace=False).tolist()
    return dict(stations=stations, short_axis_mm=[int(rng.uniform(5, 9)) for _ in stations])


def draw_nodes(canvas: Canvas, spec: dict, rng, name: str | None = "Lymphadenopathy") -> None:
    lm = canvas.lm
    scale = np.array([lm.half_width, lm.half_depth, lm.lung_height])
    for station, size in zip(spec["stations"], spec["short_axis_mm"]):
        c = np.asarray(NODE_STATIONS[station]) * scale
        sl, f, _ = ellipsoid(canvas.grid, c, (size / 2, size / 2, size * 0.65))
        if sl is None:
            continue
        t = canvas.tissue[sl]
        f = f * ((t == Tissue.MEDIASTINUM) | (t == Tissue.LUNG))
        paint(canvas.hu, sl, f, 42.0 + (25.0 if canvas.contrast else 0.0))
        mark(canvas.tissue, sl, f, Tissue.MUSCLE)
        if name:
            canvas.record(name, sl, f)


# ---------------------------------------------------------------- hiatal hernia
def sample_hiatal_hernia(rng, patient) -> dict:
    size = float(rng.uniform(38, 65))
    return dict(size_mm=int(size), air=bool(rng.random() < 0.9), size="small" if size < 48 else "moderate")


def draw_hiatal_hernia(canvas: Canvas, spec: dict, rng) -> None:
    """Stomach herniated through the hiatus: a round sac above the diaphragm behind the heart,
    soft-tissue wall, fluid posteriorly and (often) an air cap anteriorly (supine air-fluid level)."""
    lm = canvas.lm
    r = spec["size_mm"] / 2
    c = np.array([0.10 * lm.half_width, 0.32 * lm.half_depth, r * 0.9], np.float32)
    radii = np.array([r * 1.1, r * 0.85, r], np.float32)
    sl, wall, _ = ellipsoid(canvas.grid, c, radii)
    if sl is None:
        return
    paint(canvas.hu, sl, wall, 50.0)
    mark(canvas.tissue, sl, wall, Tissue.MUSCLE)
    _, lumen, _ = ellipsoid(canvas.grid, c, radii - 3.5, sl=sl)
    paint(canvas.hu, sl, lumen, 18.0)
    if spec["air"]:
        v = canvas.mesh[1][:, sl[1], :]
        air = lumen * soft((c[1] + 0.1 * r) - v, canvas.grid.voxel)
        paint(canvas.hu, sl, air, -1000.0)
    canvas.record("Hiatal hernia", sl, wall)


# ---------------------------------------------------------------- calcifications
def _spots(canvas: Canvas, centres, radius, value, name) -> None:
    r = max(radius, 0.75 * canvas.grid.voxel)  # keep a 2-3 mm plaque visible on 5-7 mm voxels
    for c in centres:
        sl, f = sphere(canvas.grid, c, r)
        if sl is None:
            continue
        paint(canvas.hu, sl, f, value)
        canvas.record(name, sl, f)


def sample_arterial_calcification(rng, patient) -> dict:
    n = int(np.clip(rng.poisson(4 + max(patient.age - 55, 0) / 4), 3, 16))
    segments = sorted({"arch" if rng.random() < 0.6 else "descending", "descending" if rng.random() < 0.7 else "arch"})
    return dict(count=n, segments=segments, seed=int(rng.integers(2**31)))


def draw_arterial_calcification(canvas: Canvas, spec: dict, rng) -> None:
    """Bright plaques on the aortic wall (and arch branches)."""
    rng = np.random.default_rng(spec["seed"])
    aorta = canvas.lm.aorta
    pieces = {"arch": aorta[1:3], "descending": aorta[3:]}
    chosen = [seg for name in spec["segments"] for seg in pieces[name]]
    centres = []
    for _ in range(spec["count"]):
        p0, p1, r = chosen[int(rng.integers(len(chosen)))]
        t = rng.uniform(0.05, 0.95)
        axis = p1 - p0
        perp = np.cross(axis, rng.normal(size=3))
        perp /= max(np.linalg.norm(perp), 1e-6)
        centres.append(p0 + t * axis + perp * (r - 0.5))
    _spots(canvas, centres, rng.uniform(2.5, 3.5), float(rng.uniform(900, 1300)), "Arterial wall calcification")


def sample_coronary_calcification(rng, patient) -> dict:
    vessels = sorted(set(rng.choice(["LAD", "LAD", "RCA", "LCx"], size=int(rng.integers(1, 4))).tolist()))
    return dict(vessels=vessels, count=int(rng.integers(3, 8)), seed=int(rng.integers(2**31)))


CORONARY_COURSE = {
    # vessel -> (azimuth range on the heart's axial ellipse, height range) in the heart's own frame
    "LAD": ((-0.35, 0.35), (-0.2, 0.8)),  # anterior interventricular groove
    "RCA": ((2.0, 2.9), (-0.2, 0.7)),  # right atrioventricular groove
    "LCx": ((-2.2, -1.3), (0.1, 0.7)),  # left atrioventricular groove
}


def draw_coronary_calcification(canvas: Canvas, spec: dict, rng) -> None:
    """Bright spots in the epicardial fat along the coronary courses on the heart surface."""
    rng = np.random.default_rng(spec["seed"])
    lm = canvas.lm
    centres = []
    for k in range(spec["count"]):
        (a0, a1), (z0, z1) = CORONARY_COURSE[spec["vessels"][k % len(spec["vessels"])]]
        phi, zeta = rng.uniform(a0, a1), rng.uniform(z0, z1)
        local = np.array([np.sin(phi) * np.sqrt(1 - zeta**2), -np.cos(phi) * np.sqrt(1 - zeta**2), zeta])
        local = local * (lm.heart_radii + 2.0)
        centres.append(lm.heart_centre + lm.heart_rotation.T @ local)
    _spots(canvas, centres, rng.uniform(2.5, 3.5), float(rng.uniform(900, 1300)), "Coronary artery wall calcification")


# ---------------------------------------------------------------- devices
def sample_medical_material(rng, patient) -> dict:
    kind = str(rng.choice(["pacemaker", "port catheter", "sternotomy wires"], p=[0.4, 0.3, 0.3]))
    return dict(kind=kind, side=str(rng.choice(["left", "right"], p=[0.75, 0.25])))


def draw_medical_material(canvas: Canvas, spec: dict, rng) -> None:
    """Metal (>2000 HU, clipped at 3071): pacemaker + lead, chest port + catheter, or sternal wires."""
    lm, p = canvas.lm, canvas.patient
    sgn = -1.0 if spec["side"] == "right" else 1.0
    ant = -(lm.half_depth + p.muscle + 6 + 0.5 * p.fat)
    metal = 3071.0
    parts: list[tuple] = []
    svc_top = np.array([-0.18 * lm.half_width, -0.18 * lm.half_depth, 0.85 * lm.lung_height])
    svc_low = np.array([-0.17 * lm.half_width, -0.2 * lm.half_depth, 0.5 * lm.lung_height])
    if spec["kind"] == "pacemaker":
        box = np.array([sgn * 0.55 * lm.half_width, ant, 0.86 * lm.lung_height])
        parts.append(("box", box, (22.0, 8.0, 24.0)))
        apex = lm.heart_centre + lm.heart_rotation.T @ np.array([0.55 * lm.heart_radii[0], -0.3 * lm.heart_radii[1], -0.2 * lm.heart_radii[2]])
        bend = np.array([sgn * 0.3 * lm.half_width, -0.55 * lm.half_depth, 0.95 * lm.lung_height])
        parts.append(("line", [box, bend, svc_top, svc_low, apex], 2.5))
    elif spec["kind"] == "port catheter":
        box = np.array([sgn * 0.45 * lm.half_width, ant, 0.78 * lm.lung_height])
        parts.append(("box", box, (14.0, 8.0, 14.0)))
        bend = np.array([sgn * 0.25 * lm.half_width, -0.5 * lm.half_depth, 0.98 * lm.lung_height])
        parts.append(("line", [box, bend, svc_top, svc_low], 2.5))
    else:
        for frac in np.linspace(0.3, 0.82, 5):
            w = frac * lm.lung_height
            y = -lm.half_depth - 4
            parts.append(("line", [np.array([-13.0, y, w]), np.array([0.0, y - 6, w]), np.array([13.0, y, w])], 2.5))
    for kind, where, size in parts:
        if kind == "box":
            sl, f, _ = ellipsoid(canvas.grid, where, size)
            if sl is not None:
                paint(canvas.hu, sl, f, metal)
                canvas.record("Medical material", sl, f)
        else:
            for q0, q1 in zip(where[:-1], where[1:]):
                sl, f = segment(canvas.grid, q0, q1, size)
                if sl is not None:
                    paint(canvas.hu, sl, np.minimum(f * 1.5, 1.0), metal)
                    canvas.record("Medical material", sl, f)
