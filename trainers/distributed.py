"""Thin helpers over torch.distributed so single-process code paths need no special cases."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of `t` over ranks (a copy); identity when not distributed."""
    if not is_distributed():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def sync_buffers_(model: torch.nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running stats) over ranks in place, in one all-reduce.

    Each rank's BN layers see only its shard of the batch; averaging keeps every rank's state identical and
    makes the running mean that of the whole global batch. No-op when not distributed.
    """
    if not is_distributed():
        return
    bufs = [b for b in model.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.detach().reshape(-1) for b in bufs])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for b in bufs:
        n = b.numel()
        b.detach().copy_(flat[offset : offset + n].view_as(b))
        offset += n


def init_from_env(device: str) -> bool:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1). Returns True if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":  # one GPU per process: plain "cuda" then means this rank's GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()
