"""Stage 1 / Stage 2 data path at scale: a step's cost outside the model, per rank, with a tiny random student.

    nice .venv/bin/python bench/bench_data_path.py --store work/targets/store-100000x4096.zarr \\
        --prepared work/ps02/prepared --steps 60 --stages 1      # bench/RESULTS.md: both commands

Set-up: the prepared tables (`--prepared`: stage1/pairs.parquet, stage2/mimo.parquet; e.g.
bench/paper_scale.py + prepare) with their teacher-id columns pointed at the rows of a store written
by bench/bench_targets.py (4096-d bf16; row i of a table gets the store's row i mod rows, Stage 2's
passages row (i + rows / 2) mod rows, so every read is a real 8 KiB row), and a 2-layer 32-d random
BertModel student with MiniLM's WordPiece tokenizer (the model costs little, so the data path shows).

Each run is `torchrun --nproc-per-node N` of this file (`--worker`), calling `run_stage1` /
`run_stage2` (method mimo: the stage that reads the most targets) for `--steps` steps, checkpointing
every `--checkpoint-every`, prefetch 2 (the default). Every rank reports, from timers wrapped around
the trainer's own functions:

  startup      process start to the first step (imports, table read, id resolution, student, DDP)
  RSS          at the first step: anonymous (the rank's own: Python, Arrow, torch) + file-backed (the
               store's mapped shards, prefaulted at open, and libraries: page cache, shared); the
               peak of the anonymous part (sampled; VmHWM would count the store's pages)
  per row of the rank's share of a batch, microseconds (wall; CPU of the prefetch thread in brackets):
    select     the step's rows (the seeded epoch order, sliced)       } in the prefetch thread:
    take       the texts from the Arrow table (TextColumn.take)       } overlap the step before
    tokenize   the tokenizer call                                      }
    targets    TeacherTargets.fetch_stored                             }
    wait       the training thread waiting for a prepared batch (what prefetch did not hide)
    log        the step's metrics line, tracker and progress bar
    checkpoint save_checkpoint (rank 0; amortized over the steps)
    model      forward + backward (+ DDP), clipping, optimizer: the rest of the step

Resume at scale (`--resume`, per stage at the largest rank count): a second run of the same settings
is killed (SIGKILL to torchrun and its workers) a few steps after its checkpoint at `--checkpoint-every`,
then run again: its logged losses must equal the uninterrupted run's, and the rows of each resumed
step must be those of the uninterrupted run, i.e. the step's position in the N-row epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path

STARTED = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES = ("select", "take", "tokenize", "targets", "wait", "log", "checkpoint", "model")


def memory() -> dict:
    """This process's resident memory now, MiB: anonymous (Python objects, Arrow buffers, torch: what a rank
    holds of its own) and file-backed (the store's mapped shards, libraries: page cache, shared between ranks)."""
    fields = {line.split(":")[0]: int(line.split()[1]) / 1024
              for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Rss")}
    return {"anon": fields["RssAnon"], "file": fields["RssFile"] + fields.get("RssShmem", 0.0)}


class PeakAnon:
    """The peak of the anonymous RSS, sampled every 0.2 s in a thread (VmHWM would count the mapped store)."""

    def __init__(self):
        import threading

        self.peak, self.stop = 0.0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, memory()["anon"])


# --- the worker: one rank of one run ------------------------------------------------------------------

def worker(spec: dict) -> None:
    import numpy as np
    import torch

    import trainer.loop as loop
    import trainer.stage1 as stage1
    import trainer.stage2 as stage2
    from pipeline.cache_read import TeacherTargets
    from trainer import setup
    from trainer.data import TextColumn

    torch.set_num_threads(1)
    sampler = PeakAnon()
    wall = defaultdict(float)
    cpu = defaultdict(float)
    marks: dict = {"rows": {}}

    def timed(name, fn):
        def wrapper(*a, **kw):
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                wall[name] += time.perf_counter() - w
                cpu[name] += time.thread_time() - c
        return wrapper

    # the prefetch thread's parts
    TextColumn.take = timed("take", TextColumn.take)
    setup.Training.tokenize = timed("tokenize", setup.Training.tokenize)
    TeacherTargets.fetch_stored = timed("targets", TeacherTargets.fetch_stored)
    real_batches = loop.prepared_batches

    def batches(prepare, rows_of, start, total, prefetch):
        def rows(step):
            out = timed("select", rows_of)(step)
            marks["rows"][step] = [int(out[0]), zlib.crc32(np.ascontiguousarray(out).tobytes())]
            return out

        it = real_batches(prepare, rows, start, total, prefetch)
        while True:
            w = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                wall["wait"] += time.perf_counter() - w
            yield item

    loop.prepared_batches = batches
    loop.save_checkpoint = timed("checkpoint", loop.save_checkpoint)

    # the training thread's logging: json line, file write + flush, tracker, progress bar
    class TimedFile:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        write = property(lambda self: timed("log", self.fh.write))
        flush = property(lambda self: timed("log", self.fh.flush))

    loop.open = lambda *a, **kw: TimedFile(open(*a, **kw))
    real_json = loop.json

    class Json:
        dumps = staticmethod(timed("log", real_json.dumps))
        loads = staticmethod(real_json.loads)

    loop.json = Json
    real_tracker, real_bar = loop.open_tracker, loop.progress_bar

    def tracker(*a, **kw):
        t = real_tracker(*a, **kw)
        t.log = timed("log", t.log)
        return t

    def bar(*a, **kw):
        b = real_bar(*a, **kw)
        b.update, b.set_postfix = timed("log", b.update), timed("log", b.set_postfix)
        return b

    loop.open_tracker, loop.progress_bar = tracker, bar

    real_loop = loop.train_loop

    def train_loop(cfg, name, n_rows, student, step_fn, *a, **kw):
        marks["startup"] = time.perf_counter() - STARTED
        marks["memory_startup"] = memory()
        marks["n_rows"] = n_rows
        started = time.perf_counter()
        try:
            return real_loop(cfg, name, n_rows, student, step_fn, *a, **kw)
        finally:
            marks["loop"] = time.perf_counter() - started

    stage1.train_loop = train_loop
    stage2.train_loop = train_loop
    common = dict(prepared=spec["prepared"], cache=spec["store"], out_dir=spec["out_dir"], student=spec["student"],
                  stop_after=spec["steps"], checkpoint_every=spec["checkpoint_every"], progress=False)
    if spec["stage"] == 1:
        result = stage1.run_stage1(stage1.Stage1Config(batch_size=spec["batch"], max_length=256, **common),
                                   echo=lambda *_: None)
    else:
        result = stage2.run_stage2(stage2.Stage2Config(
            init="", method="mimo", batch_size=spec["batch"], mini_batch_size=spec["mini_batch"],
            contrastive_group_size=spec["group"], max_length=512, **common), echo=lambda *_: None)
    rank = int(os.environ.get("RANK", 0))
    report = {"rank": rank, "startup": marks["startup"], "memory_startup": marks["memory_startup"],
              "memory_end": memory(), "peak_anon": max(sampler.peak, memory()["anon"]), "loop": marks["loop"],
              "n_rows": marks["n_rows"], "last_step": result["step"],
              "wall": dict(wall), "cpu": dict(cpu), "rows": marks["rows"]}
    Path(spec["out_dir"], f"bench-rank{rank}.json").write_text(json.dumps(report))


# --- the driver ------------------------------------------------------------------------------------

def set_up(args, root: Path) -> Path:
    """root/prepared with the two tables' teacher ids pointed at store rows; root/student."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bench import save_tiny_bert
    from pipeline.cache_read import TeacherTargets

    store_ids = TeacherTargets(args.store).segments[0].plan.column("text_id")
    n_store = len(store_ids)
    for name, columns in (("stage1/pairs.parquet", {"teacher_id": 0}),
                          ("stage2/mimo.parquet", {"q_teacher_id": 0, "p_teacher_id": n_store // 2})):
        table = pq.read_table(Path(args.prepared) / name)
        for column, shift in columns.items():
            ids = store_ids.take(pa.array((np.arange(table.num_rows) + shift) % n_store))
            table = table.set_column(table.column_names.index(column), column, ids)
        (root / "prepared" / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "prepared" / name)
        print(f"{name}: {table.num_rows:,} rows, {table.column(0).num_chunks} chunk(s); store {n_store:,} rows")
        del table
    save_tiny_bert(root / "student", layers=2, heads=4, max_positions=512, dropout=0.0 if args.no_dropout else 0.1)
    return root


def launch(spec: dict, ranks: int) -> subprocess.Popen:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr", "127.0.0.1",
           "--master-port", str(port), __file__, "--worker", json.dumps(spec)]
    log = open(spec["out_dir"] + ".log", "a")  # beside the run folder: the trainer refuses a foreign file in it
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun's workers run in sessions of their own)."""
    children = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait(proc: subprocess.Popen, spec: dict) -> list[dict]:
    if proc.wait():
        tail = Path(spec["out_dir"] + ".log").read_text()[-3000:]
        raise SystemExit(f"run {spec['out_dir']} failed (exit {proc.returncode}):\n{tail}")
    return [json.loads(p.read_text()) for p in sorted(Path(spec["out_dir"]).glob("bench-rank*.json"))]


def logged(out_dir: str) -> dict[int, float]:
    """step -> loss from metrics.jsonl (a rerun's lines for the same step replace the killed run's)."""
    out = {}
    for line in Path(out_dir, "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        out[m["step"]] = m["loss"]
    return out


def table_row(stage: int, ranks: int, batch: int, steps: int, r: dict) -> str:
    local = batch // ranks
    rows = local * steps
    per = {k: 1e6 * r["wall"].get(k, 0.0) / rows for k in PHASES[:-1]}
    per["model"] = 1e6 * r["loop"] / rows - sum(per[k] for k in ("wait", "log", "checkpoint"))
    cpu = {k: 1e6 * r["cpu"].get(k, 0.0) / rows for k in PHASES[:4]}
    outside = per["wait"] + per["log"] + per["checkpoint"]
    m0, m1 = r["memory_startup"], r["memory_end"]
    cells = [f"{stage}", f"{ranks}", f"{r['rank']}", f"{batch}", f"{r['startup']:.1f}",
             f"{m0['anon']:,.0f} + {m0['file']:,.0f}", f"{r['peak_anon']:,.0f}"]
    cells += [f"{per[k]:.1f} ({cpu[k]:.1f})" for k in PHASES[:4]]
    cells += [f"{per[k]:.1f}" for k in PHASES[4:]]
    cells += [f"{1e3 * r['loop'] / steps:.0f}", f"{outside:.1f} ({100 * outside / (1e6 * r['loop'] / rows):.1f}%)"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--store")
    ap.add_argument("--prepared", help="prepare's output folder (stage1/pairs.parquet, stage2/mimo.parquet)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stage1-batch", type=int, default=256, help="rows per optimizer step over all ranks")
    ap.add_argument("--stage2-batch", type=int, default=512)
    ap.add_argument("--mini-batch", type=int, default=32)
    ap.add_argument("--group", type=int, default=0, help="Stage 2 contrastive_group_size (0: the rank's rows)")
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--no-dropout", action="store_true", help="a student without dropout (no random draws in a step)")
    ap.add_argument("--work", help="folder for the runs (default: a temporary one, deleted)")
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    from bench import command_line, cpu_model

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
    print("command: " + command_line("bench/bench_data_path.py"))
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        root = set_up(args, Path(tmp).resolve())
        lines, checks = [], []
        for stage in args.stages:
            batch = args.stage1_batch if stage == 1 else args.stage2_batch
            for ranks in args.ranks:
                # the same contrastive groups at every rank count (default: one per rank at the most ranks)
                group = args.group or batch // max(args.ranks)
                spec = dict(stage=stage, prepared=str(root / "prepared"), store=args.store, student=str(root / "student"),
                            out_dir=str(root / f"stage{stage}-ranks{ranks}"), steps=args.steps, batch=batch,
                            mini_batch=args.mini_batch, group=group, checkpoint_every=args.checkpoint_every)
                load = os.getloadavg()[0]
                reports = wait(launch(spec, ranks), spec)
                for r in reports:
                    lines.append(table_row(stage, ranks, batch, args.steps, r))
                print(f"stage {stage}, {ranks} rank(s): done, load average {load:.1f} -> {os.getloadavg()[0]:.1f}",
                      flush=True)
                if args.no_resume or ranks != max(args.ranks):
                    continue
                # resume: killed a few steps after the checkpoint at checkpoint_every, then run again
                again = {**spec, "out_dir": spec["out_dir"] + "-resumed"}
                proc = launch(again, ranks)
                metrics = Path(again["out_dir"], "metrics.jsonl")
                kill_after = min(args.checkpoint_every + 3, args.steps - 1)
                while proc.poll() is None:
                    if metrics.is_file() and len(metrics.read_text().splitlines()) >= kill_after:
                        kill_tree(proc.pid)
                        break
                    time.sleep(0.2)
                proc.wait()
                killed_at = len(metrics.read_text().splitlines())
                import torch

                saved = torch.load(Path(again["out_dir"], "checkpoint.pt"), weights_only=True)["step"]
                if saved >= args.steps:
                    checks.append(f"stage {stage}, {ranks} rank(s): the run ended before it was killed (no resume check)")
                    continue
                resumed = wait(launch({**again, "steps": args.steps - saved}, ranks), again)
                full, after = logged(spec["out_dir"]), logged(again["out_dir"])
                differ = [s for s in full if full[s] != after.get(s)]
                first_diff = (f" (first differing step {differ[0]}: {full[differ[0]]!r} vs {after.get(differ[0])!r}, "
                              f"{len(differ)} steps differ)" if differ else "")
                rows_full, rows_after = reports[0]["rows"], resumed[0]["rows"]
                first = min(int(s) for s in rows_after)
                checks.append(
                    f"stage {stage}, {ranks} rank(s): killed at step {killed_at}, resumed at step {first} of an epoch of "
                    f"{reports[0]['n_rows']:,} rows (row {first * batch:,} of the epoch); losses of all {len(full)} steps "
                    f"equal the uninterrupted run's: {full == after}{first_diff}; the rows of the {len(rows_after)} resumed steps "
                    f"equal its rows: {all(rows_full.get(s) == v for s, v in rows_after.items())}")
                print(checks[-1], flush=True)
    print()
    print(f"{args.steps} steps a run; per row of a rank's share of the batch, microseconds: wall (the prefetch thread's "
          "CPU in brackets)")
    print()
    print("| stage | ranks | rank | batch | startup s | RSS at first step MiB (anon + file) | peak anon RSS MiB | select us | take us | "
          "tokenize us | targets us | wait us | log us | checkpoint us | model us | ms/step | outside the model us |")
    print("| " + " | ".join(["---"] * 17) + " |")
    for line in lines:
        print(line)
    for line in checks:
        print(line)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
