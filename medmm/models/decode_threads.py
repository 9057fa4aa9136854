"""Torch CPU threads while a small report LM decodes.

Greedy decoding runs one token at a time through a decoder whose tensors are tiny (the demo's is
2 layers x 128 wide over ~400 tokens): each step is a few hundred microsecond-sized ops, so the
intra-op thread pool only adds synchronisation. On a shared 2-core machine the waiting threads
made decoding 15-20x slower than one thread (``benchmarks/report_generation.py --threads``
measures both in one run). A pretrained LM's matrices are large enough to use every thread, so
its setting is left alone.

``set_num_threads`` acts on the whole process (or the calling thread, with OpenMP); concurrent
decoders (the server's worker pool) share one counter so the first in sets the value and the
last out restores it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_lock = threading.Lock()
_active = 0
_saved: int | None = None


@contextmanager
def decode_threads(n: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads on CPU (``None`` or a GPU: unchanged)."""
    global _active, _saved
    if n is None or torch.device(device).type != "cpu":
        yield
        return
    with _lock:
        if _active == 0:
            _saved = torch.get_num_threads()
            if _saved != n:
                torch.set_num_threads(n)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None and torch.get_num_threads() != _saved:
                torch.set_num_threads(_saved)
