"""The trainer's view of a finished teacher cache: text ids -> locations -> stored rows, no copies.

Two pieces, both sized for the paper's ~6.5M rows x 4096 dims (53 GB of bf16):

- `IdIndex`: every segment's text ids as sorted 128-bit keys with each id's location beside them
  (24 bytes a row, 156 MB for 6.5M ids); a whole table column resolves with sorted
  `np.searchsorted`, without Python strings or a dict (which took ~1 GB and minutes).
- `ShardMaps`: each shard file of the `vectors` arrays memory-mapped. The store writes shards
  without a compressor (pipeline/store.py), so a shard file is its inner chunks' raw bytes plus
  an index of (offset, length) per chunk at the end (the Zarr v3 `sharding_indexed` codec); a row
  is then a fixed-size byte range of one file. Reads go through the page cache, which every
  process on the machine shares: 8 training ranks hold one copy of the targets, not eight.
  What limits random reads is not the copy but the page faults of first touching a mapped page
  in this process (~1 per row); `prefault` fills the page tables at open (Linux
  MADV_POPULATE_READ, ~1 s per 8 GB warm) when the store fits comfortably in memory.

A location is `first_shard * rows_per_shard + row in segment` (segments start on a shard
boundary), so `location // rows_per_shard` is the store's global shard number.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import MimoError
from pipeline.store import Segment, VectorStore, _storage_dtype

ID_WIDTH = 32  # worklist text ids are 32 lowercase hex chars of blake2b-128 (pipeline/worklist.py)
EMPTY = np.uint64(2**64 - 1)  # a chunk the shard index marks absent (never written: all fill value)
HEX_DIGIT = np.full(256, 255, dtype=np.uint8)
HEX_DIGIT[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


BLOCK = 1 << 18  # ids converted (and looked up) at a time: ~35 MB of temporaries; 1 << 20 added ~120 MB to the peak


def id_keys(ids) -> tuple[np.ndarray, np.ndarray]:
    """Text ids (an Arrow string column or a list of str) -> their 128 bits as (high, low) uint64 arrays.

    Vectorized: the column's bytes are viewed as (n, 32) hex digits, never as Python strings;
    converted BLOCK ids at a time (6.5M ids at once would hold ~1 GB of temporaries).
    """
    if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = pa.array(list(ids), type=pa.string())
    if len(ids) <= BLOCK:
        return _id_keys(ids, 0)
    high, low = np.empty(len(ids), np.uint64), np.empty(len(ids), np.uint64)
    for start in range(0, len(ids), BLOCK):
        high[start:start + BLOCK], low[start:start + BLOCK] = _id_keys(ids.slice(start, BLOCK), start)
    return high, low


def _id_keys(ids, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if len(ids) == 0:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    if ids.null_count:
        raise MimoError("text ids must not be null")
    try:
        fixed = pc.cast(ids, pa.binary(ID_WIDTH))
    except pa.ArrowInvalid:
        lengths = pc.binary_length(ids).to_numpy(zero_copy_only=False)
        bad = int(np.nonzero(lengths != ID_WIDTH)[0][0])
        raise MimoError(f"text id {ids[bad].as_py()!r} (row {first_row + bad}) is not {ID_WIDTH} characters "
                        "long") from None
    chars = np.frombuffer(fixed.buffers()[1], dtype=np.uint8, count=len(fixed) * ID_WIDTH,
                          offset=fixed.offset * ID_WIDTH).reshape(-1, ID_WIDTH)
    digits = HEX_DIGIT[chars]  # one table lookup a character: '0'..'9' -> 0..9, 'a'..'f' -> 10..15, else 255
    bad = (digits > 15).any(axis=1)
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise MimoError(f"text id {ids[row].as_py()!r} (row {first_row + row}) is not lowercase hex")
    packed = (digits[:, 0::2] << 4) | digits[:, 1::2]  # (n, 16) bytes, most significant first
    words = packed.view(">u8")
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


class IdIndex:
    """Every segment's text ids as sorted 128-bit keys with their locations; `lookup` resolves a
    whole column with `np.searchsorted` (16 bytes a key: 100 MB for 6.5M ids, no Python strings)."""

    def __init__(self, segments: list[Segment], rows_per_shard: int):
        n = sum(seg.rows for seg in segments)
        high, low, where = np.empty(n, np.uint64), np.empty(n, np.uint64), np.empty(n, np.int64)
        at = 0
        for seg in segments:
            row = 0
            for ids in seg.id_blocks(BLOCK):  # read a block at a time, only the keys kept
                high[at + row:at + row + len(ids)], low[at + row:at + row + len(ids)] = _id_keys(ids, row)
                row += len(ids)
            if row != seg.rows:
                raise MimoError(f"segment {seg.name}: its plan holds {row} text ids, its footer says {seg.rows} rows")
            where[at:at + seg.rows] = seg.first_shard * rows_per_shard + np.arange(seg.rows, dtype=np.int64)
            at += seg.rows
        # sorted by the high word alone (7x faster than a lexsort of both words at 6.5M keys), then the rare
        # runs of keys that share it (about one pair in 10^6 ids at the paper's size) by the low word
        order = np.argsort(high)
        high = high[order]  # one array at a time: the unsorted one is freed before the next is copied
        low = low[order]
        where = where[order]
        del order
        same = np.nonzero(high[1:] == high[:-1])[0]
        if len(same):
            run = np.unique(np.concatenate([same, same + 1]))  # every position in a run, runs in key order
            by_low = np.lexsort((low[run], high[run]))  # reorders within runs only: high[run] is sorted
            low[run], where[run] = low[run][by_low], where[run][by_low]
        self.high, self.low, self.where = high, low, where

    def __len__(self) -> int:
        return len(self.high)

    def lookup(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(locations, found) for the ids; locations of ids not found are -1.

        BLOCK ids at a time, each block's keys sorted before `np.searchsorted`: a search then starts
        where the previous one ended and walks memory in order (random keys: 24 s for 6.5M ids, sorted
        ones 1.3 s, bench/RESULTS.md); memory beyond the result stays ~35 MB at any size.
        """
        if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = pa.array(list(ids), type=pa.string())
        where, found = np.full(len(ids), -1, dtype=np.int64), np.zeros(len(ids), dtype=bool)
        n = len(self.high)
        for start in range(0, len(ids), BLOCK):
            high, low = _id_keys(ids.slice(start, BLOCK), start)
            if not n:
                continue
            order = np.argsort(high)
            high, low = high[order], low[order]
            pos = np.minimum(np.searchsorted(self.high, high), n - 1)
            same_high = self.high[pos] == high
            hit = same_high & (self.low[pos] == low)
            for i in np.nonzero(same_high & ~hit)[0]:  # the key is in a run sharing its high word: search by low
                lo, hi = pos[i], np.searchsorted(self.high, high[i], side="right")
                k = lo + np.searchsorted(self.low[lo:hi], low[i])
                if k < hi and self.low[k] == low[i]:
                    pos[i], hit[i] = k, True
            where[start + order] = np.where(hit, self.where[pos], -1)
            found[start + order] = hit
        return where, found


class ShardMaps:
    """Memory maps of a store's `vectors` shard files; `gather` copies rows out by location."""

    MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14; Python 3.11 lacks the name

    def __init__(self, store: VectorStore, segments: list[Segment], prefault: bool | None = None):
        """prefault: fill this process's page tables for every mapping at open (None: when the shard
        files take at most half of the machine's memory, so that populating them evicts nothing).
        Without it the first touch of each mapped page faults, ~1 fault a row, which was most of the
        cost of a random batch (bench/RESULTS.md); with the page cache cold it reads the store once."""
        if not store.local:
            raise MimoError(f"{store.url}: training reads the teacher cache through memory maps of local files; "
                            "copy the store to a local disk first (e.g. `aws s3 sync`)")
        meta, dim = store.meta, store.dim
        self.rows_per_shard, rows_per_chunk = store.rows_per_shard, int(meta["rows_per_chunk"])
        self.dtype = np.dtype(_storage_dtype(store.dtype))
        self.row_bytes = dim * self.dtype.itemsize
        chunk_bytes = rows_per_chunk * self.row_bytes
        per_shard = self.rows_per_shard // rows_per_chunk
        n_shards = sum(-(-seg.rows // self.rows_per_shard) for seg in segments)
        self.dim, self.rows_per_chunk = dim, rows_per_chunk
        # byte offset of every chunk in its shard file; -1: absent (all zeros)
        self.chunk_offset = np.full((n_shards, per_shard), -1, dtype=np.int64)
        self.maps: list[memoryview] = []
        self._mmaps: list[mmap.mmap] = []
        for seg in segments:
            _check_layout(store, seg, rows_per_chunk)
            for k in range(-(-seg.rows // self.rows_per_shard)):
                path = store._path(f"{seg.name}/vectors/c/{k}/0")
                shard = seg.first_shard + k
                with open(path, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    index_bytes = per_shard * 16 + 4  # (offset, nbytes) uint64 per chunk + crc32c
                    if size < index_bytes:
                        raise MimoError(f"{path}: {size} bytes, too short for a shard of {per_shard} chunks")
                    fh.seek(size - index_bytes)
                    index = np.frombuffer(fh.read(index_bytes)[:-4], dtype="<u8").reshape(per_shard, 2)
                    present = index[:, 0] != EMPTY
                    bad = present & ((index[:, 1] != chunk_bytes) | (index[:, 0] + chunk_bytes > size))
                    if bad.any():
                        raise MimoError(f"{path}: chunk {int(np.nonzero(bad)[0][0])} holds {int(index[bad][0, 1])} "
                                        f"bytes, an uncompressed chunk {chunk_bytes}: not a layout the reader maps")
                    self.chunk_offset[shard, present] = index[present, 0].astype(np.int64)
                    # read-only shared mapping: pages live in the page cache, shared by every process
                    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._mmaps.append(mm)
                self.maps.append(memoryview(mm))
        if prefault is None:
            mapped = sum(len(mm) for mm in self._mmaps)
            prefault = hasattr(os, "sysconf") and mapped <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
        self.prefaulted = False
        if prefault and hasattr(mmap.mmap, "madvise"):
            try:
                for mm in self._mmaps:
                    mm.madvise(self.MADV_POPULATE_READ)
                self.prefaulted = True
            except OSError:  # a kernel without MADV_POPULATE_READ: pages fault in on first touch instead
                pass

    def gather(self, where: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Stored rows (n, dim) for the locations, in the given order; into `out` when given (C-contiguous
        (n, dim) of the stored dtype: a reused array saves the page faults of a fresh one, see RowBuffers)."""
        where = np.asarray(where, dtype=np.int64)
        shard, within = np.divmod(where, self.rows_per_shard)
        chunk, row = np.divmod(within, self.rows_per_chunk)
        base = self.chunk_offset[shard, chunk]
        offset = np.where(base >= 0, base + row * self.row_bytes, -1)
        if out is None:
            out = np.empty((len(where), self.dim), dtype=self.dtype)
        elif out.shape != (len(where), self.dim) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"gather: out must be a C-contiguous {(len(where), self.dim)} {self.dtype} array")
        flat = memoryview(out.view(np.uint8).reshape(-1))
        rb, maps = self.row_bytes, self.maps
        for i, (s, o) in enumerate(zip(shard.tolist(), offset.tolist())):
            # one memcpy per row out of the mapped file (random rows: no two share a 4 KiB page run); one mapping
            # of all files with one np.take a batch was tried and gained ~10% (bench/RESULTS.md): not worth ctypes
            if o >= 0:
                flat[i * rb:(i + 1) * rb] = maps[s][o:o + rb]
            else:
                out[i] = 0
        return out

    def close(self) -> None:
        for view in self.maps:
            view.release()
        for mm in self._mmaps:
            mm.close()
        self.maps, self._mmaps = [], []


class RowBuffers:
    """Output arrays for gathered rows, each reused once nothing outside this class holds it any more.

    A fresh array per batch can cost as much as the gather into it: the kernel maps and zeroes its
    pages at first touch when the allocator hands out new memory, as it does for the 32 MiB of 2048
    rows widened to fp32 (`fetch` 1.6x faster with reuse at 2048 rows, 1.8x at 4096; stored bf16
    rows read alike either way in one thread, reuse ahead by 17-50% from the prefetch thread;
    bench/RESULTS.md). So batches are written into up to `slots` arrays kept here. An array is
    handed out again only when its reference count says that nothing made from it is alive: every
    NumPy view and every tensor of `torch.from_numpy` holds it, so a consumer may keep a batch as
    long as it likes and it is never overwritten; its slot just stays busy. With every slot busy
    `take` allocates a fresh array (the old cost, never a wrong row). 8 slots: a Stage-2 step
    fetches 2 batches, and with prefetch 2 up to 4 steps' batches are alive. The count is only
    exact with a GIL: without one (a free-threaded build) every array is fresh. Thread-safe (the
    prefetch thread takes, the training thread drops).
    """

    def __init__(self, dtype, dim: int, slots: int = 8):
        self.dtype, self.dim = np.dtype(dtype), dim
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        self.slots = slots if gil else 0
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.allocated = 0

    def take(self, n: int) -> np.ndarray:
        """An uninitialized C-contiguous (n, dim) array that nothing else references."""
        with self._lock:
            for k in range(len(self._arrays)):
                # 2 references: the list's and getrefcount's argument; any more is a view or tensor still alive
                if sys.getrefcount(self._arrays[k]) == 2:
                    if len(self._arrays[k]) < n:  # free but too small: replaced by one of this size
                        self._arrays[k] = self._new(n)
                    return self._arrays[k][:n]
            if len(self._arrays) < self.slots:
                self._arrays.append(self._new(n))
                return self._arrays[-1][:n]
            return self._new(n)

    def _new(self, n: int) -> np.ndarray:
        self.allocated += 1  # arrays allocated so far (kept or not): what reuse saved is visible
        return np.empty((n, self.dim), self.dtype)


def _check_layout(store: VectorStore, seg: Segment, rows_per_chunk: int) -> None:
    """Refuse a `vectors` array whose bytes are not raw little-endian chunks inside index-at-end shards."""
    with open(store._path(f"{seg.name}/vectors/zarr.json"), "rb") as fh:
        meta = json.loads(fh.read())
    codecs = meta.get("codecs", [])
    ok = (len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed")
    if ok:
        conf = codecs[0]["configuration"]
        inner = conf.get("codecs", [])
        ok = (conf.get("index_location", "end") == "end"
              and conf.get("chunk_shape") == [rows_per_chunk, store.dim]
              and len(inner) == 1 and inner[0].get("name") == "bytes"
              and inner[0].get("configuration", {}).get("endian", "little") == "little"
              and [c.get("name") for c in conf.get("index_codecs", [])] == ["bytes", "crc32c"])
    if not ok:
        raise MimoError(f"{store.url}: {seg.name}/vectors is not stored as uncompressed sharded chunks "
                        f"(codecs {codecs}); the trainer's memory-mapped reader cannot read it")
