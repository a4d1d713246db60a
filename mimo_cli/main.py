"""`mimo`: the one command line for every step (prepare, teacher cache, training, eval).

The top layer: it imports pipeline/, trainer/ and eval/, and nothing imports it. Longer than ~300 lines
for a reason: one command per step, each its help text and one library call; together they are the
one list of what `mimo` does.

Each command builds its step's frozen config (defaults = the paper's, then --config FILE, then
key=value overrides) and calls one library function. Bad input ends with a one-line `error:`
message and exit status 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

# OpenMP threads that wait at a barrier sleep instead of spinning (libgomp's default spins first): on a
# machine whose cores other jobs share, spinning threads burned up to twice the CPU of a step and slowed
# it (bench/RESULTS.md, "Where the demo's time goes"). Read once, when torch loads libgomp: set before
# any command imports torch; an OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click
import typer

from pipeline.config import config_to_dict, load_config
from pipeline.errors import MimoError

app = typer.Typer(
    help="MIMO: train multilingual retrievers from a cached English teacher (prepare -> teacher-cache -> "
    "stage1 -> stage2 -> eval). Every command takes --config FILE (.toml or .json) and key=value overrides; "
    "dotted keys reach nested settings (stage1.min_chars=5).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="TOML or JSON config file (e.g. configs/sample.toml).")
OVERRIDES_ARG = typer.Argument(None, help="key=value overrides, applied after the config file.", show_default=False)


DEBUG = {"on": False}  # --debug (or MIMO_DEBUG=1): tracebacks instead of one-line errors


def debugging() -> bool:
    return DEBUG["on"] or os.environ.get("MIMO_DEBUG", "") not in ("", "0", "false", "no")


def _where(err: BaseException) -> str:
    """The file an unexpected error is about (OSError names it), else the project source line it
    came from: what a one-line report needs to be acted on."""
    filename = getattr(err, "filename", None)
    if filename:
        return f" (file {filename})"
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if any(f"{os.sep}{pkg}{os.sep}" in f.filename for pkg in ("pipeline", "trainer", "eval", "mimo_cli"))]
    if ours:
        return f" (at {Path(ours[-1].filename).parent.name}/{Path(ours[-1].filename).name}:{ours[-1].lineno})"
    return ""


def one_line_errors(fn):
    """Turn MimoError into `error: <message>` on stderr and exit status 2 (no traceback); any other
    exception into `error: <step>: unexpected <kind>: <message> (file ...)`, exit status 1, with the
    traceback only under --debug or MIMO_DEBUG=1."""
    step = fn.__name__.rstrip("_").replace("_cmd", "").replace("_", "-")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MimoError as err:
            if debugging():
                raise
            typer.echo(f"error: {' '.join(str(err).splitlines())}", err=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            typer.echo(f"error: {step}: interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - the last line of defence: one line, not a traceback
            if debugging():
                raise
            message = " ".join(str(err).split())[:300] or "(no message)"
            typer.echo(f"error: {step}: unexpected {type(err).__name__}: {message}{_where(err)}; "
                       "rerun with --debug (or MIMO_DEBUG=1) for the traceback", err=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected error "
                                        "(also MIMO_DEBUG=1).")):
    """MIMO: train multilingual retrievers from a cached English teacher."""
    DEBUG["on"] = debug


def _steps():
    from pipeline.prepare import PrepareConfig
    from pipeline.teacher_cache import TeacherCacheConfig
    from trainer.stage1 import Stage1Config
    from trainer.stage2 import Stage2Config
    from eval.run import EvalConfig
    from trainer.sweep import SweepConfig

    return {"prepare": PrepareConfig, "teacher_cache": TeacherCacheConfig, "stage1": Stage1Config,
            "stage2": Stage2Config, "sweep": SweepConfig, "eval": EvalConfig}


@app.command()
@one_line_errors
def prepare(config: Optional[str] = CONFIG_OPTION, overrides: Optional[list[str]] = OVERRIDES_ARG):
    """Prepare Stage-1 pairs (OPUS filters), Stage-2 compositions (mMARCO round-robin) and the teacher's worklist.

    Sources per stage: hub (sentence-transformers parallel-sentences-*, unicamp-dl/mmarco), hub-legacy
    (Stage 1 as the authors' release reads it: sentence-transformers/parallel-sentences), local files,
    or the embedded sample (stage1.source=sample stage2.source=sample). Writes Parquet tables, reports and
    the resolved config.json into out_dir, atomically.
    """
    from pipeline.prepare import PrepareConfig, run_prepare

    cfg = load_config(PrepareConfig, "prepare", config, overrides or [])
    run_prepare(cfg, echo=typer.echo)


@app.command("teacher-cache")
@one_line_errors
def teacher_cache(config: Optional[str] = CONFIG_OPTION, overrides: Optional[list[str]] = OVERRIDES_ARG):
    """Encode the teacher's worklist once into a sharded Zarr store (resumable, distributable).

    Queries get teacher.query_prompt, documents teacher.document_prompt. Run the same command again
    to resume after a kill; run it on N workers (torchrun, a SLURM array, or rank=i world_size=N)
    to split the shards. Texts already in the store under the same fingerprint are not encoded again.
    """
    from pipeline.teacher_cache import TeacherCacheConfig, run_teacher_cache

    cfg = load_config(TeacherCacheConfig, "teacher_cache", config, overrides or [])
    run_teacher_cache(cfg, echo=typer.echo)


@app.command("teacher-parity")
@one_line_errors
def teacher_parity(
    config: Optional[str] = CONFIG_OPTION,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    sample: int = typer.Option(64, help="How many worklist texts to compare (seeded sample)."),
    threshold: float = typer.Option(0.999, help="Exit 1 if any text's cosine is below this."),
):
    """Encode a sample of the worklist with the vLLM and the transformers backends; print the cosine per text.

    Run it on a GPU machine with the vllm extra before a bulk vLLM run: both backends get the same
    token ids (prompts, truncation, end token), so a low cosine points at the model runner itself.
    """
    import numpy as np

    from pipeline.teacher_cache import TeacherCacheConfig, read_worklists
    from pipeline.teacher_vllm import parity

    cfg = load_config(TeacherCacheConfig, "teacher_cache", config, overrides or [])
    worklist = read_worklists(cfg.worklists)
    pick = np.sort(np.random.default_rng(0).permutation(worklist.num_rows)[:sample])
    rows = worklist.take(pick)
    texts, roles = rows["text"].to_pylist(), rows["role"].to_pylist()
    cos = parity(cfg.teacher, texts, roles, rows["max_length"].to_pylist())
    for c, role, text in zip(cos, roles, texts):
        typer.echo(f"{c:.6f}  {role:8s}  {text[:70]!r}")
    typer.echo(f"cosine vLLM vs transformers over {len(texts)} texts: min {cos.min():.6f}, mean {cos.mean():.6f}")
    if cos.min() < threshold:
        raise typer.Exit(1)


cache_app = typer.Typer(help="Inspect and check a teacher cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@one_line_errors
def cache_info_cmd(store: str = typer.Argument(..., help="Store path or URL.")):
    """Rows, dimension, dtype, shards done, texts by role and length, fingerprint, size."""
    from pipeline.cache_read import cache_info

    typer.echo(json.dumps(cache_info(store), indent=2, ensure_ascii=False))


@cache_app.command("verify")
@one_line_errors
def cache_verify_cmd(store: str = typer.Argument(..., help="Store path or URL.")):
    """Check every shard: done, checksum, no NaN/inf, no all-zero rows, norms near 1, unique keys."""
    from pipeline.cache_read import cache_verify

    problems = cache_verify(store)
    for line in problems:
        typer.echo(line)
    if problems:
        typer.echo(f"error: {store}: {len(problems)} problem(s) found", err=True)
        raise typer.Exit(1)
    typer.echo(f"{store}: ok")


@cache_app.command("export")
@one_line_errors
def cache_export_cmd(
    store: str = typer.Argument(..., help="Teacher cache store path or URL."),
    out_dir: str = typer.Argument(..., help="Output folder of the dataset (Parquet shards in data/, a dataset card)."),
    prepared: str = typer.Option(..., help="prepare's output directory (e.g. work/sample/prepared)."),
    stage: str = typer.Option("stage1", help="stage1: (text, label); stage2: (query, passage, label) of the MIMO pairs."),
    rows_per_shard: int = typer.Option(100_000, help="Rows per Parquet shard."),
):
    """The prepared pairs with their teacher vectors as a `datasets` dataset for sentence-transformers
    (a `label` column, as EmbedDistillLoss and MSELoss read it)."""
    from pipeline.cache_export import CacheExportConfig, run_cache_export

    cfg = CacheExportConfig(cache=store, prepared=prepared, out_dir=out_dir, stage=stage, rows_per_shard=rows_per_shard)
    run_cache_export(cfg, echo=typer.echo)


@app.command()
@one_line_errors
def stage1(config: Optional[str] = CONFIG_OPTION, overrides: Optional[list[str]] = OVERRIDES_ARG):
    """Stage 1: distill the cached teacher into the student on the prepared parallel pairs.

    Loss 1 - cos(psi(E_s(t_XX)), E_t(t_en)) with E_t from the teacher cache (the teacher is never
    loaded). Writes the student as a sentence-transformers folder (out_dir/model), psi beside it,
    metrics.jsonl and the resolved config; run again to resume from the last checkpoint.
    """
    from trainer import distributed
    from trainer.stage1 import Stage1Config, run_stage1

    cfg = load_config(Stage1Config, "stage1", config, overrides or [])
    run_stage1(cfg, echo=typer.echo)
    distributed.shutdown()


@app.command()
@one_line_errors
def stage2(config: Optional[str] = CONFIG_OPTION, overrides: Optional[list[str]] = OVERRIDES_ARG):
    """Stage 2 (method=mimo: lambda * XLCO + (1 - lambda) * Distill) or a baseline (xlco, infonce, lakda).

    Global batch by gradient caching over mini-batches; teacher targets from the cache; starts from
    the Stage-1 output named by `init` (student and psi). Run again to resume.
    """
    from trainer import distributed
    from trainer.stage2 import Stage2Config, run_stage2

    cfg = load_config(Stage2Config, "stage2", config, overrides or [])
    run_stage2(cfg, echo=typer.echo)
    distributed.shutdown()


@app.command()
@one_line_errors
def sweep(config: Optional[str] = CONFIG_OPTION, overrides: Optional[list[str]] = OVERRIDES_ARG):
    """Stage 2 (MIMO) once per lambda (default 0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0) from one cache and one
    Stage-1 output; results collected in out_dir/sweep.json and sweep.csv. Nested stage2.* keys set the runs."""
    from trainer import distributed
    from trainer.sweep import SweepConfig, run_sweep

    cfg = load_config(SweepConfig, "sweep", config, overrides or [])
    run_sweep(cfg, echo=typer.echo)
    distributed.shutdown()


@app.command("eval")
@one_line_errors
def eval_(config: Optional[str] = CONFIG_OPTION, overrides: Optional[list[str]] = OVERRIDES_ARG):
    """Evaluate models on mixed-language (MLIR) and monolingual benchmarks with FAISS; write the report.

    Models ([[eval.models]]): training outputs, Hugging Face / sentence-transformers models with their
    prompts, or teacher:<cache store>. Benchmarks ([[eval.benchmarks]]): sample, local folders, the
    authors' files (mimo-release), or belebele, xquad, mlqa, multieup, neuclir22, neuclir23, miracl
    from the hub. Embeddings are cached
    per model in embeddings_dir; out_dir gets report.md, results.csv, results.json and PNG plots.
    """
    from eval.run import EvalConfig, run_eval

    cfg = load_config(EvalConfig, "eval", config, overrides or [])
    run_eval(cfg, echo=typer.echo)


@app.command()
@one_line_errors
def embed(
    models: list[str] = typer.Option(..., "--model", "-m", help="An eval model: its report name or its `model` "
                                     "string (repeat for several)."),
    config: Optional[str] = CONFIG_OPTION,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
):
    """Encode the benchmarks for the named eval models into embeddings_dir, where `mimo eval` reads them back.

    `make demo` runs one per model as soon as the model is trained, beside the other training runs; the
    vectors are the ones the eval itself would compute.
    """
    from eval.run import EvalConfig, run_embed

    cfg = load_config(EvalConfig, "eval", config, overrides or [])
    run_embed(cfg, models, echo=typer.echo)


@app.command()
@one_line_errors
def push(
    folder: str = typer.Argument(..., help="A training output (e.g. work/paper/stage2-mimo) or its model/ folder."),
    repo_id: str = typer.Argument(..., help="The hub repository, e.g. you/mimo-xlmr-large."),
    private: bool = typer.Option(False, help="Create the repository as private."),
    revision: Optional[str] = typer.Option(None, help="Branch to push to (default: main)."),
):
    """Upload an exported student with its model card to the Hugging Face hub (needs `hf auth login` or HF_TOKEN)."""
    from pipeline.model_card import push_to_hub

    typer.echo(f"pushed {folder} to {repo_id}: {push_to_hub(folder, repo_id, private, revision)}")


@app.command("show-config")
@one_line_errors
def show_config(
    step: str = typer.Argument(..., help="Step whose config to show: prepare, teacher_cache, stage1, stage2, sweep, eval."),
    config: Optional[str] = CONFIG_OPTION,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
):
    """Print the resolved config of a step as JSON (defaults, then --config, then overrides)."""
    steps = _steps()
    step = step.replace("-", "_")  # the command's own name (teacher-cache) or the config's (teacher_cache)
    if step not in steps:
        raise MimoError(f"unknown step {step!r} (known: {', '.join(steps)})")
    cfg = load_config(steps[step], step, config, overrides or [])
    typer.echo(json.dumps(config_to_dict(cfg), indent=2, ensure_ascii=False))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
