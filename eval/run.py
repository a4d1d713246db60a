"""The eval step: benchmarks x models -> FAISS retrieval -> the paper's metrics -> report and plots.

For each model, every benchmark's queries and corpus are embedded once (cached on disk, see
eval/encoders.py) and then reused by retrieval, MRC and the alignment-uniformity analysis.
MLIR benchmarks search one index over the mixed-language corpus (nDCG@20); monolingual ones
(MIRACL) one index per language (nDCG@10, averaged over languages, as MTEB does). Every MLIR
benchmark also gets the release's language-fairness metrics where it supports them (MRC@k over
parallel queries, PEER@k over queries with relevant documents in several languages: eval/fairness.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from eval.benchmark import Benchmark
from eval.encoders import Embedder, ModelSpec
from pipeline.config import WORK_FOLDER, write_resolved_config
from eval.release import RELEASE_REPO
from pipeline.errors import MimoError

SCORINGS = ("trec_eval", "release")
SOURCES = ("sample", "local", "mimo-release", "belebele", "xquad", "mlqa", "multieup", "neuclir22", "neuclir23", "miracl")


@dataclass(frozen=True)
class BenchmarkSpec:
    source: str = "sample"  # one of SOURCES
    name: str = ""  # the column in the report (default: the source)
    path: str = ""  # sample: the sample folder; local: the benchmark folder; hub sources: a hub id or a local copy;
    # mimo-release: a local MMLIR/<name>_test folder or hub id + folder (yjoonjang/mlir-benchmarks/MMLIR/Belebele_test)
    revision: str = "main"
    languages: tuple[str, ...] = ()  # default: the paper's subset
    split: str = ""  # default: the split the paper evaluates
    setting: str = "mlir"  # local benchmarks only: mlir (one mixed corpus) or monolingual (per-language corpora)
    analysis: bool = False  # alignment and uniformity on this (parallel) benchmark (Belebele in the paper)
    # trec_eval: graded gains, out-of-corpus judgments and positive-less queries kept (pytrec_eval, MTEB);
    # release: as the authors' scripts score (binary, both dropped; NeuCLIR documents "title\ntext")
    scoring: str = "trec_eval"

    def __post_init__(self):
        if self.source not in SOURCES:
            raise MimoError(f"eval benchmark source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if self.source in ("local", "mimo-release") and not self.path:
            raise MimoError(f"eval benchmark {self.name or self.source!r}: source {self.source} needs 'path'")
        if self.scoring not in SCORINGS:
            raise MimoError(f"eval benchmark {self.label!r}: scoring must be one of {', '.join(SCORINGS)}, not {self.scoring!r}")

    @property
    def label(self) -> str:
        return self.name or self.source


@dataclass(frozen=True)
class EvalConfig:
    WORK_PATHS: ClassVar[dict[str, str]] = {"out_dir": WORK_FOLDER["eval"],
                                            "embeddings_dir": WORK_FOLDER["eval"] + "/embeddings"}

    work_dir: str = "work/paper"  # the setup's work folder (pipeline/config.py): out_dir, embeddings_dir derive from it
    out_dir: str = "work/paper/eval"
    embeddings_dir: str = "work/paper/eval/embeddings"  # reused across eval runs (one folder per model)
    models: tuple[ModelSpec, ...] = ()
    # the paper's: the authors' MLIR files (eval/release.py), NeuCLIR scored as the release scores it, MIRACL
    benchmarks: tuple[BenchmarkSpec, ...] = (
        *(BenchmarkSpec("mimo-release", name=name, path=f"{RELEASE_REPO}/MMLIR/{folder}", analysis=name == "belebele")
          for name, folder in (("belebele", "Belebele_test"), ("mlqa", "MLQA_test"), ("xquad", "XQuAD_test"),
                               ("multieup", "MultiEup_test"))),
        BenchmarkSpec("neuclir22", scoring="release"), BenchmarkSpec("neuclir23", scoring="release"), BenchmarkSpec("miracl"))
    sweep_dir: str = ""  # a `mimo sweep` output: its runs are evaluated too, and the lambda curve drawn
    index: str = "flat"  # flat (exact inner product), ivf or hnsw (approximate: recall against exact is reported)
    nlist: int = 0  # ivf lists; 0 = 4 sqrt(corpus size)
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 128
    depth: int = 100  # documents retrieved per query (recall@100; nDCG@20 and MRC@10 use the top of it)
    mrc_k: int = 10  # the headline MRC cut-off (Figure 4: mrc_mean, the radar)
    mrc_more_ks: tuple[int, ...] = (5, 20)  # further MRC cut-offs reported beside it (the release logs 5, 10 and 20)
    peer_ks: tuple[int, ...] = (20, 100)  # the release's PEER cut-offs (ranks past k count as k + 1)
    device: str = "auto"
    max_batch_tokens: int = 0  # 0: the device's default (as for the teacher cache)
    # auto: bf16 on GPU, float32 on CPU; autocast_bf16: bf16 matmuls on float32 weights (2x on CPUs with bf16 units)
    compute_dtype: str = "auto"
    plots: bool = True

    def __post_init__(self):
        from eval.retrieval import INDEXES

        if self.index not in INDEXES:
            raise MimoError(f"index must be one of {', '.join(INDEXES)}, not {self.index!r}")
        if self.depth < 20:
            raise MimoError(f"depth must be at least 20 (nDCG@20), not {self.depth}")
        if not 1 <= self.mrc_k <= self.depth:
            raise MimoError(f"mrc_k must be between 1 and depth ({self.depth}), not {self.mrc_k}")
        if any(not 1 <= k <= self.depth for k in self.mrc_more_ks) or len(set(self.mrc_more_ks)) != len(self.mrc_more_ks):
            raise MimoError(f"mrc_more_ks must be distinct cut-offs between 1 and depth ({self.depth}), "
                            f"not {list(self.mrc_more_ks)}")
        if any(not 1 <= k <= self.depth for k in self.peer_ks) or len(set(self.peer_ks)) != len(self.peer_ks):
            raise MimoError(f"peer_ks must be distinct cut-offs between 1 and depth ({self.depth}), not {list(self.peer_ks)} "
                            "(PEER needs the ranks up to k: raise depth or lower peer_ks)")
        for key in ("nprobe", "ef_search"):
            if getattr(self, key) < 1:
                raise MimoError(f"{key} must be at least 1, not {getattr(self, key)}")
        if self.hnsw_m < 2 or self.nlist < 0:
            raise MimoError(f"hnsw_m must be at least 2 and nlist at least 0 (= automatic), not {self.hnsw_m} and {self.nlist}")
        labels = [b.label for b in self.benchmarks]
        if len(set(labels)) != len(labels):
            raise MimoError(f"eval benchmarks need distinct names (got {labels}); set 'name'")
        unset = [i for i, m in enumerate(self.models) if not m.model]
        if unset:
            raise MimoError(f"eval model {unset[0]} ({self.models[unset[0]].name or 'unnamed'}): 'model' is not set")
        names = [m.label for m in self.models]
        if len(set(names)) != len(names):
            raise MimoError(f"eval models need distinct names (got {names})")


def load_benchmark(spec: BenchmarkSpec) -> Benchmark:
    from eval.local import load_local, load_sample

    if spec.source == "sample":
        bench = load_sample(spec.path or "data/sample", spec.split or "heldout", spec.languages)
    elif spec.source == "local":
        bench = load_local(spec.path, spec.label, spec.setting)
    elif spec.source == "mimo-release":
        from eval.release import load_release

        bench = load_release(spec.path, spec.label, spec.revision, spec.languages, spec.split)
    else:
        from eval.hub import LOADERS

        extra = {"release_text": spec.scoring == "release"} if spec.source.startswith("neuclir") else {}
        bench = LOADERS[spec.source](hub_id=spec.path, revision=spec.revision, languages=spec.languages, split=spec.split,
                                     **extra)
    bench.name = spec.label
    return bench.release_scoring() if spec.scoring == "release" else bench


def sweep_models(sweep_dir: str, template: ModelSpec | None) -> list[ModelSpec]:
    """One model per lambda of a `mimo sweep` output (its sweep.json)."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise MimoError(f"sweep_dir {sweep_dir}: no sweep.json (run `mimo sweep` first)")
    try:
        runs = json.loads(path.read_text())
        lambdas = [(float(r["lambda"]), str(r["out_dir"])) for r in runs]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise MimoError(f"{path}: not a sweep result (a list of {{lambda, out_dir}} rows expected: "
                        f"{type(err).__name__}: {err})") from None
    base = template or ModelSpec(model="-")
    return [ModelSpec(name=f"MIMO λ={lam:g}", model=out_dir, query_prompt=base.query_prompt,
                      document_prompt=base.document_prompt, max_length=base.max_length, lam=lam,
                      compute_dtype=base.compute_dtype)
            for lam, out_dir in lambdas]


def with_sweep(models: list[ModelSpec], sweep_dir: str) -> list[ModelSpec]:
    """`models` and then the sweep's runs, less those already there: by label, or the same folder at the
    same lambda (the demo's MIMO run, which the sweep reused for lambda 0.2, is evaluated once)."""
    template = next((m for m in models if m.lam is not None), None)
    labels = {m.label for m in models}
    same = {(Path(m.model).resolve(), m.lam) for m in models if m.lam is not None}
    return models + [m for m in sweep_models(sweep_dir, template)
                     if m.label not in labels and (Path(m.model).resolve(), m.lam) not in same]


def retrieve(bench: Benchmark, queries: np.ndarray, corpus: np.ndarray, cfg: EvalConfig) -> dict:
    """Search every query (per language for monolingual benchmarks); return metric arrays and top-k rows."""
    from eval.metrics import JudgedGrades, evaluate_search
    from eval.retrieval import build_index, recall_against_exact, search

    if queries.shape[1] != corpus.shape[1]:
        raise MimoError(f"{bench.name}: query embeddings are {queries.shape[1]}-d, corpus embeddings {corpus.shape[1]}-d")
    depth = min(cfg.depth, len(corpus))
    rows = np.full((len(queries), depth), -1, dtype=np.int64)
    scores = np.full((len(queries), depth), -np.inf, dtype=np.float32)
    recalls, timing = [], {"index_s": 0.0, "search_s": 0.0}
    qlang, dlang = np.array(bench.query_langs), np.array(bench.doc_langs)
    parts = [(np.arange(len(queries)), np.arange(len(corpus)))] if bench.setting == "mlir" else [
        (np.flatnonzero(qlang == lang), np.flatnonzero(dlang == lang)) for lang in sorted(set(bench.query_langs))]
    for q_rows, d_rows in parts:
        if not len(d_rows):
            raise MimoError(f"{bench.name}: no documents in language {qlang[q_rows[0]]} (monolingual setting)")
        t0 = time.perf_counter()
        index = build_index(corpus[d_rows], cfg.index, cfg.nlist, cfg.nprobe, cfg.hnsw_m, cfg.ef_search)
        t1 = time.perf_counter()
        s, r = search(index, queries[q_rows], depth)
        timing["index_s"] += t1 - t0
        timing["search_s"] += time.perf_counter() - t1
        rows[q_rows[:, None], np.arange(r.shape[1])] = np.where(r >= 0, d_rows[np.maximum(r, 0)], -1)
        scores[q_rows[:, None], np.arange(s.shape[1])] = s
        if cfg.index != "flat":  # how much of the exact top-k the approximate index keeps
            exact_s, exact_r = search(build_index(corpus[d_rows], "flat"), queries[q_rows], depth)
            recalls.append((recall_against_exact(r, exact_s, exact_r, s), len(q_rows)))
    t0 = time.perf_counter()
    judged = JudgedGrades(bench.qrels, bench.query_ids, bench.doc_ids, depth)
    metrics = evaluate_search(rows, scores, judged, bench.doc_ids, ks=(10, 20, depth))
    timing["metrics_s"] = time.perf_counter() - t0
    out = {"metrics": metrics, "rows": rows, "timing": timing}
    if recalls:
        out["index_recall"] = sum(r * n for r, n in recalls) / sum(n for _, n in recalls)
    return out


def summarize(bench: Benchmark, found: dict, depth: int) -> dict:
    """Means of the per-query metrics: overall, per query language, and the paper's main figure."""
    metrics = found["metrics"]
    langs = np.array(bench.query_langs)
    names = list(dict.fromkeys(["ndcg@10", "ndcg@20", "recall@20", f"recall@{depth}", "mrr@10"]))
    per_lang = {lang: {n: float(metrics[n][langs == lang].mean()) for n in names} for lang in sorted(set(langs))}
    if bench.setting == "monolingual":  # MTEB: the mean of the per-language scores
        overall = {n: float(np.mean([v[n] for v in per_lang.values()])) for n in names}
    else:  # LAReQA style: every query of the mixed pool counts once
        overall = {n: float(metrics[n].mean()) for n in names}
    out = {"main": overall[bench.metric], "metric": bench.metric, **overall, "per_language": per_lang,
           "queries": len(bench.query_ids), **found["timing"]}
    if "index_recall" in found:
        out["index_recall"] = found["index_recall"]
    return out


def analyze(bench: Benchmark, corpus: np.ndarray) -> dict:
    """Cross-lingual alignment and uniformity (section 5.4) of a parallel benchmark's corpus."""
    from eval.analysis import alignment_groups, uniformity

    row_of = {d: i for i, d in enumerate(bench.doc_ids)}
    groups = [[row_of[d] for d in g.values()] for g in bench.doc_groups if len(g) > 1]
    out: dict = {}
    if groups:
        out["alignment"] = alignment_groups(corpus, groups)
        out["alignment_groups"] = len(groups)
    out["uniformity"] = uniformity(corpus)
    return out


def eval_models(cfg: EvalConfig) -> list[ModelSpec]:
    """The config's models, then the sweep's runs (sweep_dir)."""
    models = with_sweep(list(cfg.models), cfg.sweep_dir) if cfg.sweep_dir else list(cfg.models)
    if not models:
        raise MimoError("eval: no models to evaluate (set [[eval.models]] or sweep_dir)")
    return models


def load_benchmarks(cfg: EvalConfig, echo=print) -> list[tuple[BenchmarkSpec, Benchmark]]:
    if not cfg.benchmarks:
        raise MimoError("eval: no benchmarks to evaluate")
    benchmarks = []
    for spec in cfg.benchmarks:
        bench = load_benchmark(spec)
        echo(f"eval: {bench.summary()}")
        if spec.analysis and (bench.setting != "mlir" or len(bench.doc_ids) < 2):
            raise MimoError(f"eval benchmark {bench.name}: analysis (alignment, uniformity, MRC) needs a mixed-language "
                            f"(mlir) corpus of at least two documents")
        benchmarks.append((spec, bench))
    return benchmarks


def embed_texts(embedder: Embedder, bench: Benchmark) -> tuple[np.ndarray, np.ndarray]:
    """(queries, corpus) embeddings of one model on one benchmark, from the disk cache or encoded into it."""
    return (embedder.embed(bench.name, "query", bench.query_texts, bench.digest("query")),
            embedder.embed(bench.name, "document", bench.doc_texts, bench.digest("document")))


def run_embed(cfg: EvalConfig, select: list[str], echo=print) -> list[str]:
    """Encode every benchmark's texts for the models `select` names (a report name or a `model` string)
    into embeddings_dir, where `mimo eval` then finds them: the demo encodes each model as soon as it is
    trained, beside the other training runs, and the eval itself only searches and scores. The vectors
    are those the eval would compute (same cache key, same encoder); returns the models' labels."""
    from pipeline.encoder import release_freed_memory

    def named(m: ModelSpec, name: str) -> bool:  # the report name, the model string, or the same folder
        return name in (m.label, m.model) or Path(name).resolve() == Path(m.model).resolve()

    models = eval_models(cfg)
    unknown = [s for s in select if not any(named(m, s) for m in models)]
    if unknown:
        raise MimoError(f"embed: no eval model named {unknown[0]!r} (names: {', '.join(repr(m.label) for m in models)})")
    chosen = [m for m in models if any(named(m, s) for s in select)]
    benchmarks = load_benchmarks(cfg, echo)
    for spec_m in chosen:
        embedder = Embedder(spec_m, cfg.embeddings_dir, cfg.device, cfg.max_batch_tokens, cfg.compute_dtype, echo)
        for _, bench in benchmarks:
            t0 = time.perf_counter()
            embed_texts(embedder, bench)
            echo(f"embed: {spec_m.label} on {bench.name}: {time.perf_counter() - t0:.1f} s, in {embedder.dir}")
        embedder.encoder._model = None
        release_freed_memory()
    return [m.label for m in chosen]


def run_eval(cfg: EvalConfig, echo=print) -> dict:
    from eval.fairness import language_fairness
    from eval.report import write_report
    from pipeline.encoder import release_freed_memory
    from pipeline.model_card import record_eval

    models = eval_models(cfg)
    out = Path(cfg.out_dir)
    benchmarks = load_benchmarks(cfg, echo)
    embedders = [Embedder(m, cfg.embeddings_dir, cfg.device, cfg.max_batch_tokens, cfg.compute_dtype, echo) for m in models]  # checks every model first
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for spec_m, embedder in zip(models, embedders):
        for spec_b, bench in benchmarks:
            t0 = time.perf_counter()
            queries, corpus = embed_texts(embedder, bench)
            encode_s = time.perf_counter() - t0
            found = retrieve(bench, queries, corpus, cfg)
            row = {"model": spec_m.label, "benchmark": bench.name, "setting": bench.setting, "lam": spec_m.lam,
                   "encode_s": encode_s, **summarize(bench, found, min(cfg.depth, len(corpus)))}
            if bench.setting == "mlir":  # MRC and PEER, as the release computes them on its MLIR sets
                row.update(language_fairness(bench, queries, corpus, found["rows"], cfg.mrc_k, cfg.peer_ks,
                                              cfg.mrc_more_ks))
            if spec_b.analysis:
                row.update(analyze(bench, corpus))
            results.append(row)
            extra = "".join(f", {n} {row[n]:.4f}" for n in ("alignment", "uniformity", "mrc_mean", *(f"peer@{k}" for k in cfg.peer_ks))
                            if n in row)
            echo(f"eval: {spec_m.label} on {bench.name}: {row['metric']} {100 * row['main']:.2f}{extra}")
        embedder.encoder._model = None  # the next model gets the memory
        release_freed_memory()
    summary = {"models": [m.label for m in models], "lambdas": {m.label: m.lam for m in models if m.lam is not None},
               "benchmarks": [{"name": b.name, "setting": b.setting, "metric": b.metric, "queries": len(b.query_ids),
                               "documents": len(b.doc_ids), "languages": b.languages, "skipped": dict(b.skipped),
                               "source": b.source, "scoring": b.scoring} for _, b in benchmarks],
               "index": cfg.index, "mrc_k": cfg.mrc_k,
               "mrc_more_ks": sorted(set(cfg.mrc_more_ks) - {cfg.mrc_k}), "peer_ks": list(cfg.peer_ks), "depth": cfg.depth, "results": results}
    write_resolved_config(cfg, out, "eval")  # only beside the report it made: a failed rerun leaves both as they were
    paths = write_report(summary, out, plots=cfg.plots)
    for spec_m in models:  # the model cards of this tool's training outputs carry their latest figures
        record_eval(spec_m.model, [r for r in results if r["model"] == spec_m.label], out)
    echo(f"eval: report in {paths['markdown']} (" + ", ".join(str(p) for k, p in paths.items() if k != "markdown") + ")")
    return summary
