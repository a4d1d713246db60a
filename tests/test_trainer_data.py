"""The trainer refuses, before the first step, data whose teacher targets the cache lacks."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.cache_read import TeacherTargets
from pipeline.errors import MimoError
from pipeline.prepare import PrepareConfig, run_prepare
from pipeline.teacher import TeacherConfig
from pipeline.teacher_cache import TeacherCacheConfig, run_teacher_cache
from tests.conftest import REPO
from trainer.data import check_teacher_dim, read_stage_table, resolve_targets


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from dataclasses import replace

    out = tmp_path_factory.mktemp("prep") / "prepared"
    cfg = PrepareConfig(out_dir=str(out), sample_dir=str(REPO / "data/sample"))
    cfg = replace(cfg, stage1=replace(cfg.stage1, source="sample", languages=("en", "de", "ja")),
                  stage2=replace(cfg.stage2, source="sample", languages=("en", "de", "ja")))
    run_prepare(cfg, echo=lambda *_: None)
    return out


def _cache(prepared, tmp_path, drop_stage2_queries=False):
    worklist = pq.read_table(prepared / "teacher_worklist.parquet")
    if drop_stage2_queries:  # a cache built for another data set: Stage-2 queries missing
        keep = [i for i, r in enumerate(worklist.column("role").to_pylist()) if r != "query"]
        worklist = worklist.take(keep)
    wl = tmp_path / "wl.parquet"
    pq.write_table(worklist, wl)
    cfg = TeacherCacheConfig(worklists=(str(wl),), store=str(tmp_path / "cache.zarr"), rows_per_shard=256,
                             progress=False, teacher=TeacherConfig(model="sentence-transformers/all-MiniLM-L6-v2"))
    run_teacher_cache(cfg, echo=lambda *_: None)
    return TeacherTargets(cfg.store)


def test_targets_resolve_for_both_stages(prepared, tmp_path):
    targets = _cache(prepared, tmp_path)
    s1 = read_stage_table(prepared / "stage1/pairs.parquet", "stage1")
    where = resolve_targets(s1, targets, "stage1")["teacher_id"]
    assert where.shape == (s1.num_rows,) and where.dtype == np.int64
    s2 = read_stage_table(prepared / "stage2/mimo.parquet", "stage2")
    locs = resolve_targets(s2, targets, "stage2")
    vectors = targets.fetch(locs["q_teacher_id"][:5]).numpy()
    assert vectors.shape == (5, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-2)
    check_teacher_dim(targets, 384)
    with pytest.raises(MimoError, match="holds 384-d vectors, the student's projection gives 4096-d"):
        check_teacher_dim(targets, 4096)


def test_refuses_data_the_cache_lacks(prepared, tmp_path):
    targets = _cache(prepared, tmp_path, drop_stage2_queries=True)
    s2 = read_stage_table(prepared / "stage2/mimo.parquet", "stage2")
    with pytest.raises(MimoError, match=r"stage2: the teacher cache .* lacks 120 of the 120 texts the data needs \(q_teacher_id"):
        resolve_targets(s2, targets, "stage2")
    with pytest.raises(MimoError, match="not a stage2 table"):
        read_stage_table(prepared / "stage1/pairs.parquet", "stage2")


def test_a_run_reads_only_the_columns_it_uses(prepared):
    """start_training reads the text columns it names and the target ids, nothing else; the same values."""
    path = prepared / "stage2/lakda.parquet"
    full = read_stage_table(path, "stage2")
    some = read_stage_table(path, "stage2", ("q_text", "p_text", "q2_text"))
    assert sorted(some.column_names) == ["p_teacher_id", "p_text", "q2_text", "q_teacher_id", "q_text"]
    assert len(full.column_names) > len(some.column_names)
    for name in some.column_names:
        assert some.column(name).equals(full.column(name)), name
    texts_only = read_stage_table(path, "stage2", ("q_text", "p_text"), ids=False)  # a run without targets
    assert sorted(texts_only.column_names) == ["p_text", "q_text"]
    with pytest.raises(MimoError, match=r"mimo\.parquet: not a stage2 table \(missing column\(s\) text\)"):
        read_stage_table(prepared / "stage2/mimo.parquet", "stage2", ("q_text", "text"))
