"""Teacher-target loading at paper scale: the trainer's memory-mapped reader against its peers, one run.

    nice .venv/bin/python bench/bench_targets.py --rows 1000000          # 1M x 4096 bf16 (8 GB store)
    .venv/bin/python bench/bench_targets.py --rows 20000 --procs 2 --resolve-ids 200000   # smoke run (~1 min)

1. A store of `--rows` random unit vectors (`--dim`, bf16) is written directly (pipeline.store:
   plan, arrays, shards with markers and checksums, as teacher-cache writes them; no teacher),
   under `--dir`, and kept there: a rerun with the same size reuses it.
2. Open + resolve: `TeacherTargets(url)` (store, markers, id index, shard maps), then resolving
   all of its ids in a shuffled Arrow column; and, in a fresh subprocess, the id index alone at
   `--resolve-ids` ids (6.5M: the paper's worklist) built from synthetic ids, with one lookup of
   all of them: seconds, CPU seconds and the peak RSS of each phase.
3. Warm random batches (`--batches` per size, sizes 128 and 2048, contenders interleaved in 4
   groups, medians): after one sequential read of every shard file, rows per wall second and per
   CPU second of the process (user + sys), of
     mapped bf16   TeacherTargets.fetch_stored (what the stages call; widened to fp32 on the GPU),
                   page tables prefaulted at open (the default when the store fits in half the RAM),
                   into reused output arrays (RowBuffers)
     mapped bf16, fresh arrays  the same into a new array per batch (the reader before RowBuffers)
     mapped bf16, no prefault   the same through mappings that fault each page in on first touch
     mapped fp32   TeacherTargets.fetch (with the bf16 -> fp32 widening on the CPU); also with
                   fresh arrays
     np.take       np.take of the same row numbers on an in-memory uint16 array of the first
                   `--memory-rows` rows (a full in-memory copy of 8 GB would not fit beside the
                   page cache), widened to fp32 as `fetch` does
     old reader    Zarr orthogonal selection per segment (the reader before this change; it
                   remains the path for stores at fsspec URLs), `--old-batches` batches
4. Cold: every mapping closed and the page cache of every shard file dropped with
   posix_fadvise(DONTNEED) (no root needed; whatever the hypervisor caches below this VM is not
   dropped); random batches through mappings opened without prefault; then, dropped again, the
   time of an open with prefault (which reads the whole store once).
5. `--procs` processes at once (each count in turn), each opening the store and reading random
   batches of 128 for `--seconds`: rows/s and rows per CPU second per process, and each one's
   RSS split into private and shared memory (/proc/self/smaps_rollup): the targets are in the
   shared page cache, not in any process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import command_line, cpu_model  # noqa: E402


def write_store(url: str, rows: int, dim: int, rows_per_shard: int, rows_per_chunk: int, seed: int = 0) -> float:
    """A complete bf16 store of `rows` unit vectors (ids: text ids of "synthetic <i>"), written directly."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.store import PLAN_SCHEMA, VectorStore
    from pipeline.worklist import text_id

    started = time.perf_counter()
    store = VectorStore(url, fingerprint={"model": "synthetic", "normalize": True}, dim=dim, dtype="bfloat16",
                        rows_per_shard=rows_per_shard, rows_per_chunk=rows_per_chunk, create=True)
    texts = [f"synthetic {i}" for i in range(rows)]
    plan = pa.table({"text_id": [text_id("document", 256, t) for t in texts], "role": ["document"] * rows,
                     "max_length": pa.array(np.full(rows, 256, np.int32)), "text": texts}, schema=PLAN_SCHEMA)
    store._create_arrays(0, rows)
    with open(store._path("seg-00000.plan.parquet"), "wb") as fh:
        pq.write_table(plan, fh, compression="zstd", write_statistics=False)
    del plan, texts
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((rows_per_shard, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    (seg,) = store.segments()
    for shard, seg, start, end in store.shards([seg]):
        vectors = np.roll(base, shard, axis=0)[: end - start]  # distinct rows per shard, no new random draws
        store.write_shard(seg, shard, start, end, vectors, np.full(end - start, 16, np.int32), 0)
        print(f"\rwrote shard {shard + 1} of {-(-rows // rows_per_shard)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - started


def memory() -> dict:
    """This process's RSS split (MiB): private, shared (page cache of mapped files counts here), peak."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")
        fields[key] = int(value.split()[0]) / 1024
    return {"rss": fields["Rss"], "private": fields["Private_Clean"] + fields["Private_Dirty"],
            "shared": fields["Shared_Clean"] + fields["Shared_Dirty"], "pss": fields["Pss"],
            # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
            "peak": _status_kib("VmHWM") / 1024}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rate(fn, batches) -> tuple[float, float]:
    """(rows per wall second, rows per CPU second of this process): on a shared machine the second one
    is what a core gives, the first one what this process got."""
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    for where in batches:
        n += len(fn(where))
    return n / (time.perf_counter() - start), n / max(time.process_time() - cpu, 1e-9)


def drop_page_cache(root: Path) -> None:
    for path in root.glob("seg-*/vectors/c/*/0"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_page_cache(root: Path) -> None:
    for path in sorted(root.glob("seg-*/vectors/c/*/0")):
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass


def worker(url: str, seconds: float, batch: int, seed: int) -> None:
    """One of the concurrent processes: open, resolve nothing, read random batches for `seconds`."""
    from pipeline.cache_read import TeacherTargets

    targets = TeacherTargets(url)
    where = targets.index.where
    rng = np.random.default_rng(seed)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        n += len(targets.fetch_stored(where[rng.integers(0, len(where), batch)]))
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"rows_per_s": n / wall, "rows_per_cpu_s": n / used, **memory()}))


def synthetic_ids(n: int, salt: bytes = b"ids"):
    """n random 32-char hex ids as one Arrow string column, built from buffers (Python strings would
    leave freed memory behind that counts in the RSS figures)."""
    import pyarrow as pa

    digest = np.frombuffer(hashlib.shake_128(salt).digest(16 * n), dtype=np.uint8).reshape(n, 16)
    chars = np.empty((n, 32), np.uint8)
    hexchars = np.frombuffer(b"0123456789abcdef", np.uint8)
    chars[:, 0::2], chars[:, 1::2] = hexchars[digest >> 4], hexchars[digest & 15]
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.reshape(-1))])


def write_id_plan(url: str, n: int) -> None:
    """A store holding one segment plan of n synthetic ids and no vectors: what the id index reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.store import PLAN_SCHEMA, VectorStore

    store = VectorStore(url, fingerprint={"model": "synthetic"}, dim=8, dtype="bfloat16", rows_per_shard=4096,
                        rows_per_chunk=64, create=True)
    ids = synthetic_ids(n)
    plan = pa.table({"text_id": ids, "role": pa.array(["document"] * n),
                     "max_length": pa.array(np.full(n, 256, np.int32)), "text": pa.array([""] * n)}, schema=PLAN_SCHEMA)
    with open(store._path("seg-00000.plan.parquet"), "wb") as fh:
        pq.write_table(plan, fh, compression="zstd", row_group_size=store.plan_row_group())


def index_only(url: str, n: int) -> None:
    """The id index alone (fresh process): built from a store's plan of n ids on disk, then one lookup
    of all of them as a stage's table column holds them (shuffled), with the peak RSS of each phase
    (VmHWM reset between phases through /proc/self/clear_refs)."""
    import pyarrow as pa

    from pipeline.cache_index import IdIndex
    from pipeline.store import VectorStore

    def phase_peak() -> float:
        peak = memory()["peak"]
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return peak

    imported = memory()["rss"]
    ids = synthetic_ids(n)
    column = ids.take(pa.array(np.random.default_rng(0).permutation(n)))  # what a stage's table column holds
    del ids
    before = memory()["rss"]
    phase_peak()
    start, cpu = time.perf_counter(), time.process_time()
    store = VectorStore(url)
    index = IdIndex(store.segments(), store.rows_per_shard)
    built, built_cpu = time.perf_counter() - start, time.process_time() - cpu
    build_peak = phase_peak()
    start, cpu = time.perf_counter(), time.process_time()
    where, found = index.lookup(column)
    looked, looked_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert found.all() and len(index) == n
    print(json.dumps({"ids": n, "build_s": built, "build_cpu_s": built_cpu, "lookup_s": looked,
                      "lookup_cpu_s": looked_cpu, "rss_imports": imported, "rss_before": before,
                      "build_peak": build_peak, "lookup_peak": phase_peak(), **memory()}))


def single_process(args, url: str, root: Path, targets) -> None:
    """Warm and cold random batches in this process: the reader, its variants and its peers."""
    import torch

    from pipeline.cache_index import RowBuffers
    from pipeline.cache_read import TeacherTargets
    from pipeline.store import from_storage

    rows = targets.index.where
    in_memory = targets.maps.gather(np.arange(min(args.memory_rows, len(rows))))  # the first rows, in RAM
    rng = np.random.default_rng(1)

    def take_fp32(w):
        return from_storage(np.take(in_memory, w, axis=0), "bfloat16")

    lazy = TeacherTargets(url, prefault=False)

    def swapped(name, **attrs):
        """targets.<name> with some of its attributes swapped for the call (the same maps and index)."""
        def call(w):
            saved = {k: getattr(targets, k) for k in attrs}
            try:
                for k, v in attrs.items():
                    setattr(targets, k, v)
                return getattr(targets, name)(w)
            finally:
                for k, v in saved.items():
                    setattr(targets, k, v)
        return call

    fresh = {"_stored_out": RowBuffers(np.uint16, args.dim, slots=0),  # a new array every batch
             "_float_out": RowBuffers(np.float32, args.dim, slots=0)}
    contenders = {
        "mapped bf16": (targets.fetch_stored, False),  # what the stages call
        "mapped bf16, fresh arrays": (swapped("fetch_stored", **fresh), False),
        "mapped bf16, no prefault": (lazy.fetch_stored, False),
        "mapped fp32": (targets.fetch, False),
        "mapped fp32, fresh arrays": (swapped("fetch", **fresh), False),
        "np.take bf16": (lambda w: np.take(in_memory, w, axis=0), True),
        "np.take fp32": (take_fp32, True),
    }
    old_reader = swapped("fetch", maps=None)  # the Zarr path

    start = time.perf_counter()
    warm_page_cache(root)
    print(f"warm-up: sequential read of every shard file {time.perf_counter() - start:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    results = {}
    for batch in args.sizes:
        n = max(args.batches, args.batches * 1024 // batch)  # small batches: more of them, groups of similar length
        picks = [rows[rng.integers(0, len(rows), batch)] for _ in range(n)]
        small = [rng.integers(0, len(in_memory), batch) for _ in range(n)]
        a = targets.fetch_stored(picks[0]).view(torch.int16).numpy().view(np.uint16)  # correctness, in passing
        assert np.array_equal(from_storage(a, "bfloat16"), old_reader(picks[0]).numpy())
        del a
        names = list(contenders)
        groups = {name: [] for name in names}
        for g in range(-1, 4):  # interleaved, group by group, each group in another order; group -1 warms up
            for name in names[g % len(names):] + names[:g % len(names)]:
                fn, peer = contenders[name]
                measured = rate(fn, (small if peer else picks)[max(g, 0)::4])
                if g >= 0:
                    groups[name].append(measured)
        for name, measured in groups.items():
            results[(name, batch)] = tuple(statistics.median(m[k] for m in measured) for k in (0, 1))
        if args.old_batches:
            results[("old reader", batch)] = rate(old_reader, picks[: args.old_batches])
    targets.maps.close()  # mapped pages stay in the page cache whatever fadvise says: unmap first
    lazy.maps.close()
    for batch in args.sizes if args.cold_batches else ():
        drop_page_cache(root)
        cold = TeacherTargets(url, prefault=False)
        picks = [rows[rng.integers(0, len(rows), batch)] for _ in range(args.cold_batches)]
        results[("mapped bf16, cold, no prefault", batch)] = rate(cold.fetch_stored, picks)
        cold.maps.close()
    if args.cold_batches:
        drop_page_cache(root)
        start = time.perf_counter()
        cold = TeacherTargets(url)
        print(f"cold open with prefault (reads the store once): {time.perf_counter() - start:.1f} s, "
              f"prefaulted {cold.maps.prefaulted}")
        cold.maps.close()
    print(f"load average {os.getloadavg()[0]:.2f} after the single-process figures")
    print()
    print("| reader | " + " | ".join(f"batch {b} rows/s | rows per CPU s" for b in args.sizes) + " |")
    print("| --- |" + " --- | --- |" * len(args.sizes))
    for name in (*contenders, "old reader", "mapped bf16, cold, no prefault"):
        if (name, args.sizes[0]) in results:
            print(f"| {name} | " + " | ".join(f"{results[(name, b)][0]:,.0f} | {results[(name, b)][1]:,.0f}"
                                              for b in args.sizes) + " |")
    for name, peer in (("mapped bf16", "np.take bf16"), ("mapped fp32", "np.take fp32")):
        print(f"{name} / {peer}: " + ", ".join(
            f"batch {b} {results[(name, b)][0] / results[(peer, b)][0]:.2f} (wall), "
            f"{results[(name, b)][1] / results[(peer, b)][1]:.2f} (CPU)" for b in args.sizes))
    del in_memory


def reuse_ab(args, targets) -> None:
    """Reused output arrays (RowBuffers) against a fresh array per batch, alternating 6 times: `fetch_stored`
    and `fetch` called in this thread, and `fetch_stored` from the training loop's prefetch thread (depth 2)
    with the step's widening (`.float()`, on the CPU here) in this one. Rows per CPU second, all 6 sorted."""
    from pipeline.cache_index import RowBuffers
    from trainer.loop import prepared_batches

    rows = targets.index.where
    reused = (targets._stored_out, targets._float_out)
    fresh = (RowBuffers(targets._stored_out.dtype, args.dim, slots=0), RowBuffers(np.float32, args.dim, slots=0))
    for batch in args.reuse_sizes:
        steps = max(10, 60_000 // batch)

        picks = [rows[r] for r in np.random.default_rng(3).integers(0, len(rows), (steps, batch))]

        def in_thread(fn, picks=picks):
            def run():
                for w in picks:
                    fn(w)  # the batch dropped at once, as a step does
            return run

        def prefetched(picks=picks):
            for stored in prepared_batches(targets.fetch_stored, picks.__getitem__, 0, len(picks), 2):
                stored.float()

        for name, run in (("fetch_stored", in_thread(targets.fetch_stored)), ("fetch", in_thread(targets.fetch)),
                          ("fetch_stored, prefetch thread", prefetched)):
            measured = {"reused": [], "fresh": []}
            for r in range(6):
                for kind in ("reused", "fresh") if r % 2 else ("fresh", "reused"):
                    targets._stored_out, targets._float_out = reused if kind == "reused" else fresh
                    cpu = time.process_time()
                    run()
                    measured[kind].append(steps * batch / (time.process_time() - cpu))
            targets._stored_out, targets._float_out = reused
            print(f"batch {batch}, {name}: rows per CPU s, reused arrays "
                  f"{', '.join(f'{x / 1000:.0f}k' for x in sorted(measured['reused']))}; fresh "
                  f"{', '.join(f'{x / 1000:.0f}k' for x in sorted(measured['fresh']))}; "
                  f"medians' ratio {statistics.median(measured['reused']) / statistics.median(measured['fresh']):.2f}; "
                  f"load {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--rows-per-shard", type=int, default=4096)
    ap.add_argument("--rows-per-chunk", type=int, default=64)
    ap.add_argument("--dir", default=str(REPO / "work/bench_targets"))
    ap.add_argument("--batches", type=int, default=200, help="random batches per size and contender (warm)")
    ap.add_argument("--old-batches", type=int, default=10, help="random batches per size for the old reader")
    ap.add_argument("--cold-batches", type=int, default=50)
    ap.add_argument("--memory-rows", type=int, default=131072)
    ap.add_argument("--procs", type=int, nargs="*", default=[2, 8], help="processes at once (one run per count)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--resolve-ids", type=int, default=6_500_000, help="ids of the id index alone (0: skip)")
    ap.add_argument("--worker", nargs=3, metavar=("URL", "SECONDS", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="*", default=[128, 2048], help="batch sizes (warm; none: skip)")
    ap.add_argument("--reuse-sizes", type=int, nargs="*", default=[2048, 4096],
                    help="batch sizes of the reused-vs-fresh arrays comparison (none: skip)")
    ap.add_argument("--index-only", nargs=2, metavar=("URL", "IDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker[0], float(args.worker[1]), 128, int(args.worker[2]))
    if args.index_only:
        return index_only(args.index_only[0], int(args.index_only[1]))

    import pyarrow as pa
    import torch

    from pipeline.cache_read import TeacherTargets
    from pipeline.store import VectorStore

    torch.set_num_threads(1)  # one process, one core: the figures are per process
    root = Path(args.dir) / f"store-{args.rows}x{args.dim}.zarr"
    url = str(root)
    command = command_line("bench/bench_targets.py")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
    print(f"command: {command}")
    if not VectorStore.exists(url):
        print(f"store written in {write_store(url, args.rows, args.dim, args.rows_per_shard, args.rows_per_chunk):.0f} s")
    size = sum(p.stat().st_size for p in root.glob("seg-*/vectors/c/*/0"))
    print(f"store: {args.rows:,} rows x {args.dim} bf16, {size / 2**30:.2f} GiB of shard files, "
          f"{args.rows_per_shard} rows a shard, {args.rows_per_chunk} a chunk")

    start = time.perf_counter()
    targets = TeacherTargets(url)
    opened = time.perf_counter() - start
    print(f"page tables prefaulted at open: {targets.maps.prefaulted}")
    (seg,) = targets.segments
    ids = seg.plan.column("text_id").take(pa.array(np.random.default_rng(0).permutation(seg.rows)))
    start = time.perf_counter()
    where = targets.locate(ids)
    resolved = time.perf_counter() - start
    del ids
    mem = memory()
    print(f"open: {opened:.2f} s; resolve {len(where):,} ids: {resolved:.2f} s; RSS {mem['rss']:.0f} MiB "
          f"(private {mem['private']:.0f}, shared {mem['shared']:.0f}: mapped targets; peak {mem['peak']:.0f})")
    if args.resolve_ids:
        plan_url = str(Path(args.dir) / f"ids-{args.resolve_ids}.zarr")
        if not VectorStore.exists(plan_url):
            code = (f"import sys; sys.path[:0] = [{str(REPO)!r}]; from bench.bench_targets import write_id_plan; "
                    f"write_id_plan({plan_url!r}, {args.resolve_ids})")
            subprocess.run([sys.executable, "-c", code], check=True)  # in its own process: not in the figures
        out = subprocess.run([sys.executable, __file__, "--index-only", plan_url, str(args.resolve_ids)],
                             capture_output=True, text=True, check=True)
        idx = json.loads(out.stdout)
        print(f"id index alone at {idx['ids']:,} ids (fresh process, plan on disk): build {idx['build_s']:.2f} s "
              f"({idx['build_cpu_s']:.2f} CPU s), lookup of all {idx['lookup_s']:.2f} s "
              f"({idx['lookup_cpu_s']:.2f} CPU s); RSS {idx['rss_imports']:.0f} MiB after imports, "
              f"{idx['rss_before']:.0f} with the ids to resolve (a stage's column, Arrow), peak "
              f"{idx['build_peak']:.0f} in the build, {idx['lookup_peak']:.0f} in the lookup, {idx['rss']:.0f} after")

    if args.reuse_sizes:
        warm_page_cache(root)
        reuse_ab(args, targets)
    if args.sizes:
        single_process(args, url, root, targets)

    warm_page_cache(root)
    for n_procs in args.procs:
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", url, str(args.seconds), str(k)],
                                  stdout=subprocess.PIPE, text=True) for k in range(n_procs)]
        per = [json.loads(p.communicate()[0]) for p in procs]
        print()
        print(f"{n_procs} processes at once, random batches of 128 for {args.seconds:.0f} s each:")
        print("| process | rows/s | rows per CPU s | RSS MiB | private MiB | shared MiB | PSS MiB |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for k, r in enumerate(per):
            print(f"| {k} | {r['rows_per_s']:,.0f} | {r['rows_per_cpu_s']:,.0f} | {r['rss']:.0f} | {r['private']:.0f} "
                  f"| {r['shared']:.0f} | {r['pss']:.0f} |")
        print(f"sum {sum(r['rows_per_s'] for r in per):,.0f} rows/s over {n_procs} processes on {os.cpu_count()} "
              f"cores; load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
