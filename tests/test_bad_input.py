"""Bad input and damaged files, end to end through the CLI (in-process): one table of cases, each
with its exit status, its one-line message and what must (not) be left behind; then a seeded fuzz
of every reader (truncations and byte flips) that must give a one-line error or exactly the result
the bytes mean, never a traceback and never a silently different result."""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from mimo_cli.main import app
from pipeline.errors import MimoError
from tests.test_teacher_cache import config as cache_config
from tests.test_teacher_cache import varied_texts, write_worklist


# ---- shared material ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(training_setup, tmp_path_factory):
    """The prepared sample, its cache, the tiny student; a stage-1 run stopped after one step; a small
    MiniLM store of 3 shards (16, 16, 8 rows); an eval over the sample with the tiny student."""
    from eval.run import BenchmarkSpec, EvalConfig, ModelSpec, run_eval
    from pipeline.teacher_cache import run_teacher_cache

    root = tmp_path_factory.mktemp("bad-input")
    run = root / "run"
    result = cli(["stage1", *stage1_args(training_setup, run), "stop_after=1"])
    assert result.exit_code == 0, result.output
    wl = write_worklist(root / "wl.parquet", varied_texts(40))
    small = cache_config(root, [wl])
    run_teacher_cache(small, echo=lambda *_: None)
    eval_cfg = EvalConfig(out_dir=str(root / "eval"), embeddings_dir=str(root / "emb"), plots=False,
                          models=(ModelSpec(name="tiny", model=str(training_setup / "tiny-student")),),
                          benchmarks=(BenchmarkSpec("sample", languages=("en", "de")),))
    run_eval(eval_cfg, echo=lambda *_: None)
    return SimpleNamespace(setup=training_setup, run=run, small=Path(small.store), small_cfg=small, wl=wl,
                           eval=root / "eval", emb=root / "emb")


def cli(args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def stage1_args(setup, out, cache=None):
    return [f"prepared={setup / 'prepared'}", f"cache={cache or setup / 'cache.zarr'}",
            f"student={setup / 'tiny-student'}", "batch_size=32", "max_length=32", "lr=1e-3",
            "checkpoint_every=1000", "progress=false", f"out_dir={out}"]


def cache_args(cfg, store):
    """The small store's own settings as a resolved config file, pointed at `store`."""
    from pipeline.config import config_to_dict

    path = Path(store).parent / "teacher_cache.json"
    path.write_text(json.dumps({"_step": "teacher_cache", **config_to_dict(cfg), "store": str(store)}))
    return ["teacher-cache", "--config", path]


def tree(root: Path) -> dict[str, bytes]:
    """Every file of a store, config sidecars left out (they name the store's path)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".tmp-" not in p.name and not p.name.endswith(".config.json")}


def shard_file(store: Path, k: int, seg: int = 0) -> Path:
    return store / f"seg-{seg:05d}/vectors/c/{k}/0"


def index_bytes(store: Path) -> int:
    """Size of a vectors shard's index (Zarr sharding: 16 bytes per chunk + a crc32c, at the end)."""
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["mimo_teacher_cache"]
    return 16 * (meta["rows_per_shard"] // meta["rows_per_chunk"]) + 4


# ---- the table ---------------------------------------------------------------------------------

@dataclass
class Case:
    """`arrange(world, tmp) -> argv`; then the exit status, a regex the last output line must match
    (`error: ...` for failures), and `check(world, tmp, output)` for what was left or not trusted."""
    arrange: Callable
    status: int
    message: str
    check: Callable = field(default=lambda w, tmp, output: None)
    env: dict | None = None
    patch: Callable | None = None  # patch(monkeypatch)


class Evil:
    """A pickle that creates a file when unpickled: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _copy_run(w, tmp):
    out = tmp / "run"
    shutil.copytree(w.run, out)
    return out


def _crafted_checkpoint(zip_format: bool):
    def arrange(w, tmp):
        out = _copy_run(w, tmp)
        if zip_format:
            torch.save({"step": Evil(tmp / "pwned")}, out / "checkpoint.pt")
        else:
            (out / "checkpoint.pt").write_bytes(pickle.dumps({"step": Evil(tmp / "pwned")}))
        return ["stage1", *stage1_args(w.setup, out), "stop_after=1"]
    return arrange


def _no_code_ran_and_checkpoint_kept(w, tmp, output):
    assert not (tmp / "pwned").exists()
    assert not (tmp / "run/model").exists()


def _garbage_checkpoint(w, tmp):
    out = _copy_run(w, tmp)
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip file" * 20)
    return ["stage1", *stage1_args(w.setup, out), "stop_after=1"]


def _changed_checkpoint(w, tmp):
    """A checkpoint whose tensor changed after it was written (its stored checksum kept): a flipped byte."""
    out = _copy_run(w, tmp)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    name = next(iter(state["student"]))
    state["student"][name].view(-1)[0] += 1.0
    torch.save(state, out / "checkpoint.pt")
    return ["stage1", *stage1_args(w.setup, out), "stop_after=1"]


def _other_settings(extra):
    def arrange(w, tmp):
        out = _copy_run(w, tmp)
        (tmp / "before").write_bytes((out / "checkpoint.pt").read_bytes())
        return ["stage1", *[a for a in stage1_args(w.setup, out) if not a.startswith("lr=")], "lr=2e-3",
                "stop_after=1", *extra]
    return arrange


def _checkpoint_untouched(w, tmp, output):
    assert (tmp / "run/checkpoint.pt").read_bytes() == (tmp / "before").read_bytes()


def _unrelated_folder(w, tmp):
    out = tmp / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    return ["stage1", *stage1_args(w.setup, out)]


def _unrelated_left_alone(w, tmp, output):
    assert sorted(p.name for p in (tmp / "mine").iterdir()) == ["notes.txt"]


def _damaged_store(how):
    def arrange(w, tmp):
        store = tmp / "cache.zarr"
        shutil.copytree(w.setup / "cache.zarr", store)
        shard = shard_file(store, 0)
        data = bytearray(shard.read_bytes())
        body = len(data) - index_bytes(store)
        if how == "deleted":
            shard.unlink()
        elif how == "truncated":
            shard.write_bytes(bytes(data[:len(data) // 2]))
        elif how == "flipped":  # a changed value: only the checksum sees it (verify_cache=true compares them)
            data[body // 3] ^= 0x10
            shard.write_bytes(bytes(data))
            return ["stage1", *stage1_args(w.setup, tmp / "out", store), "verify_cache=true"]
        else:  # same size, valid index, but the vectors are zeros / NaN (bf16 0x7fc0): the per-batch check meets them
            data[:body] = (b"\x00\x00" if how == "zeroed" else b"\xc0\x7f") * (body // 2)
            shard.write_bytes(bytes(data))
        return ["stage1", *stage1_args(w.setup, tmp / "out", store)]
    return arrange


def _no_training_output(w, tmp, output):
    out = tmp / "out"
    assert not (out / "checkpoint.pt").exists() and not (out / "model").exists()
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text()


def _cache_damage(how):
    def arrange(w, tmp):
        store = tmp / "cache.zarr"
        shutil.copytree(w.small, store)
        shard = shard_file(store, 1)
        if how == "deleted":
            shard.unlink()
        elif how == "torn-unmarked":  # killed mid-write: no marker, half a file
            (store / "seg-00000.done/00000001.json").unlink()
            shard.write_bytes(shard.read_bytes()[:300])
        elif how == "flipped":
            data = bytearray(shard.read_bytes())
            data[50] ^= 0x01
            shard.write_bytes(bytes(data))
            return [*cache_args(w.small_cfg, store), "verify=true"]
        elif how == "two-unmarked":
            for k in (1, 2):
                (store / f"seg-00000.done/0000000{k}.json").unlink()
        return cache_args(w.small_cfg, store)
    return arrange


def _store_restored(w, tmp, output):
    from pipeline.cache_read import cache_verify

    assert tree(tmp / "cache.zarr") == tree(w.small)
    assert cache_verify(str(tmp / "cache.zarr")) == []


def _misnamed_tsv_header(w, tmp):
    tsv = tmp / "de.tsv"
    tsv.write_text("english_sentence\tgerman_sentence\nGood morning to you.\tGuten Morgen.\n", encoding="utf-8")
    return ["prepare", f"out_dir={tmp / 'prepared'}", "stage1.source=local", f"stage1.local_files=de:{tsv}",
            "stage1.languages=en,de", "stage2.source=sample", "stage2.languages=en,de"]


def _nothing_prepared(w, tmp, output):
    assert not (tmp / "prepared").exists() and not list(tmp.glob(".prepared*"))


def _missing_file_deep_inside(monkeypatch):
    def boom(*_a, **_k):
        raise FileNotFoundError(2, "No such file or directory", "/data/somewhere/pairs.tsv")

    monkeypatch.setattr("pipeline.prepare.run_prepare", boom)


def _finished_run(w, tmp):
    out = _copy_run(w, tmp)
    (out / "checkpoint.pt").unlink()  # an earlier run of this step, killed before its first checkpoint
    (out / "checkpoint.tmp-999999").write_bytes(b"half a checkpoint from a kill")
    return ["stage1", *[a for a in stage1_args(w.setup, tmp / "run") if not a.startswith("batch_size")],
            "batch_size=256"]


def _finished_cleanly(w, tmp, output):
    run = tmp / "run"
    assert not (run / "checkpoint.pt").exists() and not list(run.glob("checkpoint.tmp-*"))
    weights = run / "model/model.safetensors"
    assert weights.stat().st_mode & 0o044 == 0o044  # group and others may read, as the umask allows (022)


def _garbage_embeddings(w, tmp):
    shutil.copytree(w.eval, tmp / "eval")
    shutil.copytree(w.emb, tmp / "emb")
    cached = next((tmp / "emb").glob("tiny-*/sample.query.*.npy"))
    cached.write_bytes(cached.read_bytes()[:100])
    config = json.loads((tmp / "eval/config.json").read_text())
    config.update(out_dir=str(tmp / "eval"), embeddings_dir=str(tmp / "emb"))
    (tmp / "eval.json").write_text(json.dumps(config))
    return ["eval", "--config", tmp / "eval.json", "depth=200"]


def _old_report_and_config_kept(w, tmp, output):
    config = json.loads((tmp / "eval/config.json").read_text())
    assert config["depth"] == 100  # the config beside the older report is still the one that made it
    assert (tmp / "eval/report.md").read_bytes() == (w.eval / "report.md").read_bytes()


CASES = {
    "crafted checkpoint (zip) runs no code": Case(_crafted_checkpoint(True), 2,
        r"^error: .*checkpoint\.pt: not a readable checkpoint \(it holds objects other than tensors and plain values",
        _no_code_ran_and_checkpoint_kept),
    "crafted checkpoint (plain pickle) runs no code": Case(_crafted_checkpoint(False), 2,
        r"^error: .*checkpoint\.pt: not a readable checkpoint", _no_code_ran_and_checkpoint_kept),
    "garbage checkpoint": Case(_garbage_checkpoint, 2, r"^error: .*checkpoint\.pt: not a readable checkpoint"),
    "checkpoint changed after writing": Case(_changed_checkpoint, 2,
        r"^error: .*checkpoint\.pt: damaged \(its contents differ from the checksum"),
    "resume under other settings": Case(_other_settings([]), 2,
        r"^error: .*checkpoint\.pt was made with other settings \(lr: 0\.001 -> 0\.002\).*resume_anyway=true",
        _checkpoint_untouched),
    "resume under other settings, anyway": Case(_other_settings(["resume_anyway=true"]), 0,
        r"stage 1: stopped after 1 steps at step 2"),
    "unrelated output folder": Case(_unrelated_folder, 2,
        r"^error: out_dir .*mine exists and is not an earlier stage1 output", _unrelated_left_alone),
    "store: chunk file deleted": Case(_damaged_store("deleted"), 2,
        r"^error: .*teacher cache damaged, 1 shard\(s\) .*vectors/c/0/0 is missing\); rerun teacher-cache",
        _no_training_output),
    "store: chunk file truncated": Case(_damaged_store("truncated"), 2,
        r"^error: .*teacher cache damaged, 1 shard\(s\) .*vectors/c/0/0 has \d+ bytes, \d+ when written",
        _no_training_output),
    "store: byte flipped": Case(_damaged_store("flipped"), 2,
        r"^error: .*seg-00000 shard 0 \(rows 0-\d+\) differs from the checksum", _no_training_output),
    "store: zeroed vectors": Case(_damaged_store("zeroed"), 2,
        r"^error: .*the teacher vector of seg-00000 row \d+ is all zero", _no_training_output),
    "store: NaN vectors": Case(_damaged_store("nan"), 2,
        r"^error: .*the teacher vector of seg-00000 row \d+ is not finite", _no_training_output),
    "teacher-cache redoes a shard whose file is gone": Case(_cache_damage("deleted"), 0,
        r"complete$", _store_restored),
    "teacher-cache redoes a torn unmarked shard": Case(_cache_damage("torn-unmarked"), 0,
        r"complete$", _store_restored),
    "teacher-cache verify=true redoes a flipped shard": Case(_cache_damage("flipped"), 0,
        r"complete$", _store_restored),
    "resumed teacher-cache counts what was cached": Case(_cache_damage("two-unmarked"), 0,
        r"complete$", lambda w, tmp, output: _counted(w, tmp, output)),
    "TSV header naming other columns": Case(_misnamed_tsv_header, 2,
        r"^error: .*de\.tsv:1: a TSV file needs a header line naming its columns \(english, non_english\); "
        r"its first line has: 'english_sentence', 'german_sentence'$", _nothing_prepared),
    "unexpected exception": Case(lambda w, tmp: ["prepare", f"out_dir={tmp / 'p'}"], 1,
        r"^error: prepare: unexpected FileNotFoundError: .* \(file /data/somewhere/pairs\.tsv\); "
        r"rerun with --debug \(or MIMO_DEBUG=1\) for the traceback$", patch=_missing_file_deep_inside),
    "show-config takes the command's name": Case(lambda w, tmp: ["show-config", "teacher-cache"], 0, r"^}$"),
    "finished run: no checkpoint, readable weights": Case(_finished_run, 0, r"stage 1: \d+ steps done",
                                                           _finished_cleanly),
    "garbage cached eval embeddings": Case(_garbage_embeddings, 2,
        r"^error: .*sample\.query\.\w+\.npy: cached embeddings are unreadable \(\w+\); delete the file to encode again",
        _old_report_and_config_kept),
}


def _counted(w, tmp, output):
    assert "40 texts, 16 already cached" in output, output  # shard 0 only: 1 and 2 lost their markers
    _store_restored(w, tmp, output)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_table(world, tmp_path, monkeypatch, name):
    case = CASES[name]
    argv = case.arrange(world, tmp_path)
    if case.patch:
        case.patch(monkeypatch)
    result = cli(argv, env=case.env)
    output = result.output
    assert result.exit_code == case.status, output
    assert "Traceback" not in output and not isinstance(result.exception, (MimoError, AssertionError)), output
    lines = output.strip().splitlines()
    assert re.search(case.message, lines[-1]), lines[-1]
    if case.status:
        assert sum(line.startswith("error:") for line in lines) == 1, output
    case.check(world, tmp_path, output)


def test_debug_shows_the_traceback(monkeypatch, tmp_path):
    import mimo_cli.main as cli_module
    import pipeline.prepare

    def boom(*_a, **_k):
        raise ValueError("something deep went wrong")

    monkeypatch.setattr(pipeline.prepare, "run_prepare", boom)
    monkeypatch.setitem(cli_module.DEBUG, "on", False)  # --debug below sets it; restored afterwards
    plain = cli(["prepare", f"out_dir={tmp_path / 'p'}"])
    assert plain.exit_code == 1 and "unexpected ValueError: something deep went wrong (at " in plain.output
    for argv, env in ((["--debug", "prepare"], None), (["prepare"], {"MIMO_DEBUG": "1"})):
        result = cli([*argv, f"out_dir={tmp_path / 'p'}"], env=env)
        assert isinstance(result.exception, ValueError)  # raised, not turned into a line: the traceback shows


# ---- fuzz: every reader, truncated and flipped ------------------------------------------------------

def _mutations(data: bytes, seed: int, n: int = 6):
    """Seeded: half truncations (to 0 and random lengths), half single-bit flips."""
    rng = random.Random(seed)
    out = [data[:0]] + [data[:rng.randrange(1, len(data))] for _ in range(n // 2 - 1)]
    for _ in range(n - len(out)):
        flipped = bytearray(data)
        flipped[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        out.append(bytes(flipped))
    return out


def _reference_tsv(data: bytes):
    """What the TSV bytes mean, by the format's rules: a header naming english and non_english, then
    rows of as many fields; anything else is an error (None)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return {"english": [], "non_english": []}
    header = lines[0].split("\t")
    if "english" not in header or "non_english" not in header:
        return None
    out = {"english": [], "non_english": []}
    for line in lines[1:]:
        fields = line.split("\t")
        if not line.strip() or len(fields) != len(header):
            return None
        out["english"].append(fields[header.index("english")])
        out["non_english"].append(fields[header.index("non_english")])
    return out


def _reference_jsonl(data: bytes):
    try:
        rows = [json.loads(line) for line in data.decode("utf-8").split("\n") if line.strip()]
    except (UnicodeDecodeError, ValueError):
        return None
    out = {"english": [], "non_english": []}
    for row in rows:
        if not isinstance(row, dict) or any(not isinstance(row.get(c), str) for c in out):
            return None
        for c in out:
            out[c].append(row[c])
    return out


def _fuzz_material(world, tmp):
    """kind -> (file name, valid bytes, read(path) -> comparable result, reference(bytes) -> result or None)."""
    from eval.encoders import Embedder, _save
    from pipeline.cache_read import TeacherTargets
    from pipeline.outputs import write_table
    from pipeline.readers import read_columns
    from pipeline.teacher_cache import read_worklists
    from trainer.checkpoint import read_checkpoint, save_checkpoint

    pairs = {"english": [f"Sentence {i}, über alles." for i in range(30)], "non_english": [f"Satz {i}." for i in range(30)]}
    tsv = ("english\tnon_english\n" + "".join(f"{e}\t{x}\n" for e, x in zip(*pairs.values()))).encode()
    jsonl = "".join(json.dumps({"english": e, "non_english": x}, ensure_ascii=False) + "\n"
                    for e, x in zip(*pairs.values())).encode()
    write_table(pa.table(pairs), tmp / "p.parquet")
    write_table(pq.read_table(world.wl), tmp / "w.parquet")  # as prepare writes it (page checksums)
    original = read_worklists([world.wl])
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    (tmp / "ck").mkdir()
    save_checkpoint(tmp / "ck", 7, model, optimizer, scheduler)
    embedder = Embedder.__new__(Embedder)
    embedder.encoder = SimpleNamespace(dim=8)
    vectors = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    _save(tmp / "e.npy", vectors)

    def read_store(path):  # the store is a folder: the mutated file is its first vectors shard
        store = path.parent / "store.zarr"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(world.small, store)
        shard_file(store, 0).write_bytes(path.read_bytes())
        # verify=True (the stages' verify_cache=true): without it a flipped bit of a same-size shard is
        # read as it is (documented: the memory-mapped reader compares no checksum by default)
        targets = TeacherTargets(str(store), verify=True)
        return targets.fetch(np.arange(40)).numpy().tobytes()  # locations: rows of the first segment

    def checkpoint_values(path):
        state = read_checkpoint(path)
        return state["step"], [t.tolist() for t in state["student"].values()], state["blake2b"]

    ck = (tmp / "ck/checkpoint.pt").read_bytes()
    return {
        "tsv": ("p.tsv", tsv, lambda p: read_columns(p, ("english", "non_english"), header=True), _reference_tsv),
        "jsonl": ("p.jsonl", jsonl, lambda p: read_columns(p, ("english", "non_english")), _reference_jsonl),
        "parquet": ("p.parquet", (tmp / "p.parquet").read_bytes(),
                    lambda p: read_columns(p, ("english", "non_english")), lambda b: pairs),
        "worklist": ("w.parquet", (tmp / "w.parquet").read_bytes(), lambda p: read_worklists([p]).to_pydict(),
                     lambda b: original.to_pydict()),
        "store chunk": ("chunk", shard_file(world.small, 0).read_bytes(), read_store,
                        lambda b: TeacherTargets(str(world.small)).fetch(
                            np.arange(40)).numpy().tobytes()),
        "checkpoint": ("checkpoint.pt", ck, checkpoint_values, lambda b: checkpoint_values(tmp / "ck/checkpoint.pt")),
        "cached embeddings": ("e.npy", (tmp / "e.npy").read_bytes(),
                              lambda p: embedder._cached(p, 20).tobytes(), lambda b: vectors.tobytes()),
    }


def test_fuzz_readers_one_line_error_or_the_true_result(world, tmp_path):
    material = _fuzz_material(world, tmp_path)
    outcomes = {}
    for seed, (kind, (name, data, read, reference)) in enumerate(material.items()):
        place = tmp_path / "fuzz" / kind.replace(" ", "-")
        place.mkdir(parents=True)
        path = place / name
        if name == "e.npy":  # the checksum beside the cached embeddings travels with them
            shutil.copy(tmp_path / "e.npy.blake2b", place / "e.npy.blake2b")
        path.write_bytes(data)
        assert read(path) == reference(data), kind  # the unmutated file reads back as itself
        for i, mutated in enumerate(_mutations(data, seed)):
            path.write_bytes(mutated)
            expected = reference(mutated)
            try:
                got = read(path)
            except MimoError as err:
                assert "\n" not in str(err) and str(path.name) in str(err) or "store.zarr" in str(err), (kind, i, err)
                outcomes[kind, i] = "error"
                continue
            # no error: the result must be exactly what these bytes mean (for binary formats: the original)
            assert expected is not None and got == expected, (kind, i, "silently different result")
            outcomes[kind, i] = "same"
    assert len(outcomes) == 7 * 6
    assert sum(v == "error" for v in outcomes.values()) >= 7 * 3  # truncations of binary files never read as data
