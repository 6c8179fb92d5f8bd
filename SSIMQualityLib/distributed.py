"""Running as one of several processes started by ``torchrun`` (training and archive scoring).

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in each process's
environment; a plain run has none of them and behaves as a world of one.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import NamedTuple, Optional

import torch


class World(NamedTuple):
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes logs, checkpoints and merged outputs."""
        return self.rank == 0


def world() -> World:
    """This process's place among torchrun's processes (``World(0, 1, 0)`` when run alone).

    Examples
    --------
    >>> world().size >= 1
    True
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device, w: World) -> torch.device:
    """One GPU per process: ``cuda`` becomes ``cuda:<local rank>``; a CPU stays the CPU."""
    if device.type == "cuda" and w.size > 1:
        return torch.device("cuda", w.local_rank)
    return device


def init(device: torch.device, *, timeout_hours: float = 48.0) -> None:
    """Join the process group: NCCL between GPUs, gloo between CPU processes.

    The long timeout lets ranks that finish their share hours apart meet at
    the final rendezvous of an archive run.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=timedelta(hours=timeout_hours))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (so that all ranks stop at the same step)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_over_ranks(value: float, device: torch.device) -> float:
    """The largest ``value`` over the ranks, on every rank (``value`` itself in one process)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def from_main(t: Optional[torch.Tensor], size: int, device: torch.device) -> torch.Tensor:
    """Rank 0's float tensor of ``size`` values on every rank (``t`` itself, on ``device``, in one process);
    the other ranks pass ``None``."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return t.to(device)
    out = t.to(device=device, dtype=torch.float32) if t is not None else torch.zeros(size, device=device)
    dist.broadcast(out, src=0)
    return out


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
