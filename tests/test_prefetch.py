"""Prefetch (tokenization and target reads run ahead in a background thread) changes nothing a step computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer.loop import epoch_order, prepared_batches
from trainer.stage1 import Stage1Config, run_stage1
from trainer.stage2 import Stage2Config, run_stage2


def test_prepared_batches_in_order_ahead_or_inline_and_errors_surface():
    calls = []

    def prepare(rows):
        calls.append(int(rows[0]))
        return rows * 10

    def rows_of(step):
        return np.array([step])

    inline = [int(b[0]) for b in prepared_batches(prepare, rows_of, 2, 7, prefetch=0)]
    ahead = [int(b[0]) for b in prepared_batches(prepare, rows_of, 2, 7, prefetch=3)]
    assert inline == ahead == [20, 30, 40, 50, 60]

    def failing(rows):
        if rows[0] == 4:
            raise ValueError("bad row 4")
        return rows

    batches = prepared_batches(failing, rows_of, 0, 9, prefetch=2)
    assert [int(next(batches)[0]) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="bad row 4"):
        next(batches)


def test_epoch_order_is_cached_and_read_only():
    a = epoch_order(1000, 42, 0)
    assert a is epoch_order(1000, 42, 0) and not a.flags.writeable
    assert np.array_equal(a, np.random.default_rng([42, 0]).permutation(1000))


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _same_run(a, b):
    ma, mb = _metrics(a), _metrics(b)
    assert len(ma) == len(mb) > 0
    for x, y in zip(ma, mb):
        x.pop("rows_per_s"), y.pop("rows_per_s")
        assert x == y  # bit-identical losses, lr and gradient norms
    sa = torch.load(a / "checkpoint.pt", weights_only=False)["student"]
    sb = torch.load(b / "checkpoint.pt", weights_only=False)["student"]
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_stage1_step_is_identical_with_and_without_prefetch(training_setup, tmp_path):
    def run(out, prefetch):
        cfg = Stage1Config(prepared=str(training_setup / "prepared"), cache=str(training_setup / "cache.zarr"),
                           out_dir=str(out), student=str(training_setup / "tiny-student"), batch_size=32,
                           max_length=32, lr=1e-3, stop_after=3, progress=False, prefetch=prefetch)
        run_stage1(cfg, echo=lambda *_: None)

    run(tmp_path / "inline", 0)
    run(tmp_path / "ahead", 3)
    _same_run(tmp_path / "inline", tmp_path / "ahead")


def test_stage2_step_is_identical_with_and_without_prefetch(training_setup, tmp_path):
    def run(out, prefetch):
        cfg = Stage2Config(prepared=str(training_setup / "prepared"), cache=str(training_setup / "cache.zarr"),
                           out_dir=str(out), init="", student=str(training_setup / "tiny-student"), method="mimo",
                           batch_size=16, mini_batch_size=8, contrastive_group_size=8, max_length=32, stop_after=2,
                           progress=False, prefetch=prefetch)
        run_stage2(cfg, echo=lambda *_: None)

    run(tmp_path / "inline", 0)
    run(tmp_path / "ahead", 2)
    _same_run(tmp_path / "inline", tmp_path / "ahead")
