"""Configs: paper defaults, file then overrides, unknown keys and wrong types refused, every file loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import _steps
from pipeline.config import STEPS, load_config, write_resolved_config
from pipeline.errors import MimoError
from pipeline.prepare import PrepareConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_defaults_are_the_papers():
    cfg = PrepareConfig()
    s1, s2 = cfg.stage1, cfg.stage2
    assert (s1.min_chars, s1.max_chars, s1.max_length_ratio, s1.cap_per_language) == (10, 512, 3.0, 500_000)
    assert s1.dedup_english and s1.teacher_max_length == 256 and s2.teacher_max_length == 512
    assert len(s1.hub_datasets) == 8 and len(s1.languages) == len(s2.languages) == 14
    assert s2.hub_id == "unicamp-dl/mmarco"


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[prepare]\nseed = 3\n[prepare.stage1]\nmin_chars = 4\nlanguages = ["en", "de"]\n')
    cfg = load_config(PrepareConfig, "prepare", path, ["stage1.min_chars=6", "stage2.languages=en,fr", "seed=9"])
    assert cfg.seed == 9 and cfg.stage1.min_chars == 6 and cfg.stage1.languages == ("en", "de")
    assert cfg.stage2.languages == ("en", "fr")
    cfg = load_config(PrepareConfig, "prepare", None, ['stage1.languages=["en","ja"]', "stage1.dedup_english=false",
                                                       "stage1.max_length_ratio=2.5"])
    assert cfg.stage1.languages == ("en", "ja") and cfg.stage1.dedup_english is False
    assert cfg.stage1.max_length_ratio == 2.5


@pytest.mark.parametrize("overrides, message", [
    (["stage1.min_char=5"], "unknown config key 'stage1.min_char' in the command line \\(did you mean 'stage1.min_chars'\\?\\)"),
    (["stage1.min_chars=ten"], "config key 'stage1.min_chars' in the command line: expected int, got 'ten'"),
    (["stage1.dedup_english=maybe"], "expected bool"),
    (["stage1=3"], "expected a table of keys"),
    (["seed"], "is not of the form key=value"),
    (["stage1.cap_per_language=0"], "cap_per_language must be at least 1"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(MimoError, match=message):
        load_config(PrepareConfig, "prepare", None, overrides)


def test_bad_files(tmp_path):
    typed = tmp_path / "typed.toml"
    typed.write_text('[prepare.stage1]\nmin_chars = "10"\n')
    with pytest.raises(MimoError, match=r"config file .*typed.toml: expected int, got '10'"):
        load_config(PrepareConfig, "prepare", typed)
    section = tmp_path / "section.toml"
    section.write_text("[prepar]\nseed = 1\n")
    with pytest.raises(MimoError, match=r"unknown config key 'prepar'.*did you mean 'prepare'"):
        load_config(PrepareConfig, "prepare", section)
    broken = tmp_path / "broken.toml"
    broken.write_text("[prepare\n")
    with pytest.raises(MimoError, match="is not valid"):
        load_config(PrepareConfig, "prepare", broken)
    with pytest.raises(MimoError, match="does not exist"):
        load_config(PrepareConfig, "prepare", tmp_path / "missing.toml")


def test_resolved_config_loads_back(tmp_path):
    cfg = load_config(PrepareConfig, "prepare", None, ["seed=5", "stage2.max_pairs=10", "stage1.source=sample"])
    path = write_resolved_config(cfg, tmp_path, "prepare")
    assert json.loads(path.read_text())["_step"] == "prepare"
    assert load_config(PrepareConfig, "prepare", path) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    assert CONFIGS, "no config files found"
    steps = _steps()
    for step in STEPS:
        if step in steps:
            load_config(steps[step], step, path)


def test_stage1_data_paper_config_is_the_release_and_sample_stays_fair():
    configs = {p.name: p for p in CONFIGS}
    paper = load_config(PrepareConfig, "prepare", configs["paper.toml"]).stage1
    assert (paper.source, paper.legacy_repo, paper.chinese_subsets) == (
        "hub-legacy", "sentence-transformers/parallel-sentences", ("zh",))
    assert paper.dedup == "release" and paper.max_length_ratio_inclusive and paper.cap_per_language == 500_000
    sample = load_config(PrepareConfig, "prepare", configs["sample.toml"]).stage1
    assert (sample.source, sample.dedup, sample.max_length_ratio_inclusive) == ("sample", "fair", False)
    cfg = load_config(PrepareConfig, "prepare", None, ["stage1.dedup=release", "stage1.chinese_subsets=zh,zh-cn"])
    assert cfg.stage1.dedup == "release" and cfg.stage1.chinese_subsets == ("zh", "zh-cn")


def test_the_cli_makes_openmp_threads_sleep_at_barriers_unless_told_otherwise():
    """`mimo` sets OMP_WAIT_POLICY=PASSIVE before torch loads libgomp (spinning threads doubled a step's
    CPU on a shared machine); a value already in the environment is kept."""
    import os
    import subprocess
    import sys

    code = "import os, pipeline.cli, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "ACTIVE"
