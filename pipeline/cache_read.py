"""Reading a finished teacher cache: float32 targets by worklist id for the trainer; `cache info`; `cache verify`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from pipeline.errors import MimoError
from pipeline.store import VectorStore, from_storage, shard_digest


class TeacherTargets:
    """Teacher vectors of a complete store, looked up by worklist text_id.

    `in_memory=True` reads every segment once into RAM in its stored dtype (2 bytes a value for
    bf16: 6.5M rows x 4096 dims is 53 GB), which makes a training step's lookup a fancy-index;
    otherwise each request reads the chunks it touches. `batches()` prefetches in a background
    thread either way.

    Integrity (what a damaged store cannot get past): at open, every shard must be done and its
    files present at the size recorded when written (one listing per segment); `in_memory` loads
    check every shard's checksum as they read it (one extra pass over bytes already in RAM); every
    fetched batch is checked for non-finite and all-zero targets (Zarr reads a missing chunk as
    zeros). A lazy reader does not checksum (it would read whole shards for a few rows): run
    `mimo cache verify` after copying a store.
    """

    def __init__(self, url: str, in_memory: bool = True):
        self.store = VectorStore(url)
        self.segments = self.store.segments()
        pending = self.store.pending_shards(self.segments)
        if pending:
            raise MimoError(f"{url}: teacher cache incomplete, {len(pending)} shard(s) not done (rerun teacher-cache)")
        damaged = self.store.damaged_shards(self.segments)
        if damaged:
            (shard, *_), why = damaged[0]
            raise MimoError(f"{url}: teacher cache damaged, {len(damaged)} shard(s) with missing or truncated files "
                            f"(first: shard {shard}, {why}); rerun teacher-cache to redo them")
        self.index: dict[str, tuple[int, int]] = {}
        for seg in self.segments:
            for row, tid in enumerate(seg.plan.column("text_id").to_pylist()):
                self.index[tid] = (seg.index, row)
        self.fingerprint = self.store.meta["fingerprint"]
        self.dim, self.dtype = self.store.dim, self.store.dtype
        self._memory = [self._load_checked(seg) for seg in self.segments] if in_memory else None

    def _load_checked(self, seg) -> np.ndarray:
        """A whole segment in its stored dtype, shard by shard, each compared with its checksum."""
        out = None
        for shard, _, start, end in self.store.shards([seg]):
            block = self._read(seg, shard, lambda: self.store.read_segment(seg, "vectors", start, end))
            if out is None:
                out = np.empty((seg.rows, self.dim), dtype=block.dtype)
            recorded = (self.store.done_marker(seg, shard) or {}).get("blake2b")
            if block.shape != (end - start, self.dim) or recorded != shard_digest(block):
                raise MimoError(f"{self.store.url}: {seg.name} shard {shard} (rows {start}-{end - 1}) differs from "
                                "the checksum recorded when it was written; rerun teacher-cache with verify=true "
                                "to redo it")
            out[start:end] = block
        return out if out is not None else np.empty((0, self.dim), dtype=np.float32)

    def _read(self, seg, shard, read):
        try:
            return read()
        except MimoError:
            raise
        except Exception as err:  # noqa: BLE001 - Zarr's codecs raise many kinds for damaged bytes
            where = f"shard {shard}" if shard is not None else "a shard"
            raise MimoError(f"{self.store.url}: cannot read {seg.name} {where} ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}); `mimo cache verify` lists the damage, "
                            "rerun teacher-cache with verify=true to redo it") from None

    def __len__(self) -> int:
        return len(self.index)

    def missing(self, ids: Iterable[str]) -> list[str]:
        return [i for i in ids if i not in self.index]

    def locate(self, ids: Iterable[str]) -> np.ndarray:
        """(n, 2) array of (segment, row) for the ids; resolve once, then fetch by location."""
        try:
            return np.array([self.index[i] for i in ids], dtype=np.int64).reshape(-1, 2)
        except KeyError as err:
            raise MimoError(f"{self.store.url}: no teacher vector for text id {err.args[0]}") from None

    def fetch(self, where: np.ndarray) -> torch.Tensor:
        """float32 (n, dim) targets for (segment, row) locations, in the given order."""
        out = np.empty((len(where), self.dim), dtype=np.float32)
        for seg_index in np.unique(where[:, 0]):
            pick = np.nonzero(where[:, 0] == seg_index)[0]
            rows = where[pick, 1]
            if self._memory is not None:
                stored = self._memory[seg_index][rows]
            else:
                unique, inverse = np.unique(rows, return_inverse=True)  # sorted rows: sequential block reads
                seg = self.segments[seg_index]
                stored = self._read(seg, None, lambda: self.store.read_rows(seg, unique))[inverse]
            out[pick] = from_storage(stored, self.dtype)
        # never train on a target that is not a vector: NaN/inf, or all zeros (a chunk gone missing
        # reads back as Zarr's fill value); ~10 ms for 2048 x 4096, small beside a step
        bad = ~np.isfinite(out).all(axis=1) | ~out.any(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            seg_index, row = int(where[i, 0]), int(where[i, 1])
            raise MimoError(f"{self.store.url}: the teacher vector of {self.segments[seg_index].name} row {row} is "
                            f"{'all zero' if np.isfinite(out[i]).all() else 'not finite'} ({int(bad.sum())} such "
                            "target(s) in this batch); run `mimo cache verify` and rerun teacher-cache with verify=true")
        return torch.from_numpy(out)

    def get(self, ids: Iterable[str]) -> torch.Tensor:
        return self.fetch(self.locate(list(ids)))

    def batches(self, locations: Iterable[np.ndarray], prefetch: int = 4) -> Iterator[torch.Tensor]:
        """Targets for a sequence of batches, read `prefetch` batches ahead in a background thread."""
        q: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
        done = object()

        def worker():
            try:
                for where in locations:
                    q.put(self.fetch(where))
                q.put(done)
            except BaseException as err:  # surface reader errors in the consumer
                q.put(err)

        threading.Thread(target=worker, daemon=True).start()
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def cache_info(url: str) -> dict:
    store = VectorStore(url)
    segments = store.segments()
    shards = list(store.shards(segments))
    pending = store.pending_shards(segments)
    roles: dict[str, int] = {}
    for seg in segments:
        for role, length in zip(seg.plan["role"].to_pylist(), seg.plan["max_length"].to_pylist()):
            key = f"{role}@{length}"
            roles[key] = roles.get(key, 0) + 1
    return {
        "store": url, "rows": sum(seg.rows for seg in segments), "dim": store.dim, "dtype": store.dtype,
        "segments": len(segments), "shards": len(shards),
        "shards_done": len(shards) - len(pending),
        "rows_per_shard": store.rows_per_shard, "texts_by_role": roles,
        "fingerprint": store.meta["fingerprint"], "bytes": store.size_bytes(),
    }


def cache_verify(url: str, norm_tolerance: float = 1e-2) -> list[str]:
    """Every problem found, one line each (empty: the store is sound).

    Checks: every shard done; its bytes match the checksum in its marker; no NaN/inf; no all-zero
    row; norms within `norm_tolerance` of 1 when the fingerprint says normalized; keys unique; the
    fingerprint and the per-segment arrays consistent with the store's attributes.
    """
    store = VectorStore(url)
    segments = store.segments()
    problems: list[str] = []
    seen: set[str] = set()
    normalized = bool(store.meta["fingerprint"].get("normalize", False))
    for seg in segments:
        ids = seg.plan.column("text_id").to_pylist()
        dup = len(ids) - len(set(ids)) + len(seen & set(ids))
        if dup:
            problems.append(f"{seg.name}: {dup} duplicate text id(s)")
        seen.update(ids)
        done = store.done_shards(seg)
        for shard, _, start, end in store.shards([seg]):
            where = f"{seg.name} shard {shard} (rows {start}-{end - 1})"
            if shard not in done:
                problems.append(f"{where}: not done")
                continue
            marker = store.done_marker(seg, shard)
            try:  # one shard at a time: a segment can be tens of GB
                block = store.read_segment(seg, "vectors", start, end)
            except Exception as err:
                problems.append(f"{where}: cannot read vectors ({type(err).__name__}: {err})")
                continue
            if block.shape != (end - start, store.dim):
                problems.append(f"{where}: vectors have shape {block.shape}, expected {(end - start, store.dim)}")
                continue
            if marker.get("blake2b") != shard_digest(block):
                problems.append(f"{where}: bytes differ from the checksum recorded when it was written")
            vectors = from_storage(block, store.dtype)
            if not np.isfinite(vectors).all():
                problems.append(f"{where}: NaN or inf values")
                continue
            norms = np.linalg.norm(vectors, axis=1)
            zero = np.nonzero(norms == 0)[0]
            if len(zero):
                problems.append(f"{where}: {len(zero)} all-zero row(s), first at row {start + zero[0]}")
            if normalized:
                off = np.nonzero(np.abs(norms - 1) > norm_tolerance)[0]
                if len(off):
                    problems.append(f"{where}: {len(off)} row(s) with norm off 1 by > {norm_tolerance}, "
                                    f"first at row {start + off[0]} (norm {norms[off[0]]:.4f})")
    return problems
