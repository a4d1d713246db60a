"""Eval wall time split into encode / index / search / metrics; ours vs raw faiss and pytrec_eval, one run.

    .venv/bin/python bench/bench_eval.py            # 40,000 queries x 40,000 docs x 1024-d (~3 min on 2 idle CPU cores)
    .venv/bin/python bench/bench_eval.py --tiny     # 2,000 x 2,000 x 64: smoke run (seconds)
    .venv/bin/python bench/bench_eval.py --queries 10000 --docs 40000 --dim 1024 --k 100 --repeats 5 --seed 0

Data: seeded random unit vectors (float32) stand in for the model. The corpus mimics MLIR: items
of 14 language versions each (doc ids "de-123"), in a shuffled corpus order unrelated to id order;
each query belongs to one item and its judged positives (grade 1) are that item's language
versions. So that the metrics are not all zero, each query vector is pulled towards its positives
by a random per-query amount (set-up, untimed), which spreads the positives over all ranks.

1. encode. No model runs; what the eval pays around an encoder is timed instead: generating and
   L2-normalizing the random vectors (the stand-in for the encoder itself), and writing both
   matrices to an embedding cache and reading them back (np.save / np.load of float32 .npy in a
   temporary directory: the floor of any cache; the files were just written, so reads hit the OS
   page cache). There is no peer here: both pipelines pay it alike.
2. index + search. eval.retrieval.build_index(corpus, "flat") + search(index, queries, k) against
   faiss.IndexFlatIP(d); add(x); search(q, k) on the same arrays, for k = --k (the eval's depth) and
   k = 20. Same process, same faiss thread count; `--repeats` rounds, contenders alternating (ABBA
   across rounds); median and min reported; both must return the same ids. Goal: ours at most
   10% over raw faiss. The wrappers' own per-call cost is also measured on a 64-row index, where
   faiss's work is negligible (best of 5 x 2000 calls): steady even when other load spreads the
   full-size times.
3. metrics. eval.metrics.JudgedGrades + evaluate_search(ks=(10, 20, k)) on our k-deep search result
   against pytrec_eval.RelevanceEvaluator(qrels, {ndcg_cut.10, ndcg_cut.20, recall.k}).evaluate(run)
   on the same result as a dict run {qid: {docid: score}}; pytrec_eval's time with and without
   building that dict. Per-query nDCG@10/@20 and recall@k must agree within 1e-6, or the run fails.
   Ours computes more (nDCG, recall and MRR at each of the three depths) in its time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import cpu_model  # noqa: E402
LANGUAGES = ("ar", "de", "en", "es", "fa", "fr", "hi", "id", "it", "ja", "ko", "pt", "ru", "zh")  # 14, as MLIR
TOLERANCE = 1e-6


def machine() -> str:
    import faiss

    model = cpu_model()
    return (f"nproc {os.cpu_count()}, {model}; faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), "
            f"numpy {np.__version__}, Python {platform.python_version()}")


def clock(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


# ---- data and 1. encode ---------------------------------------------------------------------------


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)  # float32 throughout: what an encoder hands the cache
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def mlir_corpus(rng: np.random.Generator, n_docs: int, n_queries: int):
    """Doc ids in corpus order, query ids, qrels, and each query's positive corpus rows (queries x 14, -1 = none)."""
    n_items = -(-n_docs // len(LANGUAGES))
    ids = [f"{lang}-{item}" for item in range(n_items) for lang in LANGUAGES][:n_docs]
    order = rng.permutation(n_docs)  # corpus rows unrelated to id order, as a mixed-language corpus
    doc_ids = [ids[i] for i in order]
    row_of = {d: r for r, d in enumerate(doc_ids)}
    query_items = rng.integers(n_items, size=n_queries)
    query_ids = [f"q{i}" for i in range(n_queries)]
    qrels, positives = {}, np.full((n_queries, len(LANGUAGES)), -1, dtype=np.int64)
    for q, (qid, item) in enumerate(zip(query_ids, query_items)):
        docs = [d for d in (f"{lang}-{item}" for lang in LANGUAGES) if d in row_of]
        qrels[qid] = {d: 1 for d in docs}
        positives[q, : len(docs)] = [row_of[d] for d in docs]
    return doc_ids, query_ids, qrels, positives


def plant_relevance(rng: np.random.Generator, queries: np.ndarray, corpus: np.ndarray, positives: np.ndarray) -> None:
    """Pull each query towards the mean of its positives by a random angle, in place (set-up, untimed)."""
    pull = np.zeros_like(queries)
    for j in range(positives.shape[1]):  # one column at a time: no (queries x 14 x dim) temporary
        rows = positives[:, j]
        pull[rows >= 0] += corpus[rows[rows >= 0]]
    pull /= np.maximum(np.linalg.norm(pull, axis=1, keepdims=True), 1e-12)
    mix = rng.uniform(0.0, 0.8, size=(len(queries), 1)).astype(np.float32)  # sin of the angle
    queries *= np.sqrt(1 - mix**2)
    queries += mix * pull
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)


def bench_cache(queries: np.ndarray, corpus: np.ndarray, repeats: int) -> dict:
    """np.save + np.load of both matrices, as an embedding cache; the loaded arrays must equal the saved ones."""
    write, read = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            paths = [Path(tmp) / "queries.npy", Path(tmp) / "corpus.npy"]
            start = time.perf_counter()
            for path, x in zip(paths, (queries, corpus)):
                np.save(path, x)
            write.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded = [np.load(path) for path in paths]
            read.append(time.perf_counter() - start)
            assert all(np.array_equal(a, b) for a, b in zip(loaded, (queries, corpus)))
            for path in paths:
                path.unlink()
    return {"write": write, "read": read}


# ---- 2. index + search ----------------------------------------------------------------------------


def ours_search(corpus: np.ndarray, queries: np.ndarray, k: int):
    from eval.retrieval import build_index, search

    index, t_index = clock(build_index, corpus, "flat")
    (scores, rows), t_search = clock(search, index, queries, k)
    return scores, rows, t_index, t_search


def raw_search(corpus: np.ndarray, queries: np.ndarray, k: int):
    import faiss

    def build():
        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(corpus)
        return index

    index, t_index = clock(build)
    (scores, rows), t_search = clock(index.search, queries, k)
    return scores, rows, t_index, t_search


def bench_search(queries: np.ndarray, corpus: np.ndarray, depths: tuple[int, ...], repeats: int):
    """{k: {"ours"|"raw": {"index": [...], "search": [...]}}} and our search result at depths[0]."""
    times = {k: {name: {"index": [], "search": []} for name in ("ours", "raw")} for k in depths}
    contenders = {"ours": ours_search, "raw": raw_search}
    kept = None
    for r in range(repeats):
        for k in depths:
            names = ("ours", "raw") if r % 2 == 0 else ("raw", "ours")  # alternate who runs first
            results = {}
            for name in names:
                scores, rows, t_index, t_search = contenders[name](corpus, queries, k)
                times[k][name]["index"].append(t_index)
                times[k][name]["search"].append(t_search)
                results[name] = (scores, rows)
            # same exact search: identical ids and scores (same library, same arrays, same k)
            if not (np.array_equal(results["ours"][1], results["raw"][1])
                    and np.allclose(results["ours"][0], results["raw"][0], atol=1e-6)):
                raise SystemExit(f"ours and raw faiss disagree at k={k}")
            if k == depths[0]:
                kept = results["ours"]
            del results
    return times, kept


def wrapper_cost(queries: np.ndarray, corpus: np.ndarray, k: int, calls: int = 2000) -> tuple[float, float]:
    """Per-call seconds our wrappers add over faiss: (build_index - IndexFlatIP + add, search - index.search).

    On a 64-row corpus and one query, so the faiss work is tiny and the wrappers' checks and
    conversions are what differs; best of 5 rounds of `calls` calls each (steady under other load).
    """
    import faiss

    from eval.retrieval import build_index, search

    x, q = corpus[:64], queries[:1]
    index = build_index(x, "flat")

    def raw_build():
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(x)

    def best(fn, *args):
        rounds = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(calls):
                fn(*args)
            rounds.append((time.perf_counter() - start) / calls)
        return min(rounds)

    return (best(build_index, x, "flat") - best(raw_build),
            best(search, index, q, k) - best(index.search, q, min(k, index.ntotal)))


# ---- 3. metrics -----------------------------------------------------------------------------------


def bench_metrics(scores, rows, qrels, query_ids, doc_ids, k: int, repeats: int):
    import pytrec_eval

    from eval.metrics import JudgedGrades, evaluate_search

    measures = {"ndcg_cut.10", "ndcg_cut.20", f"recall.{k}"}
    times = {name: [] for name in ("judged", "evaluate", "run_dict", "evaluator", "trec_evaluate")}

    def run_ours():
        judged, t = clock(JudgedGrades, qrels, query_ids, doc_ids, k)
        times["judged"].append(t)
        out, t = clock(evaluate_search, rows, scores, judged, doc_ids, (10, 20, k))
        times["evaluate"].append(t)
        return out

    def to_dict():  # the dict run pytrec_eval needs: what an eval built on it pays first
        return {q: {doc_ids[d]: float(s) for d, s in zip(rows[i].tolist(), scores[i].tolist()) if d >= 0}
                for i, q in enumerate(query_ids)}

    def run_theirs():
        run, t = clock(to_dict)
        times["run_dict"].append(t)
        evaluator, t = clock(pytrec_eval.RelevanceEvaluator, qrels, measures)
        times["evaluator"].append(t)
        out, t = clock(evaluator.evaluate, run)
        times["trec_evaluate"].append(t)
        return out

    for r in range(repeats):  # alternate who runs first
        if r % 2 == 0:
            ours, theirs = run_ours(), run_theirs()
        else:
            theirs, ours = run_theirs(), run_ours()
    diffs = {}
    for name, trec_name in (("ndcg@10", "ndcg_cut_10"), ("ndcg@20", "ndcg_cut_20"), (f"recall@{k}", f"recall_{k}")):
        mine = np.array([ours[name][i] for i, q in enumerate(query_ids) if q in theirs])
        peer = np.array([theirs[q][trec_name] for q in query_ids if q in theirs])
        diffs[name] = float(np.abs(mine - peer).max()) if len(peer) else 0.0
    means = {name: float(ours[name].mean()) for name in ("ndcg@10", "ndcg@20", f"recall@{k}", f"mrr@{k}")}
    return times, diffs, means, sum(q in theirs for q in query_ids)


# ---- report ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=40_000)
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--k", type=int, default=100, help="retrieval depth (the eval's); k=20 is measured too")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="2,000 queries x 2,000 docs x 64-d: a smoke run")
    args = ap.parse_args()
    if args.tiny:
        args.queries, args.docs, args.dim = 2000, 2000, 64
    import faiss

    print(machine())
    load_before = os.getloadavg()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)  # pinned: both contenders run with this many
    rng = np.random.default_rng(args.seed)

    start = time.perf_counter()
    corpus = unit_vectors(rng, args.docs, args.dim)
    queries = unit_vectors(rng, args.queries, args.dim)
    t_generate = time.perf_counter() - start
    doc_ids, query_ids, qrels, positives = mlir_corpus(rng, args.docs, args.queries)
    plant_relevance(rng, queries, corpus, positives)
    cache = bench_cache(queries, corpus, args.repeats)
    print(f"{args.queries:,} queries x {args.docs:,} docs x {args.dim}-d float32 "
          f"({(queries.nbytes + corpus.nbytes) / 2**20:.0f} MiB), seed {args.seed}; "
          f"{len(qrels):,} queries with {np.mean([len(v) for v in qrels.values()]):.1f} positives each; "
          f"faiss threads {threads}; {args.repeats} repeats")

    depths = tuple(dict.fromkeys((args.k, 20)))
    search_times, (scores, rows) = bench_search(queries, corpus, depths, args.repeats)
    extra_build, extra_search = wrapper_cost(queries, corpus, args.k)
    if faiss.omp_get_max_threads() != threads:
        raise SystemExit("faiss thread count changed during the run")
    metric_times, diffs, means, evaluated = bench_metrics(scores, rows, qrels, query_ids, doc_ids, args.k,
                                                          args.repeats)

    def fmt(values):  # median (min)
        return f"{statistics.median(values):.3f} ({min(values):.3f})" if values else "-"

    def ratio(ours, peer):
        return f"{statistics.median(ours) / statistics.median(peer):.3f}" if ours and peer else "-"

    def plus(*lists):
        return [sum(parts) for parts in zip(*lists)]

    def row(stage, ours, peer=()):
        print(f"{stage:52s} {fmt(ours):>17s} {fmt(peer):>17s} {ratio(ours, peer):>7s}")

    print("\nseconds: median (min) of the repeats; ratio = ours / peer medians (below 1: ours is faster)")
    print(f"{'stage (ours vs peer)':52s} {'ours s':>17s} {'peer s':>17s} {'ratio':>7s}")
    row("encode: generate + normalize random vectors", [t_generate])
    row("encode: cache write, np.save q + corpus (floor)", cache["write"])
    row("encode: cache read, np.load q + corpus (floor)", cache["read"])
    for k in depths:
        ours, raw = search_times[k]["ours"], search_times[k]["raw"]
        row(f"index: build_index flat vs IndexFlatIP.add (k={k})", ours["index"], raw["index"])
        row(f"search: search vs IndexFlatIP.search, k={k}", ours["search"], raw["search"])
        row(f"index + search, k={k}", plus(ours["index"], ours["search"]), plus(raw["index"], raw["search"]))
    m = metric_times
    ours_metrics = plus(m["judged"], m["evaluate"])
    trec_bare = plus(m["evaluator"], m["trec_evaluate"])
    trec_all = plus(m["run_dict"], trec_bare)
    row("metrics: JudgedGrades vs RelevanceEvaluator()", m["judged"], m["evaluator"])
    row("metrics: evaluate_search vs evaluator.evaluate", m["evaluate"], m["trec_evaluate"])
    row("metrics: ours vs pytrec_eval, without dict run", ours_metrics, trec_bare)
    row("metrics: (peer only) build the dict run", [], m["run_dict"])
    row("metrics: ours vs pytrec_eval, with dict run", ours_metrics, trec_all)
    k = args.k
    ours_k = plus(search_times[k]["ours"]["index"], search_times[k]["ours"]["search"])  # per round, in order
    raw_k = plus(search_times[k]["raw"]["index"], search_times[k]["raw"]["search"])
    encode = [t_generate + w + r for w, r in zip(cache["write"], cache["read"])]
    row(f"end to end (encode, index, search k={k}, metrics)", plus(encode, ours_k, ours_metrics),
        plus(encode, raw_k, trec_all))

    by_median = statistics.median(ours_k) / statistics.median(raw_k) - 1
    by_min = min(ours_k) / min(raw_k) - 1
    paired = statistics.median(o / r for o, r in zip(ours_k, raw_k)) - 1  # the two ran back to back
    print(f"\nsearch overhead at k={k} (index + search): {by_median:+.1%} by medians, {by_min:+.1%} by minima, "
          f"{paired:+.1%} median of back-to-back pairs")
    print(f"what our wrappers add per call (64-row index, 1 query, best of 5 x 2000 calls): build_index "
          f"{extra_build * 1e6:+.1f} us, search {extra_search * 1e6:+.1f} us, i.e. "
          f"{(extra_build + extra_search) / min(raw_k):+.1e} of the full index + search")
    print(f"metrics speed: pytrec_eval / ours = {statistics.median(trec_bare) / statistics.median(ours_metrics):.1f}x "
          f"without the dict run, {statistics.median(trec_all) / statistics.median(ours_metrics):.1f}x with it")
    print("mean over queries (ours): " + ", ".join(f"{n} {v:.4f}" for n, v in means.items()))
    print(f"agreement with pytrec_eval over {evaluated:,} queries, max abs diff: "
          + ", ".join(f"{n} {v:.2e}" for n, v in diffs.items()))
    print("load average (1, 5, 15 min) at start {:.2f} {:.2f} {:.2f}, at end {:.2f} {:.2f} {:.2f}: other work on "
          "the machine inflates and spreads the times".format(*load_before, *os.getloadavg()))
    if max(diffs.values()) > TOLERANCE:
        raise SystemExit(f"per-query metrics differ from pytrec_eval by more than {TOLERANCE}")


if __name__ == "__main__":
    main()
