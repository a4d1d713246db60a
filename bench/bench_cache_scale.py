"""Teacher-cache bookkeeping at the paper's scale: `mimo teacher-cache` over a ~6.5M-text worklist
with a tiny random encoder, so that the store (planning, markers, writes, checksums, resume,
`cache info` / `cache verify`) is what costs, not the model.

    nice -n 10 .venv/bin/python bench/bench_cache_scale.py --out work/cache_scale --scale 0.1
    nice -n 10 .venv/bin/python bench/bench_cache_scale.py --out work/cache_scale --scale 1.0

Writes under --out:

- `worklist.parquet`: a teacher worklist in the layout `mimo prepare` writes (pipeline/worklist.py:
  text_id = blake2b-128 of role, max_length and text; sorted by text_id; zstd, page checksums).
  At scale 1.0: 5,500,000 OPUS-length sentences (document@256, log-normal, median 85 characters,
  10-480), 500,000 mMARCO queries (query@512, median 33) and 500,000 passages (document@512,
  median 330): 6.5M texts, the paper's ~6.5M unique English texts. Every text is unique.
- `model/`: a BERT with 1 layer, hidden size 32, random weights (seeded), and the bundled MiniLM's
  tokenizer (real WordPiece tokenization, offline).
- `full.zarr`: one uninterrupted run; `killed.zarr`: a run killed with SIGKILL after about
  `--kill-at` of its shards, then resumed until its first new shard is written.

Each `mimo` command runs in a fresh subprocess (`python -m mimo_cli ...` behind a small
wrapper that times, in the same process, the encoder's `encode` (tokenization + forward: "the
model"), its setup (`make_teacher`, `warm_up`), and the cache's own phases). Wall and CPU seconds
come from the kernel (`os.wait4` on the child), peak RSS from the child's VmHWM (/proc, read by
the child at exit and polled every 0.2 s). "Outside the model" is wall minus `encode`;
peak RSS outside the model is the run's peak minus the peak of the same command on a 2,000-text
worklist (interpreter, torch, the model, one shard in flight).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (kind, role, max_length, texts at scale 1.0, median characters, log-normal sigma, min, max)
KINDS = (("opus", "document", 256, 5_500_000, 85, 0.6, 10, 480),
         ("query", "query", 512, 500_000, 33, 0.4, 8, 200),
         ("passage", "document", 512, 500_000, 330, 0.5, 40, 2000))
BATCH = 200_000
STUB = False  # --stub-model


def _texts(keys: np.ndarray, lengths: np.ndarray, serial: np.ndarray):
    """The text of each (key, length, serial): paper_scale's letters, then " <serial>" (unique)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from bench.paper_scale import texts

    return pc.binary_join_element_wise(texts(keys, lengths), pc.cast(pa.array(serial), pa.string()), " ")


def write_worklist(path: Path, scale: float, seed: int = 0) -> int:
    """The synthetic worklist, sorted by text_id as prepare writes it; returns its rows."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.paper_scale import lognormal_lengths, mix
    from pipeline.worklist import WORKLIST_SCHEMA

    rng = np.random.default_rng(seed)
    kind, length = [], []
    for k, (_, role, max_length, n1, median, sigma, lo, hi) in enumerate(KINDS):
        n = int(round(n1 * scale))
        kind.append(np.full(n, k, dtype=np.uint8))
        length.append(lognormal_lengths(rng, n, median, sigma, lo, hi))
    kind, length = np.concatenate(kind), np.concatenate(length)
    serial = np.arange(len(kind), dtype=np.int64)
    keys = mix(serial.astype(np.uint64) + np.uint64(seed << 40))
    ids = np.empty(len(kind), dtype="S16")
    start = time.perf_counter()
    for a in range(0, len(kind), BATCH):  # ids as worklist.text_id computes them (Python's blake2b a row)
        b = min(a + BATCH, len(kind))
        texts = _texts(keys[a:b], length[a:b], serial[a:b]).to_pylist()
        ids[a:b] = [hashlib.blake2b(f"{KINDS[k][1]}\x1f{KINDS[k][2]}\x1f{t}".encode(), digest_size=16).digest()
                    for k, t in zip(kind[a:b].tolist(), texts)]
    order = np.argsort(ids, kind="stable")  # bytes order of the digests = order of their hex strings
    raw = np.frombuffer(ids[order].tobytes(), dtype=np.uint8).reshape(-1, 16)
    del ids
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    hexed = np.empty((len(order), 32), dtype=np.uint8)
    hexed[:, 0::2], hexed[:, 1::2] = digits[raw >> 4], digits[raw & 15]
    del raw
    roles = np.array([k[1] for k in KINDS])
    lengths = np.array([k[2] for k in KINDS], dtype=np.int32)
    with pq.ParquetWriter(path, WORKLIST_SCHEMA, compression="zstd", write_statistics=False,
                          write_page_checksum=True) as writer:
        for a in range(0, len(order), BATCH):
            pick = order[a:a + BATCH]
            writer.write_table(pa.table({
                "text_id": pa.StringArray.from_buffers(len(pick), pa.py_buffer(np.arange(len(pick) + 1, dtype=np.int32) * 32),
                                                       pa.py_buffer(hexed[a:a + BATCH].tobytes())),
                "role": pa.array(roles[kind[pick]].tolist(), pa.string()),
                "max_length": pa.array(lengths[kind[pick]]),
                "text": _texts(keys[pick], length[pick], serial[pick])}, schema=WORKLIST_SCHEMA))
    print(f"worklist: {len(order):,} texts in {time.perf_counter() - start:.0f} s -> {path} "
          f"({path.stat().st_size / 2**20:.0f} MiB)", flush=True)
    return len(order)


def write_tiny_worklist(big: Path, path: Path, rows: int = 2000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(big)
    pq.write_table(pa.Table.from_batches([next(pf.iter_batches(batch_size=rows))]), path, compression="zstd", write_page_checksum=True)


def write_model(path: Path) -> None:
    from bench import save_tiny_bert

    save_tiny_bert(path, layers=1, heads=2, max_positions=640)


# ---- the child: `mimo <args>` with the cache's phases timed in the same process -------------------

def stub_encode(self, texts, roles, max_lengths, on_batch=None):
    """In place of the encoder (--stub-model): unit vectors drawn from each text's length, a token
    count per text, no tokenizer and no forward pass. Only the store's work is left to time."""
    n = len(texts)
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
    ntokens = np.minimum(lengths // 3 + 2, np.asarray(max_lengths)).astype(np.int32)
    vectors = np.random.default_rng(int(lengths.sum())).standard_normal((n, self.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if on_batch is not None:
        on_batch(n, int(ntokens.sum()))
    return vectors, ntokens, np.zeros(n, dtype=bool)


def child(timing_path: str, args: list[str]) -> None:
    started = time.perf_counter()
    import pipeline.store as store_mod
    import pipeline.teacher_cache as tc
    import pipeline.worklist as worklist_mod
    from pipeline.encoder import Encoder

    times: dict[str, float] = {}
    counts: dict[str, int] = {}
    nested: dict[str, float] = {}  # key -> seconds of other timed calls made inside it (warm-up's encode)
    active: list[str] = []
    marks: dict[str, float] = {"imports": time.perf_counter() - started}

    def dump():
        marks["total"] = time.perf_counter() - started  # (so far, for a dump at a mark)
        Path(timing_path).write_text(json.dumps({"seconds": times, "calls": counts, "marks": marks, "nested": nested,
                                                 "vmhwm_kib": vmhwm(os.getpid())}, indent=1))

    def timed(owner, name, key, mark_first=None):
        original = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            active.append(key)
            try:
                return original(*a, **k)
            finally:
                active.pop()
                dt = time.perf_counter() - t
                times[key] = times.get(key, 0.0) + dt
                if active:
                    nested[active[-1]] = nested.get(active[-1], 0.0) + dt
                counts[key] = counts.get(key, 0) + 1
                if mark_first and mark_first not in marks:
                    marks[mark_first] = time.perf_counter() - started
                    dump()  # a run killed later keeps its marks

        setattr(owner, name, wrapper)

    if os.environ.get("BENCH_STUB_MODEL") == "1":
        Encoder.encode = stub_encode
    timed(Encoder, "encode", "model: encode (tokenize + forward)")
    timed(tc, "make_teacher", "model: make teacher (config, tokenizer)")
    timed(Encoder, "warm_up", "model: load weights, encode one text")
    timed(tc, "read_worklists", "read worklist")  # (before the keys-first Worklist)
    if hasattr(worklist_mod, "Worklist"):
        timed(worklist_mod.Worklist, "__init__", "read worklist: ids, roles, lengths")
        timed(worklist_mod.Worklist, "rows", "read worklist: texts of the new rows")
    timed(store_mod.VectorStore, "plan", "plan (segments, new rows, plan file, arrays)")
    timed(store_mod.VectorStore, "new_rows", "new rows (the plans' ids, Arrow is_in)")
    timed(tc, "redo_list", "redo list (markers, file sizes)")
    timed(tc, "cached_before", "cached before", mark_first="finished shards skipped (pending list made)")
    timed(store_mod.VectorStore, "write_shard", "write shards (bf16, files, fsync, checksum, marker)",
          mark_first="first shard written")
    timed(store_mod.VectorStore, "shards_to_redo", "shards to redo (markers, file sizes)")
    timed(store_mod.VectorStore, "size_bytes", "store size (du)")
    timed(store_mod.Segment, "slice", "plan rows of a shard (row groups)")

    from mimo_cli.main import app

    try:
        app(args=args, prog_name="mimo")
    except SystemExit as err:
        dump()
        raise SystemExit(err.code) from None
    dump()


def vmhwm(pid: int) -> int:
    """Peak RSS (KiB) of the process's current program: /proc's VmHWM starts afresh at exec, unlike
    ru_maxrss, which keeps the forking parent's size (the worklist generator's, here)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_child(args: list[str], timing: Path, log: Path, kill_when=None, first_new=None) -> dict:
    """Run `mimo <args>` in the wrapper; return wall, CPU, peak RSS, exit status, the timing file.

    kill_when(): polled every 0.2 s; when true the child gets SIGKILL. first_new(): polled too; the
    seconds from start until it first returns true are reported as `first_new_s`.
    """
    cmd = [sys.executable, "-m", "bench.bench_cache_scale", "--child", str(timing), "--", *args]
    # one thread: on a shared 2-core box torch's second thread spin-waits (6x slower forward passes)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "BENCH_STUB_MODEL": "1" if STUB else "0"}
    timing.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    out = {"killed": False}
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, vmhwm(proc.pid))  # polled: a killed child reports nothing itself
        if first_new is not None and "first_new_s" not in out and first_new():
            out["first_new_s"] = round(time.perf_counter() - start, 2)
        if kill_when is not None and not out["killed"] and kill_when():
            os.kill(proc.pid, signal.SIGKILL)
            out["killed"] = True
        time.sleep(0.2)
    out.update(wall_s=round(time.perf_counter() - start, 2), user_s=round(usage.ru_utime, 2),
               sys_s=round(usage.ru_stime, 2), status=os.waitstatus_to_exitcode(status))
    if timing.exists():
        out["timing"] = json.loads(timing.read_text())
        peak = max(peak, out["timing"].get("vmhwm_kib", 0))
    out["peak_rss_mib"] = round(peak / 1024)
    return out


def markers(store: Path) -> int:
    return sum(1 for d in store.glob("seg-*.done") for f in os.listdir(d) if f.endswith(".json"))


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(name: str, r: dict) -> None:
    print(f"\n== {name}: exit {r['status']}{' (killed)' if r['killed'] else ''}; wall {r['wall_s']:.1f} s, "
          f"CPU {r['user_s'] + r['sys_s']:.1f} s (user {r['user_s']:.1f}, sys {r['sys_s']:.1f}), "
          f"peak RSS {r['peak_rss_mib']} MiB; load {loadavg()}", flush=True)
    if "first_new_s" in r:
        print(f"   first new shard marker after {r['first_new_s']:.1f} s", flush=True)
    t = r.get("timing")
    if t:  # a killed run: what it dumped at its last mark
        for key, sec in t["seconds"].items():
            print(f"   {key:58s} {sec:9.2f} s  ({t['calls'][key]} calls)")
        for key, sec in t["marks"].items():
            print(f"   mark: {key:52s} {sec:9.2f} s")
        if r["killed"]:
            return
        inside = t["seconds"].get("model: encode (tokenize + forward)", 0.0)
        # the model's set-up, without the timed calls inside it (the warm-up's encode is in `inside` already)
        nested = t.get("nested", {})
        model = inside + sum(v - nested.get(k, 0.0) for k, v in t["seconds"].items()
                             if k.startswith("model:") and "encode (" not in k)
        print(f"   outside the model: {r['wall_s'] - inside:.1f} s of {r['wall_s']:.1f} s wall "
              f"({(r['wall_s'] - inside) / r['wall_s']:.1%}); without imports and the model's setup (tokenizer, weights): "
              f"{t['marks']['total'] - model - t['marks']['imports']:.1f} s",
              flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="work/cache_scale")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--kill-at", type=float, default=0.25, help="fraction of the shards done when the run is killed")
    ap.add_argument("--rows-per-shard", type=int, default=4096)
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: full,kill,info,verify")
    ap.add_argument("--stub-model", action="store_true",
                    help="replace the encoder's encode() by random unit vectors (the store's work alone)")
    args = ap.parse_args()
    global STUB
    STUB = args.stub_model
    skip = set(filter(None, args.skip.split(",")))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"load at start: {loadavg()}", flush=True)
    wl, tiny, model = out / f"worklist-{args.scale:g}.parquet", out / "worklist-tiny.parquet", out / "model"
    if not wl.exists():
        write_worklist(wl, args.scale)
    if not tiny.exists():
        write_tiny_worklist(wl, tiny)
    if not model.exists():
        write_model(model)
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(wl).metadata.num_rows
    shards = -(-rows // args.rows_per_shard)
    print(f"worklist {wl.name}: {rows:,} texts, {shards} shards of {args.rows_per_shard}", flush=True)
    base = [f"teacher.model={model}", "teacher.pooling=mean", "teacher.normalize=true", "progress=false",
            f"rows_per_shard={args.rows_per_shard}", "rows_per_chunk=64"]
    import shutil

    for d in ("tiny.zarr",):
        shutil.rmtree(out / d, ignore_errors=True)
    r = run_child(["teacher-cache", f"worklists={wl.parent / tiny.name}", f"store={out / 'tiny.zarr'}", *base],
                  out / "timing-tiny.json", out / "log-tiny.txt")
    report(f"baseline: teacher-cache on {tiny.name} (2,000 texts)", r)
    baseline = r["peak_rss_mib"]
    full = out / f"full-{args.scale:g}{'-stub' if STUB else ''}.zarr"
    if "full" not in skip:
        shutil.rmtree(full, ignore_errors=True)
        r = run_child(["teacher-cache", f"worklists={wl}", f"store={full}", *base], out / "timing-full.json",
                      out / "log-full.txt")
        report(f"teacher-cache, fresh store, {rows:,} texts", r)
        print(f"   peak RSS outside the model: {r['peak_rss_mib'] - baseline} MiB (run {r['peak_rss_mib']} - baseline "
              f"{baseline})", flush=True)
        r = run_child(["teacher-cache", f"worklists={wl}", f"store={full}", *base], out / "timing-again.json",
                      out / "log-again.txt")
        report("teacher-cache again on the finished store (nothing to do)", r)
    if "kill" not in skip:
        killed = out / f"killed-{args.scale:g}{'-stub' if STUB else ''}.zarr"
        shutil.rmtree(killed, ignore_errors=True)
        at = max(1, int(shards * args.kill_at))
        r = run_child(["teacher-cache", f"worklists={wl}", f"store={killed}", *base], out / "timing-killed.json",
                      out / "log-killed.txt", kill_when=lambda: markers(killed) >= at)
        done = markers(killed)
        report(f"teacher-cache, killed with SIGKILL at {done} of {shards} shards done", r)
        r = run_child(["teacher-cache", f"worklists={wl}", f"store={killed}", *base], out / "timing-resume.json",
                      out / "log-resume.txt", first_new=lambda: markers(killed) > done,
                      kill_when=lambda: markers(killed) > done)
        report("resume (killed again once its first new shard is written)", r)
        print("   " + "".join(line for line in (out / "log-resume.txt").read_text().splitlines(True)
                              if "already cached" in line).strip(), flush=True)
    if full.exists():
        for cmd in ("info", "verify"):
            if cmd in skip:
                continue
            r = run_child(["cache", cmd, str(full)], out / f"timing-{cmd}.json", out / f"log-{cmd}.txt")
            report(f"cache {cmd} {full.name}", r)
            print("   " + (out / f"log-{cmd}.txt").read_text().strip().splitlines()[-1][:200], flush=True)
    print(f"load at end: {loadavg()}", flush=True)


if __name__ == "__main__":
    main()
