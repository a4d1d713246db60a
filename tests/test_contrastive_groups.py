"""Contrastive groups (Stage 2's `contrastive_group_size`): one process with two groups equals the ranks
that hold them, loss and every gradient, whether a rank holds a whole group (the authors' 2 GPUs x 2048,
no cross-device negatives) or a group spans two ranks (gathered inside a process subgroup)."""

from __future__ import annotations

import os
import socket
import types

import pytest
import torch
import torch.distributed as dist

from torch import nn

from trainer import distributed
from trainer.gradcache import cached_step
from trainer.losses import info_nce, lakda_loss, stage2_loss
from trainer.student import Student

BATCH, TEACHER_DIM = 16, 24


class TinyEncoder(nn.Module):
    """Embeddings, one masked self-attention layer and a feed-forward: an encoder without the cost of
    importing transformers in every spawned rank (tests/test_gradcache.py uses a real BertModel)."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.config = types.SimpleNamespace(hidden_size=hidden)
        self.embeddings = nn.Embedding(100, hidden)
        self.attention = nn.MultiheadAttention(hidden, 4, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 64), nn.GELU(), nn.Linear(64, hidden))

    def forward(self, input_ids, attention_mask):
        h = self.embeddings(input_ids)
        h = self.norm(h + self.attention(h, h, h, key_padding_mask=attention_mask == 0, need_weights=False)[0])
        return types.SimpleNamespace(last_hidden_state=h + self.ffn(h))


def tiny_student() -> Student:
    torch.manual_seed(0)
    return Student(TinyEncoder(), TEACHER_DIM).train()


def batch(n: int, width: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, width), generator=g)
    lengths = torch.randint(3, width + 1, (n,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


TARGETS = [torch.randn(BATCH, TEACHER_DIM, generator=torch.Generator().manual_seed(s)) for s in (7, 8)]

LOSSES = {  # loss(*representation tuples of the inputs, *row-aligned targets) -> terms
    "mimo": (2, True, lambda q, p, tq, tp: stage2_loss(q[0], p[0], q[1], p[1], tq, tp, lam=0.2)),
    "infonce": (2, False, lambda q, p: {"loss": info_nce(q[0], p[0])}),
    "lakda": (3, False, lambda q1, q2, p: {"loss": lakda_loss(q1[0], q2[0], p[0], form="release")}),
}


def grouped_step(method: str, group_size: int, rank: int = 0, size: int = 1):
    """One gradient-cached step of `method` over this rank's slice, as Stage 2 takes it: (loss, grads)."""
    n_inputs, with_targets, loss_fn = LOSSES[method]
    student = tiny_student()  # no dropout: each rank would draw its own masks
    groups = distributed.contrastive_groups(group_size, BATCH, rank, size)
    model, no_sync = distributed.wrap(student, torch.device("cpu"), find_unused=True)
    inputs = [tuple(distributed.local_rows(t, rank, size) for t in batch(BATCH, 12, seed=i)) for i in range(n_inputs)]
    per_row = [distributed.local_rows(t, rank, size) for t in TARGETS] if with_targets else []
    student.zero_grad()
    loss = cached_step(model, inputs, lambda *reps: groups.mean_loss(loss_fn, reps, per_row)["loss"], chunk_size=2,
                       no_sync=no_sync)
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    return distributed.mean_over_ranks(loss).item(), grads


def _rank(rank: int, size: int, port: int, cases, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    results = {case: grouped_step(*case, rank=rank, size=size) for case in cases}
    if rank == 0:
        torch.save(results, out)
    distributed.shutdown()


def run_ranks(size: int, cases, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned ranks share the machine's cores
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / f"ranks-{size}.pt")
    torch.multiprocessing.spawn(_rank, args=(size, port, cases, out), nprocs=size, join=True)
    return torch.load(out, weights_only=False)


def assert_same(got, ref, name):
    (loss, grads), (ref_loss, ref_grads) = got, ref
    assert loss == pytest.approx(ref_loss, rel=1e-5), name
    assert grads.keys() == ref_grads.keys() and len(grads) > 8, name
    for key in ref_grads:
        torch.testing.assert_close(grads[key], ref_grads[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


def test_two_groups_in_one_process_equal_two_ranks_without_cross_device_negatives(tmp_path, monkeypatch):
    """16 rows in groups of 8 on 1 process == 2 gloo ranks of 8 rows each, no gathering (the release's layout);
    group 0 (the whole batch) == 2 ranks gathering every row."""
    cases = [("mimo", 8), ("infonce", 8), ("lakda", 8), ("mimo", 0)]
    ranks = run_ranks(2, cases, tmp_path, monkeypatch)
    for case in cases:
        assert_same(ranks[case], grouped_step(*case), case)


def test_a_group_spanning_two_of_four_ranks(tmp_path, monkeypatch):
    """4 ranks of 4 rows, groups of 8: ranks {0, 1} and {2, 3} gather inside their subgroups."""
    cases = [("mimo", 8), ("lakda", 8)]
    ranks = run_ranks(4, cases, tmp_path, monkeypatch)
    for case in cases:
        assert_same(ranks[case], grouped_step(*case), case)


def test_grouped_step_is_the_mean_of_the_groups_plain_losses():
    """The cached, grouped step against the definition: full-batch forward, loss of each group of 8, mean."""
    for method in LOSSES:
        n_inputs, with_targets, loss_fn = LOSSES[method]
        loss, grads = grouped_step(method, 8)
        student = tiny_student()
        whole = [student(*batch(BATCH, 12, seed=i)) for i in range(n_inputs)]
        halves = [loss_fn(*[tuple(t[g * 8:(g + 1) * 8] for t in reps) for reps in whole],
                          *([t[g * 8:(g + 1) * 8] for t in TARGETS] if with_targets else []))["loss"] for g in (0, 1)]
        ref_loss = (halves[0] + halves[1]) / 2
        ref_loss.backward()
        ref = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert_same((loss, grads), (ref_loss.item(), ref), method)
        # the grouping matters: one group of 16 is another loss
        assert grouped_step(method, 0)[0] != pytest.approx(loss, rel=1e-4)


def test_terms_are_averaged_over_groups_and_a_short_batch_splits_evenly():
    groups = distributed.contrastive_groups(4, 8, rank=0, size=1)
    seen = []

    def loss_fn(reps, rows):
        seen.append(rows[:, 0].tolist())
        return {"loss": reps[0].sum(), "rows": torch.tensor(float(len(rows)))}

    x = torch.arange(8.0)[:, None]
    out = groups.mean_loss(loss_fn, [(x,)], [x])
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7]] and out["loss"].item() == pytest.approx((6 + 22) / 2)
    seen.clear()
    groups.mean_loss(loss_fn, [(x[:6],)], [x[:6]])  # an epoch's last batch of 6 rows: two groups of 3
    assert seen == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("group, batch_size, size, message", [
    (3, 16, 1, "contrastive_group_size 3 does not divide the 16 rows each of 1 ranks holds"),
    (8, 24, 4, "contrastive_group_size 8 is not a whole number of ranks' slices of 6 rows"),
])
def test_groups_that_do_not_fit_the_ranks_are_refused(group, batch_size, size, message):
    from pipeline.errors import MimoError

    with pytest.raises(MimoError, match=message):
        distributed.contrastive_groups(group, batch_size, rank=0, size=size)
