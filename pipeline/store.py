"""The teacher-vector store: sharded Zarr v3, built in segments, resumable shard by shard.

Longer than ~300 lines for a reason: one on-disk format (layout, plan, shard writes, completion markers,
damage checks) whose ordering rules (plan before shards, marker after a durable write) read together.

Layout of a store (a local directory or an fsspec URL such as s3://bucket/cache.zarr):

    zarr.json                      root group; attributes["mimo_teacher_cache"] = format version,
                                   fingerprint, dim, dtype, rows per shard / chunk
    seg-00000.plan.parquet         the segment's rows in order: text_id, role, max_length, text, in
                                   row groups of whole shards (~64k rows)
    seg-00000/vectors              (rows, dim) array; bf16 kept as its uint16 bit pattern
    seg-00000/ntokens              (rows,) int32 tokens the teacher saw per row
    seg-00000.done/00000012.json   completion marker of shard 12 (written after the shard is durable)

A run appends one segment holding the worklist's texts that no earlier segment holds (reuse:
a second data set costs only its new texts). The plan is written once, atomically, and is a pure
function of the store and the worklist, so concurrent workers that plan at the same time write
the same plan. A shard (rows_per_shard rows) is the unit of work, of writing and of resume:
one worker encodes it, writes it whole, makes it durable, then writes its marker.

A marker records the shard's checksum and the byte size of its files. `damaged_shards` compares
the sizes with the files (one listing per segment: cheap enough for every open), so a deleted or
truncated shard file is found before anything reads zeros (Zarr's fill value) in its place.

At the paper's ~6.5M texts nothing here walks rows in Python: new rows are an Arrow `is_in`, the
plan's order an Arrow sort, written row group by row group; an opened segment reads its plan
lazily (`Segment`: the footer, the ids alone, or the row groups of one shard), and each pass
over the markers reads each marker once (bench/bench_cache_scale.py, bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import zarr

from pipeline.config import changed_settings
from pipeline.errors import MimoError
from pipeline.outputs import write_file_atomically

FORMAT_VERSION = 1
ATTR = "mimo_teacher_cache"
STORE_DTYPES = ("bfloat16", "float16", "float32")
PLAN_SCHEMA = pa.schema([("text_id", pa.string()), ("role", pa.string()), ("max_length", pa.int32()),
                         ("text", pa.string())])


def to_storage(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """float32 vectors -> the stored array (bf16: round-to-nearest-even, kept as uint16 bits)."""
    if dtype == "bfloat16":
        # Zarr v3 has no bfloat16 data type: store the bit pattern, record the real type in the attributes.
        return torch.from_numpy(np.ascontiguousarray(vectors)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return vectors.astype(np.float16 if dtype == "float16" else np.float32)


def from_storage(stored: np.ndarray, dtype: str) -> np.ndarray:
    """The stored array -> float32 vectors."""
    if dtype == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return stored.astype(np.float32)


def _storage_dtype(dtype: str):
    return {"bfloat16": np.uint16, "float16": np.float16, "float32": np.float32}[dtype]


class Segment:
    """One segment: its number, the global number of its first shard, and its plan (rows in order).

    A segment opened from a store reads its plan file lazily: `rows` comes from the file's footer,
    `ids` reads the text_id column alone, `slice` the row groups one shard falls in (plans are
    written in row groups of whole shards), and only `plan` reads everything. At the paper's 6.5M
    texts the plan is ~1 GB in memory; the encoding loop and the id index never hold it whole.
    """

    def __init__(self, index: int, first_shard: int, plan: pa.Table | None = None, *, rows: int | None = None,
                 read=None):
        self.index, self.first_shard = index, first_shard
        self._plan, self._rows, self._read = plan, rows, read  # read(columns, row_groups) -> (table, group starts)
        self._ids = None
        self._groups = None  # (first row, end row, table) of the row groups the last `slice` read

    @property
    def name(self) -> str:
        return f"seg-{self.index:05d}"

    @property
    def rows(self) -> int:
        return self._plan.num_rows if self._plan is not None else self._rows

    @property
    def plan(self) -> pa.Table:
        """The whole plan (every column)."""
        if self._plan is None:
            self._plan = self._read(None, None)
        return self._plan

    @property
    def ids(self) -> pa.ChunkedArray:
        """The plan's text_id column (read alone, once)."""
        if self._plan is not None:
            return self._plan.column("text_id")
        if self._ids is None:  # one chunk (a value set for Arrow's is_in as it is), held once
            ids = self._read(["text_id"], None).column("text_id")
            self._ids = pa.chunked_array([ids.combine_chunks()], type=pa.string())
        return self._ids

    def id_blocks(self, size: int) -> Iterator[pa.Array | pa.ChunkedArray]:
        """The plan's text_id column in consecutive pieces of at most `size` rows, read piece by piece
        when the plan is on disk (the id index needs the ids once, as keys: holding the whole column
        would add 36 bytes a row, 234 MB at 6.5M ids, to the trainer's peak)."""
        if self._plan is not None or self._ids is not None:
            ids = self.ids
            for start in range(0, len(ids), size):
                yield ids.slice(start, size)
            return
        yield from self._read("id_blocks", size)

    def columns(self, names: list[str]) -> pa.Table:
        """Some columns of the whole plan."""
        if self._plan is not None:
            return self._plan.select(names)
        return self._read(names, None)

    def slice(self, start: int, end: int) -> pa.Table:
        """Plan rows start..end-1, read from the row groups they fall in (kept for the next shard)."""
        if self._plan is not None:
            return self._plan.slice(start, end - start)
        if self._groups is None or not self._groups[0] <= start <= end <= self._groups[1]:
            self._groups = None  # drop the previous groups before reading the next ones
            self._groups = self._read(None, (start, end))
        first, _, table = self._groups
        return table.slice(start - first, end - start)


class VectorStore:
    """Open (or create) a store; check its fingerprint; plan segments; write and read shards."""

    def __init__(self, url: str, fingerprint: dict | None = None, dim: int | None = None, dtype: str = "bfloat16",
                 rows_per_shard: int = 4096, rows_per_chunk: int = 64, create: bool = False):
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols
        exists = self._exists("zarr.json")
        if not exists and not create:
            raise MimoError(f"{self.url}: no teacher cache here (run teacher-cache first)")
        if exists:
            try:
                self.group = zarr.open_group(self._zarr_store(), mode="r+" if create else "r")
            except Exception as err:
                raise MimoError(f"{self.url}: cannot open the store ({type(err).__name__}: {err})") from None
            meta = self.group.attrs.get(ATTR)
            if meta is None:
                raise MimoError(f"{self.url}: a Zarr group, but not a teacher cache (no {ATTR!r} attribute)")
            self.meta = meta
            if fingerprint is not None:
                self._check_identity(fingerprint, dim, dtype)
        else:
            if dtype not in STORE_DTYPES:
                raise MimoError(f"cache dtype must be one of {', '.join(STORE_DTYPES)}, not {dtype!r}")
            if rows_per_shard % rows_per_chunk:
                raise MimoError("rows_per_shard must be a multiple of rows_per_chunk")
            self.meta = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "dim": dim, "dtype": dtype,
                         "rows_per_shard": rows_per_shard, "rows_per_chunk": rows_per_chunk}
            try:
                self.fs.makedirs(self.root, exist_ok=True)
                self.group = zarr.open_group(self._zarr_store(), mode="a", attributes={ATTR: self.meta})
            except PermissionError:
                raise MimoError(f"{self.url}: cannot write the store here (permission denied)") from None
            except OSError as err:
                raise MimoError(f"{self.url}: cannot create the store ({err.strerror or err})") from None
            except zarr.errors.ContainsGroupError:  # another worker created it a moment ago: join it
                self.group = zarr.open_group(self._zarr_store(), mode="r+")
                self.meta = self.group.attrs.get(ATTR) or self.meta
                self._check_identity(fingerprint, dim, dtype)
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise MimoError(f"{self.url}: store format {self.meta.get('format_version')}, this version reads {FORMAT_VERSION}")

    @staticmethod
    def exists(url: str) -> bool:
        fs, root = fsspec.core.url_to_fs(str(url))
        return fs.exists(f"{root.rstrip('/')}/zarr.json")

    # ---- paths and small files --------------------------------------------------------------

    def _zarr_store(self):
        if self.local:
            return zarr.storage.LocalStore(self.root)
        return zarr.storage.FsspecStore.from_url(self.url)

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    def _exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def _write_atomic(self, key: str, data, exclusive: bool = False) -> bool:
        """Write a small file so that readers see all of it or none; `exclusive`: only if absent.

        `data`: bytes, or a function that writes the file's bytes to a binary file object.
        Returns False when `exclusive` and the file already existed.
        """
        path = self._path(key)
        write = data if callable(data) else (lambda fh: fh.write(data))
        if not self.local:  # object stores make each put atomic
            if exclusive and self.fs.exists(path):
                return False
            buf = io.BytesIO()
            write(buf)
            self.fs.pipe_file(path, buf.getvalue())
            return True
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return write_file_atomically(path, write, f"{path}.tmp-{uuid.uuid4().hex}", exclusive)

    # ---- identity ---------------------------------------------------------------------------

    def _check_identity(self, fingerprint: dict, dim: int | None, dtype: str) -> None:
        stored = self.meta["fingerprint"]
        diffs = [f"{k}: store has {stored.get(k)!r}, this run has {fingerprint.get(k)!r}"
                 for k in changed_settings(stored, fingerprint)]
        if dtype != self.meta["dtype"]:
            diffs.append(f"dtype: store has {self.meta['dtype']!r}, this run has {dtype!r}")
        if diffs:
            raise MimoError(f"{self.url}: built under other settings, refusing to mix vectors ({'; '.join(diffs)})")
        if dim is not None and dim != self.meta["dim"]:
            raise MimoError(f"{self.url}: store vectors have dimension {self.meta['dim']}, the model gives {dim}")

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    @property
    def rows_per_shard(self) -> int:
        return int(self.meta["rows_per_shard"])

    # ---- segments and plans -----------------------------------------------------------------

    def segments(self) -> list[Segment]:
        """The store's segments, their plans read lazily (only each plan's footer here)."""
        names = sorted(Path(p).name for p in self.fs.glob(self._path("seg-*.plan.parquet")))
        out, first = [], 0
        for i, name in enumerate(names):
            if name != f"seg-{i:05d}.plan.parquet":
                raise MimoError(f"{self.url}: segment plans are not numbered 0..{len(names) - 1} (found {name})")
            read = self._plan_reader(name)
            rows = read("rows", None)
            out.append(Segment(i, first, rows=rows, read=read))
            first += -(-rows // self.rows_per_shard)
        return out

    def _plan_reader(self, name: str):
        """read(columns, span) for one plan file: "rows" -> its row count; ("id_blocks", size) -> the
        text_id column in pieces of at most size rows, read lazily; (columns, None) -> those
        columns of every row (None: all); (None, (start, end)) -> (first row, end row, table) of the
        row groups that rows start..end-1 fall in. Damage is a one-line MimoError naming the file."""

        def unreadable(err):
            return MimoError(f"{self.url}: segment plan {name} is unreadable ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:200]})")

        def id_blocks(size):
            try:
                with self.fs.open(self._path(name), "rb") as fh:
                    pf = pq.ParquetFile(fh, page_checksum_verification=True)
                    for batch in pf.iter_batches(batch_size=size, columns=["text_id"]):
                        yield batch.column(0)
            except (pa.ArrowException, OSError) as err:
                raise unreadable(err) from None

        def read(columns, span):
            if columns == "id_blocks":
                return id_blocks(span)
            try:
                with self.fs.open(self._path(name), "rb") as fh:
                    pf = pq.ParquetFile(fh, page_checksum_verification=True)
                    meta = pf.metadata
                    if columns == "rows":
                        return meta.num_rows
                    if span is None:
                        return pf.read(columns=columns)
                    ends = np.cumsum([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
                    starts = ends - [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                    groups = [g for g in range(meta.num_row_groups) if starts[g] < span[1] and ends[g] > span[0]]
                    table = pf.read_row_groups(groups)
                    return int(starts[groups[0]]), int(ends[groups[-1]]), table
            except (pa.ArrowException, OSError) as err:
                raise unreadable(err) from None

        return read

    def new_rows(self, worklist, segments: list[Segment] | None = None) -> np.ndarray:
        """Indices (int64, ascending) of the worklist rows that no segment of the store holds yet."""
        held = [seg.ids for seg in (self.segments() if segments is None else segments)]
        if not held:
            return np.arange(worklist.num_rows, dtype=np.int64)
        held = pa.chunked_array([c for col in held for c in col.chunks], type=pa.string())
        held = held.chunk(0) if held.num_chunks == 1 else held.combine_chunks()
        # Arrow's hash set: millions of ids in seconds, no Python strings
        found = pc.is_in(worklist.column("text_id"), value_set=held)
        return np.nonzero(~found.to_numpy(zero_copy_only=False))[0].astype(np.int64)

    def plan_row_group(self) -> int:
        """Rows per row group of a plan file: whole shards, ~64k rows (a shard's rows read alone)."""
        return self.rows_per_shard * max(1, 65536 // self.rows_per_shard)

    def plan(self, worklist, config: dict | None = None, known=None) -> tuple[list[Segment], int]:
        """Append a segment for the worklist rows no segment holds; return (segments, rows reused).

        `worklist`: a table of the worklist's columns, or a `pipeline.worklist.Worklist` (its texts
        read for the new rows only). Every segment's arrays are (re)required here too, so a run
        killed between writing a plan and creating its arrays, or a worker that lists a plan another
        worker just wrote, finds them. `known`: (segments, new rows, those rows' table or None) of
        this worklist found a moment ago; used if the store still has exactly those segments (plans
        are written once: the same count is the same segments).
        """
        segments, rows = self.segments(), None
        if known is not None and len(known[0]) == len(segments):
            segments, new, rows = known
        else:
            new = self.new_rows(worklist, segments)
        reused = worklist.num_rows - len(new)
        if not len(new):
            for seg in segments:
                self._create_arrays(seg.index, seg.rows)
            return segments, reused
        if rows is None and isinstance(worklist, pa.Table):
            rows = worklist if len(new) == worklist.num_rows else worklist.take(new)
        elif rows is None:
            rows = worklist.rows(new)
        rows = rows.select(PLAN_SCHEMA.names)
        # similar lengths share shards, so batches inside a shard carry little padding
        keys = pa.table({"chars": pc.utf8_length(rows.column("text")), "text_id": rows.column("text_id")})
        order = pc.sort_indices(keys, [("chars", "ascending"), ("text_id", "ascending")])
        del keys
        order = order.to_numpy().astype(np.int64)
        batches = rows.to_batches()  # zero-copy: the worklist's chunks (one per row group read)
        offsets = np.cumsum([0] + [b.num_rows for b in batches])
        index = len(segments)
        name = f"seg-{index:05d}.plan.parquet"
        group = self.plan_row_group()

        def write(fh):  # row group by row group: the sorted plan is never held whole beside the worklist
            with pq.ParquetWriter(fh, PLAN_SCHEMA, compression="zstd", write_statistics=False,
                                  write_page_checksum=True) as writer:
                for start in range(0, len(order), group):
                    writer.write_table(take_rows(batches, offsets, order[start:start + group]).cast(PLAN_SCHEMA),
                                       row_group_size=group)

        self._create_arrays(index, rows.num_rows)  # arrays first: a published plan always has them
        if not self._write_atomic(name, write, exclusive=True):
            theirs = self._plan_reader(name)(["text_id"], None).column("text_id")
            if not theirs.equals(rows.column("text_id").take(order)):
                raise MimoError(f"{self.url}: another run planned segment {index} with a different worklist at the "
                                "same time; rerun once it is done (its texts will be reused)")
        if config is not None:  # the resolved config of the run that planned this segment
            self._write_atomic(f"seg-{index:05d}.config.json", json.dumps(config, indent=2).encode())
        segments = self.segments()
        for seg in segments:
            self._create_arrays(seg.index, seg.rows)
        return segments, reused

    def _create_arrays(self, index: int, rows: int) -> None:
        name, r, c = f"seg-{index:05d}", self.rows_per_shard, self.meta["rows_per_chunk"]
        for attempt in range(2):  # a concurrent worker may create the same arrays in between: then open them
            try:
                group = self.group.require_group(name)
                # No compressor: bf16 mantissas are close to random bits and barely compress; raw chunks read fastest.
                group.require_array("vectors", shape=(rows, self.dim), dtype=_storage_dtype(self.dtype),
                                    chunks=(c, self.dim), shards=(r, self.dim), compressors=None, fill_value=0)
                group.require_array("ntokens", shape=(rows,), dtype=np.int32, chunks=(r,), shards=(r,),
                                    compressors=None, fill_value=0)
                return
            except (zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError):
                if attempt:
                    raise
            except Exception as err:
                raise MimoError(f"{self.url}: cannot create segment {index} ({type(err).__name__}: {err})") from None

    # ---- shards -----------------------------------------------------------------------------

    def shards(self, segments: list[Segment]):
        """Every shard as (global number, segment, first row, end row)."""
        for seg in segments:
            for k, start in enumerate(range(0, seg.rows, self.rows_per_shard)):
                yield seg.first_shard + k, seg, start, min(start + self.rows_per_shard, seg.rows)

    def _marker(self, seg: Segment, shard: int) -> str:
        return f"{seg.name}.done/{shard:08d}.json"

    def done_marker(self, seg: Segment, shard: int) -> dict | None:
        """The shard's marker if it is complete and readable (a torn marker counts as not done)."""
        try:
            with self.fs.open(self._path(self._marker(seg, shard)), "rb") as fh:
                marker = json.loads(fh.read())
            return marker if isinstance(marker, dict) and marker.get("shard") == shard else None
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def markers(self, seg: Segment) -> dict[int, dict]:
        """The segment's valid markers by shard number (one listing, each marker read once)."""
        found = {}
        for p in self.fs.glob(self._path(f"{seg.name}.done/*.json")):
            try:
                shard = int(Path(p).stem)
            except ValueError:
                continue
            marker = self.done_marker(seg, shard)
            if marker is not None:
                found[shard] = marker
        return found

    def pending_shards(self, segments: list[Segment], markers: dict | None = None) -> list[tuple[int, Segment, int, int]]:
        """Shards without a valid marker (markers listed once per segment, not once per shard).
        `markers`: {segment index: its `markers`} read a moment ago, else read here."""
        done = markers if markers is not None else {seg.index: self.markers(seg) for seg in segments}
        return [s for s in self.shards(segments) if s[0] not in done[s[1].index]]

    def _shard_key(self, seg: Segment, array: str, start: int) -> str:
        """The file that holds one shard of an array (Zarr v3 chunk key of the shard)."""
        k = start // self.rows_per_shard
        return f"{seg.name}/{array}/c/{k}" + ("/0" if array == "vectors" else "")

    def write_shard(self, seg: Segment, shard: int, start: int, end: int, vectors: np.ndarray,
                    ntokens: np.ndarray, truncated: int) -> None:
        """Write one shard whole, make it durable, then record it done."""
        stored = to_storage(vectors, self.dtype)
        # a shard being redone is not done until it is written again; a torn file from a killed
        # write is replaced, never read or merged
        for key in (self._marker(seg, shard), *(self._shard_key(seg, a, start) for a in ("vectors", "ntokens"))):
            if self.fs.exists(self._path(key)):
                self.fs.rm(self._path(key))
        group = zarr.open_group(self._zarr_store(), mode="r+", path=seg.name)
        group["vectors"][start:end] = stored
        group["ntokens"][start:end] = ntokens
        sizes = {}
        for array in ("vectors", "ntokens"):
            path = self._path(self._shard_key(seg, array, start))
            if self.local:
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
            sizes[array] = int(self.fs.size(path))
        marker = {"shard": shard, "segment": seg.index, "rows": end - start, "tokens": int(ntokens.sum()),
                  "truncated": int(truncated), "bytes": sizes,
                  # checksum of the stored bytes: `cache verify` detects a shard changed after it was written
                  "blake2b": shard_digest(stored)}
        self._write_atomic(self._marker(seg, shard), json.dumps(marker, sort_keys=True).encode())

    def damaged_shards(self, segments: list[Segment], markers: dict | None = None
                       ) -> list[tuple[tuple[int, Segment, int, int], str]]:
        """Done shards whose files are missing or not the size recorded when they were written:
        [((shard, segment, start, end), why)]. One directory listing per array and segment.
        `markers`: as for `pending_shards`."""
        out = []
        for seg in segments:
            done = markers[seg.index] if markers is not None else self.markers(seg)
            files = {}
            for array in ("vectors", "ntokens"):
                try:
                    found = self.fs.find(self._path(f"{seg.name}/{array}/c"), detail=True)
                except FileNotFoundError:
                    found = {}
                files[array] = {self.fs._strip_protocol(k).rstrip("/"): v.get("size") for k, v in found.items()}
            for shard, _, start, end in self.shards([seg]):
                if shard not in done:
                    continue
                recorded = done[shard].get("bytes") or {}
                for array in ("vectors", "ntokens"):
                    key = self._shard_key(seg, array, start)
                    size = files[array].get(self.fs._strip_protocol(self._path(key)).rstrip("/"))
                    if size is None:
                        out.append(((shard, seg, start, end), f"{key} is missing"))
                        break
                    if array in recorded and size != recorded[array]:
                        out.append(((shard, seg, start, end), f"{key} has {size} bytes, {recorded[array]} when written"))
                        break
        return out

    def shards_to_redo(self, segments: list[Segment], on_damaged=None) -> list[tuple[int, Segment, int, int]]:
        """Shards without a valid marker, and done shards whose files are missing or of the wrong size
        (each of those also told to `on_damaged(shard, why)` when given)."""
        markers = {seg.index: self.markers(seg) for seg in segments}  # each marker read once
        damaged = self.damaged_shards(segments, markers)
        if on_damaged is not None:
            for (shard, _, _, _), why in damaged:
                on_damaged(shard, why)
        redo = {s[0]: s for s in self.pending_shards(segments, markers)}
        redo.update({s[0]: s for s, _ in damaged})
        return [redo[k] for k in sorted(redo)]

    def shard_checksum_ok(self, seg: Segment, shard: int, start: int, end: int) -> bool:
        """Whether a done shard's stored bytes still match the checksum in its marker (reads the shard)."""
        marker = self.done_marker(seg, shard) or {}
        try:
            block = self.read_segment(seg, "vectors", start, end)
        except Exception:  # noqa: BLE001 - any read failure of this shard means: redo it
            return False
        return block.shape == (end - start, self.dim) and marker.get("blake2b") == shard_digest(block)

    def read_rows(self, seg: Segment, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of the given rows of a segment (block reads of the chunks they fall in)."""
        array = zarr.open_array(self._zarr_store(), mode="r", path=f"{seg.name}/vectors")
        return array.get_orthogonal_selection((rows, slice(None)))

    def read_segment(self, seg: Segment, name: str = "vectors", start: int = 0, end: int | None = None) -> np.ndarray:
        return zarr.open_array(self._zarr_store(), mode="r", path=f"{seg.name}/{name}")[start:end]

    def size_bytes(self) -> int:
        try:
            return int(self.fs.du(self.root))
        except Exception:
            return 0


def take_rows(batches: list[pa.RecordBatch], offsets: np.ndarray, rows: np.ndarray) -> pa.Table:
    """`table.take(rows)` for a table given as record batches (offsets: their first rows, then the
    total), one batch at a time: Arrow's take across many chunks cost ~0.6 s and a transient
    allocation of about half the table per 64k rows (16 chunks, 303 MB); this costs the rows taken."""
    rows, offsets = np.asarray(rows, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
    which = np.searchsorted(offsets, rows, side="right") - 1
    by_batch = np.argsort(which, kind="stable")
    sorted_which, sorted_rows = which[by_batch], rows[by_batch]
    cuts = np.searchsorted(sorted_which, np.arange(len(batches) + 1))
    pieces = [batches[b].take(pa.array(sorted_rows[cuts[b]:cuts[b + 1]] - offsets[b]))
              for b in range(len(batches)) if cuts[b + 1] > cuts[b]]
    if not pieces:
        return pa.Table.from_batches([], schema=batches[0].schema) if batches else pa.table({})
    taken = pa.Table.from_batches(pieces).combine_chunks()  # only the rows taken
    return taken.take(pa.array(np.argsort(by_batch)))  # back to the order asked for


def shard_digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()
