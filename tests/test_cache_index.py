"""The trainer's memory-mapped target reader against Zarr's own reads, on stores written directly."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest
import zarr

from pipeline.cache_index import IdIndex, ShardMaps, id_keys
from pipeline.cache_read import TeacherTargets
from pipeline.errors import MimoError
from pipeline.store import PLAN_SCHEMA, VectorStore, from_storage, to_storage
from pipeline.worklist import text_id


def write_store(path, segments_rows, dim=8, rows_per_shard=16, rows_per_chunk=4, dtype="bfloat16", seed=0):
    """A complete store of random unit vectors, one segment per entry of `segments_rows`, no teacher."""
    rng = np.random.default_rng(seed)
    store = VectorStore(str(path), fingerprint={"model": "test"}, dim=dim, dtype=dtype,
                        rows_per_shard=rows_per_shard, rows_per_chunk=rows_per_chunk, create=True)
    texts, start = [], 0
    for rows in segments_rows:
        seg_texts = [f"text {start + i}" for i in range(rows)]
        start += rows
        plan = pa.table({"text_id": [text_id("document", 256, t) for t in seg_texts], "role": ["document"] * rows,
                         "max_length": [256] * rows, "text": seg_texts}, schema=PLAN_SCHEMA)
        store.plan(plan)
        texts += seg_texts
    for shard, seg, lo, hi in store.shards(store.segments()):
        vectors = rng.standard_normal((hi - lo, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.write_shard(seg, shard, lo, hi, vectors, np.full(hi - lo, 5, np.int32), 0)
    return store, texts


def zarr_rows(store, ids):
    """The stored rows of the ids, read through Zarr (the reference)."""
    out = []
    for tid in ids:
        for seg in store.segments():
            plan_ids = seg.plan.column("text_id").to_pylist()
            if tid in plan_ids:
                out.append(store.read_segment(seg)[plan_ids.index(tid)])
    return np.stack(out)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_mapped_reads_equal_zarr_across_segments_and_partial_shards(tmp_path, dtype):
    # 37 rows: two full shards and a partial one (a partial chunk too); a second segment of 9 rows
    store, texts = write_store(tmp_path / "s.zarr", [37, 9], dtype=dtype)
    targets = TeacherTargets(str(tmp_path / "s.zarr"))
    ids = [text_id("document", 256, t) for t in texts]
    order = np.random.default_rng(1).permutation(len(ids))
    picked = [ids[i] for i in order] + ids[:3]  # repeats allowed
    where = targets.locate(picked)
    assert where.dtype == np.int64
    # the second segment starts on a shard boundary, after the first one's 3 shards: rows 48-56
    assert sorted(targets.locate(ids[37:]).tolist()) == list(range(48, 57))
    stored = targets.fetch_stored(where)
    raw = stored.float().numpy()
    reference = zarr_rows(store, picked)
    assert np.array_equal(raw, from_storage(reference, dtype))
    assert np.array_equal(targets.fetch(where).numpy(), from_storage(reference, dtype))
    # prefaulting the page tables (the default for a store this small) changes no byte
    assert targets.maps.prefaulted or not sys.platform.startswith("linux")
    lazy = ShardMaps(targets.store, targets.segments, prefault=False)
    assert not lazy.prefaulted
    assert np.array_equal(lazy.gather(where), targets.maps.gather(where))
    assert np.array_equal(lazy.gather(where[:0]), targets.maps.gather(where[:0]))
    lazy.close()


def test_id_index_lookup_and_bad_ids(tmp_path):
    store, texts = write_store(tmp_path / "s.zarr", [20])
    index = IdIndex(store.segments(), store.rows_per_shard)
    ids = [text_id("document", 256, t) for t in texts]
    where, found = index.lookup(pa.chunked_array([pa.array(ids[:5]), pa.array(["0" * 32, ids[19]])]))
    plan_ids = store.segments()[0].plan.column("text_id").to_pylist()
    assert found.tolist() == [True] * 5 + [False, True]
    assert where.tolist() == [plan_ids.index(i) for i in ids[:5]] + [-1, plan_ids.index(ids[19])]
    assert id_keys([])[0].shape == (0,)
    with pytest.raises(MimoError, match=r"text id 'short' \(row 1\) is not 32 characters long"):
        index.lookup([ids[0], "short"])


def test_id_keys_in_blocks_equal_one_pass_and_name_the_right_row(tmp_path, monkeypatch):
    import pipeline.cache_index as cache_index

    store, texts = write_store(tmp_path / "s.zarr", [37, 9])
    ids = [text_id("document", 256, t) for t in texts]
    whole = id_keys(ids)
    index = IdIndex(store.segments(), store.rows_per_shard)
    monkeypatch.setattr(cache_index, "BLOCK", 5)  # 46 ids: 10 blocks, the last one partial
    blocked = id_keys(pa.chunked_array([pa.array(ids[:7]), pa.array(ids[7:])]))
    assert all(np.array_equal(a, b) for a, b in zip(whole, blocked))
    small = IdIndex(store.segments(), store.rows_per_shard)
    assert all(np.array_equal(getattr(index, k), getattr(small, k)) for k in ("high", "low", "where"))
    assert np.array_equal(small.lookup(ids[::-1])[0], index.lookup(ids[::-1])[0])
    with pytest.raises(MimoError, match=r"\(row 12\) is not lowercase hex"):
        id_keys(ids[:12] + [ids[12].upper()] + ids[13:])


@pytest.mark.parametrize("prefault", [True, False], ids=["prefaulted", "faulted-in"])
def test_absent_chunk_reads_as_zeros_and_compressed_store_is_refused(tmp_path, prefault):
    store, texts = write_store(tmp_path / "s.zarr", [16])
    seg = store.segments()[0]
    array = zarr.open_array(store._zarr_store(), mode="r+", path=f"{seg.name}/vectors")
    array[4:8] = 0  # an all-fill-value chunk: Zarr removes it from the shard
    maps = ShardMaps(store, store.segments(), prefault=prefault)
    assert maps.prefaulted == (prefault and sys.platform.startswith("linux"))
    assert maps.chunk_offset[0, 1] == -1
    assert np.array_equal(maps.gather(np.arange(16)), store.read_segment(seg))
    assert np.array_equal(maps.gather(np.array([5, 0, 5, 15])), store.read_segment(seg)[[5, 0, 5, 15]])
    maps.close()

    other = VectorStore(str(tmp_path / "z.zarr"), fingerprint={"model": "test"}, dim=8, rows_per_shard=16,
                        rows_per_chunk=4, create=True)
    group = other.group.require_group("seg-00000")
    group.create_array("vectors", shape=(16, 8), dtype=np.uint16, chunks=(4, 8), shards=(16, 8))  # zstd default
    group["vectors"][:] = to_storage(np.ones((16, 8), np.float32), "bfloat16")
    seg = type(seg)(0, 0, seg.plan)
    with pytest.raises(MimoError, match="not stored as uncompressed sharded chunks"):
        ShardMaps(other, [seg])


def test_ids_sharing_their_high_bits_resolve_exactly():
    from pipeline.store import Segment

    ids = ["a" * 16 + f"{k:016x}" for k in (7, 3, 9)] + ["0" * 31 + "1", "f" * 32]
    index = IdIndex([Segment(0, 2, pa.table({"text_id": ids}))], rows_per_shard=10)
    where, found = index.lookup(["a" * 16 + f"{k:016x}" for k in (9, 3, 5, 7)] + ["f" * 32])
    assert found.tolist() == [True, True, False, True, True]
    assert where.tolist() == [22, 21, -1, 20, 24]
    with pytest.raises(MimoError, match=r"text id 'ABCDEF.*' \(row 0\) is not lowercase hex"):
        index.lookup(["ABCDEF" + "0" * 26])


def test_stored_bits_check_by_hand(tmp_path):
    # bf16 bit patterns: the check never widens them; sign bits must not matter
    store, texts = write_store(tmp_path / "s.zarr", [16])
    targets = TeacherTargets(str(tmp_path / "s.zarr"))
    where = np.arange(2, dtype=np.int64)
    fine = np.array([[0x3F80, 0x8000], [0x0001, 0x7F7F]], dtype=np.uint16)  # 1.0, -0; a denormal, max finite
    targets._check(where, fine)
    for bits, what in [(0x7F80, "not finite"), (0xFF80, "not finite"), (0x7FC0, "not finite"),
                       (0xFFFF, "not finite"), (0x8000, "all zero"), (0x0000, "all zero")]:
        bad = np.array([[0x3F80, 0x3F80], [bits, bits if what == "all zero" else 0x3F80]], dtype=np.uint16)
        with pytest.raises(MimoError, match=rf"row 1 is {what} \(1 such target"):
            targets._check(where, bad)
