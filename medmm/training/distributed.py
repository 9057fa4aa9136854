"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node=N -m medmm train WORKFLOW`` sets ``RANK``/``WORLD_SIZE``; each
process trains on its `DistributedSampler` shard and gradients are averaged with ``all_reduce``
after every optimiser step's backward passes. gloo is used on CPU, NCCL on CUDA. Only rank 0
writes the run directory.

Gradients are averaged by hand instead of wrapping the model in ``DistributedDataParallel``:
the training step calls the model's stages separately (feature map, embedding, report LM,
fusion) and adversarial training runs extra forward/backward passes w.r.t. the input, which
DDP's reducer does not support. The average is the same one DDP computes (without bucketing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
import torch
import torch.distributed as dist


CUDA_BACKEND = "cpu:gloo,cuda:nccl"


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (1 process = not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> DistInfo:
    """Join the process group when launched with ``WORLD_SIZE > 1`` (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, False)
    # NCCL for CUDA tensors plus gloo for the CPU ones (broadcast_text): an NCCL-only group refuses CPU tensors
    backend = CUDA_BACKEND if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, True)


def teardown(info: DistInfo) -> None:
    """Leave the process group if `setup` joined it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's weights."""
    if not info.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank, as DDP's
    ``broadcast_buffers=True`` does, so all ranks hold identical models."""
    if not info.enabled:
        return
    for tensor in module.buffers():
        dist.broadcast(tensor.data, src=0)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce and average the gradients of ``params`` (missing grads count as zero)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(info.world_size)


def mean_scalars(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Average a dict of floats over ranks (same keys everywhere), for logging."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def broadcast_text(text: str, info: DistInfo, max_bytes: int = 4096) -> str:
    """Rank 0's ``text`` on every rank (e.g. the run directory rank 0 chose); no pickling."""
    if not info.enabled:
        return text
    data = text.encode("utf-8")[:max_bytes]
    buf = torch.zeros(max_bytes + 1, dtype=torch.uint8)
    length = torch.tensor([len(data)], dtype=torch.int64)
    if info.is_main:
        buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else buf[:0]
    dist.broadcast(length, src=0)
    dist.broadcast(buf, src=0)
    return bytes(buf[: int(length)].tolist()).decode("utf-8")
