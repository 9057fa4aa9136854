"""Coarse CT anatomy map on phantoms, and the evidence-site check (flags evidence outside the site)."""

from __future__ import annotations

import numpy as np
import pytest

from medmm.data.synth.anatomy import Tissue
from medmm.data.synth.generator import render_scan
from medmm.inference.anatomy import anatomy_map, site_check, site_regions


@pytest.fixture(scope="module")
def effusion_case():
    phantom, _, _, _ = render_scan(4242, 32, {"Pleural effusion": 1})
    return phantom, anatomy_map(phantom.hu, phantom.grid.spacing)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_lungs_are_found_where_the_generator_puts_them(effusion_case):
    phantom, amap = effusion_case
    assert _dice(amap.mask("lung"), phantom.tissue == Tissue.LUNG) > 0.85
    assert (amap.labels[phantom.tissue == Tissue.OUTSIDE] == 0).mean() > 0.98
    assert (amap.mask("mediastinum")[phantom.tissue == Tissue.HEART]).mean() > 0.8
    assert (amap.mask("bone")[phantom.tissue == Tissue.BONE]).mean() > 0.4  # 12 mm voxels: ribs partial-volumed
    effusion = phantom.effects["Pleural effusion"] > 0.5
    assert amap.mask("pleural space")[effusion].mean() > 0.5  # the fluid is in the pleural space


def _blob_at(shape, mask: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """A Gaussian heatmap centred on the voxel deepest inside ``mask``."""
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    heat = np.zeros(shape, np.float32)
    heat[np.unravel_index(int(np.argmax(distance_transform_edt(mask))), shape)] = 1.0
    heat = gaussian_filter(heat, sigma)
    return heat / heat.max()


def test_evidence_outside_the_site_is_flagged(effusion_case):
    phantom, amap = effusion_case
    effusion = phantom.effects["Pleural effusion"] > 0.5
    on_site = site_check("Pleural effusion", "Pleural space", _blob_at(effusion.shape, effusion), amap, True)
    assert on_site["fraction_in_site"] > 0.5 and on_site["flag"] is None
    heart = phantom.tissue == Tissue.HEART
    elsewhere = site_check("Pleural effusion", "Pleural space", _blob_at(heart.shape, heart), amap, True)
    assert elsewhere["fraction_in_site"] < 0.5 and elsewhere["main_region"] == "mediastinum"
    assert elsewhere["flag"].startswith("Pleural effusion — evidence mostly outside the pleural space")
    # a map that localises nothing says nothing about where: no flag
    assert site_check("Pleural effusion", "Pleural space", _blob_at(heart.shape, heart), amap, False)["flag"] is None


def test_every_ontology_site_maps_to_regions():
    from medmm.knowledge import load_ontology

    onto = load_ontology()
    for finding in onto.labels:
        site = onto.anatomical_site(finding)
        if site is not None and onto.synonyms(finding):
            assert site_regions(site, onto), (finding, site)
