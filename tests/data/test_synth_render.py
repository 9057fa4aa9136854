"""The phantom: plausible HU per tissue, and every rendered finding visible where it belongs."""

from __future__ import annotations

import numpy as np
import pytest

from medmm.data import RENDERED_FINDINGS, UNRENDERED_FINDINGS, render_case
from medmm.data.synth.anatomy import Tissue
from medmm.data.synth.generator import render_scan
from medmm.data.synth.labels import IMPLICATIONS, close_implications
from medmm.labels import CT_RATE_FINDINGS

SEED, SIZE = 11, 48


def test_render_case_contract():
    hu, affine, labels, report, indication = render_case(3, size=32)
    assert hu.shape == (32, 32, 32) and hu.dtype == np.float32
    assert affine.shape == (4, 4) and np.isfinite(affine).all()
    assert list(labels) == list(CT_RATE_FINDINGS) and set(labels.values()) <= {0, 1}
    assert report.startswith("FINDINGS: ") and "\n\nIMPRESSION: " in report
    assert indication is None or indication.endswith(".")
    assert -1024 <= hu.min() and hu.max() <= 3071
    again = render_case(3, size=32)
    assert np.array_equal(hu, again[0]) and report == again[3]
    assert set(RENDERED_FINDINGS) | set(UNRENDERED_FINDINGS) == set(CT_RATE_FINDINGS)


# tissue -> (low, high) accepted mean HU (blur mixes tissues at their borders, hence the margins)
HU_RANGES = {
    Tissue.OUTSIDE: (-1000, -950),
    Tissue.FAT: (-160, -50),
    Tissue.MUSCLE: (0, 90),
    Tissue.LUNG: (-900, -750),
    Tissue.HEART: (20, 330),
    Tissue.BONE: (250, 1100),
    Tissue.ABDOMEN: (30, 130),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hu_plausible_per_tissue(seed):
    ph, *_ = render_scan(seed, 48, {})
    from scipy.ndimage import binary_erosion

    for tissue, (lo, hi) in HU_RANGES.items():
        mask = ph.tissue == tissue
        core = binary_erosion(mask)  # away from partial-volume borders (thin layers: all of it)
        core = core if core.sum() > 20 else mask
        assert core.sum() > 5, tissue.name
        median = float(np.median(ph.hu[core]))
        assert lo <= median <= hi, (tissue.name, median)


@pytest.fixture(scope="module")
def baseline():
    return {}


def _pair(name):
    """Phantom with `name` on, and the same patient with only its implied parents on."""
    with_ = close_implications({name: 1})
    without = {k: v for k, v in with_.items() if k != name}
    a, *_ = render_scan(SEED, SIZE, with_)
    b, *_ = render_scan(SEED, SIZE, without)
    return a, b


def _frac(ph, axis_value, axis):
    """Fractional body coordinate helpers: u/half_width, v/half_depth, w/lung_height."""
    lm = ph.landmarks
    scale = {0: lm.half_width, 1: lm.half_depth, 2: lm.lung_height}[axis]
    return axis_value / scale


def _centroid(ph, weight):
    u, v, w = ph.grid.mesh()
    total = weight.sum()
    c = [float((weight * np.broadcast_to(a, weight.shape)).sum() / total) for a in (u, v, w)]
    lm = ph.landmarks
    return np.array([c[0] / lm.half_width, c[1] / lm.half_depth, c[2] / lm.lung_height])


def _check(name, a, b):
    d = a.hu - b.hu
    lung = b.tissue == Tissue.LUNG
    region = a.effects.get(name)
    changed = np.abs(d) > 50
    assert changed.sum() > 0, "finding did not change the image"
    cen = _centroid(a, np.abs(d))
    if name == "Medical material":
        assert a.hu.max() > 2000 and b.hu.max() < 2000
    elif name in ("Arterial wall calcification", "Coronary artery wall calcification"):
        assert a.hu[region > 0.5].max() > 400
        near = np.abs(d) > 100
        ref = a.landmarks.heart_centre if name.startswith("Coronary") else None
        if ref is not None:
            u, v, w = a.grid.mesh()
            dist = np.sqrt((u - ref[0]) ** 2 + (v - ref[1]) ** 2 + (w - ref[2]) ** 2)
            assert dist[near].max() < a.landmarks.heart_radii.max() + 20  # on the heart surface
        else:
            assert b.tissue[near].tolist().count(Tissue.VESSEL) + np.isin(b.tissue[near], [Tissue.MEDIASTINUM, Tissue.LUNG]).sum() >= 0.8 * near.sum()
    elif name == "Cardiomegaly":
        assert (a.tissue == Tissue.HEART).sum() > 1.3 * (b.tissue == Tissue.HEART).sum()
    elif name == "Pericardial effusion":
        fluid = lambda ph: ((ph.hu > -10) & (ph.hu < 30) & (ph.tissue == Tissue.HEART)).sum()  # noqa: E731
        assert fluid(a) > fluid(b) + 50
    elif name == "Pleural effusion":
        base = lung & (np.broadcast_to(a.grid.mesh()[1], lung.shape) > 0) & (np.broadcast_to(a.grid.mesh()[2], lung.shape) < 0.3 * a.landmarks.lung_height)
        assert a.hu[base].mean() > b.hu[base].mean() + 150  # dependent lung base fills with fluid
        assert -60 < np.median(a.hu[region > 0.9]) < 60
        assert cen[1] > 0.3 and cen[2] < 0.35  # posterior and basal
    elif name == "Emphysema":
        assert a.hu[region > 0.8].mean() < -900 and (a.hu[lung] < -930).sum() > (b.hu[lung] < -930).sum() + 20
    elif name == "Mosaic attenuation pattern":
        assert np.abs(d[lung]).mean() > 30 and np.abs(d[~lung]).max() < 100  # lung-only, geographic
    elif name == "Lung opacity":
        assert -700 < a.hu[region > 0.6].mean() < -250 and np.isin(b.tissue[changed], [Tissue.LUNG, Tissue.AIRWAY]).mean() > 0.9
    elif name == "Consolidation":
        core = region > 0.8
        assert np.median(a.hu[core]) > -150  # dense
        assert (a.hu[core] < -400).sum() > 0  # air bronchograms inside
    elif name == "Lung nodule":
        assert a.hu[region > 0.5].max() > -100 and np.isin(b.tissue[region > 0.5], [Tissue.LUNG, Tissue.AIRWAY]).mean() > 0.8
    elif name == "Atelectasis":
        assert a.hu[region > 0.8].mean() > -200 and cen[1] > -0.5 and cen[2] < 0.45
    elif name == "Pulmonary fibrotic sequela":
        assert a.hu[region > 0.5].mean() > b.hu[region > 0.5].mean() + 200
    elif name == "Interlobular septal thickening":
        assert a.hu[region > 0.5].mean() > b.hu[region > 0.5].mean() + 150
        assert a.hu[lung].mean() > b.hu[lung].mean() + 20
    elif name == "Lymphadenopathy":
        big = region > 0.5
        assert abs(cen[0]) < 0.45 and a.hu[big].mean() > b.hu[big].mean() + 60
    elif name == "Hiatal hernia":
        assert (a.hu[region > 0.5] < -700).any() or (np.abs(a.hu[region > 0.5] - 18) < 30).any()
        assert cen[2] < 0.4 and cen[1] > 0  # low, behind the heart
    elif name == "Bronchiectasis":
        assert (a.hu[lung] < -930).sum() > (b.hu[lung] < -930).sum() + 15  # wide air-filled lumens
    elif name == "Peribronchial thickening":
        assert (a.hu[lung] > -400).sum() > (b.hu[lung] > -400).sum() + 40  # soft-tissue cuffs
    else:  # pragma: no cover
        raise AssertionError(f"no check for {name}")


@pytest.mark.parametrize("name", RENDERED_FINDINGS)
def test_each_rendered_finding_changes_the_image_where_expected(name):
    a, b = _pair(name)
    _check(name, a, b)


def test_implications_hold_for_sampled_labels():
    for seed in range(300):
        from medmm.data.synth.generator import _patient_state, _scan_labels

        age, _, _ = _patient_state(seed)
        for labels in _scan_labels(seed, age, 2):
            for child, parent in IMPLICATIONS:
                assert not (labels[child] == 1 and labels[parent] != 1)


def test_prevalences_follow_the_table():
    from medmm.data.synth.labels import PREVALENCE, sample_age_sex, sample_labels

    rng = np.random.default_rng(0)
    draws = [sample_labels(rng, sample_age_sex(rng)[0]) for _ in range(4000)]
    for name, target in PREVALENCE.items():
        assert abs(np.mean([d[name] for d in draws]) - target) < 0.03, name
    # age correlation: calcification is commoner in the old
    age_rng = np.random.default_rng(1)
    young = np.mean([sample_labels(age_rng, 35)["Arterial wall calcification"] for _ in range(1000)])
    elderly = np.mean([sample_labels(age_rng, 80)["Arterial wall calcification"] for _ in range(1000)])
    assert elderly > young + 0.3


def test_follow_up_keeps_anatomy_and_chronic_findings():
    from medmm.data.synth.generator import _patient_state, _scan_labels
    from medmm.data.synth.labels import ACUTE

    kept = total = 0
    for entropy in range(200):
        age, _, _ = _patient_state(entropy)
        first, second = _scan_labels(entropy, age, 2)
        for name in CT_RATE_FINDINGS:
            if name not in ACUTE and first[name] == 1:
                total += 1
                kept += second[name] == 1
    assert kept / total > 0.9
    a, *_ = render_scan(5, 32, None, 0, 2)
    b, *_ = render_scan(5, 32, None, 1, 2)
    assert a.landmarks.half_width == b.landmarks.half_width and not np.array_equal(a.hu, b.hu)
