"""Distributed details in one place (torchrun / DDP).

- Each rank encodes its slice of the global batch; representations are all-gathered *with
  gradients* (torch.distributed.nn.all_gather) so every rank computes the loss over the whole
  global batch: cross-device in-batch negatives, the same loss as one process.
- With `cross_device_negatives=false` each rank's loss uses its own slice only (local negatives);
  DDP's gradient average then makes the step the mean of the per-rank losses' steps.
- Loss scaling by world size happens here and only here: every rank holds the same global loss,
  so all_gather's backward sums world_size identical gradient contributions into each rank's
  representations, and DDP's all-reduce then *averages* parameter gradients over the ranks; the
  two cancel, and the parameter gradient equals the single-process one. No extra scaling is applied.
- psi lives inside the DDP-wrapped student, so its gradients are all-reduced like the encoder's.
- Parameters a loss does not use (psi under InfoNCE / XLCO / LaKDA) need find_unused_parameters.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size): torchrun's environment, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_if_needed(device: torch.device) -> tuple[int, int]:
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, size


def local_rows(rows, rank: int, size: int):
    """This rank's contiguous slice of the global batch (the global batch is divisible by size)."""
    per = len(rows) // size
    return rows[rank * per:(rank + 1) * per]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()), dim=0)


def gather(t: torch.Tensor) -> torch.Tensor:
    """all-gather without gradients (teacher targets)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def wrap(student, device: torch.device, find_unused: bool):
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return student, None
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None,
                                  find_unused_parameters=find_unused)
    return ddp, ddp.no_sync
