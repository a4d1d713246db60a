"""Where a CPU training step of the embedded default's student goes, and what freezing the embeddings saves.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_student_step.py                    # 12 and 3 layers (~4 min, 2 cores)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_student_step.py --layers 3 --steps 3

One step as Stage 2 takes it on the sample (configs/sample.toml): 64 rows (32 queries + 32
passages of the sample's training items, "query: " / "passage: " prompts, max_length 256) in
mini-batches of 16: forward and backward of each mini-batch (a stand-in loss: the pooled
embeddings' squared norm; the loss does not change the work), then gradient clipping, AdamW
and zero_grad, and once the checkpoint save that Stage 2 writes every `checkpoint_every` steps.
Contenders: multilingual-e5-small with all 12 layers or its first N (trainer.student's num_layers),
token embeddings trained (dense AdamW over 96M of 118M parameters) or frozen (freeze_embeddings),
AdamW's default (foreach) or fused implementation. Medians over --steps timed steps after one warm-up.
Times are this process's CPU seconds (time.process_time, all threads): on a shared machine wall
time mostly measures the wait for a core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.sample import load_sample  # noqa: E402
from trainer.student import E5_SMALL, load_student  # noqa: E402


def texts(n: int) -> list[str]:
    sample = load_sample(ROOT / "data" / "sample")
    items = [it for it in sample.items["en"] if sample.split[it.id] == "train"]
    half = n // 2
    return ([f"query: {it.query}" for it in items[:half]] + [f"passage: {it.passage_text('en')}" for it in items[:half]])


def run(layers: int, freeze: bool, fused: bool, rows: list[str], mini: int, steps: int) -> dict:
    student, tokenizer = load_student(E5_SMALL, teacher_dim=384, num_layers=layers, freeze_embeddings=freeze)
    student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5, weight_decay=0.01, fused=fused or None)
    times = {"forward+backward": [], "clip": [], "adamw": [], "zero_grad": [], "step": []}
    for i in range(steps + 1):
        t0 = time.process_time()
        for start in range(0, len(rows), mini):
            batch = tokenizer(rows[start:start + mini], padding=True, truncation=True, max_length=256, return_tensors="pt")
            emb, _ = student(batch["input_ids"], batch["attention_mask"])
            emb.pow(2).sum().backward()
        t1 = time.process_time()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        t2 = time.process_time()
        optimizer.step()
        t3 = time.process_time()
        optimizer.zero_grad(set_to_none=True)
        t4 = time.process_time()
        if i:  # the first step warms up (allocations, optimizer state)
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                times[k].append(v)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.process_time()
        torch.save({"student": student.state_dict(), "optimizer": optimizer.state_dict()}, Path(tmp) / "c.pt")
        save = time.process_time() - t0
        size = (Path(tmp) / "c.pt").stat().st_size / 2**20
    return {k: statistics.median(v) for k, v in times.items()} | {"checkpoint_s": save, "checkpoint_mib": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, nargs="*", default=[12, 3])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--mini", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    rows = texts(args.rows)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(rows)} rows in mini-batches of {args.mini}")
    print("| layers | embeddings | AdamW | fwd+bwd s | clip s | AdamW s | zero_grad s | step s | checkpoint s (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for layers in args.layers:
        for freeze, fused in ((False, False), (False, True), (True, False)):
            r = run(layers, freeze, fused, rows, args.mini, args.steps)
            print(f"| {layers} | {'frozen' if freeze else 'trained'} | {'fused' if fused else 'foreach'} | "
                  f"{r['forward+backward']:.2f} | {r['clip']:.2f} | {r['adamw']:.2f} | {r['zero_grad']:.3f} | "
                  f"{r['step']:.2f} | {r['checkpoint_s']:.1f} ({r['checkpoint_mib']:.0f}) |", flush=True)


if __name__ == "__main__":
    main()
