"""The teacher cache's bookkeeping, vectorized for the paper's 6.5M texts (bench/bench_cache_scale.py),
against the per-row Python it replaced: worklist checks and dedup, plans read by row group,
`cached_before`, `cache info`'s counts by role, `cache verify`'s duplicate ids."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cache_read import cache_info, cache_verify, repeated_ids, texts_by_role
from pipeline.errors import MimoError
from pipeline.store import PLAN_SCHEMA, Segment, VectorStore, take_rows
from pipeline.teacher_cache import BLANK, PY_WHITESPACE, cached_before, check_worklist_values, read_worklists
from pipeline.worklist import ROLES, WORKLIST_SCHEMA, build_worklist


def worklist(entries) -> pa.Table:
    return build_worklist(entries)


def make_store(tmp_path, worklists, rows_per_shard=4, write=True) -> VectorStore:
    """A store planned from the worklists in turn (one segment each), every shard written with
    random unit vectors: no model."""
    store = VectorStore(str(tmp_path / "cache.zarr"), {"model": "none", "normalize": True}, 8, "bfloat16",
                        rows_per_shard, rows_per_shard, create=True)
    for table in worklists:
        store.plan(table)
    if write:
        rng = np.random.default_rng(0)
        for shard, seg, start, end in store.shards(store.segments()):
            v = rng.standard_normal((end - start, 8)).astype(np.float32)
            store.write_shard(seg, shard, start, end, v / np.linalg.norm(v, axis=1, keepdims=True),
                              np.full(end - start, 5, np.int32), 0)
    return store


def texts(n, prefix="t"):
    return [f"{prefix} {i} " + "x" * (i * 7 % 50) for i in range(n)]


def test_python_whitespace_list_is_str_isspace():
    assert sorted(PY_WHITESPACE) == [c for c in range(0x110000) if chr(c).isspace()]


def _old_check(path, table):
    """The per-row loop read_worklists ran before (the reference)."""
    for i, (role, length, text) in enumerate(zip(table["role"].to_pylist(), table["max_length"].to_pylist(),
                                                  table["text"].to_pylist())):
        if role not in ROLES:
            raise MimoError(f"{path}: row {i}: role {role!r} is not one of {', '.join(ROLES)}")
        if not length or length < 1:
            raise MimoError(f"{path}: row {i}: max_length must be a positive integer")
        if not text or not text.strip():
            raise MimoError(f"{path}: row {i}: empty text")


@pytest.mark.parametrize("bad", [
    {}, {"role": "passage"}, {"role": None}, {"max_length": 0}, {"max_length": -3}, {"max_length": None},
    {"text": None}, {"text": ""}, {"text": "  \t\n "}, {"text": "\x1c\x1f\x85\u3000\u2028"}, {"text": "\u200b"},
    {"text": "\ufeff"}, {"text": " a "}, {"text": "\x1c\x1c\x1c\x1c\x1c\x1c\x1c x"},
    {"role": "passage", "text": ""}, {"max_length": 0, "text": ""}])
def test_worklist_checks_match_the_per_row_loop(bad):
    rows = [{"text_id": f"{i:032x}", "role": "document", "max_length": 256, "text": f"text {i}"} for i in range(6)]
    rows[3].update(bad)
    rows[5].update({"text": "\u3000"})  # a later bad row: the first one is reported
    table = pa.Table.from_pylist(rows, schema=WORKLIST_SCHEMA)
    expected = got = None
    try:
        _old_check("w.parquet", table)
    except MimoError as err:
        expected = str(err)
    try:
        check_worklist_values("w.parquet", table)
    except MimoError as err:
        got = str(err)
    assert got == expected and got is not None


def test_worklist_with_a_null_id_is_refused_in_one_line(tmp_path):
    rows = [{"text_id": f"{i:032x}", "role": "document", "max_length": 256, "text": f"text {i}"} for i in range(4)]
    rows[2]["text_id"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=WORKLIST_SCHEMA), tmp_path / "w.parquet")
    with pytest.raises(MimoError, match=r"w.parquet: row 2: text_id is missing \(null\)$"):
        read_worklists([tmp_path / "w.parquet"])


def test_blank_pattern_on_every_whitespace_alone_and_beside_a_letter():
    import pyarrow.compute as pc

    chars = [chr(c) for c in range(0x3100) if chr(c) not in "\x00"]
    alone = pc.match_substring_regex(pa.array(chars), BLANK).to_pylist()
    assert alone == [not c.strip() for c in chars]
    beside = pc.match_substring_regex(pa.array([c + "a" + c for c in chars]), BLANK).to_pylist()
    assert not any(beside)


def test_read_worklists_dedups_like_before(tmp_path):
    a = worklist(("document", 256, t) for t in texts(30))
    b = worklist([("document", 256, t) for t in texts(50)[20:]] + [("query", 512, t) for t in texts(10)])
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    got = read_worklists([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    both = pa.concat_tables([a, b])
    _, first = np.unique(np.array(both["text_id"].to_pylist(), dtype=object), return_index=True)
    assert got.equals(both.take(np.sort(first)))
    assert got.num_rows == 60
    alone = read_worklists([tmp_path / "a.parquet"])
    assert alone.equals(a)


def test_plan_rows_read_by_row_group_equal_the_whole_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(VectorStore, "plan_row_group", lambda self: 3 * self.rows_per_shard)
    table = worklist([("document", 256, t) for t in texts(50)] + [("query", 512, t) for t in texts(9, "q")])
    store = make_store(tmp_path, [table], rows_per_shard=4, write=False)
    (seg,) = store.segments()
    meta = pq.ParquetFile(store._path("seg-00000.plan.parquet")).metadata
    assert meta.num_row_groups == 5 and meta.row_group(0).num_rows == 12 and seg.rows == 59
    whole = pq.read_table(store._path("seg-00000.plan.parquet"))
    assert whole.schema.equals(PLAN_SCHEMA) and seg.ids.equals(whole.column("text_id"))
    for _, _, start, end in store.shards([seg]):  # every shard's rows, crossing no group: one read each
        assert seg.slice(start, end).equals(whole.slice(start, end - start))
    assert seg.slice(10, 14).equals(whole.slice(10, 4))  # across a group boundary
    assert seg.plan.equals(whole)
    # the plan's order: by length in characters, then id (as before: a sort of the whole table)
    keyed = whole.append_column("chars", pa.array([len(t) for t in whole["text"].to_pylist()]))
    assert keyed.sort_by([("chars", "ascending"), ("text_id", "ascending")]).drop_columns(["chars"]).equals(whole)


def test_cached_before_counts_done_rows_of_the_worklist(tmp_path):
    a = worklist(("document", 256, t) for t in texts(20))
    b = worklist(("document", 256, t) for t in texts(30)[10:])
    store = make_store(tmp_path, [a, b], rows_per_shard=4, write=False)
    segments = store.segments()
    shards = list(store.shards(segments))
    pending = [s for s in shards if s[0] % 3 == 1]
    wanted = set(b["text_id"].to_pylist())
    expected = 0
    for shard, seg, start, end in shards:
        if shard % 3 != 1:
            expected += sum(1 for i in seg.ids.to_pylist()[start:end] if i in wanted)
    reused = len(set(b["text_id"].to_pylist()) & {i for seg in segments for i in seg.ids.to_pylist()})
    assert reused == 20
    assert 0 < cached_before(b, segments, pending, reused) == expected < reused
    assert cached_before(b, segments, [], reused) == reused  # nothing pending: every held text is done
    most = [s for s in shards if s[0] % 3 != 1]  # more pending than done: the done ids are looked up
    assert cached_before(b, segments, most, reused) == reused - expected
    assert cached_before(b, segments, shards, reused) == 0  # nothing done


def test_cache_info_counts_by_role_in_order_of_appearance(tmp_path):
    a = worklist([("query", 512, t) for t in texts(7, "q")] + [("document", 512, t) for t in texts(5, "p")])
    b = worklist([("document", 256, t) for t in texts(9)] + [("query", 512, t) for t in texts(3, "r")])
    store = make_store(tmp_path, [a, b])
    reference = {}
    for seg in store.segments():
        for role, length in zip(seg.plan["role"].to_pylist(), seg.plan["max_length"].to_pylist()):
            reference[f"{role}@{length}"] = reference.get(f"{role}@{length}", 0) + 1
    info = cache_info(store.url)
    assert info["texts_by_role"] == reference and list(info["texts_by_role"]) == list(reference)
    assert info["rows"] == 24 and info["shards_done"] == info["shards"] == 6
    assert texts_by_role([]) == {}


def _old_repeats(segments):
    seen, out = set(), []
    for seg in segments:
        ids = seg.ids.to_pylist()
        out.append(len(ids) - len(set(ids)) + len(seen & set(ids)))
        seen.update(ids)
    return out


def test_repeated_ids_like_the_python_sets():
    rng = np.random.default_rng(1)
    pool = [f"{i:032x}" for i in range(40)]
    segments, first = [], 0
    for k in range(4):
        ids = [pool[i] for i in rng.integers(0, 40, 25)]
        segments.append(Segment(k, first, pa.table({"text_id": pa.array(ids, pa.string())})))
        first += 7
    assert repeated_ids(segments) == _old_repeats(segments)
    assert sum(repeated_ids(segments)) > 0
    unique = [Segment(0, 0, pa.table({"text_id": pa.array(pool[:20])})),
              Segment(1, 5, pa.table({"text_id": pa.array(pool[20:])}))]
    assert repeated_ids(unique) == [0, 0] and repeated_ids([]) == []
    words = [Segment(0, 0, pa.table({"text_id": pa.array(["a", "b", "a"])})),  # not hex: the Arrow path
             Segment(1, 1, pa.table({"text_id": pa.array(["b", "c", "c", "d"])}))]
    assert repeated_ids(words) == _old_repeats(words) == [1, 2]


def test_cache_verify_finds_duplicates_within_and_across_segments(tmp_path):
    a = worklist(("document", 256, t) for t in texts(12))
    b = worklist(("document", 256, t) for t in texts(12, "u"))
    store = make_store(tmp_path, [a, b])
    assert cache_verify(store.url) == []
    path = store._path("seg-00001.plan.parquet")
    plan = pq.read_table(path)
    ids = plan["text_id"].to_pylist()
    ids[2] = a["text_id"][5].as_py()  # an id of segment 0
    ids[7] = ids[3]  # twice in segment 1
    pq.write_table(plan.set_column(0, "text_id", pa.array(ids, pa.string())), path)
    assert cache_verify(store.url) == ["seg-00001: 2 duplicate text id(s)"]


def test_take_rows_batch_by_batch_equals_arrow_take():
    rng = np.random.default_rng(3)
    parts = [pa.table({"text_id": [f"{k}-{i}" for i in range(n)], "max_length": pa.array(np.arange(n), pa.int32())})
             for k, n in enumerate((5, 1, 17, 9))]
    table = pa.concat_tables(parts)
    batches = table.to_batches()
    offsets = np.cumsum([0] + [b.num_rows for b in batches])
    for rows in (rng.permutation(32), rng.permutation(32)[:7], np.array([31, 0, 5, 5 + 1]), np.array([], np.int64)):
        assert take_rows(batches, offsets, rows).equals(table.take(pa.array(rows, pa.int64())).combine_chunks())


# ---- the worklist read keys first, texts only for the rows asked for (pipeline/worklist.py: Worklist) ----

def _write(table, path, row_group_size=7):
    pq.write_table(table, path, row_group_size=row_group_size)  # several row groups per file
    return path


def test_worklist_texts_read_lazily_equal_read_worklists(tmp_path):
    from pipeline.worklist import Worklist

    a = worklist([("document", 256, t) for t in texts(30)] + [("query", 512, t) for t in texts(5, "q")])
    b = worklist([("document", 256, t) for t in texts(50)[20:]] + [("query", 512, t) for t in texts(10)])
    c = a.take(np.random.default_rng(0).permutation(a.num_rows))  # not sorted by id: deduplicated by Arrow
    for paths in ([_write(a, tmp_path / "a.parquet")],
                  [tmp_path / "a.parquet", _write(b, tmp_path / "b.parquet")],
                  [_write(c, tmp_path / "c.parquet"), tmp_path / "b.parquet", tmp_path / "a.parquet"]):
        eager = read_worklists(paths)
        lazy = Worklist(paths)
        assert lazy.num_rows == eager.num_rows and lazy.keys.equals(eager.select(["text_id", "role", "max_length"]))
        rng = np.random.default_rng(len(paths))
        for rows in (np.arange(eager.num_rows), np.sort(rng.permutation(eager.num_rows)[:13]), np.array([0]),
                     np.array([eager.num_rows - 1]), np.array([], np.int64)):
            got = lazy.rows(rows)
            assert got.schema.equals(WORKLIST_SCHEMA) and got.equals(eager.take(pa.array(rows, pa.int64())))


def test_worklist_errors_are_read_worklists_errors(tmp_path):
    """The first bad row in read_worklists' order (file by file, texts included) when ids, roles or
    lengths are bad; a blank text among the rows read, with its file and row."""
    from pipeline.worklist import Worklist

    good = worklist(("document", 256, t) for t in texts(20))
    blank = good.set_column(3, "text", pa.array([t if i != 9 else " \u3000" for i, t in
                                                 enumerate(good["text"].to_pylist())]))
    role = good.set_column(1, "role", pa.array([r if i != 4 else "passage" for i, r in
                                                enumerate(good["role"].to_pylist())]))
    both = blank.set_column(1, "role", role["role"])  # row 4: role, row 9: empty text
    cases = {"blank": [_write(blank, tmp_path / "blank.parquet")],
             "role": [_write(good, tmp_path / "good.parquet"), _write(role, tmp_path / "role.parquet")],
             "blank, then a role in a later file": [tmp_path / "blank.parquet", tmp_path / "role.parquet"],
             "role before a blank": [_write(both, tmp_path / "both.parquet")]}
    for name, paths in cases.items():
        with pytest.raises(MimoError) as eager:
            read_worklists(paths)
        with pytest.raises(MimoError) as lazy:
            Worklist(paths).rows(np.arange(20))
        assert str(lazy.value) == str(eager.value), name
    assert str(eager.value) == f"{tmp_path / 'both.parquet'}: row 4: role 'passage' is not one of query, document"
    ok = Worklist([tmp_path / "blank.parquet"])  # texts are checked when read: the rows without row 9
    assert ok.rows(np.array([3, 8, 10])).num_rows == 3
    with pytest.raises(MimoError, match=r"blank.parquet: row 9: empty text$"):
        ok.rows(np.array([3, 9]))


def test_cached_before_without_a_lookup_when_the_worklist_has_every_stored_text(tmp_path, monkeypatch):
    a = worklist(("document", 256, t) for t in texts(20))
    b = worklist(("document", 256, t) for t in texts(30)[10:])
    store = make_store(tmp_path, [a, b], rows_per_shard=4, write=False)
    segments = store.segments()
    shards = list(store.shards(segments))
    union = read_worklists([_write(a, tmp_path / "a.parquet"), _write(b, tmp_path / "b.parquet")])
    wanted = set(union["text_id"].to_pylist())
    assert union.num_rows == sum(seg.rows for seg in segments) == 30
    monkeypatch.setattr("pyarrow.compute.is_in", lambda *a, **k: pytest.fail("looked up"))
    for pending in ([s for s in shards if s[0] % 3 == 1], [s for s in shards if s[0] % 3 != 1], shards[:1]):
        expected = sum(1 for shard, seg, start, end in shards if (shard, seg.index) not in
                       {(p[0], p[1].index) for p in pending} for i in seg.ids.to_pylist()[start:end] if i in wanted)
        assert cached_before(union, segments, pending, 30) == expected
