"""Sliding-window feature maps: same as a direct pass where they must be, MONAI used when larger."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medmm.config import InfererConfig
from medmm.inference.sliding import compute_feature_map, needs_sliding_window


def strided_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv3d(4, 6, 3, stride=2, padding=1))


def pointwise_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 1), nn.ReLU(), nn.Conv3d(4, 3, 1))


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_single_window_equals_direct_pass(mode):
    net, x = strided_net(), torch.randn(1, 1, 16, 16, 16)
    settings = InfererConfig(roi_size=16, overlap=0.5, mode=mode)
    with torch.inference_mode():
        direct = compute_feature_map(net, x, settings)
        stitched = compute_feature_map(net, x, settings, force_sliding=True)
    assert stitched.shape == direct.shape == (1, 6, 4, 4, 4)
    torch.testing.assert_close(stitched, direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "shape,overlap,mode",
    [((40, 24, 20), 0.25, "gaussian"), ((33, 17, 16), 0.5, "constant"), ((16, 16, 48), 0.0, "constant")],
)
def test_stitching_pointwise_network_is_exact(shape, overlap, mode):
    # a pointwise network has no borders: every blend of windows must equal the direct pass
    net, x = pointwise_net(), torch.randn(1, 1, *shape)
    settings = InfererConfig(roi_size=16, overlap=overlap, mode=mode)
    assert needs_sliding_window(shape, settings.roi_size)
    with torch.inference_mode():
        stitched = compute_feature_map(net, x, settings)
        direct = net(x)
    torch.testing.assert_close(stitched, direct, atol=1e-5, rtol=1e-4)


def test_larger_volume_runs_roi_sized_windows():
    net, sizes = strided_net(), []

    def feature_fn(t):
        sizes.append(tuple(t.shape[2:]))
        return net(t)

    x = torch.randn(1, 1, 40, 24, 16)
    with torch.inference_mode():
        fm = compute_feature_map(feature_fn, x, InfererConfig(roi_size=16, sw_batch_size=1), device="cpu")
    assert set(sizes) == {(16, 16, 16)} and len(sizes) > 1
    assert fm.shape == (1, 6, 10, 6, 4) and torch.isfinite(fm).all()


def test_settings_are_the_workflow_schema():
    assert InfererConfig(roi_size=16).roi_size == (16, 16, 16)
    assert InfererConfig().resolved((8, 8, 8)).roi_size == (8, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        InfererConfig(mode="median")


def test_stitching_is_differentiable():
    net = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True))
    x = torch.randn(1, 1, 40, 24, 16, requires_grad=True)
    fm = compute_feature_map(net, x, InfererConfig(roi_size=16, overlap=0.25))
    fm.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
