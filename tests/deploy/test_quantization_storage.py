"""int8 weight storage and the model-history record (fast)."""

from __future__ import annotations

import torch

from medmm.deploy.provenance import describe, entry, runtime_flags
from medmm.deploy.quantization import SCALE_PREFIX, encode_int8, split_compressed


def test_int8_storage_round_trip_is_within_half_a_step():
    gen = torch.Generator().manual_seed(0)
    tensors = {"conv.weight": torch.randn(16, 4, 3, 3, 3, generator=gen), "bias": torch.randn(16, generator=gen),
               "tiny.weight": torch.randn(4, 4, generator=gen)}
    stored = encode_int8(tensors)
    assert stored["conv.weight"].dtype == torch.int8
    assert stored["bias"].dtype == torch.float32 and stored["tiny.weight"].dtype == torch.float32  # too small
    restored, ptq = split_compressed(dict(stored))
    assert ptq == {} and set(restored) == set(tensors)
    step = stored[SCALE_PREFIX + "conv.weight"].view(-1, 1, 1, 1, 1)
    assert ((restored["conv.weight"] - tensors["conv.weight"]).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(restored["bias"], tensors["bias"])


def test_plain_checkpoints_pass_through_unchanged():
    tensors = {"w": torch.ones(3, 3)}
    restored, ptq = split_compressed(tensors)
    assert restored is tensors and ptq == {}


def test_history_is_described_and_drives_the_runtime():
    meta = {"model_history": [
        entry("pruned", kind="structured", ratio=0.5, widths_before=[16, 32], widths_after=[8, 16]),
        entry("quantised", conv="static_int8_fx_x86", linear="dynamic_int8", calibration_scans=32),
        entry("distilled", teacher="demo@abc", epochs=3, teacher_weight=0.5),
    ]}
    lines = describe(meta)
    assert "pruned (structured, ratio 0.5): widths [16, 32] -> [8, 16]" in lines[0]
    assert "calibration 32 training scans" in lines[1]
    assert "teacher demo@abc" in lines[2]
    assert runtime_flags(meta) == {"linear_int8": True}
    assert runtime_flags({}) == {"linear_int8": False} and describe({}) == []
