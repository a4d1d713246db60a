"""bench/paper_scale.py: its folders are read by `prepare` exactly as the hub repos would be."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq

from pipeline.config import load_config
from pipeline.prepare import PrepareConfig, run_prepare
from tests.conftest import REPO


def test_generated_data_prepares_with_the_counts_it_was_built_with(tmp_path, monkeypatch):
    import datasets

    # datasets reads HF_DATASETS_CACHE once, at import, and keys a local folder by its name: a
    # private cache keeps another run's same-named folders out
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    out = tmp_path / "ps"
    args = [sys.executable, str(REPO / "bench/paper_scale.py"), "--out", str(out), "--scale", "0.00005"]
    subprocess.run(args, check=True, capture_output=True)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    subprocess.run(args, check=True, capture_output=True)  # seeded: the same bytes again
    assert first == {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    europarl_de = pq.read_table(out / "parallel-sentences-europarl/en-de/train-00000-of-00001.parquet")
    assert europarl_de.column_names == ["english", "non_english"] and europarl_de.num_rows == 95
    assert (out / "parallel-sentences-talks/en-zh-cn").is_dir() and not (out / "parallel-sentences-europarl/en-ja").exists()

    cfg = load_config(PrepareConfig, "prepare", str(out / "prepare.toml"), [])
    run_prepare(cfg, echo=lambda *_: None)
    report = json.loads((out / "prepared/stage1/report.json").read_text())["per_language"]
    # de is in all eight corpora: 95 + 3 + 30 + 15 + 125 + 18 + 5 + 22 raw pairs at this scale
    assert report["de"]["input"] == 313
    dropped = sum(report[lang][f] for lang in report for f in ("empty", "too_short", "too_long", "length_ratio"))
    raw = sum(report[lang]["input"] for lang in report if lang != "en")
    assert 0.02 < dropped / (raw * 2) < 0.06  # ~4% of pairs fail a filter (English pairs count the English side)
    assert all(report[lang]["duplicate_english"] > 0 for lang in report)  # shared English sides
    stage2 = json.loads((out / "prepared/stage2/report.json").read_text())
    assert stage2["pairs_in"] == stage2["pairs_out"] == 27  # 532,761 x 0.00005


def test_stage1_streamed_equals_the_in_memory_path(tmp_path, monkeypatch):
    """Streamed 7 rows at a time, Stage 1 gives the bytes and report of the plain in-memory path
    (which reads the hub layout through `datasets`)."""
    import pipeline.stage1_stream as stage1_stream
    from pipeline.outputs import write_table
    from pipeline.stage1_data import prepare_stage1

    import datasets

    # datasets reads HF_DATASETS_CACHE once, at import, and keys a local folder by its name: a
    # private cache keeps another run's same-named folders out
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "ps"
    subprocess.run([sys.executable, str(REPO / "bench/paper_scale.py"), "--out", str(out), "--scale", "0.00005",
                    "--only", "stage1"], check=True, capture_output=True)
    cfg = load_config(PrepareConfig, "prepare", str(out / "prepare.toml"), []).stage1
    plain, report = prepare_stage1(cfg, 3, None, stream=False)
    monkeypatch.setattr(stage1_stream, "BATCH_ROWS", 7)
    streamed, again = prepare_stage1(cfg, 3, None)
    write_table(plain, tmp_path / "a.parquet")
    write_table(streamed, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes() and report == again
    assert plain.num_rows > 1000


def test_streamed_stage1_says_its_progress(tmp_path, monkeypatch):
    """A long pass prints where it is (at most one line per PROGRESS_SECONDS); a short run prints nothing."""
    import pipeline.stage1_stream as stage1_stream
    from pipeline.stage1_data import prepare_stage1

    out = tmp_path / "ps"
    subprocess.run([sys.executable, str(REPO / "bench/paper_scale.py"), "--out", str(out), "--scale", "0.00005",
                    "--only", "stage1"], check=True, capture_output=True)
    cfg = load_config(PrepareConfig, "prepare", str(out / "prepare.toml"), []).stage1
    quiet: list[str] = []
    table, _ = prepare_stage1(cfg, 3, None, echo=quiet.append)
    assert quiet == []
    monkeypatch.setattr(stage1_stream, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(stage1_stream, "BATCH_ROWS", 500)
    lines: list[str] = []
    again, _ = prepare_stage1(cfg, 3, None, echo=lines.append)
    assert again.equals(table)
    assert any("stage 1: filtering" in line and "europarl" in line for line in lines)
    assert any("drafting among" in line for line in lines) and any("reading their texts" in line for line in lines)
    assert any("texts of the chosen pairs" in line for line in lines)
