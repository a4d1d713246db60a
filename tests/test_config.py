"""Configs: paper defaults, file then overrides, unknown keys and wrong types refused, every file loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mimo_cli.main import _steps
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


def test_work_dir_derives_every_steps_paths(tmp_path):
    from eval.run import EvalConfig
    from pipeline.teacher_cache import TeacherCacheConfig
    from trainer.stage1 import Stage1Config
    from trainer.stage2 import Stage2Config

    path = tmp_path / "setup.toml"
    path.write_text('work_dir = "runs/x"\n[stage2]\nmethod = "lakda"\n')
    assert load_config(PrepareConfig, "prepare", path).out_dir == "runs/x/prepared"
    cache = load_config(TeacherCacheConfig, "teacher_cache", path)
    assert cache.worklists == ("runs/x/prepared/teacher_worklist.parquet",) and cache.store == "runs/x/teacher_cache.zarr"
    s1 = load_config(Stage1Config, "stage1", path)
    assert (s1.work_dir, s1.prepared, s1.cache, s1.out_dir) == (
        "runs/x", "runs/x/prepared", "runs/x/teacher_cache.zarr", "runs/x/stage1")
    s2 = load_config(Stage2Config, "stage2", path)
    assert (s2.prepared, s2.cache, s2.init, s2.out_dir) == (
        "runs/x/prepared", "runs/x/teacher_cache.zarr", "runs/x/stage1", "runs/x/stage2-lakda")
    # the method decides the default folder, as the Makefile's baselines name them
    assert load_config(Stage2Config, "stage2", path, ["method=infonce"]).out_dir == "runs/x/stage2-infonce"
    ev = load_config(EvalConfig, "eval", path)
    assert (ev.out_dir, ev.embeddings_dir) == ("runs/x/eval", "runs/x/eval/embeddings")
    # no file: the paper's folder, the dataclass defaults
    assert load_config(Stage1Config, "stage1") == Stage1Config()
    assert load_config(Stage2Config, "stage2") == Stage2Config()
    # a work_dir on the command line moves every derived path
    s1 = load_config(Stage1Config, "stage1", path, ["work_dir=/data/y"])
    assert (s1.prepared, s1.cache, s1.out_dir) == ("/data/y/prepared", "/data/y/teacher_cache.zarr", "/data/y/stage1")


def test_explicit_paths_override_the_work_dir(tmp_path):
    from trainer.stage2 import Stage2Config

    path = tmp_path / "setup.toml"
    path.write_text('work_dir = "runs/x"\n[stage2]\ncache = "s3://bucket/cache.zarr"\n')
    s2 = load_config(Stage2Config, "stage2", path, ["init=", "out_dir=elsewhere"])
    assert (s2.prepared, s2.cache, s2.init, s2.out_dir) == (
        "runs/x/prepared", "s3://bucket/cache.zarr", "", "elsewhere")  # init= : no Stage-1 start (the baselines)
    # a section's own work_dir wins over the file's
    path.write_text('work_dir = "runs/x"\n[stage2]\nwork_dir = "runs/z"\n')
    assert load_config(Stage2Config, "stage2", path).prepared == "runs/z/prepared"
    path.write_text('work_dir = 3\n')
    with pytest.raises(MimoError, match="work_dir must be a folder path"):
        load_config(Stage2Config, "stage2", path)
    # the resolved config.json holds the derived paths and loads back as it was
    cfg = load_config(Stage2Config, "stage2", None, ["work_dir=runs/q"])
    written = write_resolved_config(cfg, tmp_path, "stage2")
    assert load_config(Stage2Config, "stage2", written) == cfg and cfg.init == "runs/q/stage1"


def test_sweep_inherits_stage2(tmp_path):
    from trainer.sweep import SweepConfig

    path = tmp_path / "setup.toml"
    path.write_text('work_dir = "runs/x"\n[stage2]\nbatch_size = 64\nmini_batch_size = 16\ncontrastive_group_size = 0\nepochs = 3\nlam = 0.5\n'
                    '[sweep]\nlambdas = [0.0, 1.0]\n[sweep.stage2]\nepochs = 2\n')
    sweep = load_config(SweepConfig, "sweep", path)
    assert sweep.out_dir == "runs/x/sweep" and sweep.lambdas == (0.0, 1.0)
    s2 = sweep.stage2
    assert (s2.batch_size, s2.mini_batch_size, s2.lam) == (64, 16, 0.5)  # from [stage2]
    assert s2.epochs == 2  # [sweep.stage2] lists what differs
    assert (s2.prepared, s2.cache, s2.init) == ("runs/x/prepared", "runs/x/teacher_cache.zarr", "runs/x/stage1")
    assert load_config(SweepConfig, "sweep", path, ["stage2.epochs=5"]).stage2.epochs == 5
    path.write_text('[stage2]\nmethod = "xlco"\n')
    with pytest.raises(MimoError, match="a lambda sweep runs method=mimo"):
        load_config(SweepConfig, "sweep", path)


@pytest.mark.parametrize("name, work", [("sample.toml", "work/sample"), ("sample-minilm.toml", "work/sample-minilm"),
                                        ("paper.toml", "work/paper")])
def test_setup_files_keep_their_paths(name, work):
    """The setups name their folder once; the paths the Makefile and the eval models rely on stay."""
    from trainer.stage1 import Stage1Config
    from trainer.stage2 import Stage2Config
    from trainer.sweep import SweepConfig

    path = {p.name: p for p in CONFIGS}[name]
    assert load_config(PrepareConfig, "prepare", path).out_dir == f"{work}/prepared"
    s1 = load_config(Stage1Config, "stage1", path)
    assert (s1.prepared, s1.cache, s1.out_dir) == (f"{work}/prepared", f"{work}/teacher_cache.zarr", f"{work}/stage1")
    s2 = load_config(Stage2Config, "stage2", path)
    assert (s2.init, s2.out_dir) == (f"{work}/stage1", f"{work}/stage2-mimo")
    for method in ("infonce", "xlco", "lakda"):  # `make baselines`
        assert load_config(Stage2Config, "stage2", path, [f"method={method}", "init="]).out_dir == f"{work}/stage2-{method}"
    sweep = load_config(SweepConfig, "sweep", path)
    assert sweep.out_dir == f"{work}/sweep" and sweep.stage2.init == f"{work}/stage1"
    assert (sweep.stage2.batch_size, sweep.stage2.contrastive_group_size) == (s2.batch_size, s2.contrastive_group_size)


def test_show_config_shows_the_resolved_paths():
    from typer.testing import CliRunner

    from mimo_cli.main import app

    path = {p.name: p for p in CONFIGS}["sample.toml"]
    result = CliRunner().invoke(app, ["show-config", "stage2", "--config", str(path), "method=xlco", "init="])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["work_dir"], shown["prepared"], shown["cache"], shown["init"], shown["out_dir"]) == (
        "work/sample", "work/sample/prepared", "work/sample/teacher_cache.zarr", "", "work/sample/stage2-xlco")


def test_the_cli_makes_openmp_threads_sleep_at_barriers_unless_told_otherwise():
    """`mimo` sets OMP_WAIT_POLICY=PASSIVE before torch loads libgomp (spinning threads doubled a step's
    CPU on a shared machine); a value already in the environment is kept."""
    import os
    import subprocess
    import sys

    code = "import os, mimo_cli.main, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "ACTIVE"


@pytest.mark.parametrize("name, work", [("sample.toml", "work/sample"), ("sample-minilm.toml", "work/sample-minilm")])
def test_the_demos_jobs_are_the_chain_each_step_once(name, work):
    """`make demo` runs the chain as jobs side by side (Makefile): every step once, every eval model encoded
    by exactly one `mimo embed` job and every sweep lambda but [stage2]'s own trained by one `sweep only=` job,
    each job on one thread, so the figures do not depend on which jobs ran beside it."""
    import re
    import subprocess

    from eval.run import EvalConfig
    from tests.conftest import REPO
    from trainer.stage2 import Stage2Config
    from trainer.sweep import SweepConfig

    config = f"configs/{name}"
    lines = subprocess.run(["make", "-n", "-j1", "--no-print-directory", "demo-eval", f"CONFIG={config}", f"WORK={work}",
                            "MIMO=mimo"], cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()
    steps = [re.sub(r"^(\S+=\S+ )*mimo ", "", line) for line in lines]
    assert all(line.startswith("OMP_NUM_THREADS=1 ") for line, step in zip(lines, steps)
               if step.startswith(("stage1", "stage2", "sweep", "embed")))
    assert len(set(steps)) == len(steps)  # each step once
    assert steps[:2] == [f"prepare --config {config}", f"teacher-cache --config {config}"]
    assert steps[-1] == f"eval --config {config} sweep_dir={work}/sweep"
    assert {s for s in steps if s.startswith("stage2")} == {f"stage2 --config {config}", *(
        f"stage2 --config {config} method={m} init= out_dir={work}/stage2-{m}" for m in ("infonce", "xlco", "lakda"))}
    stage2_lam = load_config(Stage2Config, "stage2", REPO / config).lam  # the MIMO run: the sweep reuses it
    sweep = load_config(SweepConfig, "sweep", REPO / config)
    assert {float(s.split("only=")[1]) for s in steps if "only=" in s} == set(sweep.lambdas) - {stage2_lam}
    embedded = [m.strip('"') for s in steps if s.startswith("embed") for m in re.findall(r"--model (\S+)", s)]
    models = load_config(EvalConfig, "eval", REPO / config).models
    want = [m.model for m in models] + [f"{work}/sweep/lambda-{lam:g}" for lam in sweep.lambdas if lam != stage2_lam]
    assert sorted(embedded) == sorted(want)
