"""report_to: the terms of metrics.jsonl also go to TensorBoard (event files read back here) or wandb
(offline mode), for Stage 1, Stage 2 and the sweep; resuming continues the same series."""

from __future__ import annotations

import json
import sys

import pytest

from pipeline.config import load_config
from pipeline.errors import MimoError
from trainer.stage1 import Stage1Config, run_stage1
from trainer.stage2 import Stage2Config
from trainer.sweep import SweepConfig, run_sweep
from trainer.tracking import open_tracker

QUIET = dict(echo=lambda *_: None)


def stage1_config(setup, out, **kw):
    return Stage1Config(prepared=str(setup / "prepared"), cache=str(setup / "cache.zarr"), out_dir=str(out),
                        student=str(setup / "tiny-student"), batch_size=32, max_length=32, lr=1e-3,
                        checkpoint_every=1000, progress=False, **kw)


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def scalars(log_dir):
    """{tag: [(step, value), ...]} from every event file under log_dir, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_stage1_tensorboard_holds_the_metrics_jsonl_terms_across_a_resume(training_setup, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    first = run_stage1(stage1_config(training_setup, out, stop_after=2, report_to="tensorboard"), **QUIET)
    second = run_stage1(stage1_config(training_setup, out, stop_after=2, report_to="tensorboard"), **QUIET)
    assert (first["step"], second["step"]) == (2, 4)
    logged = metrics(out)
    series = scalars(out / "tensorboard")
    assert set(series) == set(logged[0]) - {"step"} == {"epoch", "loss", "lr", "grad_norm", "rows_per_s"}
    for tag, points in series.items():  # one point per step, in order, the jsonl's value (float32 in events)
        assert [s for s, _ in points] == [1, 2, 3, 4]
        assert [v for _, v in points] == pytest.approx([line[tag] for line in logged], rel=1e-6)


def test_sweep_runs_each_get_their_own_tensorboard_series(training_setup, tmp_path):
    pytest.importorskip("tensorboard")
    stage2 = Stage2Config(prepared=str(training_setup / "prepared"), cache=str(training_setup / "cache.zarr"),
                          init="", student=str(training_setup / "tiny-student"), batch_size=16, mini_batch_size=8,
                          max_length=32, progress=False, stop_after=1, report_to="tensorboard")
    run_sweep(SweepConfig(out_dir=str(tmp_path / "sweep"), lambdas=(0.0, 1.0), stage2=stage2), **QUIET)
    for lam in ("0", "1"):
        run = tmp_path / "sweep" / f"lambda-{lam}"
        series, line = scalars(run / "tensorboard"), metrics(run)[0]
        assert {"loss", "xlco", "distill"} <= set(series)
        for tag in ("loss", "xlco", "distill"):
            assert series[tag] == [(1, pytest.approx(line[tag], rel=1e-6))]


def test_report_to_is_checked_and_a_missing_extra_is_named(tmp_path, monkeypatch):
    with pytest.raises(MimoError, match="report_to.*not one of none, tensorboard, wandb"):
        load_config(Stage1Config, "stage1", None, ["report_to=mlflow"])
    assert load_config(SweepConfig, "sweep", None, ["stage2.report_to=wandb"]).stage2.report_to == "wandb"
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MimoError, match=r"report_to=tensorboard needs .*mimo-retrieval\[tensorboard\]"):
        open_tracker("tensorboard", tmp_path, "stage 1", {})
    assert type(open_tracker("tensorboard", tmp_path, "stage 1", {}, enabled=False)).__name__ == "Tracker"


def test_wandb_offline_run_records_the_terms(training_setup, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from trainer import tracking

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summaries = []
    real_close = tracking.WandbTracker.close

    def close(self):  # wandb's own summary of what the run logged, read before the run ends
        summaries.append({k: self.run.summary[k] for k in self.run.summary.keys()})
        real_close(self)

    monkeypatch.setattr(tracking.WandbTracker, "close", close)
    out = tmp_path / "run"
    run_stage1(stage1_config(training_setup, out, stop_after=2, report_to="wandb"), **QUIET)
    (run,) = list((out / "wandb").glob("offline-run-*"))  # an offline run, ready for `wandb sync`
    assert next(run.glob("run-*.wandb")).stat().st_size > 0
    last = metrics(out)[-1]
    assert summaries[0]["_step"] == 2
    for tag in ("loss", "lr", "grad_norm", "epoch", "rows_per_s"):
        assert summaries[0][tag] == pytest.approx(last[tag])
