"""Resuming under several ranks: each rank gets back its own random state (its own dropout masks)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from trainer import distributed
from trainer.checkpoint import load_checkpoint, rank_rng_states, read_checkpoint, save_checkpoint


def _parts():
    student = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return student, optimizer, scheduler


def _rank(rank: int, size: int, port: int, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    torch.manual_seed(100 + rank)  # each rank its own stream, as dropout draws them
    torch.rand(7)
    parts = _parts()  # (its initialization draws too)
    states = rank_rng_states()  # every rank takes part
    if rank == 0:
        save_checkpoint(out_dir, 3, *parts, rng_ranks=states)
    dist.barrier()
    uninterrupted = torch.rand(5)  # what this rank draws next without a resume
    torch.manual_seed(999)  # a new process
    step = load_checkpoint(out_dir, *_parts())
    resumed = torch.rand(5)
    torch.save({"step": step, "uninterrupted": uninterrupted, "resumed": resumed},
               os.path.join(out_dir, f"rank{rank}.pt"))
    distributed.shutdown()


def test_each_rank_resumes_its_own_random_stream(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_rank, args=(2, port, tmp_path), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for r in range(2):
        assert got[r]["step"] == 3
        assert torch.equal(got[r]["resumed"], got[r]["uninterrupted"]), r
    assert not torch.equal(got[0]["resumed"], got[1]["resumed"])  # rank 1 did not get rank 0's stream
    assert len(read_checkpoint(tmp_path / "checkpoint.pt")["rng_ranks"]) == 2


def test_one_process_checkpoint_has_no_per_rank_states(tmp_path):
    assert rank_rng_states() is None
    parts = _parts()
    torch.manual_seed(5)
    save_checkpoint(tmp_path, 1, *parts, rng_ranks=rank_rng_states())
    expected = torch.rand(4)
    torch.manual_seed(6)
    assert load_checkpoint(tmp_path, *_parts()) == 1
    assert torch.equal(torch.rand(4), expected)
    assert "rng_ranks" not in read_checkpoint(tmp_path / "checkpoint.pt")
