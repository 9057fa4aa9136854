"""Sliding-window feature maps: same as a direct pass where they must be, MONAI used when larger."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medmm.errors import MedmmConfigError
from medmm.inference.sliding import InfererSettings, compute_feature_map, needs_sliding_window


def strided_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv3d(4, 6, 3, stride=2, padding=1))


def pointwise_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 1), nn.ReLU(), nn.Conv3d(4, 3, 1))


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_single_window_equals_direct_pass(mode):
    net, x = strided_net(), torch.randn(1, 1, 16, 16, 16)
    settings = InfererSettings(roi_size=16, overlap=0.5, mode=mode)
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
    settings = InfererSettings(roi_size=16, overlap=overlap, mode=mode)
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
        fm = compute_feature_map(feature_fn, x, InfererSettings(roi_size=16, sw_batch_size=1), device="cpu")
    assert set(sizes) == {(16, 16, 16)} and len(sizes) > 1
    assert fm.shape == (1, 6, 10, 6, 4) and torch.isfinite(fm).all()


@pytest.mark.parametrize(
    "meta,roi",
    [
        ({"inferer": {"roi_size": [8, 8, 8]}}, (8, 8, 8)),
        ({"workflow": {"inferer": {"roi_size": 24, "unknown_key": 1}}}, (24, 24, 24)),
        ({"preprocessing": {"roi_size": [32, 32, 16]}}, (32, 32, 16)),
        ({}, (64, 64, 64)),
    ],
)
def test_settings_from_meta(meta, roi):
    assert InfererSettings.from_meta(meta).roi_size == roi


def test_settings_bad_mode_is_config_error():
    with pytest.raises(MedmmConfigError, match="inferer"):
        InfererSettings.from_meta({"inferer": {"mode": "median"}})


def test_stitching_is_differentiable():
    net = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True))
    x = torch.randn(1, 1, 40, 24, 16, requires_grad=True)
    fm = compute_feature_map(net, x, InfererSettings(roi_size=16, overlap=0.25))
    fm.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
