"""FGSM/PGD: the perturbation stays inside the ε-ball (and the window) and increases the loss."""

from __future__ import annotations

import pytest
import torch

from medmm.data.transforms import PreprocessingConfig, hu_to_intensity_eps
from medmm.models.adversarial import perturb


def _model_and_loss(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])

    def loss_fn(x):
        return torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)

    return net, loss_fn


@pytest.mark.parametrize("method, steps", [("fgsm", 1), ("pgd", 1), ("pgd", 5)])
@pytest.mark.parametrize("eps_hu", [1.0, 8.0])
def test_perturbation_within_eps_and_increases_loss(method, steps, eps_hu):
    cfg = PreprocessingConfig(hu_window=(-1000, 1000), intensity_range=(0, 1))
    eps = hu_to_intensity_eps(eps_hu, cfg)
    net, loss_fn = _model_and_loss()
    x = torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    x_adv = perturb(loss_fn, x, method, eps, steps=steps)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= eps + 1e-6  # float32 rounding
    assert float(loss_fn(x_adv).detach()) > float(loss_fn(x).detach())
    assert all(p.grad is None for p in net.parameters())  # parameter gradients untouched


def test_bounds_and_random_start_are_respected():
    _, loss_fn = _model_and_loss()
    x = torch.zeros(2, 1, 6, 6, 6)
    x_adv = perturb(loss_fn, x, "pgd", eps=0.1, steps=3, bounds=(0.0, 1.0), random_start=True,
                    generator=torch.Generator().manual_seed(0))
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 0.1 + 1e-6


def test_eps_zero_is_identity_and_pgd_is_deterministic():
    _, loss_fn = _model_and_loss()
    x = torch.rand(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(perturb(loss_fn, x, "fgsm", eps=0.0), x)
    assert torch.equal(perturb(loss_fn, x, "pgd", 0.01, steps=3), perturb(loss_fn, x, "pgd", 0.01, steps=3))


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "cw", "eps": 0.1}, "unknown adversarial method"),
    ({"method": "fgsm", "eps": -1.0}, "eps must be >= 0"),
    ({"method": "pgd", "eps": 0.1, "steps": 0}, "steps must be >= 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        perturb(lambda z: z.sum(), torch.zeros(1, 1, 2, 2, 2), **kwargs)


@pytest.mark.parametrize("window, out_range, eps_hu, expected", [
    ((-1000, 1000), (0, 1), 4.0, 0.002),
    ((-1000, 1000), (-1, 1), 4.0, 0.004),
    ((-1000, 200), (0, 1), 12.0, 0.01),
])
def test_hu_to_intensity_eps(window, out_range, eps_hu, expected):
    cfg = PreprocessingConfig(hu_window=window, intensity_range=out_range)
    assert hu_to_intensity_eps(eps_hu, cfg) == pytest.approx(expected)
