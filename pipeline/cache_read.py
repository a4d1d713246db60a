"""Reading a finished teacher cache: float32 targets by worklist id for the trainer; `cache info`; `cache verify`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline.cache_index import IdIndex, RowBuffers, ShardMaps, id_keys
from pipeline.errors import MimoError
from pipeline.store import VectorStore, _storage_dtype, from_storage, shard_digest


class TeacherTargets:
    """Teacher vectors of a complete store, looked up by worklist text_id.

    Ids resolve through a sorted id index (pipeline/cache_index.py) to locations, once, up front;
    a training step then fetches rows by location. A local store is read through memory maps of
    its shard files: no copy of the targets per process (the page cache is shared by every rank),
    and a random row costs one memcpy. A store at an fsspec URL (s3://...) is read chunk by chunk
    through Zarr, which serves `cache` commands and tests, not training at scale.

    Integrity (what a damaged store cannot get past): at open, every shard must be done and its
    files present at the size recorded when written (one listing per segment), and every chunk of
    a mapped shard must be where its index says; every fetched batch is checked for non-finite and
    all-zero targets (a chunk gone missing reads back as zeros). Checksums are not compared at
    open by default (that reads the whole store, ~53 GB at paper scale, at every start):
    `verify=True` (the stages' `verify_cache=true`) does, shard by shard; `mimo cache verify` does
    it once after a copy.
    """

    def __init__(self, url: str, verify: bool = False, prefault: bool | None = None):
        self.store = VectorStore(url)
        self.segments = self.store.segments()
        markers = {seg.index: self.store.markers(seg) for seg in self.segments}  # each marker read once
        pending = self.store.pending_shards(self.segments, markers)
        if pending:
            raise MimoError(f"{url}: teacher cache incomplete, {len(pending)} shard(s) not done (rerun teacher-cache)")
        damaged = self.store.damaged_shards(self.segments, markers)
        if damaged:
            (shard, *_), why = damaged[0]
            raise MimoError(f"{url}: teacher cache damaged, {len(damaged)} shard(s) with missing or truncated files "
                            f"(first: shard {shard}, {why}); rerun teacher-cache to redo them")
        self.index = IdIndex(self.segments, self.store.rows_per_shard)
        self.fingerprint = self.store.meta["fingerprint"]
        self.dim, self.dtype = self.store.dim, self.store.dtype
        self.maps = ShardMaps(self.store, self.segments, prefault) if self.store.local else None
        # batches are gathered (and widened) into reused arrays, never into one a caller still holds
        self._stored_out = RowBuffers(_storage_dtype(self.dtype), self.dim)
        self._float_out = RowBuffers(np.float32, self.dim)
        if verify:
            for seg in self.segments:
                self._verify(seg)

    def _verify(self, seg) -> None:
        """Compare every shard of a segment with the checksum recorded when it was written."""
        for shard, _, start, end in self.store.shards([seg]):
            block = self._read(seg, shard, lambda: self.store.read_segment(seg, "vectors", start, end))
            recorded = (self.store.done_marker(seg, shard) or {}).get("blake2b")
            if block.shape != (end - start, self.dim) or recorded != shard_digest(block):
                raise MimoError(f"{self.store.url}: {seg.name} shard {shard} (rows {start}-{end - 1}) differs from "
                                "the checksum recorded when it was written; rerun teacher-cache with verify=true "
                                "to redo it")

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

    def lookup(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(locations, found) for text ids (an Arrow string column or a list); -1 where not found."""
        return self.index.lookup(ids)

    def missing(self, ids) -> list[str]:
        ids = list(ids)
        _, found = self.lookup(ids)
        return [i for i, f in zip(ids, found) if not f]

    def locate(self, ids) -> np.ndarray:
        """(n,) int64 locations of the ids; resolve once, then fetch by location."""
        where, found = self.lookup(ids)
        if not found.all():
            first = int(np.nonzero(~found)[0][0])
            name = ids[first].as_py() if isinstance(ids, pa.Array | pa.ChunkedArray) else list(ids)[first]
            raise MimoError(f"{self.store.url}: no teacher vector for text id {name}")
        return where

    def fetch_stored(self, where: np.ndarray) -> torch.Tensor:
        """(n, dim) targets in the stored dtype (bf16, fp16 or fp32) for locations, in the given order.

        The training stages move these to the device and widen them there: half the bytes over
        PCIe, and no conversion on the CPU, which tokenizes meanwhile.
        """
        where = np.asarray(where, dtype=np.int64)
        stored = self._stored_out.take(len(where))
        if self.maps is not None:
            self.maps.gather(where, out=stored)
        else:
            shard = where // self.store.rows_per_shard
            for seg in self.segments:
                pick = np.nonzero((shard >= seg.first_shard)
                                  & (shard < seg.first_shard + -(-seg.rows // self.store.rows_per_shard)))[0]
                if len(pick):
                    rows = where[pick] - seg.first_shard * self.store.rows_per_shard
                    unique, inverse = np.unique(rows, return_inverse=True)  # sorted rows: sequential block reads
                    stored[pick] = self._read(seg, None, lambda: self.store.read_rows(seg, unique))[inverse]
        self._check(where, stored)
        tensor = torch.from_numpy(stored)
        return tensor.view(torch.bfloat16) if self.dtype == "bfloat16" else tensor

    def fetch(self, where: np.ndarray) -> torch.Tensor:
        """float32 (n, dim) targets for locations, in the given order."""
        stored = self.fetch_stored(where)
        if stored.dtype == torch.float32:
            return stored
        out = torch.from_numpy(self._float_out.take(len(stored)))
        return out.copy_(stored)  # widened into a reused array (a fresh one faults in 2x the bf16 bytes)

    def _check(self, where: np.ndarray, stored: np.ndarray) -> None:
        """Never train on a target that is not a vector: NaN/inf, or all zeros (a chunk gone missing
        reads back as the fill value). Checked on the stored bits (bf16 is kept as uint16): no
        conversion on the CPU; ~1 ms for 2048 x 4096 on a quiet core."""
        if stored.dtype == np.uint16:  # bf16 bits, sign dropped: >= 0x7F80 (exponent all ones) is inf/NaN, 0 is zero
            top = np.empty(len(stored), np.uint16)
            scratch = np.empty((min(len(stored), 64), stored.shape[1]), np.uint16)
            for a in range(0, len(stored), 64):  # 64 rows at a time: the masked copy stays in the CPU's cache
                block = stored[a:a + 64]
                np.max(np.bitwise_and(block, 0x7FFF, out=scratch[:len(block)]), axis=1, out=top[a:a + 64])
            finite, zero = top < 0x7F80, top == 0
        else:
            finite, zero = np.isfinite(stored).all(axis=1), ~stored.any(axis=1)
        bad = ~finite | zero
        if bad.any():
            i = int(np.argmax(bad))
            loc, per = int(where[i]), self.store.rows_per_shard
            seg = max((g for g in self.segments if g.first_shard * per <= loc), key=lambda g: g.first_shard)
            raise MimoError(f"{self.store.url}: the teacher vector of {seg.name} row {loc - seg.first_shard * per} is "
                            f"{'not finite' if not finite[i] else 'all zero'} ({int(bad.sum())} such "
                            "target(s) in this batch); run `mimo cache verify` and rerun teacher-cache with verify=true")

    def get(self, ids) -> torch.Tensor:
        return self.fetch(self.locate(list(ids)))


def cache_info(url: str) -> dict:
    store = VectorStore(url)
    segments = store.segments()
    shards = list(store.shards(segments))
    pending = store.pending_shards(segments)
    return {
        "store": url, "rows": sum(seg.rows for seg in segments), "dim": store.dim, "dtype": store.dtype,
        "segments": len(segments), "shards": len(shards),
        "shards_done": len(shards) - len(pending),
        "rows_per_shard": store.rows_per_shard, "texts_by_role": texts_by_role(segments),
        "fingerprint": store.meta["fingerprint"], "bytes": store.size_bytes(),
    }


def texts_by_role(segments) -> dict[str, int]:
    """{"role@max_length": rows}, keys in order of first appearance (Arrow group-by, no Python rows)."""
    counts: dict[tuple, list[int]] = {}  # (role, length) -> [first (segment, row), count]
    for seg in segments:
        plan = seg.columns(["role", "max_length"])
        plan = plan.append_column("row", pa.array(np.arange(plan.num_rows, dtype=np.int64)))
        groups = plan.group_by(["role", "max_length"], use_threads=False).aggregate([("row", "min"), ("row", "count")])
        for role, length, first, n in zip(*(groups.column(c).to_pylist()
                                            for c in ("role", "max_length", "row_min", "row_count"))):
            entry = counts.setdefault((role, length), [(seg.index, first), 0])
            entry[1] += n
    order = sorted(counts, key=lambda k: counts[k][0])
    return {f"{role}@{length}": counts[(role, length)][1] for role, length in order}


def cache_verify(url: str, norm_tolerance: float = 1e-2) -> list[str]:
    """Every problem found, one line each (empty: the store is sound).

    Checks: every shard done; its bytes match the checksum in its marker; no NaN/inf; no all-zero
    row; norms within `norm_tolerance` of 1 when the fingerprint says normalized; keys unique; the
    fingerprint and the per-segment arrays consistent with the store's attributes.
    """
    store = VectorStore(url)
    segments = store.segments()
    problems: list[str] = []
    normalized = bool(store.meta["fingerprint"].get("normalize", False))
    repeats = repeated_ids(segments)
    for seg in segments:
        if repeats[seg.index]:
            problems.append(f"{seg.name}: {repeats[seg.index]} duplicate text id(s)")
        done = store.markers(seg)
        for shard, _, start, end in store.shards([seg]):
            where = f"{seg.name} shard {shard} (rows {start}-{end - 1})"
            if shard not in done:
                problems.append(f"{where}: not done")
                continue
            marker = done[shard]
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


def repeated_ids(segments) -> list[int]:
    """Per segment, its rows whose text id an earlier row (of it or of an earlier segment) has.

    Hex ids (all that prepare writes) as 128-bit keys (`id_keys`), sorted once: ~0.6 GB at the
    paper's 6.5M ids, no Python strings. Other ids: Arrow's dictionary encoding (codes in order of
    first appearance), which holds a second copy of the ids."""
    if not segments:
        return []
    bounds = np.cumsum([0] + [seg.rows for seg in segments])
    repeat = np.zeros(int(bounds[-1]), dtype=bool)
    try:
        high = np.empty(len(repeat), np.uint64)
        low = np.empty(len(repeat), np.uint64)
        for seg, a, b in zip(segments, bounds[:-1], bounds[1:]):
            high[a:b], low[a:b] = id_keys(seg.ids)
        order = np.lexsort((low, high))  # stable: equal keys stay in row order, the first one first
        high, low = high[order], low[order]
        same = (high[1:] == high[:-1]) & (low[1:] == low[:-1])
        del high, low
        repeat[order[1:][same]] = True
    except MimoError:
        ids = pa.chunked_array([c for seg in segments for c in seg.ids.chunks], type=pa.string())
        codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in pc.dictionary_encode(ids).chunks])
        repeat[:] = True
        repeat[np.unique(codes, return_index=True)[1]] = False
    return [int(repeat[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
