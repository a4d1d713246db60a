"""Stage 2 and the baselines on the sample with a tiny student: every method runs, MIMO at lambda=1 is XLCO,
Stage 2 starts from a Stage-1 output, and bad settings are refused before the first step."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.errors import MimoError
from trainer.stage1 import Stage1Config, run_stage1
from trainer.stage2 import Stage2Config, run_stage2


def config(setup, out, **kw):
    base = dict(prepared=str(setup / "prepared"), cache=str(setup / "cache.zarr"), out_dir=str(out), init="",
                student=str(setup / "tiny-student"), batch_size=16, mini_batch_size=4, max_length=48, lr=1e-3,
                checkpoint_every=1000, progress=False, stop_after=2, contrastive_group_size=0)
    base.update(kw)
    return Stage2Config(**base)


def first_step(out):
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize("method", ["mimo", "xlco", "infonce", "lakda"])
def test_every_method_trains(training_setup, tmp_path, method):
    result = run_stage2(config(training_setup, tmp_path / method, method=method), echo=lambda *_: None)
    assert result["step"] == 2 and torch.isfinite(torch.tensor(result["loss"]))
    if method == "mimo":
        assert {"xlco", "distill"} <= set(first_step(tmp_path / method))


def test_mimo_at_lambda_one_is_xlco_and_at_zero_is_distill(training_setup, tmp_path):
    xlco = first_step_of(training_setup, tmp_path / "xlco", method="xlco")
    mimo1 = first_step_of(training_setup, tmp_path / "mimo1", method="mimo", lam=1.0)
    mimo0 = first_step_of(training_setup, tmp_path / "mimo0", method="mimo", lam=0.0)
    assert mimo1["loss"] == pytest.approx(xlco["loss"], rel=1e-5)
    assert mimo0["loss"] == pytest.approx(mimo0["distill"], rel=1e-6)


def first_step_of(setup, out, **kw):
    run_stage2(config(setup, out, stop_after=1, **kw), echo=lambda *_: None)
    return first_step(out)


def test_stage2_starts_from_stage1(training_setup, tmp_path):
    s1 = Stage1Config(prepared=str(training_setup / "prepared"), cache=str(training_setup / "cache.zarr"),
                      out_dir=str(tmp_path / "s1"), student=str(training_setup / "tiny-student"), batch_size=64,
                      max_length=32, progress=False)
    run_stage1(s1, echo=lambda *_: None)
    result = run_stage2(config(training_setup, tmp_path / "s2", init=str(tmp_path / "s1")), echo=lambda *_: None)
    assert result["step"] == 2
    with pytest.raises(MimoError, match="not a finished Stage-1 output"):
        run_stage2(config(training_setup, tmp_path / "s3", init=str(tmp_path / "nowhere")), echo=lambda *_: None)


@pytest.mark.parametrize("kw, message", [
    ({"lam": 1.5}, r"lam \(lambda\) must be in \[0, 1\]"),
    ({"batch_size": 30, "mini_batch_size": 4}, "batch_size 30 is not divisible by mini_batch_size 4"),
    ({"method": "contrastive"}, "method must be one of"),
    ({"contrastive_group_size": 12}, "contrastive_group_size 12 must divide batch_size 16"),
    ({"distill_reduction": "max"}, "distill_reduction must be mean or sum"),
    ({"lakda_form": "symmetric"}, "lakda_form must be release or paper"),
])
def test_refusals(training_setup, tmp_path, kw, message):
    with pytest.raises(MimoError, match=message):
        config(training_setup, tmp_path, **kw)


def test_lambda_sweep_collects_one_run_per_lambda(training_setup, tmp_path):
    from trainer.sweep import SweepConfig, run_sweep

    stage2 = config(training_setup, tmp_path / "unused", stop_after=0, batch_size=64, mini_batch_size=16)
    rows = run_sweep(SweepConfig(out_dir=str(tmp_path / "sweep"), lambdas=(0.0, 1.0), stage2=stage2),
                     echo=lambda *_: None)
    assert [r["lambda"] for r in rows] == [0.0, 1.0] and all(r["finished"] for r in rows)
    assert (tmp_path / "sweep/sweep.csv").read_text().count("\n") == 3
    assert (tmp_path / "sweep/lambda-0/model").is_dir() and (tmp_path / "sweep/lambda-1/model").is_dir()
    with pytest.raises(MimoError, match="lambdas must be"):
        SweepConfig(lambdas=(0.2, 1.5))


def test_a_sweep_reuses_a_finished_run_of_the_same_settings_and_only_that(training_setup, tmp_path):
    """The demo's MIMO run stands for the sweep's lambda 0.2; a run under another setting does not."""
    from trainer.sweep import SweepConfig, run_sweep

    quiet = dict(echo=lambda *_: None)
    stage2 = config(training_setup, tmp_path / "unused", stop_after=0, batch_size=32, mini_batch_size=16, lam=0.2)
    mimo = run_stage2(config(training_setup, tmp_path / "mimo", stop_after=0, batch_size=32, mini_batch_size=16,
                             checkpoint_every=3), **quiet)  # checkpoint_every: how a run is driven, not what it is
    assert mimo["finished"]
    rows = run_sweep(SweepConfig(out_dir=str(tmp_path / "sweep"), lambdas=(0.2,), stage2=stage2,
                                 reuse=(str(tmp_path / "mimo"),)), **quiet)
    assert rows[0]["out_dir"] == str(tmp_path / "mimo") and rows[0]["finished"]
    assert rows[0]["loss"] == pytest.approx(mimo["loss"]) and rows[0]["step"] == mimo["step"]
    assert not (tmp_path / "sweep/lambda-0.2").exists()  # nothing trained
    other = run_sweep(SweepConfig(out_dir=str(tmp_path / "sweep2"), lambdas=(0.2,), stage2=stage2.__class__(
        **{**stage2.__dict__, "lr": 5e-4}), reuse=(str(tmp_path / "mimo"),)), **quiet)
    assert other[0]["out_dir"] == str(tmp_path / "sweep2/lambda-0.2")
    assert (tmp_path / "sweep2/lambda-0.2/model").is_dir()


def test_a_lambda_trained_ahead_in_the_sweeps_folder_is_taken_as_the_sweep_would_train_it(training_setup, tmp_path):
    """`make demo` trains the sweep's lambdas side by side, one `mimo sweep only=<lambda>` job each; the sweep
    then collects them: the same weights as the sweep training them itself, nothing trained twice."""
    from safetensors.torch import load_file

    from trainer.sweep import SweepConfig, run_sweep

    quiet = dict(echo=lambda *_: None)
    stage2 = config(training_setup, tmp_path / "unused", stop_after=0, batch_size=32, mini_batch_size=16)
    itself = run_sweep(SweepConfig(out_dir=str(tmp_path / "a"), lambdas=(0.0,), stage2=stage2), **quiet)
    ahead = run_sweep(SweepConfig(out_dir=str(tmp_path / "b"), lambdas=(0.0,), stage2=stage2, only=(0.0,)), **quiet)[0]
    assert not (tmp_path / "b/sweep.json").exists() and not (tmp_path / "b/config.json").exists()  # a job: no collection
    mtime = (tmp_path / "b/lambda-0/model/model.safetensors").stat().st_mtime_ns
    rows = run_sweep(SweepConfig(out_dir=str(tmp_path / "b"), lambdas=(0.0,), stage2=stage2), **quiet)
    assert rows[0]["out_dir"] == str(tmp_path / "b/lambda-0") and rows[0]["loss"] == ahead["loss"] == itself[0]["loss"]
    assert (tmp_path / "b/lambda-0/model/model.safetensors").stat().st_mtime_ns == mtime  # not trained again
    with pytest.raises(MimoError, match="only: .* must be some of lambdas"):
        SweepConfig(lambdas=(0.0, 1.0), only=(0.5,))
    a, b = (load_file(tmp_path / f"{d}/lambda-0/model/model.safetensors") for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method, group", [("stage1", 0), ("mimo", 0), ("infonce", 0), ("mimo", 8)])
def test_two_gloo_processes_equal_one_at_the_same_global_batch(training_setup, tmp_path, method, group):
    """DDP over 2 CPU processes (gloo): the same weights and logged losses as 1 process. Group 0: one
    contrastive group of 16 rows (cross-device negatives); group 8: each rank's 8 rows are a group (the
    authors' layout, no gathering), one process holds both groups.
    Dropout is off: each rank draws its own dropout masks, one process draws others."""
    import json as _json
    import os
    import shutil
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO

    student = tmp_path / "student-no-dropout"
    shutil.copytree(training_setup / "tiny-student", student)
    cfg = _json.loads((student / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (student / "config.json").write_text(_json.dumps(cfg))
    if method == "stage1":
        args = dict(student=str(student), batch_size=16, stop_after=2)
        run_stage1(Stage1Config(prepared=str(training_setup / "prepared"), cache=str(training_setup / "cache.zarr"),
                                out_dir=str(tmp_path / "one"), max_length=48, lr=1e-3, progress=False, **args),
                   echo=lambda *_: None)
    else:
        args = dict(student=str(student), method=method, batch_size=16, mini_batch_size=4, stop_after=2,
                    contrastive_group_size=group)
        run_stage2(config(training_setup, tmp_path / "one", **args), echo=lambda *_: None)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = dict(prepared=training_setup / "prepared", cache=training_setup / "cache.zarr", out_dir=tmp_path / "two",
                  max_length=48, lr=1e-3, checkpoint_every=1000, progress="false", **args)
    if method != "stage1":
        common["init"] = ""
    overrides = [f"{k}={v}" for k, v in common.items()]
    command = "stage1" if method == "stage1" else "stage2"
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "mimo_cli", command, *overrides], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    one = torch.load(tmp_path / "one/checkpoint.pt", weights_only=False)["student"]
    two = torch.load(tmp_path / "two/checkpoint.pt", weights_only=False)["student"]
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    # training moved the weights (the equality above is not two untouched copies)
    from transformers import AutoModel

    initial = AutoModel.from_pretrained(student, add_pooling_layer=False).state_dict()
    assert any(not torch.allclose(one[f"encoder.{k}"], v) for k, v in initial.items() if f"encoder.{k}" in one)
    assert len((tmp_path / "two/metrics.jsonl").read_text().splitlines()) == 2  # rank 0 logs, rank 1 does not
    if method != "stage1":  # every rank's loss is averaged into the log: the step's loss, as one process logs it
        logged = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                  for run in ("one", "two")]
        for key in ("loss", "xlco", "distill") if method == "mimo" else ("loss",):
            assert [m[key] for m in logged[1]] == pytest.approx([m[key] for m in logged[0]], rel=1e-4), key


def test_stage2_refuses_a_stage1_trained_against_another_teacher(training_setup, tmp_path):
    s1 = Stage1Config(prepared=str(training_setup / "prepared"), cache=str(training_setup / "cache.zarr"),
                      out_dir=str(tmp_path / "s1"), student=str(training_setup / "tiny-student"), batch_size=256,
                      max_length=16, progress=False)
    run_stage1(s1, echo=lambda *_: None)
    recorded = tmp_path / "s1/teacher_fingerprint.json"
    fingerprint = json.loads(recorded.read_text())
    fingerprint["query_prompt"] = "Represent this query: "
    recorded.write_text(json.dumps(fingerprint))
    with pytest.raises(MimoError, match="trained against a teacher cache built under other settings .*query_prompt"):
        run_stage2(config(training_setup, tmp_path / "s2", init=str(tmp_path / "s1")), echo=lambda *_: None)
