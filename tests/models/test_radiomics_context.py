"""Joint (intensity, neighbourhood mean) histogram: definition, counted vs exact, gradient, branch, workflow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medmm.config import ContextHistogramConfig, load_workflow
from medmm.errors import MedmmConfigError
from medmm.models import MedMM, derive_network
from medmm.models.radiomics.branch import HISTOGRAM_EPS
from medmm.models.radiomics.cells import central_mean, pack_cells, unpack_cells
from medmm.models.radiomics.context import ContextHistogram, box_mean
from medmm.models.radiomics.intensity import IntensityHistogram

CENTRES = [0.0, 0.1, 0.25, 0.5, 1.0]  # deliberately uneven spacing
CONTEXT = [0.0, 0.2, 0.6, 1.0]


def _weights(values: np.ndarray, centres: list[float]) -> np.ndarray:
    """``[N, bins]`` triangular-kernel memberships (values clipped to the centres' range)."""
    c = np.asarray(centres)
    v = np.clip(values.ravel(), c[0], c[-1])
    out = np.zeros((len(v), len(c)))
    for n, value in enumerate(v):
        i = min(np.searchsorted(c, value, side="right") - 1, len(c) - 2)
        t = (value - c[i]) / (c[i + 1] - c[i])
        out[n, i], out[n, i + 1] = 1 - t, t
    return out


def _reference(x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Joint histogram of one ``[X, Y, Z]`` volume by explicit outer products of memberships."""
    t = torch.from_numpy(x)[None, None]
    means = [F.avg_pool3d(t, s, 1, s // 2, count_include_pad=False)[0, 0].numpy() for s in sizes]
    axes = [_weights(x, CENTRES)] + [_weights(m, CONTEXT) for m in means]
    joint = axes[0]
    for w in axes[1:]:
        joint = (joint[:, :, None] * w[:, None, :]).reshape(len(joint), -1)
    return joint.mean(axis=0)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_box_mean_is_the_average_over_the_voxels_inside_the_volume(size):
    x = torch.rand(2, 3, 7, 5, 6, generator=torch.Generator().manual_seed(size))
    expected = F.avg_pool3d(x, size, 1, size // 2, count_include_pad=False)
    torch.testing.assert_close(box_mean(x, size), expected, atol=1e-6, rtol=0)


def test_box_mean_rejects_even_sizes():
    with pytest.raises(ValueError, match="odd"):
        box_mean(torch.zeros(1, 1, 4, 4, 4), 4)


def test_counted_histogram_matches_the_definition_within_its_quantisation():
    x = torch.rand(1, 1, 6, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.2 - 0.1
    expected = _reference(x[0, 0].numpy(), [3, 5])
    fine = ContextHistogram(CENTRES, CONTEXT, [3, 5], subdivisions=16)(x.float(), grid=(1, 1, 1)).flatten()
    coarse = ContextHistogram(CENTRES, CONTEXT, [3, 5], subdivisions=2)(x.float(), grid=(1, 1, 1)).flatten()
    assert fine.shape == (len(CENTRES) * len(CONTEXT) ** 2,)
    assert abs(float(fine.sum()) - 1) < 1e-5
    # each voxel's position is rounded to 1/(2 s) of a bin per axis: finer subdivisions, closer values
    err_fine, err_coarse = np.abs(fine.numpy() - expected).max(), np.abs(coarse.numpy() - expected).max()
    assert err_fine < 0.03 and err_fine < err_coarse


def test_exact_path_matches_the_definition_and_carries_the_gradient():
    x = torch.rand(1, 1, 6, 5, 7, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.1
    hist = ContextHistogram(CENTRES, CONTEXT, [3])
    xg = x.clone().requires_grad_(True)
    out = hist(xg, grid=(1, 1, 1)).flatten()
    torch.testing.assert_close(out.detach(), hist(x, grid=(1, 1, 1)).flatten())  # values as counted
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()

    def exact(v: torch.Tensor) -> torch.Tensor:  # the textbook joint histogram, differentiable
        axes = []
        for values, centres in ((v, CENTRES), (F.avg_pool3d(v, 3, 1, 1, count_include_pad=False), CONTEXT)):
            c = torch.tensor(centres)
            values = values.flatten().clamp(c[0], c[-1])
            members = [((values - c[i - 1]) / (c[i] - c[i - 1])).clamp(0, 1) if i > 0 else torch.ones_like(values)
                       for i in range(len(c))]
            falling = [((c[i + 1] - values) / (c[i + 1] - c[i])).clamp(0, 1) if i < len(c) - 1 else torch.ones_like(values)
                       for i in range(len(c))]
            axes.append(torch.stack([torch.minimum(a, b) for a, b in zip(members, falling)], 1))
        return (axes[0][:, :, None] * axes[1][:, None, :]).flatten(1).mean(0)

    xr = x.clone().requires_grad_(True)
    (exact(xr) * weights).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, atol=1e-6, rtol=1e-4)
    assert xg.grad.abs().sum() > 0


def test_soft_tissue_in_lung_and_in_soft_tissue_land_in_different_bins():
    """The point of the context axis: same intensity, different surroundings, different bins."""
    hist = ContextHistogram([0.0, 0.5, 1.0], [0.0, 0.5, 1.0], [3])
    lung = torch.zeros(1, 1, 9, 9, 9)
    lung[0, 0, 4, 4, 4] = 0.5  # one soft-tissue voxel in air
    solid = torch.full((1, 1, 9, 9, 9), 0.5)  # soft tissue everywhere
    in_lung = hist(lung, (1, 1, 1)).view(3, 3)
    in_solid = hist(solid, (1, 1, 1)).view(3, 3)
    assert in_solid[1, 1] == 1  # soft tissue with a soft-tissue neighbourhood
    assert in_lung[1, 0] > 0 and in_lung[1, 1] == 0  # soft tissue with an air neighbourhood


def test_cells_sum_to_one_and_count_only_their_own_voxels():
    x = torch.zeros(1, 1, 8, 4, 4)
    x[:, :, 4:] = 1.0
    hist = ContextHistogram([0.0, 1.0], [0.0, 1.0], [1])(x, grid=(2, 1, 1))
    assert hist.shape == (1, 4, 2, 1, 1)
    torch.testing.assert_close(hist.sum(1), torch.ones(1, 2, 1, 1))
    assert hist[0, 0, 0].item() == 1 and hist[0, 3, 1].item() == 1  # (dark, dark) / (bright, bright)


@pytest.mark.parametrize("kwargs, match", [
    (dict(centres=[0.0, 1.0], context_centres=[0.0, 1.0], context_sizes=[2]), "odd"),
    (dict(centres=[0.0, 1.0], context_centres=[0.0, 1.0], context_sizes=[]), "odd"),
    (dict(centres=[1.0, 0.0], context_centres=[0.0, 1.0], context_sizes=[3]), "strictly increasing"),
])
def test_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContextHistogram(**kwargs)


def test_config_rejects_even_neighbourhoods_and_unsorted_centres():
    with pytest.raises(ValueError, match="odd"):
        ContextHistogramConfig(hu=[0, 1], context_hu=[0, 1], context_voxels=[4])
    with pytest.raises(ValueError, match="strictly increasing"):
        ContextHistogramConfig(hu=[1, 0], context_hu=[0, 1])


CONTEXT_SECTION = {"centres": CENTRES, "context_centres": CONTEXT, "context_voxels": [3]}


def test_branch_appends_joint_bins_and_the_pooled_embedding_sees_them(radiomics_model):
    model = radiomics_model(intensity=CENTRES, context=CONTEXT_SECTION).eval()
    branch, channels = model.radiomics, model.image_encoder.channels
    x = torch.zeros(1, 1, 32, 32, 32)
    fmap = model.feature_map(x)
    assert branch.context_channels == len(CENTRES) * len(CONTEXT)
    assert fmap.shape[1] == channels + branch.histogram_channels + branch.context_channels
    nodule = x.clone()
    nodule[0, 0, 10:12, 10:12, 10:12] = 0.25  # 8 soft-tissue voxels in "lung"
    with torch.no_grad():
        pooled, tokens = model.embed(fmap)
        pooled_nodule, _ = model.embed(model.feature_map(nodule))
    assert pooled.shape == (1, 16) and tokens.shape == (1, 8, 16)
    assert not torch.allclose(pooled, pooled_nodule)


def test_branch_needs_context_centres_in_input_units(tiny_config):
    with pytest.raises(ValueError, match="context and its derived centres"):
        MedMM(tiny_config(radiomics={"context": {"hu": [0, 1], "context_hu": [0, 1]}}), ["Emphysema"])


def _workflow(context: dict, window=(-1000, 3000)):
    return load_workflow({
        "preprocessing": {"hu_window": list(window), "intensity_range": [0.0, 1.0], "roi_size": [32, 32, 32]},
        "network": {"radiomics": {"context": context}},
    })


def test_workflow_maps_both_axes_through_the_window():
    cfg = _workflow({"hu": [-1000, 1000, 3000], "context_hu": [-1000, -600], "context_voxels": [3, 9]})
    derived = derive_network(cfg.network, cfg.preprocessing)
    assert derived.context_centres == pytest.approx([0.0, 0.5, 1.0])
    assert derived.context_context_centres == pytest.approx([0.0, 0.1])


@pytest.mark.parametrize("context, key", [
    ({"hu": [-1000, 2000], "context_hu": [-1000, 0]}, "radiomics.context.hu spans"),
    ({"hu": [-1000, 0], "context_hu": [-1200, 0]}, "radiomics.context.context_hu spans"),
])
def test_workflow_rejects_centres_the_window_clips_away(context, key):
    with pytest.raises(MedmmConfigError, match=key):
        _workflow(context, window=(-1000, 1000))


def test_workflow_names_an_unknown_context_key():
    with pytest.raises(MedmmConfigError, match="radiomics.context.sizes: unknown key"):
        _workflow({"hu": [-1000, 0], "context_hu": [-1000, 0], "sizes": [3]})


def test_a_one_scan_training_batch_uses_the_running_statistics(radiomics_model):
    model = radiomics_model(context=CONTEXT_SECTION).train()
    before = model.radiomics.context_norm.running_mean.clone()
    pooled, _ = model.embed(model.feature_map(torch.rand(1, 1, 64, 64, 64)))  # 64³: the CNN's BatchNorm needs > 1 cell
    assert torch.isfinite(pooled).all() and torch.equal(model.radiomics.context_norm.running_mean, before)


@pytest.mark.parametrize("make", [
    lambda: ContextHistogram(CENTRES, CONTEXT, [3]),
    lambda: IntensityHistogram(CENTRES),
])
def test_an_attack_after_an_inference_mode_call_still_gets_a_gradient(make):
    """Evaluation runs clean scans under inference mode, then attacks them: cached helpers must not
    hand autograd inference tensors (regression: `medmm evaluate --attack` failed)."""
    hist = make()
    shape = (1, 1, 7, 6, 5)  # a shape no other test caches
    with torch.inference_mode():
        hist(torch.rand(shape), grid=(1, 1, 1))
    x = torch.rand(shape, requires_grad=True)
    hist(x, grid=(1, 1, 1)).sum().backward()
    assert x.grad is not None


def test_packed_cells_round_trip_and_keep_their_feature_map_cell():
    x = torch.rand(2, 3, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    packed = pack_cells(x, 2)
    assert packed.shape == (2, 24, 2, 3, 4)
    assert torch.equal(unpack_cells(packed, 2), x)
    # the 8 channels of feature-map cell (1, 2, 3) are the fine cells inside it
    torch.testing.assert_close(packed[:, :, 1, 2, 3].view(2, 3, 8), x[:, :, 2:4, 4:6, 6:8].reshape(2, 3, 8))
    assert pack_cells(x, 1) is x and unpack_cells(x, 1) is x


def test_central_mean_pools_the_centred_box():
    x = torch.rand(1, 2, 4, 6, 5, generator=torch.Generator().manual_seed(0))
    # 4 cells: centres 1/8, 3/8, 5/8, 7/8 -> the middle half keeps cells 1-2; 6 cells keep 1-4; z: all
    expected = x[:, :, 1:3, 1:5, :].mean(dim=(2, 3, 4))
    torch.testing.assert_close(central_mean(x, [0.5, 0.5, 1.0]), expected)
    # a box narrower than one cell keeps the middle cell
    torch.testing.assert_close(central_mean(x, [0.01, 0.01, 0.01]), x[:, :, 2, 3, 2])


def _central_model(radiomics_model, split: int) -> MedMM:
    section = {**CONTEXT_SECTION, "cell_split": split, "central_region": [0.5, 0.5, 1.0]}
    return radiomics_model(context=section).eval()


def test_split_cells_are_the_histogram_of_the_finer_grid(radiomics_model):
    model, x = _central_model(radiomics_model, 2), torch.rand(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    branch, channels = model.radiomics, model.image_encoder.channels
    with torch.no_grad():
        fmap = model.feature_map(x)
        fine = branch.context_histogram(x, (4, 4, 4))
    assert branch.context_channels == 8 * len(CENTRES) * len(CONTEXT) and fmap.shape[1] == channels + branch.channels
    torch.testing.assert_close(unpack_cells(fmap[:, channels:], 2), fine)


def test_central_region_pools_see_a_central_change_more_than_a_peripheral_one(radiomics_model):
    """Soft tissue added in the middle moves the central pool; the same amount at the edge does not."""
    model = _central_model(radiomics_model, 2)
    channels = model.image_encoder.channels
    x = torch.zeros(1, 1, 64, 64, 64)
    central, edge = x.clone(), x.clone()
    central[0, 0, 28:36, 28:36, 28:36] = 0.25
    edge[0, 0, 4:12, 4:12, 28:36] = 0.25  # away from the border: same neighbourhoods as the central blob
    with torch.no_grad():
        cells = [unpack_cells(model.feature_map(v)[:, channels:], 2) for v in (x, central, edge)]
    whole = [c.mean(dim=(2, 3, 4)) for c in cells]
    middle = [central_mean(c, [0.5, 0.5, 1.0]) for c in cells]
    torch.testing.assert_close(whole[1], whole[2])  # same voxels changed, same whole-volume histogram
    assert not torch.allclose(middle[1], middle[0]) and torch.allclose(middle[2], middle[0])
    assert model.radiomics.context_norm.num_features == 2 * len(CENTRES) * len(CONTEXT)


def test_central_region_must_be_three_fractions():
    for bad in ([0.5, 0.5], [0.5, 0.0, 1.0], [0.5, 1.5, 1.0]):
        with pytest.raises(ValueError, match="central_region"):
            ContextHistogramConfig(hu=[0, 1], context_hu=[0, 1], central_region=bad)
