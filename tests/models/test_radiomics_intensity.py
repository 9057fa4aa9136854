"""Soft intensity histogram: exact bin fractions per cell, gradients, and its place in the radiomics branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.config import RadiomicsConfig, load_workflow
from medmm.errors import MedmmConfigError
from medmm.models import MedMM, derive_network
from medmm.models.radiomics.intensity import IntensityHistogram, cell_index

CENTRES = [0.0, 0.1, 0.25, 0.5, 1.0]  # deliberately uneven spacing


def _reference(values: np.ndarray, centres: list[float]) -> np.ndarray:
    """Histogram with explicit triangular kernels (O(voxels x bins)), the textbook definition."""
    c = np.asarray(centres)
    v = np.clip(values.ravel(), c[0], c[-1])[:, None]
    left = np.r_[c[0] - 1.0, c[:-1]]  # the first/last kernels are flat outside the range
    right = np.r_[c[1:], c[-1] + 1.0]
    rising = np.where(np.arange(len(c)) == 0, 1.0, (v - left) / (c - left))
    falling = np.where(np.arange(len(c)) == len(c) - 1, 1.0, (right - v) / (right - c))
    return np.clip(np.minimum(rising, falling), 0, 1).mean(axis=0)


def test_matches_the_triangular_kernel_definition_per_cell():
    x = torch.rand(2, 1, 8, 6, 4, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1  # some out of range
    got = IntensityHistogram(CENTRES)(x, grid=(2, 1, 2))
    assert got.shape == (2, 5, 2, 1, 2)
    for b in range(2):
        for i in range(2):
            for k in range(2):
                cell = x[b, 0, 4 * i:4 * i + 4, :, 2 * k:2 * k + 2].numpy()
                np.testing.assert_allclose(got[b, :, i, 0, k].numpy(), _reference(cell, CENTRES), atol=2e-3)
    torch.testing.assert_close(got.sum(1), torch.ones(2, 2, 1, 2))


def test_a_value_between_two_centres_is_split_linearly():
    hist = IntensityHistogram(CENTRES)(torch.full((1, 1, 2, 2, 2), 0.4), grid=(1, 1, 1)).flatten()
    torch.testing.assert_close(hist, torch.tensor([0.0, 0.0, 0.4, 0.6, 0.0]), atol=5e-3, rtol=0)


def test_each_cell_counts_only_its_own_voxels():
    x = torch.zeros(1, 1, 4, 4, 4)
    x[:, :, 2:] = 1.0  # second half of the first axis is bright
    hist = IntensityHistogram(CENTRES)(x, grid=(2, 1, 1))
    assert hist[0, 0, 0, 0, 0] == 1 and hist[0, -1, 1, 0, 0] == 1 and hist.sum() == 2


def test_channels_get_their_own_bins():
    x = torch.stack([torch.zeros(4, 4, 4), torch.ones(4, 4, 4)])[None]
    hist = IntensityHistogram([0.0, 1.0])(x, grid=(1, 1, 1)).flatten().tolist()
    assert hist == [1.0, 0.0, 0.0, 1.0]


def test_uneven_cells_cover_every_voxel_once():
    cells = cell_index((5, 3, 7), (2, 2, 3))
    assert cells.shape == (5 * 3 * 7,) and set(cells.tolist()) == set(range(12))
    counts = torch.bincount(cells)
    assert counts.max() - counts.min() <= 2 * 3 * 3  # cells differ by at most one voxel per axis


def test_gradient_reaches_intensities_inside_the_range():
    x = torch.full((1, 1, 2, 2, 2), 0.3, requires_grad=True)
    IntensityHistogram(CENTRES)(x, grid=(1, 1, 1))[0, 3].sum().backward()  # the 0.5 bin grows with x
    assert (x.grad > 0).all()


@pytest.mark.parametrize("centres", [[0.5], [0.0, 0.0, 1.0], [1.0, 0.5]])
def test_rejects_centres_that_are_not_increasing(centres):
    with pytest.raises(ValueError, match="strictly increasing"):
        IntensityHistogram(centres)
    with pytest.raises(ValueError, match="strictly increasing"):
        RadiomicsConfig(intensity_hu=centres)


def test_branch_appends_histogram_channels_and_sees_a_few_calcium_voxels(radiomics_model):
    model = radiomics_model(intensity=CENTRES).eval()
    channels = model.image_encoder.channels
    x = torch.full((1, 1, 32, 32, 32), 0.1)
    fmap = model.feature_map(x)
    assert fmap.shape[1] == channels + len(CENTRES) == channels + model.radiomics.channels
    spotted = x.clone()
    spotted[0, 0, 5:7, 5:7, 5:7] = 1.0  # 8 voxels of "calcium" in 32 768
    hist_before, hist_after = fmap[:, channels:], model.feature_map(spotted)[:, channels:]
    assert hist_after[0, -1].max() > 0 and hist_before[0, -1].max() == 0
    with torch.no_grad():
        pooled, tokens = model.embed(fmap)
        pooled_spot, tokens_spot = model.embed(model.feature_map(spotted))
    assert pooled.shape == (1, 16) and tokens.shape == (1, 8, 16)
    assert not torch.allclose(pooled, pooled_spot)  # the log fraction makes 8 voxels count
    assert not torch.allclose(tokens, tokens_spot)  # and each token sees its own region's bins


def test_branch_needs_centres_in_input_units(tiny_config):
    with pytest.raises(ValueError, match="derived centres"):
        MedMM(tiny_config(radiomics={"intensity_hu": [-1000.0, 0.0, 1000.0]}), ["Emphysema"])


def _workflow(hist_hu, window=(-1000, 3000)):
    return load_workflow({
        "preprocessing": {"hu_window": list(window), "intensity_range": [0.0, 1.0], "roi_size": [32, 32, 32]},
        "network": {"radiomics": {"intensity_hu": hist_hu}},
    })


def test_workflow_maps_histogram_hu_through_the_window():
    cfg = _workflow([-1000, -600, 1000, 3000])
    derived = derive_network(cfg.network, cfg.preprocessing)
    assert derived.histogram_centres == pytest.approx([0.0, 0.1, 0.5, 1.0])
    assert cfg.network.radiomics.intensity_hu == [-1000, -600, 1000, 3000]  # the config keeps HU


def test_workflow_rejects_centres_the_window_clips_away():
    with pytest.raises(MedmmConfigError, match="intensity_hu spans"):
        _workflow([-1000, 0, 2000], window=(-1000, 1000))


def test_values_do_not_depend_on_whether_a_gradient_is_needed():
    x = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    hist = IntensityHistogram(CENTRES)
    plain = hist(x, grid=(2, 2, 2))
    with_grad = hist(x.clone().requires_grad_(True), grid=(2, 2, 2))
    assert torch.equal(plain, with_grad.detach()) and with_grad.requires_grad


def test_a_one_scan_training_batch_uses_the_running_statistics(radiomics_model):
    """The last batch of an epoch can hold one scan; BatchNorm has no batch statistics for it."""
    model = radiomics_model(intensity=CENTRES).train()
    before = model.radiomics.histogram_norm.running_mean.clone()
    pooled, tokens = model.embed(model.feature_map(torch.rand(1, 1, 64, 64, 64)))
    assert pooled.shape == (1, 16) and torch.isfinite(pooled).all()
    assert torch.equal(model.radiomics.histogram_norm.running_mean, before)  # nothing learned from one scan
