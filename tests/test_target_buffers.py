"""Reused output arrays and the sorted id index give exactly what the plain paths give."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.cache_index import IdIndex, RowBuffers, ShardMaps
from pipeline.cache_read import TeacherTargets
from pipeline.store import Segment, from_storage
from tests.test_cache_index import write_store
from trainer.loop import prepared_batches


def test_row_buffers_reuse_only_arrays_nothing_holds():
    ring = RowBuffers(np.uint16, 4, slots=2)
    a = ring.take(3)
    ptr = a.ctypes.data
    del a
    b = ring.take(3)
    assert b.ctypes.data == ptr and b.shape == (3, 4)  # dropped: handed out again
    held = torch.from_numpy(b).view(torch.bfloat16)[1:]  # a view of a tensor of the array holds it too
    del b
    c = ring.take(2)
    assert c.ctypes.data != ptr  # the first slot is busy: the second one
    third = ring.take(2)  # both slots busy: a fresh array, not one in use
    assert third.ctypes.data not in (ptr, c.ctypes.data)
    del held
    big = ring.take(5)  # the first slot is free again but too small: replaced by a larger one
    assert big.shape == (5, 4) and big.ctypes.data != c.ctypes.data
    assert ring.allocated == 4  # two slots, the fresh array, the replacement
    assert RowBuffers(np.uint16, 4, slots=0).take(1).shape == (1, 4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_fetches_into_reused_arrays_equal_np_take_while_callers_keep_some(tmp_path, dtype):
    store, _ = write_store(tmp_path / "s.zarr", [150, 37], dim=8, rows_per_shard=32, rows_per_chunk=8, dtype=dtype)
    targets = TeacherTargets(str(tmp_path / "s.zarr"))
    # the plain reference: every row of the store widened to fp32 at once, then np.take
    where_all = targets.index.where
    stored_all = ShardMaps(targets.store, targets.segments).gather(where_all)
    plain = from_storage(stored_all, dtype)
    plain_stored = stored_all
    rng = np.random.default_rng(3)
    kept = []
    for step in range(60):
        rows = rng.integers(0, len(where_all), int(rng.integers(1, 40)))
        where = where_all[rows]
        stored = targets.fetch_stored(where)
        wide = targets.fetch(where)
        assert np.array_equal(stored.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16"
                              else stored.numpy(), np.take(plain_stored, rows, axis=0))
        assert np.array_equal(wide.numpy(), np.take(plain, rows, axis=0))
        if step % 12 == 0:  # a caller that keeps batches (and views of them) for as long as it likes
            kept.append((rows, stored[::2], wide.numpy()[:, :4]))
    assert targets._stored_out.allocated + targets._float_out.allocated < 60  # dropped batches' arrays reused
    for rows, stored, wide in kept:  # nothing kept was overwritten by later fetches
        assert np.array_equal(stored.float().numpy(), np.take(plain, rows, axis=0)[::2])
        assert np.array_equal(wide, np.take(plain, rows, axis=0)[:, :4])


def test_prefetch_into_reused_arrays_equals_inline_with_kept_batches(tmp_path):
    store, _ = write_store(tmp_path / "s.zarr", [300], dim=8, rows_per_shard=64, rows_per_chunk=8)
    targets = TeacherTargets(str(tmp_path / "s.zarr"))
    where_all = targets.index.where
    plain = from_storage(ShardMaps(targets.store, targets.segments).gather(where_all), "bfloat16")

    def rows_of(step):
        return np.random.default_rng([7, step]).integers(0, len(where_all), 24)

    def prepare(rows):
        return rows, targets.fetch_stored(where_all[rows])

    for prefetch in (0, 1, 3):
        ring = targets._stored_out = RowBuffers(np.uint16, 8, slots=8)
        kept = []
        for step, (rows, stored) in enumerate(prepared_batches(prepare, rows_of, 0, 40, prefetch)):
            assert np.array_equal(rows, rows_of(step))
            # what a step sees: the plain rows, widened the way the stages do it
            assert np.array_equal(stored.float().numpy(), np.take(plain, rows, axis=0))
            if step % 20 == 0:
                kept.append((rows, stored))
        # 2 kept + at most prefetch + 2 in flight fit in the 8 slots: the 40 batches took 8 arrays at most
        assert ring.allocated <= 8
        for rows, stored in kept:
            assert np.array_equal(stored.float().numpy(), np.take(plain, rows, axis=0))


def test_id_index_sorted_like_a_lexsort_and_lookups_in_blocks_match_a_dict(monkeypatch):
    import pipeline.cache_index as cache_index

    rng = np.random.default_rng(5)
    words = rng.integers(0, 2**63, (300, 2), dtype=np.uint64)
    words[100:140, 0] = words[99, 0]  # a run of 41 keys sharing their high word
    words[200:203, 0] = words[7, 0]  # and a second run, apart from its first member
    ids = [f"{int(h):016x}{int(lo):016x}" for h, lo in words]
    index = IdIndex([Segment(0, 0, pa.table({"text_id": ids[:180]})), Segment(1, 3, pa.table({"text_id": ids[180:]}))],
                    rows_per_shard=64)
    order = np.lexsort((words[:, 1], words[:, 0]))
    assert np.array_equal(index.high, words[order, 0]) and np.array_equal(index.low, words[order, 1])
    location = {i: (k if k < 180 else 3 * 64 + k - 180) for k, i in enumerate(ids)}
    assert np.array_equal(index.where, [location[ids[k]] for k in order])
    unknown = [f"{int(words[120, 0]):016x}{k:016x}" for k in range(5)] + ["f" * 32]  # one sharing a run's high word
    query = [ids[k] for k in rng.permutation(300)] + unknown + ids[100:140:3]
    for block in (cache_index.BLOCK, 7):
        monkeypatch.setattr(cache_index, "BLOCK", block)
        where, found = index.lookup(pa.chunked_array([pa.array(query[:50]), pa.array(query[50:])]))
        assert where.tolist() == [location.get(i, -1) for i in query]
        assert found.tolist() == [i in location for i in query]
