"""Weight averaging (``training.ema_decay``): the EMA arithmetic, the swap, and resume with an average."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from medmm.training import train
from medmm.training.rundir import load_weights
from medmm.training.weight_average import WeightAverage

from training_helpers import interrupt_then_resume, tiny_workflow


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def test_update_follows_the_warmed_up_ema_formula():
    net = _net()
    average = WeightAverage(net, decay=0.9)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    average.update(net)  # t = 1: decay min(0.9, 2/11) -> weight on the new value 1 - 2/11
    expected = start + (1 - 2 / 11) * 1.0
    assert torch.allclose(average.shadow["0.weight"], expected)
    for _ in range(50):
        average.update(net)  # t grows: the decay reaches 0.9 and the average converges to the weights
    assert torch.allclose(average.shadow["0.weight"], net[0].weight, atol=1e-3)


def test_applied_swaps_in_the_average_and_restores_the_raw_weights():
    net = _net()
    average = WeightAverage(net, decay=0.99)
    averaged = {k: v.clone() for k, v in average.shadow.items()}
    net.train()
    net(torch.randn(8, 3))  # BatchNorm statistics and its int64 batch counter move
    with torch.no_grad():
        net[2].bias.add_(5.0)
    raw = {k: v.clone() for k, v in average.raw_state(net).items()}
    with average.applied(net) as model:
        assert torch.equal(model[2].bias, averaged["2.bias"])
        assert torch.equal(model[1].running_mean, averaged["1.running_mean"])
    for name, tensor in average.raw_state(net).items():
        assert torch.equal(tensor, raw[name]), name
    average.update(net)
    assert int(average.shadow["1.num_batches_tracked"]) == 1  # integer buffers are copied, not averaged


def test_decay_must_lie_between_zero_and_one():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_net(), 1.0)


@pytest.mark.slow
def test_training_with_an_average_saves_it_and_resumes_exactly(tiny_manifest, tmp_path, monkeypatch):
    wf = tiny_workflow(tiny_manifest, **{"training.epochs": 3, "training.ema_decay": 0.9})
    straight = train(wf, run_dir=tmp_path / "straight", verbose=False)
    last = load_file(str(straight.run_dir / "last.safetensors"))
    raw = load_weights(straight.run_dir)
    name = "fusion.head.bias" if "fusion.head.bias" in raw else next(k for k in raw if k.endswith("bias"))
    assert raw and not torch.equal(raw[name], last[name])  # the checkpoint is the average, the state the raw weights
    assert torch.equal(straight.model.state_dict()[name], last[name])  # Run.model = the last checkpoint
    _, _, resumed = interrupt_then_resume(wf, tmp_path / "r", monkeypatch)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == (straight.run_dir / "metrics.jsonl").read_text()
    resumed_last = load_file(str(tmp_path / "r" / "last.safetensors"))
    assert all(torch.equal(resumed_last[k], last[k]) for k in last)
