"""The training loop both stages share, top to bottom: per step, a batch of row indices (seeded
order per epoch) -> `step_fn` (forward and backward, returns the loss terms) -> clip -> optimizer
step -> lr schedule -> log; a checkpoint every `checkpoint_every` steps (and at the end with
`keep_checkpoint`); resume by running again. What a step computes is the stage's business
(stage1.py, stage2.py); the part of it that needs no model (tokenization, teacher-target reads: `prepare`) runs `prefetch` steps ahead in
a background thread, so it overlaps the forward and backward of the step before.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from pipeline.config import config_to_dict
from trainer.checkpoint import load_checkpoint, rank_rng_states, save_checkpoint
from trainer.tracking import open_tracker


def linear_schedule(optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:  # linear warmup to the peak, then linear decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: always with precision=bf16, on GPUs with auto (Table 6), never on CPUs by default."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


@lru_cache(maxsize=2)  # a permutation of 5.6M rows costs ~0.1 s: once per epoch, not once per step
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False  # shared between calls
    return order


def prepared_batches(prepare: Callable, rows_of: Callable[[int], np.ndarray], start: int, total: int,
                     prefetch: int) -> Iterator:
    """prepare(rows_of(step)) for step = start..total-1, computed `prefetch` steps ahead in one
    background thread (0: inline). Same values either way: a step's rows depend only on its number."""
    if prefetch < 1:
        for step in range(start, total):
            yield prepare(rows_of(step))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        ahead = deque(pool.submit(lambda s=s: prepare(rows_of(s))) for s in range(start, min(start + prefetch, total)))
        following = start + len(ahead)
        while ahead:
            result = ahead.popleft().result()  # re-raises what prepare raised, in the training thread
            if following < total:
                ahead.append(pool.submit(lambda s=following: prepare(rows_of(s))))
                following += 1
            yield result


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """Steps with loss, lr and ETA (tqdm); a silent stand-in when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, disable=not enabled)


def train_loop(cfg, name: str, n_rows: int, student, step_fn: Callable, echo=print,
               write: bool = True, prepare: Callable[[np.ndarray], object] | None = None) -> dict:
    """Run (or resume) `cfg.epochs` epochs of `cfg.batch_size` rows; return the last step's metrics.

    cfg needs: out_dir, lr, weight_decay, warmup_ratio, batch_size, epochs, seed, max_grad_norm,
    checkpoint_every, stop_after, progress, prefetch. `write`: this process writes logs and
    checkpoints (rank 0 under DDP; every rank holds the same weights). `step_fn` gets
    `prepare(rows)` (default: the rows themselves), prepared `cfg.prefetch` steps ahead.
    """
    out = Path(cfg.out_dir)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(n_rows / cfg.batch_size)
    total = per_epoch * cfg.epochs
    scheduler = linear_schedule(optimizer, total, cfg.warmup_ratio)
    step = load_checkpoint(out, student, optimizer, scheduler)
    if step:
        echo(f"{name}: resuming at step {step} of {total}")
    started, done_here, last = time.perf_counter(), 0, {}
    bar = progress_bar(total, step, name, cfg.progress and write)
    tracker = open_tracker(getattr(cfg, "report_to", "none"), out, name, config_to_dict(cfg), step, enabled=write)

    def rows_of(step: int) -> np.ndarray:
        epoch, pos = divmod(step, per_epoch)
        return epoch_order(n_rows, cfg.seed, epoch)[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]

    batches = prepared_batches(prepare or (lambda rows: rows), rows_of, step, total, cfg.prefetch)
    with open(out / "metrics.jsonl" if write else os.devnull, "a", encoding="utf-8") as log, tracker:
        while step < total:
            epoch = step // per_epoch
            batch = next(batches)
            optimizer.zero_grad(set_to_none=True)
            terms = step_fn(batch)  # forward and backward
            grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            done_here += 1
            last = {"step": step, "epoch": epoch, **{k: float(v) for k, v in terms.items()},
                    "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                    "rows_per_s": round(done_here * cfg.batch_size / (time.perf_counter() - started), 2)}
            log.write(json.dumps(last) + "\n")
            log.flush()  # a line per step, visible to `tail -f` and kept when the run is killed
            tracker.log(last, step)  # the same terms to TensorBoard / wandb (report_to)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}")
            stopping = bool(cfg.stop_after) and done_here >= cfg.stop_after and step < total
            # a finished run's checkpoint is only written to be kept: unkept, it was deleted right after the export
            # (the whole student and two AdamW moments: 431 MiB and ~2 CPU s for the demo's student, 8 s wall on a
            # shared disk); a crash in the export then resumes from the last periodic checkpoint
            final = step == total and getattr(cfg, "keep_checkpoint", False)
            if (step % cfg.checkpoint_every == 0 and step < total) or final or stopping:  # the same on every rank
                rng_ranks = rank_rng_states()  # a collective: every rank takes part
                if write:
                    save_checkpoint(out, step, student, optimizer, scheduler, rng_ranks=rng_ranks)
            if stopping:
                batches.close()
                bar.close()
                echo(f"{name}: stopped after {done_here} steps at step {step} of {total} (run again to resume)")
                return {**last, "finished": False}
    bar.close()
    return {**last, "finished": True, "seconds": time.perf_counter() - started, "steps_run": done_here}
