"""The training loader never hands BatchNorm a lone last scan."""

from types import SimpleNamespace

import pytest
import torch

from medmm.training.engine import Trainer


def _loader_batches(n_cases: int, batch_size: int) -> list[int]:
    fake = SimpleNamespace(
        cfg=SimpleNamespace(seed=0, training=SimpleNamespace(batch_size=batch_size, num_workers=0)),
        dist=SimpleNamespace(enabled=False),
        train_set=[torch.zeros(1) for _ in range(n_cases)],
    )
    return [len(batch) for batch in Trainer._train_loader(fake, epoch=0)]


@pytest.mark.parametrize(("n_cases", "batch_size", "expected"), [
    (5, 2, [2, 2]),          # one scan left over: dropped
    (7, 3, [3, 3]),          # one left over with a larger batch: dropped
    (8, 3, [3, 3, 2]),       # two left over: kept
    (6, 2, [2, 2, 2]),       # nothing left over
    (3, 1, [1, 1, 1]),       # batch size 1 is never dropped
])
def test_a_lone_last_scan_is_dropped_and_nothing_else(n_cases, batch_size, expected):
    assert _loader_batches(n_cases, batch_size) == expected
