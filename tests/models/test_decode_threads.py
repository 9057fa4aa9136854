"""Decoding threads: set for the block, restored after (also when blocks overlap or raise)."""

from __future__ import annotations

import pytest
import torch

from medmm.models.decode_threads import decode_threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_threads_set_inside_and_restored(two_threads):
    with decode_threads(1):
        assert torch.get_num_threads() == 1
        with decode_threads(1):  # a nested/concurrent decoder keeps the setting
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), decode_threads(1):
        raise RuntimeError("decoding failed")
    assert torch.get_num_threads() == 2


def test_none_and_gpu_leave_the_setting(two_threads):
    with decode_threads(None):
        assert torch.get_num_threads() == 2
    with decode_threads(1, "cuda"):
        assert torch.get_num_threads() == 2


def test_generator_decodes_single_threaded_by_default(two_threads):
    from medmm.config.network import ReportGeneratorConfig, TextEncoderConfig
    from medmm.models.pretrained import load_tokenizer
    from medmm.models.report_generator import ReportGenerator

    tok = load_tokenizer(TextEncoderConfig().name_or_path)
    gen = ReportGenerator(ReportGeneratorConfig(n_layer=1, n_head=2, n_embd=16, max_new_tokens=4), 8, tok,
                          list(range(1000, 1100)))
    assert gen.decode_threads == 1
    seen = []
    forward = gen.lm.forward
    gen.lm.forward = lambda *a, **k: (seen.append(torch.get_num_threads()), forward(*a, **k))[1]
    gen.generate(torch.zeros(1, 2, 8))
    assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    gen.cfg = gen.cfg.model_copy(update={"decode_threads": 2})
    assert gen.decode_threads == 2
