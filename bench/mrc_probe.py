"""How far is the embedded default from a positive MRC? Measured on validation items only.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/mrc_probe.py                       # teacher and untrained student
    HF_HUB_OFFLINE=1 .venv/bin/python bench/mrc_probe.py --models "Stage 1=work/sample/stage1" ...

The pool is bench/stand_ins.py's `mlir` one: the sample's 40 validation items (every 3rd training
item, `pipeline.sample.validation_ids`) in 14 languages, 560 queries x 560 passages; the 40 held-out
items are never read. MRC@k is the release's `compute_mrc` (eval.fairness.mrc_at_k, the eval's own
code) at k = 5, 10, 20, beside what drives its sign: the share of each query's top 10 in its own
language, and the share that are its passage in some language. A trained model has seen these
items' texts in Stage 1 (they are training items): its figures are, if anything, optimistic.

Each --models entry is `label=folder` (a training output, as the eval reads it) and is encoded
without prompts, as the eval encodes trained students; the untrained student and the teacher use
e5's "query: " / "passage: " prompts, as configs/sample.toml's eval rows do.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stand_ins import E5, benchmarks  # noqa: E402
from eval.analysis import alignment_groups, uniformity  # noqa: E402
from eval.encoders import ModelSpec, teacher_config  # noqa: E402
from eval.fairness import mrc_at_k  # noqa: E402
from eval.run import retrieve  # noqa: E402
from pipeline.teacher import TransformersTeacher  # noqa: E402

SEARCH = types.SimpleNamespace(depth=100, index="flat", nlist=0, nprobe=0, hnsw_m=0, ef_search=0)
KS = (5, 10, 20)


def embed(spec: ModelSpec, bench) -> tuple[np.ndarray, np.ndarray]:
    encoder = TransformersTeacher(teacher_config(spec, "cpu", 0, "float32"))

    def run(texts, role):
        vectors, _, _ = encoder.encode(texts, [role] * len(texts), [spec.max_length] * len(texts))
        return vectors.astype(np.float32)

    return run(bench.query_texts, "query"), run(bench.doc_texts, "document")


def probe(bench, queries: np.ndarray, corpus: np.ndarray) -> dict:
    found = retrieve(bench, queries, corpus, SEARCH)
    top = found["rows"]
    qrow = {q: i for i, q in enumerate(bench.query_ids)}
    groups = [{lang: qrow[q] for lang, q in g.items()} for g in bench.query_groups]
    out = {"ndcg@20": 100 * float(found["metrics"]["ndcg@20"].mean())}
    for k in KS:
        mrc, _ = mrc_at_k(queries, corpus, top, groups, k)
        out[f"mrc@{k}"] = float(np.mean(list(mrc.values())))
    dlang, qlang = np.array(bench.doc_langs), np.array(bench.query_langs)
    top10 = top[:, :10]
    out["own-language share of top 10"] = float((dlang[top10] == qlang[:, None]).mean())
    positive = np.array([[bench.doc_ids[r] in bench.qrels[q] for r in row] for q, row in zip(bench.query_ids, top10)])
    out["positives in top 10"] = float(positive.mean())
    row_of = {d: i for i, d in enumerate(bench.doc_ids)}
    out["alignment"] = alignment_groups(corpus, [[row_of[d] for d in g.values()] for g in bench.doc_groups])
    out["uniformity"] = uniformity(corpus)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", default=str(ROOT / "data" / "sample"))
    ap.add_argument("--models", nargs="*", default=[], help="label=training output folder")
    ap.add_argument("--no-reference", action="store_true", help="skip the teacher and the untrained student")
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    bench = benchmarks(Path(args.sample))["mlir"]
    specs = [] if args.no_reference else [
        ModelSpec(name="teacher (e5-small, 12 layers)", model=E5, query_prompt="query: ", document_prompt="passage: "),
        ModelSpec(name="student zero-shot (3 layers)", model=E5, query_prompt="query: ", document_prompt="passage: ",
                  num_layers=3)]
    for entry in args.models:
        label, _, folder = entry.partition("=")
        specs.append(ModelSpec(name=label, model=folder))
    print(f"validation pool (training items only): {bench.summary()}", flush=True)
    columns = ["ndcg@20", *(f"mrc@{k}" for k in KS), "own-language share of top 10", "positives in top 10",
               "alignment", "uniformity"]
    print("| model | " + " | ".join(columns) + " | seconds |")
    print("|---|" + "---:|" * (len(columns) + 1))
    for spec in specs:
        t0 = time.perf_counter()
        figures = probe(bench, *embed(spec, bench))
        cells = [f"{figures[c]:.2f}" if c.startswith(("ndcg", "mrc")) else f"{figures[c]:.3f}" for c in columns]
        print(f"| {spec.name} | " + " | ".join(cells) + f" | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
