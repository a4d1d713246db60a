"""Distributed details in one place (torchrun / DDP), and the contrastive groups of Stage 2.

- Each rank encodes its contiguous slice of the optimizer batch (`local_rows`); DDP averages the
  parameter gradients over the ranks once per step (on the last gradient-cache backward).
- Contrastive groups (Stage 2's `contrastive_group_size`): the optimizer batch is cut into contiguous
  groups of G rows that share in-batch negatives; the step's loss is the *mean of the groups' losses*,
  each computed over its own rows only (G = 0: one group, the whole batch). The authors trained this
  way on 2 GPUs x 2048 rows with no cross-device gathering: 4096 rows a step in two groups of 2048.
  Groups are independent of the world size, so that run is the same on 1, 2 or 8 ranks:
  * a rank's slice holds whole groups (G <= rows per rank): no communication; the rank's loss is the
    mean over its own groups. DDP's gradient average over ranks then gives the mean over all groups.
  * a group spans S whole slices (G = S x rows per rank): those S ranks all-gather their representations
    *with gradients* (`gather_with_grad`) inside a process subgroup, and each computes its
    group's loss L_g. The gather's backward sums the S ranks' (identical) gradients for each rank's
    representations (S x dL_g), and DDP's average over the W ranks divides by W: the parameter gradient
    is (S / W) x sum_g dL_g = the mean over the W / S groups of dL_g. No extra scaling is applied.
    S = W is the whole-batch case (cross-device negatives over every rank).
- Loss scaling by world size happens here and only here (the two cancellations above).
- psi lives inside the DDP-wrapped student, so its gradients are all-reduced like the encoder's.
- Parameters a loss does not use (psi under InfoNCE / XLCO / LaKDA) need find_unused_parameters.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pipeline.errors import MimoError
from pipeline.ranks import torchrun_world


def world() -> tuple[int, int]:
    """(rank, world size): torchrun's environment, else (0, 1)."""
    return torchrun_world()


def init_if_needed(device: torch.device) -> tuple[int, int]:
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, size


def shutdown() -> None:
    """After a run that succeeded on every rank: wait for the others, then tear the process group down.

    A gloo rank that exits while its group (held by DDP's reducers) is still alive can abort at
    interpreter exit ("terminate called without an active exception"), after all its work is done.
    No-op in one process."""
    if dist.is_initialized():
        gc.collect()  # DDP reducers hold the group: free them while it is alive
        dist.barrier()
        dist.destroy_process_group()


def local_rows(rows, rank: int, size: int):
    """This rank's contiguous slice of the global batch (the global batch is divisible by size)."""
    per = len(rows) // size
    return rows[rank * per:(rank + 1) * per]


def _distributed(group=None) -> bool:
    return dist.is_initialized() and dist.get_world_size(group) > 1


class _GatherWithGrad(torch.autograd.Function):
    """all-gather whose backward hands each rank the sum over the group of the gradients for its rows.

    Written out because torch.distributed.nn's all_gather cannot go backward through a gloo subgroup
    (its all-to-all emulation passes group ranks where global ranks are expected).
    """

    @staticmethod
    def forward(ctx, t, group):
        ctx.group, ctx.rows, ctx.index = group, t.shape[0], dist.get_rank(group)
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, t.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad, group=ctx.group)  # SUM: every rank of the group computed the same loss
        return grad[ctx.index * ctx.rows:(ctx.index + 1) * ctx.rows], None


def gather_with_grad(t: torch.Tensor, group=None) -> torch.Tensor:
    """all-gather over `group` (None: every rank), rank order; gradients flow back to each rank's slice."""
    if not _distributed(group):
        return t
    return _GatherWithGrad.apply(t, group)


def gather(t: torch.Tensor, group=None) -> torch.Tensor:
    """all-gather without gradients (teacher targets)."""
    if not _distributed(group):
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) scalar over the ranks, for logging: every rank then logs the step's loss."""
    if not _distributed():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


@dataclass(frozen=True)
class ContrastiveGroups:
    """How this rank's rows form contrastive groups (see the module docstring)."""

    group_size: int  # rows per group
    ranks_per_group: int  # S: 1 when a rank's slice holds whole groups
    process_group: Any = None  # the subgroup of the S ranks sharing this rank's group; None: every rank

    def mean_loss(self, loss_fn: Callable[..., dict[str, torch.Tensor]], reps: Sequence[tuple[torch.Tensor, ...]],
                  per_row: Sequence[torch.Tensor] = ()) -> dict[str, torch.Tensor]:
        """The mean over this rank's groups of `loss_fn(*group reps, *group per_row)` (a dict of scalar terms).

        reps: per encoder input, this rank's representation tuple (rows first, with gradients);
        per_row: row-aligned tensors without gradients (e.g. the teacher targets), grouped alike.
        """
        if self.ranks_per_group > 1:
            return loss_fn(*[tuple(gather_with_grad(t, self.process_group) for t in r) for r in reps],
                           *[gather(t, self.process_group) for t in per_row])
        n = reps[0][0].shape[0]
        # groups of group_size rows; an epoch's last, shorter batch in as many near-equal groups
        k = max(1, -(-n // self.group_size))
        split_reps = [[t.tensor_split(k) for t in r] for r in reps]
        split_rows = [t.tensor_split(k) for t in per_row]
        outs = [loss_fn(*[tuple(parts[i] for parts in r) for r in split_reps], *[parts[i] for parts in split_rows])
                for i in range(k)]
        if k == 1:
            return outs[0]
        return {key: torch.stack([o[key] for o in outs]).mean() for key in outs[0]}


def contrastive_groups(group_size: int, batch_size: int, rank: int, size: int) -> ContrastiveGroups:
    """The groups of `group_size` rows (0: the whole batch) of a `batch_size`-row batch over `size` ranks.

    Creates the process subgroups when a group spans several (but not all) ranks: every rank must call
    this, in the same order, after the process group is initialized.
    """
    group = group_size or batch_size
    per_rank = batch_size // size
    if group <= per_rank:
        if per_rank % group:
            raise MimoError(f"contrastive_group_size {group} does not divide the {per_rank} rows each of {size} "
                            f"ranks holds (batch_size {batch_size})")
        return ContrastiveGroups(group, 1)
    if group % per_rank:
        raise MimoError(f"contrastive_group_size {group} is not a whole number of ranks' slices of {per_rank} rows "
                        f"(batch_size {batch_size} over {size} ranks)")
    span = group // per_rank
    mine = None
    if span < size:
        for first in range(0, size, span):
            subgroup = dist.new_group(list(range(first, first + span)))
            if first <= rank < first + span:
                mine = subgroup
    return ContrastiveGroups(group, span, mine)


def wrap(student, device: torch.device, find_unused: bool):
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return student, None
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None,
                                  find_unused_parameters=find_unused)
    return ddp, ddp.no_sync
