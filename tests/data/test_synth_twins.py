"""Counterfactual twins: the same phantom without one finding, and the lesion mask they define."""

from __future__ import annotations

import numpy as np

from medmm.data.synth.generator import render_scan
from medmm.data.synth.twins import lesion_mask, render_twin, without


def test_without_removes_the_findings_that_imply_it():
    labels, removed = without({"Consolidation": 1, "Lung opacity": 1, "Emphysema": 1}, "Lung opacity")
    assert labels["Lung opacity"] == 0 and labels["Consolidation"] == 0 and labels["Emphysema"] == 1
    assert removed == ["Lung opacity", "Consolidation"]


def test_twin_differs_only_at_the_lesion_and_is_deterministic():
    labels = {"Lung nodule": 1, "Cardiomegaly": 1}
    phantom, labels, _, _ = render_scan(77, 32, labels)
    twin, removed = render_twin(77, 32, labels, "Lung nodule")
    again, _ = render_twin(77, 32, labels, "Lung nodule")
    assert removed == ["Lung nodule"] and np.array_equal(twin.hu, again.hu)
    lesion = lesion_mask(phantom, twin)
    drawn = phantom.effects["Lung nodule"] > 0.5
    assert lesion.any() and (lesion & drawn).sum() >= 0.8 * drawn.sum()
    assert np.abs(phantom.hu[~lesion] - twin.hu[~lesion]).max() <= 30.0  # everything else as before
    assert (phantom.hu == twin.hu).mean() > 0.9  # bit-identical almost everywhere
    # an anatomy-level finding has a lesion too (the heart's growth), which `effects` does not record
    heart_twin, _ = render_twin(77, 32, labels, "Cardiomegaly")
    assert lesion_mask(phantom, heart_twin).sum() > 20 and "Cardiomegaly" not in phantom.effects
