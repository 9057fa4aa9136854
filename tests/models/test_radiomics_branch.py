"""Radiomics branch: content-keyed cache, sliding-window stitching, and its absence by default."""

from __future__ import annotations

import torch

from medmm.config import InfererConfig
from medmm.inference.sliding import compute_feature_map

CENTRES = [0.0, 0.1, 0.25, 0.5, 1.0]
CONTEXT = {"centres": [0.0, 0.5, 1.0], "context_centres": [0.0, 1.0], "context_voxels": [3]}


def test_default_network_has_no_radiomics(tiny_config):
    from medmm.models import MedMM

    model = MedMM(tiny_config(), ["Emphysema"]).eval()
    assert model.radiomics is None
    assert model.feature_map(torch.zeros(1, 1, 32, 32, 32)).shape[1] == model.image_encoder.channels


def test_cache_reuses_maps_of_identical_inputs_only(radiomics_model):
    model = radiomics_model(intensity=CENTRES, context=CONTEXT).eval()
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    direct = model.feature_map(x)
    model.cache_fixed_inputs(True)
    first = model.feature_map(x)
    assert len(model.radiomics.cache) == 2
    again = model.feature_map(x.flip(0))  # the same two images in the other order: both hit
    assert len(model.radiomics.cache) == 2
    torch.testing.assert_close(again, first.flip(0))
    channels = model.image_encoder.channels
    torch.testing.assert_close(first[:, channels:], direct[:, channels:], atol=1e-6, rtol=0)
    model.feature_map(x + 0.01)  # other content: computed and stored
    assert len(model.radiomics.cache) == 4
    attacked = x.clone().requires_grad_(True)  # an input that needs a gradient never uses the cache
    out = model.feature_map(attacked)[:, channels:].sum()
    out.backward()
    assert attacked.grad is not None and len(model.radiomics.cache) == 4


def test_sliding_window_stitches_the_histogram_channels(radiomics_model):
    """Windows that tile the volume on feature-map cells give exactly the direct histogram maps."""
    model = radiomics_model(intensity=CENTRES).eval()
    x = torch.rand(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = model.feature_map(x)
        stitched = compute_feature_map(model.feature_map, x, InfererConfig(roi_size=(32, 32, 32), overlap=0.0,
                                                                          mode="constant"), force_sliding=True)
    channels = model.image_encoder.channels
    assert stitched.shape == direct.shape and direct.shape[2:] == (2, 2, 2)
    torch.testing.assert_close(stitched[:, channels:], direct[:, channels:], atol=1e-5, rtol=0)
