"""Robustness sweep: attacks through medmm.models.adversarial.perturb on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.evaluation.robustness import AttackSpec, attack_probabilities, format_table, robustness_sweep, robustness_table

pytest.importorskip("medmm.models.adversarial")


class Linear3d(torch.nn.Module):
    """Logit_l = w_l * mean(x) + b_l: the attack can move every logit with the image mean."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([40.0, -40.0]))
        self.b = torch.nn.Parameter(torch.tensor([-20.0, 20.0]))

    def forward(self, x):
        return x.mean(dim=(1, 2, 3, 4))[:, None] * self.w + self.b


def _setup(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = np.zeros((n, 2), dtype=int)
    y[: n // 2, 0] = 1
    y[n // 2 :, 1] = 1
    means = torch.where(torch.tensor(y[:, 0] == 1), 0.53, 0.47)
    images = [torch.full((1, 6, 6, 6), float(m)) + 0.001 * torch.randn(1, 6, 6, 6, generator=g) for m in means]
    model = Linear3d()
    return model, images, y


def _logits(model):
    return lambda x, idx: model(x)


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attack_degrades_monotonically_in_eps(method):
    model, images, y = _setup()
    spec = AttackSpec(method, (0, 10, 25, 50), steps=5)
    rows = robustness_sweep(_logits(model), images, y, [0.5, 0.5], spec, hu_to_eps=lambda e: e / 1000, batch_size=5)
    assert [r["eps_hu"] for r in rows] == [0, 10, 25, 50]
    assert rows[0]["label_accuracy"] == 1.0 and rows[0]["mean_abs_prob_change"] == 0.0
    acc = [r["label_accuracy"] for r in rows]
    assert acc == sorted(acc, reverse=True) and acc[-1] < 0.5
    assert rows[-1]["macro_auroc"] < rows[0]["macro_auroc"]


def test_eps_zero_is_clean_and_batches_by_shape():
    model, images, y = _setup(n=6)
    images[0] = torch.full((1, 4, 4, 4), 0.53)  # odd shape goes in its own batch
    clean = attack_probabilities(_logits(model), images, y, "fgsm", 0.0, batch_size=4)
    with torch.no_grad():
        direct = np.stack([torch.sigmoid(model(im[None]))[0].numpy() for im in images])
    np.testing.assert_allclose(clean, direct, rtol=1e-6)


def test_attack_stays_in_bounds_and_budget():
    seen = []

    def logits_fn(x, idx):
        seen.append(x.detach().clone())
        return Linear3d()(x)

    _, images, y = _setup(n=4)
    attack_probabilities(logits_fn, images, y, "pgd", 0.02, steps=3, bounds=(0.0, 0.54), batch_size=4)
    x0 = torch.stack(images)
    final = seen[-1]
    assert float((final - x0).abs().max()) <= 0.02 + 1e-6
    assert float(final.max()) <= 0.54 + 1e-7


def test_same_seed_same_pgd_result():
    model, images, y = _setup(n=4)
    a = attack_probabilities(_logits(model), images, y, "pgd", 0.01, steps=3, seed=1)
    b = attack_probabilities(_logits(model), images, y, "pgd", 0.01, steps=3, seed=1)
    np.testing.assert_array_equal(a, b)


def test_table_and_spec_validation():
    rows = robustness_table({"std": [{"method": "fgsm", "eps_hu": 0.0, "macro_auroc": 0.9, "label_accuracy": 0.8,
                                      "mean_abs_prob_change": 0.0}]})
    assert rows[0]["model"] == "std"
    assert "std" in format_table(rows)
    with pytest.raises(ValueError, match="attack must be"):
        AttackSpec("cw")
    with pytest.raises(ValueError, match="eps_hu"):
        AttackSpec("fgsm", (-1.0,))
