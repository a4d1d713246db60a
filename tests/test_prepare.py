"""The `mimo prepare` command: outputs and schemas, byte-identical reruns, one-line errors, no half output."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from mimo_cli.main import app
from pipeline.stage1_data import STAGE1_SCHEMA
from pipeline.stage2_data import STAGE2_SCHEMA
from pipeline.worklist import WORKLIST_SCHEMA, text_id
from tests.conftest import make_mmarco_repo

LANGS = ("en", "de", "fr")


def _inputs(tmp_path):
    de = tmp_path / "de.tsv"
    de.write_text("english\tnon_english\n" + "".join(
        f"Sentence number {i} is here.\tSatz Nummer {i} ist hier.\n" for i in range(12)), encoding="utf-8")
    fr = tmp_path / "fr.jsonl"
    fr.write_text("".join(json.dumps({"english": f"Another sentence {i}, friend.",
                                      "non_english": f"Une autre phrase {i}, ami."}) + "\n" for i in range(12)))
    queries = {lang: {str(q): f"{lang} question {q}?" for q in range(10)} for lang in LANGS}
    passages = {lang: {str(p): f"{lang} passage {p}." for p in range(10)} for lang in LANGS}
    mmarco = make_mmarco_repo(tmp_path / "mmarco", LANGS, queries, passages,
                              [(str(i), str(i), str((i + 1) % 10)) for i in range(10)])
    return [f"stage1.local_files=de:{de},fr:{fr}", "stage1.source=local", "stage1.languages=en,de,fr",
            "stage2.source=local", f"stage2.root={mmarco}", "stage2.languages=en,de,fr"]


def _prepare(args):
    return CliRunner().invoke(app, ["prepare", *args])


def test_prepare_writes_every_output_with_its_schema(tmp_path):
    out = tmp_path / "prepared"
    result = _prepare([*_inputs(tmp_path), f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    assert "stage 1: 24 pairs" in result.output and "mimo: 6 ordered language pairs" in result.output
    assert pq.read_schema(out / "stage1/pairs.parquet").equals(STAGE1_SCHEMA)
    for name in ("mimo", "infonce", "lakda"):
        assert pq.read_schema(out / f"stage2/{name}.parquet").equals(STAGE2_SCHEMA)
    worklist = pq.read_table(out / "teacher_worklist.parquet")
    assert worklist.schema.equals(WORKLIST_SCHEMA)
    ids = set(worklist.column("text_id").to_pylist())
    # every teacher id a training table refers to is in the worklist, and nothing else is
    referred = set(pq.read_table(out / "stage1/pairs.parquet").column("teacher_id").to_pylist())
    mimo = pq.read_table(out / "stage2/mimo.parquet")
    referred |= set(mimo.column("q_teacher_id").to_pylist()) | set(mimo.column("p_teacher_id").to_pylist())
    assert ids == referred and len(ids) == worklist.num_rows == 24 + 10 + 10
    rows = {r["text_id"]: r for r in worklist.to_pylist()}
    q = rows[text_id("query", 512, "en question 3?")]
    assert (q["role"], q["max_length"]) == ("query", 512)
    assert rows[text_id("document", 256, "Sentence number 3 is here.")]["role"] == "document"
    config = json.loads((out / "config.json").read_text())
    assert config["_step"] == "prepare" and config["stage1"]["source"] == "local"
    report = json.loads((out / "stage1/report.json").read_text())
    # 24 distinct English anchors, each used by exactly one of en, de, fr
    assert sum(c["kept"] for c in report["per_language"].values()) == 24


def test_same_inputs_and_seed_give_identical_bytes(tmp_path):
    args = _inputs(tmp_path)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert _prepare([*args, f"out_dir={out}"]).exit_code == 0
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file() and p.name != "config.json")
    assert len(files) == 7
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    assert _prepare([*args, f"out_dir={tmp_path / 'c'}", "seed=1"]).exit_code == 0
    assert (tmp_path / "c/stage2/mimo.parquet").read_bytes() != (outs[0] / "stage2/mimo.parquet").read_bytes()


def test_bad_input_gives_one_line_and_no_output(tmp_path):
    args = _inputs(tmp_path)
    out = tmp_path / "prepared"
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"english\tnon_english\nfine sentence here\tfeiner Satz hier\n\xffbroken\tkaputt\n")
    result = _prepare([*args, f"stage1.local_files=de:{bad}", f"out_dir={out}"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith(f"error: {bad}:3: invalid UTF-8")
    assert not out.exists() and not list(tmp_path.glob(".prepared*"))


def test_a_failed_rerun_keeps_the_previous_output(tmp_path):
    args = _inputs(tmp_path)
    out = tmp_path / "prepared"
    assert _prepare([*args, f"out_dir={out}"]).exit_code == 0
    before = (out / "stage2/mimo.parquet").read_bytes()
    result = _prepare([*args, f"out_dir={out}", f"stage2.root={tmp_path / 'nowhere'}"])
    assert result.exit_code == 2 and "triples.train.ids.small.tsv: file not found" in result.output
    assert (out / "stage2/mimo.parquet").read_bytes() == before


def test_out_dir_that_is_not_a_prepare_output_is_never_replaced(tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "teacher_cache.zarr").mkdir()
    (other / "notes.txt").write_text("keep me")
    args = _inputs(tmp_path)
    result = _prepare([*args, f"out_dir={other}"])
    assert result.exit_code == 2 and "is not an earlier prepare output: refusing to replace it" in result.output
    assert (other / "notes.txt").read_text() == "keep me" and (other / "teacher_cache.zarr").is_dir()
    for bad in (".", "/"):
        result = _prepare([*args, f"out_dir={bad}"])
        assert result.exit_code == 2 and result.output.startswith("error: out_dir")
