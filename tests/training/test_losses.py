"""Masked BCE, the label-fraction mask and positive weights."""

from __future__ import annotations

import pytest
import torch

from medmm.training.losses import auto_pos_weight, label_fraction_mask, masked_bce, resolve_pos_weight


def test_unknown_labels_do_not_contribute():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    known = masked_bce(logits, torch.tensor([[1.0, 0.0, -1.0]]))
    changed = masked_bce(logits + torch.tensor([[0.0, 0.0, 9.0]]), torch.tensor([[1.0, 0.0, -1.0]]))
    assert torch.allclose(known, changed)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :2], torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(known, expected)


def test_mask_hides_entries_and_empty_mask_gives_zero_with_grad():
    logits = torch.zeros(2, 2, requires_grad=True)
    targets = torch.ones(2, 2)
    loss = masked_bce(logits, targets, mask=torch.zeros(2, 2, dtype=torch.bool))
    assert float(loss.detach()) == 0.0
    loss.backward()  # still differentiable
    half = masked_bce(torch.tensor([[0.0, 5.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[True, False]]))
    assert float(half) == pytest.approx(float(torch.log(torch.tensor(2.0))))


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_label_fraction_mask_is_seeded_and_sized(fraction):
    a = label_fraction_mask(400, 18, fraction, seed=3)
    assert a.shape == (400, 18) and a.dtype == torch.bool
    assert torch.equal(a, label_fraction_mask(400, 18, fraction, seed=3))
    assert abs(a.float().mean().item() - fraction) < 0.03
    if fraction < 1:
        assert not torch.equal(a, label_fraction_mask(400, 18, fraction, seed=4))


def test_pos_weight_settings():
    labels = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    assert auto_pos_weight(labels).tolist() == [3.0, 3.0, 1.0]
    assert resolve_pos_weight(None, labels) is None
    assert resolve_pos_weight(2, labels).tolist() == [2.0, 2.0, 2.0]
    assert resolve_pos_weight([1, 2, 3], labels).tolist() == [1.0, 2.0, 3.0]
