"""The `teacher-cache` step: encode the teacher's worklist once into the vector store.

Scale-out: N workers (torchrun, a SLURM array, or plain processes) run the same command on the same
store; worker `rank` takes the shards whose global number is `rank` modulo `world_size`. Nothing is
shared but the store: the plan is deterministic, each shard has one writer, and a marker says it is
done. A killed run resumes by running the same command again: finished shards are skipped and the
result is bitwise identical to an uninterrupted run (batches are formed inside a shard only).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import WORK_FOLDER, config_to_dict
from pipeline.prepared_layout import TEACHER_WORKLIST
from pipeline.errors import MimoError
from pipeline.ranks import env_int
from pipeline.store import FORMAT_VERSION, STORE_DTYPES, VectorStore
from pipeline.teacher import TeacherConfig
from pipeline.worklist import Worklist
# the worklist's readers and checks, where the CLI's parity command and the tests import them from
from pipeline.worklist import BLANK, PY_WHITESPACE, check_worklist_values, read_worklists  # noqa: F401


@dataclass(frozen=True)
class TeacherCacheConfig:
    WORK_PATHS: ClassVar[dict] = {"worklists": (f"{WORK_FOLDER['prepared']}/{TEACHER_WORKLIST}",),
                                  "store": WORK_FOLDER["cache"]}

    work_dir: str = "work/paper"  # the setup's work folder (pipeline/config.py): worklists and store derive from it
    worklists: tuple[str, ...] = ("work/paper/prepared/teacher_worklist.parquet",)
    store: str = "work/paper/teacher_cache.zarr"  # local path or fsspec URL (s3://, gs://)
    dtype: str = "bfloat16"  # stored dtype: bfloat16 (as the user asked), float16 (~8x finer on unit vectors), float32
    rows_per_shard: int = 4096  # unit of work, write and resume; 4096 x 4096 bf16 = 32 MiB objects
    rows_per_chunk: int = 64  # unit of random reads inside a shard
    rank: int = -1  # -1: from RANK / SLURM_ARRAY_TASK_ID, else 0
    world_size: int = -1  # -1: from WORLD_SIZE / SLURM_ARRAY_TASK_COUNT, else 1
    progress: bool = True
    verify: bool = False  # also recompute every done shard's checksum and redo those that differ (reads the store)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def __post_init__(self):
        if self.dtype not in STORE_DTYPES:
            raise MimoError(f"dtype must be one of {', '.join(STORE_DTYPES)}, not {self.dtype!r}")
        if self.rows_per_shard < 1 or self.rows_per_chunk < 1 or self.rows_per_shard % self.rows_per_chunk:
            raise MimoError("rows_per_shard must be a positive multiple of rows_per_chunk")
        if not self.worklists:
            raise MimoError("worklists must name at least one teacher_worklist.parquet")


def worker_position(cfg: TeacherCacheConfig) -> tuple[int, int]:
    """(rank, world size) from the config, else torchrun's or SLURM's environment, else (0, 1)."""
    env = os.environ
    world = cfg.world_size if cfg.world_size > 0 else (env_int("WORLD_SIZE") or env_int("SLURM_ARRAY_TASK_COUNT") or 1)
    if cfg.rank >= 0:
        rank = cfg.rank
    elif "RANK" in env:
        rank = env_int("RANK")
    elif "SLURM_ARRAY_TASK_ID" in env:
        rank = env_int("SLURM_ARRAY_TASK_ID") - env_int("SLURM_ARRAY_TASK_MIN")
    else:
        rank = 0
    if not 0 <= rank < world:
        raise MimoError(f"rank {rank} is outside world size {world}")
    return rank, world


def make_teacher(cfg: TeacherConfig):
    if cfg.backend == "vllm":
        from pipeline.teacher_vllm import VllmTeacher

        return VllmTeacher(cfg)
    from pipeline.teacher import TransformersTeacher

    return TransformersTeacher(cfg)


def fingerprint(teacher, cfg: TeacherCacheConfig) -> dict:
    """What makes a vector: the encoder's identity, its compute dtype and backend, the format."""
    return {**teacher.identity(), "compute_dtype": teacher.compute_dtype,
            "backend": cfg.teacher.backend, "format_version": FORMAT_VERSION}


class Progress:
    """texts/s, tokens/s and ETA on one line (tqdm), or silence."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.tokens, self.start = 0, time.perf_counter()
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="text", desc="teacher", dynamic_ncols=True)

    def update(self, texts: int, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(texts)
            self.bar.set_postfix_str(f"{self.tokens / max(time.perf_counter() - self.start, 1e-9):,.0f} tok/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def redo_list(store: VectorStore, segments, verify: bool, echo) -> list:
    """Shards to (re)encode: not done, done but with a missing or truncated file (their marker no
    longer counts), and with `verify`, done shards whose bytes differ from their checksum."""
    redo = {s[0]: s for s in store.shards_to_redo(
        segments, lambda shard, why: echo(f"teacher cache: shard {shard} is damaged ({why}): redoing it"))}
    if verify:
        for shard, seg, start, end in store.shards(segments):
            if shard not in redo and not store.shard_checksum_ok(seg, shard, start, end):
                echo(f"teacher cache: shard {shard} differs from its checksum: redoing it")
                redo[shard] = (shard, seg, start, end)
    return [redo[k] for k in sorted(redo)]


def cached_before(worklist, segments, pending, reused: int) -> int:
    """How many of the worklist's texts (a pa.Table or a `Worklist`) are in shards already done
    (not merely planned).

    `reused`: how many of its texts the segments hold (after planning: all). Ids are unique across
    segments (`cache verify` checks it), so the worklist is looked up in the smaller of the done
    and the pending rows' ids (Arrow's is_in), and in nothing when the store is new or complete or
    holds no text outside the worklist (a rerun, a resume)."""
    if not reused or not pending:
        return reused
    todo = {seg.index: np.zeros(seg.rows, dtype=bool) for seg in segments}
    for _, seg, start, end in pending:
        todo[seg.index][start:end] = True
    n_pending = sum(int(t.sum()) for t in todo.values())
    held = sum(seg.rows for seg in segments)
    if reused == held:  # the worklist has every text the store holds: the done rows, no lookup
        return held - n_pending
    count_done = n_pending > held - n_pending  # look up the smaller side
    chunks = [seg.ids.filter(pa.array(~todo[seg.index] if count_done else todo[seg.index])) for seg in segments]
    value_set = pa.chunked_array([c for col in chunks for c in col.chunks], type=pa.string()).combine_chunks()
    found = int(pc.sum(pc.is_in(worklist.column("text_id"), value_set=value_set)).as_py() or 0)
    return found if count_done else reused - found


def run_teacher_cache(cfg: TeacherCacheConfig, echo=print) -> dict:
    """Encode every worklist text not yet in the store (this worker's shards); return the summary."""
    rank, world = worker_position(cfg)
    worklist = Worklist(cfg.worklists)  # ids, roles, lengths; texts only of the rows the store lacks
    teacher = make_teacher(cfg.teacher)  # config and tokenizer only; weights load on first use
    print_ = fingerprint(teacher, cfg)
    held, new, pending = [], np.arange(worklist.num_rows, dtype=np.int64), None
    if VectorStore.exists(cfg.store):
        existing = VectorStore(cfg.store, print_, teacher.dim, cfg.dtype)  # refuse a mismatch before anything else
        held = existing.segments()
        new = existing.new_rows(worklist, held)
        if not len(new):  # nothing to plan: the shards left to encode are known now
            pending = redo_list(existing, held, cfg.verify, echo)
    rows = worklist.rows(new) if len(new) else None  # read and checked before the store is touched
    if pending is None or pending:  # a rerun with nothing left to do never loads the weights
        teacher.warm_up()  # weights on the device, one text encoded: fails here, before the store is touched
    store = VectorStore(cfg.store, print_, teacher.dim, cfg.dtype, cfg.rows_per_shard, cfg.rows_per_chunk, create=True)
    # planning reuses the new rows found above unless the segments changed in between
    segments, reused = store.plan(worklist, config={"_step": "teacher_cache", **config_to_dict(cfg)},
                                  known=(held, new, rows))
    del rows, new
    if pending is None or len(segments) != len(held):  # a segment planned here, or by another worker meanwhile
        pending = redo_list(store, segments, cfg.verify, echo)
    pending_total = len(pending)
    mine = [p for p in pending if p[0] % world == rank]
    before = cached_before(worklist, segments, pending, worklist.num_rows)  # planned: the segments hold every row
    texts = worklist.num_rows
    del worklist  # the shards' rows come from the plan, row group by row group
    echo(f"teacher cache {cfg.store}: {texts} texts, {before} already "
         f"cached; worker {rank}/{world} takes {len(mine)} of {pending_total} pending shards")
    progress = Progress(sum(end - start for _, _, start, end in mine), cfg.progress)
    stats = {"texts": 0, "tokens": 0, "truncated": 0}
    started = time.perf_counter()
    try:
        for shard, seg, start, end in mine:
            rows = seg.slice(start, end)
            vectors, ntokens, truncated = teacher.encode(
                rows["text"].to_pylist(), rows["role"].to_pylist(), rows["max_length"].to_pylist(),
                on_batch=progress.update)
            store.write_shard(seg, shard, start, end, vectors, ntokens, int(truncated.sum()))
            stats["texts"] += end - start
            stats["tokens"] += int(ntokens.sum())
            stats["truncated"] += int(truncated.sum())
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    left = len(store.shards_to_redo(segments)) if pending else 0  # (other workers' shards)
    summary = {**stats, "reused": reused, "cached_before": before, "seconds": round(seconds, 2), "pending_shards": left,
               "store_bytes": store.size_bytes(), "dim": store.dim, "dtype": store.dtype}
    echo(f"encoded {stats['texts']} texts ({stats['tokens']:,} tokens, {stats['truncated']} truncated) in "
         f"{seconds:.1f}s ({stats['texts'] / max(seconds, 1e-9):.1f} texts/s); store {summary['store_bytes'] / 2**20:.1f} MiB, "
         f"{store.dim}-d {store.dtype}" + (f"; {left} shards still pending (other workers)" if left else "; complete"))
    return summary
