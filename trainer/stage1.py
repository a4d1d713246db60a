"""Stage 1 (section 3.1): distill the cached teacher into the student on parallel pairs.

    L = 1 - cos(psi(E_s(t_XX)), E_t(t_en)),  E_t(t_en) read from the teacher cache.

One loop, top to bottom: resolve the data's targets in the cache (refusing missing ones), build
the student and psi, AdamW with linear warmup and decay, then per step: batch -> tokenize -> loss ->
backward -> clip -> step -> log; a checkpoint every `checkpoint_every` steps (resume = run again).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.cache_read import TeacherTargets
from pipeline.config import write_resolved_config
from pipeline.errors import MimoError
from trainer.checkpoint import export_sentence_transformer, load_checkpoint, save_checkpoint
from trainer.data import check_teacher_dim, read_stage_table, resolve_targets
from trainer.losses import distill_loss
from trainer.student import load_student


@dataclass(frozen=True)
class Stage1Config:
    prepared: str = "work/paper/prepared"  # prepare's output directory
    cache: str = "work/paper/teacher_cache.zarr"
    out_dir: str = "work/paper/stage1"
    student: str = "xlm-roberta-large"
    pooling: str = "mean"
    lr: float = 1e-4  # Table 6
    warmup_ratio: float = 0.1
    batch_size: int = 128
    max_length: int = 256
    epochs: int = 1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    seed: int = 42
    checkpoint_every: int = 500
    stop_after: int = 0  # stop (with a checkpoint) after this many steps of this run, e.g. a job's time slot
    cache_in_memory: bool = True  # False at paper scale: block reads with prefetch instead of ~50 GB of RAM
    progress: bool = True

    def __post_init__(self):
        if self.pooling not in ("mean", "cls"):
            raise MimoError(f"pooling must be mean or cls, not {self.pooling!r}")
        if self.batch_size < 1 or self.epochs < 1 or self.max_length < 2:
            raise MimoError("batch_size and epochs must be positive, max_length at least 2")
        if not 0 <= self.warmup_ratio < 1 or self.lr <= 0:
            raise MimoError("warmup_ratio must be in [0, 1) and lr positive")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise MimoError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")


def linear_schedule(optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:  # linear warmup to the peak, then linear decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """Steps with loss, lr and ETA (tqdm); a silent stand-in when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, disable=not enabled)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def run_stage1(cfg: Stage1Config, echo=print) -> dict:
    out = Path(cfg.out_dir)
    table = read_stage_table(Path(cfg.prepared) / "stage1" / "pairs.parquet", "stage1")
    targets = TeacherTargets(cfg.cache, in_memory=cfg.cache_in_memory)
    where = resolve_targets(table, targets, "stage1")["teacher_id"]
    texts = table.column("text").to_pylist()

    torch.manual_seed(cfg.seed)
    student, tokenizer = load_student(cfg.student, targets.dim, cfg.pooling)
    check_teacher_dim(targets, student.projection.out_features)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    student.to(device).train()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    scheduler = linear_schedule(optimizer, total, cfg.warmup_ratio)

    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(cfg, out, "stage1")
    step = load_checkpoint(out, student, optimizer, scheduler)
    if step:
        echo(f"stage 1: resuming at step {step} of {total}")
    log = open(out / "metrics.jsonl", "a", encoding="utf-8")
    started, done_here, last = time.perf_counter(), 0, {}
    bar = progress_bar(total, step, "stage 1", cfg.progress)
    while step < total:
        epoch, pos = divmod(step, per_epoch)
        rows = epoch_order(len(texts), cfg.seed, epoch)[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=cfg.max_length,
                          return_tensors="pt").to(device)
        teacher = targets.fetch(where[rows]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, projected = student(batch["input_ids"], batch["attention_mask"])
        loss = distill_loss(projected.float(), teacher)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        done_here += 1
        last = {"step": step, "epoch": epoch, "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm), "seconds": round(time.perf_counter() - started, 3)}
        log.write(json.dumps(last) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}")
        if step % cfg.checkpoint_every == 0 or step == total or (cfg.stop_after and done_here >= cfg.stop_after):
            save_checkpoint(out, step, student, optimizer, scheduler)
        if cfg.stop_after and done_here >= cfg.stop_after and step < total:
            log.close()
            bar.close()
            echo(f"stage 1: stopped after {done_here} steps at step {step} of {total} (run again to resume)")
            return {**last, "finished": False}
    log.close()
    bar.close()
    export_sentence_transformer(student.cpu(), tokenizer, out / "model", cfg.max_length)
    echo(f"stage 1: {total} steps done, loss {last.get('loss', float('nan')):.4f}; student in {out / 'model'}, "
         f"psi in {out / 'projection.pt'}")
    return {**last, "finished": True}
