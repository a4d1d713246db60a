"""The trainer takes a batch's texts from the Arrow table (trainer.data.TextColumn) instead of a Python
list of every text: the same texts for any rows, and the same training steps in both stages."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import trainer.stage1 as stage1
import trainer.stage2 as stage2
from trainer.data import TextColumn


class ListPath:
    """The path before TextColumn: the whole column as Python strings, indexed row by row."""

    def __init__(self, column):
        self.texts = column.to_pylist()

    def __len__(self):
        return len(self.texts)

    def take(self, rows):
        return [self.texts[i] for i in rows]


def test_take_equals_indexing_the_python_list_across_chunks():
    texts = [f"Satz {i} — 文 {i}" if i % 5 else "" for i in range(50)]
    # chunks of uneven sizes, an empty one among them (as a table read from several row groups can have)
    cuts = [0, 7, 7, 20, 21, 50]
    column = pa.chunked_array([pa.array(texts[a:b], pa.string()) for a, b in zip(cuts, cuts[1:])])
    new, old = TextColumn(column), ListPath(column)
    assert len(new) == len(old) == 50
    rng = np.random.default_rng(0)
    for rows in (np.arange(50), rng.permutation(50)[:16], np.array([49, 0, 20, 20, 6, 7, 21]), np.array([], np.int64),
                 rng.integers(0, 50, 40)):
        assert new.take(rows) == old.take(rows)


def test_take_reads_a_large_string_column():
    column = pa.chunked_array([pa.array(["a", "bb"], pa.large_string()), pa.array(["ccc"], pa.large_string())])
    assert TextColumn(column).take(np.array([2, 0])) == ["ccc", "a"]


@pytest.fixture(scope="module")
def chunked_setup(training_setup, tmp_path_factory):
    """The training set-up with its tables rewritten in row groups of 7 rows (many chunks per column)."""
    root = tmp_path_factory.mktemp("chunked")
    shutil.copytree(training_setup / "prepared", root / "prepared")
    for path in [root / "prepared/stage1/pairs.parquet", *(root / "prepared/stage2").glob("*.parquet")]:
        table = pq.read_table(path)
        pq.write_table(table, path, row_group_size=7)
        assert pq.read_table(path).column(0).num_chunks > 2
    return root


def _logged(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _terms(logged):
    return [{k: v for k, v in m.items() if k != "rows_per_s"} for m in logged]


def test_stage1_steps_are_the_same_as_with_python_lists(training_setup, chunked_setup, tmp_path, monkeypatch):
    def run(out):
        stage1.run_stage1(stage1.Stage1Config(
            prepared=str(chunked_setup / "prepared"), cache=str(training_setup / "cache.zarr"), out_dir=str(out),
            student=str(training_setup / "tiny-student"), batch_size=16, max_length=32, lr=1e-3, stop_after=3,
            checkpoint_every=1000, progress=False), echo=lambda *_: None)
        return _logged(out)

    new = run(tmp_path / "new")
    monkeypatch.setattr(stage1, "TextColumn", ListPath)
    old = run(tmp_path / "old")
    assert len(new) == 3 and _terms(new) == _terms(old)


@pytest.mark.parametrize("method", ["mimo", "lakda"])
def test_stage2_steps_are_the_same_as_with_python_lists(training_setup, chunked_setup, tmp_path, monkeypatch, method):
    def run(out):
        stage2.run_stage2(stage2.Stage2Config(
            prepared=str(chunked_setup / "prepared"), cache=str(training_setup / "cache.zarr"), out_dir=str(out),
            init="", student=str(training_setup / "tiny-student"), method=method, batch_size=16, mini_batch_size=4,
            contrastive_group_size=0, max_length=48, lr=1e-3, stop_after=3, checkpoint_every=1000, progress=False),
            echo=lambda *_: None)
        return _logged(out)

    new = run(tmp_path / "new")
    monkeypatch.setattr(stage2, "TextColumn", ListPath)
    old = run(tmp_path / "old")
    assert len(new) == 3 and _terms(new) == _terms(old)
