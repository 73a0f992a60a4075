"""Multi-process training under ``torchrun`` with PyTorch's own DistributedDataParallel.

tlkit starts nothing itself: ``torchrun --nproc-per-node N script.py`` sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on GPUs, gloo on
CPU), and the trainer wraps the network in DDP and shards the data with a DistributedSampler.
Only rank 0 prints, logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """What torchrun told this process (a single process when not under torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))


def setup(info: DistInfo, device: torch.device) -> None:
    """Join the process group once (NCCL for CUDA devices, gloo otherwise)."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value
