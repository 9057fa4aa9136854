"""Adversarial examples within an L∞ ball: FGSM and PGD on the normalised image.

Used for adversarial training (``training.adversarial``) and, by `medmm.evaluation`, for
robustness sweeps. ε is stated in HU by the user and converted to normalised intensity units with
`medmm.data.transforms.hu_to_intensity_eps`, so "4 HU" means the same whatever window is used.

FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015.
PGD:  Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.

Written here rather than taken from a library because the attack must call medmm's multimodal
forward (image + fixed text) through an arbitrary ``loss_fn`` and stay within an intensity window;
the whole algorithm is a few lines of ``torch.autograd.grad``.

>>> import torch
>>> x = torch.zeros(1, 1, 4, 4, 4)
>>> x_adv = perturb(lambda z: (z * 2).sum(), x, "fgsm", eps=0.01)
>>> round(float(x_adv.max()), 4)
0.01
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

Method = Literal["fgsm", "pgd"]


def perturb(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    method: Method | str,
    eps: float,
    steps: int = 1,
    step_size: float | None = None,
    bounds: tuple[float, float] | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``x_adv`` with ``|x_adv - x|∞ <= eps`` that (approximately) maximises ``loss_fn``.

    Args:
        loss_fn: maps an image batch to a scalar loss to increase (e.g. the BCE of the model's
            logits with fixed text). Only gradients w.r.t. the image are taken; parameter
            gradients are left untouched.
        x: clean images ``[B, 1, X, Y, Z]`` in normalised units.
        method: ``"fgsm"`` (one signed-gradient step of size ``eps``) or ``"pgd"``
            (``steps`` signed steps of ``step_size``, projected back into the ε-ball).
        eps: L∞ bound in normalised units (see ``hu_to_intensity_eps``); 0 returns ``x``.
        steps: PGD iterations (ignored by FGSM).
        step_size: PGD step; default ``2.5 * eps / steps`` (Madry et al.).
        bounds: optional valid intensity range (e.g. the window's ``(b_min, b_max)``).
        random_start: PGD starts from a uniform point in the ε-ball (uses ``generator``).
        generator: RNG for the random start, for reproducibility.

    Returns:
        Detached adversarial images, same shape/dtype/device as ``x``.

    Raises:
        ValueError: unknown method, negative ε or non-positive steps.
    """
    if method not in ("fgsm", "pgd"):
        raise ValueError(f"unknown adversarial method {method!r}; expected 'fgsm' or 'pgd'")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = x.detach()
    if eps == 0:
        return x.clone()
    if method == "fgsm":
        steps, step_size, random_start = 1, eps, False
    elif step_size is None:
        step_size = 2.5 * eps / steps

    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        x_adv = x_adv + (2 * noise - 1) * eps
        x_adv = _project(x_adv, x, eps, bounds)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x_adv)
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps, bounds)
    return x_adv.detach()


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Clip into the L∞ ball around ``x`` and into the valid intensity range."""
    x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
    if bounds is not None:
        x_adv = x_adv.clamp(bounds[0], bounds[1])
    return x_adv
