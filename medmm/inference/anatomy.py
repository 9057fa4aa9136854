"""A coarse anatomy map of a chest CT from its Hounsfield units, and the evidence-site check.

No model and no download: HU thresholds, connected components and morphology (scipy.ndimage;
MONAI has no HU-based chest parcellation). Regions, in order of precedence:

- ``lung``: air inside the body (< -500 HU) minus the airway, holes filled per axial slice so
  vessels, nodules and consolidation enclosed by aerated lung stay lung;
- ``airway``: the trachea/main bronchi, grown (< -930 HU, 6-connected) from the most central air
  component of the top slices;
- ``bone``: > 350 HU components of at least ``MIN_BONE_MM3`` (contrast blood stays below, small
  calcified plaques are too small);
- ``mediastinum``: body voxels between the right and the left lung on each row (heart, great
  vessels, nodes, oesophagus), closed and hole-filled per slice;
- ``pleural space``: non-aerated tissue (> -500 HU) inside the rib cage (per-slice convex hull of the
  bone) within ``PLEURAL_MM`` of a lung, outside the mediastinum (effusions, thickening; also dense
  lung at the lung's edge and the liver under a dome: the map is coarse);
- ``other``: the rest of the body (chest wall, upper abdomen).

:func:`site_check` then measures the fraction of a finding's evidence mass inside the regions of
its ontology site (``ct:anatomicalSite``) and flags evidence that lies mostly elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGIONS: dict[str, int] = {"outside": 0, "lung": 1, "airway": 2, "mediastinum": 3, "pleural space": 4,
                           "bone": 5, "other": 6}
MIN_BONE_MM3 = 1500.0
PLEURAL_MM = 40.0
#: Evidence is flagged when less than this fraction of its mass lies in the finding's site.
MIN_SITE_FRACTION = 0.5

#: Ontology anatomy concept (its prefLabel) -> the coarse regions that contain it. Sites not listed
#: are looked up through their ``rdfs:subClassOf`` parents (e.g. Coronary artery -> Artery).
SITE_REGIONS: dict[str, tuple[str, ...]] = {
    "Lung": ("lung", "pleural space"),  # dense lung at the lung's edge is mapped as pleural space
    "Pulmonary interstitium": ("lung", "pleural space"),
    "Airway": ("airway", "lung"),  # segmental bronchi lie inside the lung region at this scale
    "Pleural space": ("pleural space",),
    "Heart": ("mediastinum",),
    "Pericardium": ("mediastinum",),
    "Artery": ("mediastinum",),
    "Coronary artery": ("mediastinum",),
    "Mediastinum": ("mediastinum",),
    "Lymph node": ("mediastinum",),
    "Diaphragm": ("mediastinum", "other"),
    "Thorax": ("lung", "airway", "mediastinum", "pleural space", "bone", "other"),
}


@dataclass
class AnatomyMap:
    """Region label per voxel (:data:`REGIONS`) on the grid it was computed on."""

    labels: np.ndarray  # uint8 (X, Y, Z)
    spacing: tuple[float, float, float]

    def mask(self, *regions: str) -> np.ndarray:
        """Boolean mask of the union of ``regions``."""
        return np.isin(self.labels, [REGIONS[r] for r in regions])

    def volumes_ml(self) -> dict[str, float]:
        """Volume of each region in millilitres."""
        voxel = float(np.prod(self.spacing)) / 1000.0
        return {name: round(float(np.sum(self.labels == code)) * voxel, 1)
                for name, code in REGIONS.items() if name != "outside"}


def _largest(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _fill_axial(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial (k) slice."""
    from scipy.ndimage import binary_fill_holes

    out = np.empty_like(mask)
    for k in range(mask.shape[2]):
        out[:, :, k] = binary_fill_holes(mask[:, :, k])
    return out


def _airway(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The air component that enters from the top slices nearest the body's left-right centre."""
    from scipy import ndimage

    lumen = (hu < -930.0) & body
    lab, n = ndimage.label(lumen)  # 6-connected: noisy lung rarely bridges to the lumen
    if n == 0:
        return np.zeros_like(body)
    top = max(1, hu.shape[2] // 16)
    centre_x = float(np.mean(np.nonzero(body)[0]))
    best, best_dist = 0, np.inf
    for idx in np.unique(lab[:, :, -top:]):
        if idx == 0:
            continue
        xs = np.nonzero(lab[:, :, -top:] == idx)[0]
        dist = abs(float(xs.mean()) - centre_x)
        if dist < best_dist and xs.size < 0.02 * body[:, :, -top:].sum():
            best, best_dist = int(idx), dist
    if best == 0 or best_dist > 0.15 * hu.shape[0]:
        return np.zeros_like(body)
    airway = lab == best
    if airway.sum() > 0.05 * lumen.sum() + 200:  # leaked into emphysematous lung: keep the top part only
        airway[:, :, : hu.shape[2] // 2] = False
    return airway


def anatomy_map(hu: np.ndarray, spacing: tuple[float, float, float]) -> AnatomyMap:
    """Coarse anatomy regions of a chest CT in HU on an RAS-ordered grid (k = inferior → superior).

    Args:
        hu: ``(X, Y, Z)`` Hounsfield units.
        spacing: voxel size in mm.
    """
    from scipy import ndimage

    hu = np.asarray(hu, dtype=np.float32)
    spacing = tuple(float(s) for s in spacing)
    voxel_mm3 = float(np.prod(spacing))
    body = _fill_axial(_largest(hu > -500.0))
    airway = _airway(hu, body)
    air = (hu < -500.0) & body & ~airway
    lab, n = ndimage.label(air)
    lung = np.zeros_like(air)
    if n:
        sizes = ndimage.sum_labels(air, lab, index=np.arange(1, n + 1))
        keep = 1 + np.nonzero(sizes >= 0.005 * body.sum())[0]
        lung = np.isin(lab, keep)
    lung = _fill_axial(ndimage.binary_closing(lung, iterations=1)) & body & ~airway
    bone = (hu > 350.0) & body
    lab, n = ndimage.label(bone, structure=np.ones((3, 3, 3)))
    if n:
        sizes = ndimage.sum_labels(bone, lab, index=np.arange(1, n + 1)) * voxel_mm3
        bone = np.isin(lab, 1 + np.nonzero(sizes >= MIN_BONE_MM3)[0])
    mediastinum = _between_lungs(lung, body)
    mediastinum = _fill_axial(ndimage.binary_closing(mediastinum, iterations=2)) & body & ~lung & ~airway
    near = ndimage.distance_transform_edt(~lung, sampling=spacing) <= PLEURAL_MM if lung.any() else lung
    cavity = _rib_cage(bone) if bone.any() else body
    if lung.any() and cavity[lung].mean() < 0.8:  # ribs too sparse (coarse voxels) to outline the cage
        cavity = body
    pleural = near & cavity & body & ~lung & ~mediastinum & (hu > -500.0) & ~bone & ~airway
    labels = np.zeros(hu.shape, np.uint8)
    labels[body] = REGIONS["other"]
    for name, mask in (("pleural space", pleural), ("mediastinum", mediastinum), ("bone", bone),
                       ("lung", lung), ("airway", airway)):
        labels[mask] = REGIONS[name]
    return AnatomyMap(labels, spacing)  # type: ignore[arg-type]


def _rib_cage(bone: np.ndarray, slab: int = 2) -> np.ndarray:
    """Inside of the bony thorax: per axial slice, the convex hull of the bone of the slices around
    it (ribs are sparse on any one slice), eroded by one voxel so the ribs' own layer is outside."""
    from scipy.ndimage import binary_erosion
    from scipy.spatial import ConvexHull, QhullError

    out = np.zeros_like(bone)
    ii, jj = np.meshgrid(np.arange(bone.shape[0]), np.arange(bone.shape[1]), indexing="ij")
    grid = np.stack([ii.ravel(), jj.ravel()], axis=1)
    for k in range(bone.shape[2]):
        pts = np.argwhere(bone[:, :, max(0, k - slab): k + slab + 1].any(axis=2))
        if len(pts) < 4:
            continue
        try:
            eq = ConvexHull(pts).equations  # rows (a, b, c): a*i + b*j + c <= 0 inside
        except QhullError:  # collinear points: no area
            continue
        inside = np.all(grid @ eq[:, :2].T + eq[:, 2] <= 1e-9, axis=1)
        out[:, :, k] = binary_erosion(inside.reshape(bone.shape[:2]))
    return out


def _between_lungs(lung: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Voxels lying, along the left-right axis, between the right and the left lung of their row."""
    out = np.zeros_like(lung)
    if not lung.any():
        return out
    xs = np.nonzero(body)[0]
    mid = int(round(float(xs.mean())))
    x = np.arange(lung.shape[0])[:, None, None]
    low, high = lung[:mid], lung[mid:]  # the two sides of the body's midline
    # medial edge of each side's lung per (j, k) row: the lung voxel nearest the midline
    has_low, has_high = low.any(axis=0), high.any(axis=0)
    low_edge = mid - 1 - np.argmax(low[::-1], axis=0)
    high_edge = mid + np.argmax(high, axis=0)
    rows = has_low & has_high
    out = (x > low_edge[None]) & (x < high_edge[None]) & rows[None] & body
    return out


def site_regions(site: str | None, ontology=None) -> tuple[str, ...] | None:
    """Coarse regions of an ontology anatomy concept (None: unknown or no site)."""
    if site is None:
        return None
    if site in SITE_REGIONS:
        return SITE_REGIONS[site]
    if ontology is not None:
        for parent in _anatomy_parents(ontology, site):
            if parent in SITE_REGIONS:
                return SITE_REGIONS[parent]
    return None


def _anatomy_parents(ontology, site: str) -> list[str]:
    """prefLabels of the ``rdfs:subClassOf`` ancestors of the anatomy concept labelled ``site``."""
    from rdflib import Literal
    from rdflib.namespace import RDFS, SKOS

    rdf = ontology.rdf
    out: list[str] = []
    for node in rdf.subjects(SKOS.prefLabel, Literal(site)):
        for parent in rdf.transitive_objects(node, RDFS.subClassOf):
            label = rdf.value(parent, SKOS.prefLabel)
            if label is not None and parent != node:
                out.append(str(label))
    return out


def site_check(finding: str, site: str | None, heat: np.ndarray, anatomy: AnatomyMap, localised: bool,
               ontology=None) -> dict:
    """Fraction of ``heat``'s mass inside ``finding``'s anatomical site, and a flag when it lies
    mostly elsewhere (``localised=False``: no flag; a flat map says nothing about where).

    Returns:
        dict with ``site``, ``regions``, ``fraction_in_site`` (None when unknown), ``main_region``
        (region holding most of the mass) and ``flag`` (a sentence, or None).
    """
    regions = site_regions(site, ontology)
    heat = np.clip(np.asarray(heat, dtype=np.float64), 0.0, None)
    body = anatomy.labels > 0
    total = float(heat[body].sum())
    out = {"site": site, "regions": list(regions) if regions else None, "fraction_in_site": None,
           "main_region": None, "flag": None}
    if total <= 0.0:
        return out
    mass = {name: float(heat[anatomy.labels == code].sum()) / total
            for name, code in REGIONS.items() if name != "outside"}
    out["main_region"] = max(mass, key=mass.get)
    if regions is None:
        return out
    fraction = sum(mass[r] for r in regions)
    out["fraction_in_site"] = round(fraction, 4)
    if localised and fraction < MIN_SITE_FRACTION:
        where = (site or "its site").lower()
        out["flag"] = f"{finding} — evidence mostly outside the {where} (mostly in: {out['main_region']})"
    return out
