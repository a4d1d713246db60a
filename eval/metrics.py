"""Retrieval metrics as trec_eval computes them (the MTEB convention), as plain numpy functions.

trec_eval rules followed here, each checked against pytrec_eval in tests/test_metrics.py:
- a run is ranked by score, descending; ties are broken by document id in *descending* string order;
- gain is the relevance grade itself (linear), only grades > 0 count; discount log2(rank + 1);
- the ideal DCG takes the query's judged grades sorted descending, cut at k;
- recall@k counts relevant documents (grade >= 1) in the top k over all relevant ones;
- judged documents missing from the corpus still count in the ideal DCG and recall's denominator;
- a query with judgments but no relevant document scores 0 (pytrec_eval returns it; MTEB averages
  it in); a query without judgments is not evaluated.

The core functions take a (queries x k) matrix of grades in ranked order, so 40,000 queries cost a
few array operations. `evaluate_search` builds that matrix from a FAISS result (row ids and
scores, re-ranked by trec_eval's rules); `evaluate` from dict runs and qrels (the pytrec_eval shape).
"""

from __future__ import annotations

import numpy as np


def dcg(gains: np.ndarray) -> np.ndarray:
    """DCG of each row of `gains` (queries x ranks), gain in ranked order."""
    ranks = np.arange(1, gains.shape[1] + 1)
    return (np.maximum(gains, 0) / np.log2(ranks + 1)).sum(axis=1)


def ndcg_at_k(ranked_gains: np.ndarray, ideal_gains: np.ndarray, k: int) -> np.ndarray:
    """nDCG@k per query. ranked_gains: grades of the retrieved documents in ranked order;
    ideal_gains: the query's judged grades sorted descending (both zero-padded on the right)."""
    ideal = dcg(_width(ideal_gains, k))
    out = np.zeros(len(ideal))
    ok = ideal > 0
    out[ok] = dcg(_width(ranked_gains, k))[ok] / ideal[ok]
    return out


def recall_at_k(ranked_gains: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    hits = (_width(ranked_gains, k) >= 1).sum(axis=1)
    return np.divide(hits, n_relevant, out=np.zeros(len(hits)), where=n_relevant > 0)


def mrr_at_k(ranked_gains: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal rank of the first relevant document within the top k, else 0."""
    relevant = _width(ranked_gains, k) >= 1
    first = relevant.argmax(axis=1)
    return np.where(relevant.any(axis=1), 1.0 / (first + 1), 0.0)


def _width(matrix: np.ndarray, k: int) -> np.ndarray:
    if matrix.shape[1] >= k:
        return matrix[:, :k]
    return np.pad(matrix, ((0, 0), (0, k - matrix.shape[1])))


def trec_order(scores: dict[str, float]) -> list[str]:
    """Document ids ranked as trec_eval ranks them: score descending, then id descending."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def evaluate(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]],
             ks: tuple[int, ...] = (10, 20)) -> dict[str, dict[str, float]]:
    """Per-query metrics {qid: {"ndcg@10": .., "recall@10": .., "mrr@10": ..}} for queries with relevant documents."""
    qids = [q for q in qrels if q in run and qrels[q]]
    width = max(ks)
    ranked = np.zeros((len(qids), width))
    ideal = np.zeros((len(qids), width))
    n_relevant = np.zeros(len(qids))
    for i, q in enumerate(qids):
        judged = qrels[q]
        docs = trec_order(run[q])[:width]
        ranked[i, : len(docs)] = [judged.get(d, 0) for d in docs]
        grades = sorted((g for g in judged.values() if g > 0), reverse=True)[:width]
        ideal[i, : len(grades)] = grades
        n_relevant[i] = sum(1 for g in judged.values() if g >= 1)
    out: dict[str, dict[str, float]] = {q: {} for q in qids}
    for k in ks:
        for name, values in (("ndcg", ndcg_at_k(ranked, ideal, k)), ("recall", recall_at_k(ranked, n_relevant, k)),
                             ("mrr", mrr_at_k(ranked, k))):
            for q, v in zip(qids, values):
                out[q][f"{name}@{k}"] = float(v)
    return out


class JudgedGrades:
    """Qrels in array form over corpus rows: grade lookups for a whole (queries x k) id matrix at once."""

    def __init__(self, qrels: dict[str, dict[str, int]], query_ids: list[str], doc_ids: list[str], width: int):
        row_of = {d: i for i, d in enumerate(doc_ids)}
        self.n_docs = len(doc_ids)
        keys, grades = [], []
        self.ideal = np.zeros((len(query_ids), width))
        self.n_relevant = np.zeros(len(query_ids))
        for q, qid in enumerate(query_ids):
            judged = qrels.get(qid, {})
            for doc, grade in judged.items():
                if doc in row_of:  # judged documents outside the corpus can never be retrieved
                    keys.append(q * self.n_docs + row_of[doc])
                    grades.append(grade)
            best = sorted((g for g in judged.values() if g > 0), reverse=True)[:width]
            self.ideal[q, : len(best)] = best
            self.n_relevant[q] = sum(1 for g in judged.values() if g >= 1)
        order = np.argsort(np.array(keys, dtype=np.int64), kind="stable")
        self.keys = np.array(keys, dtype=np.int64)[order]
        self.grades = np.array(grades, dtype=np.float64)[order]

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """Grades of the documents at corpus rows `rows` (queries x k, -1 = none) for each query."""
        key = np.arange(len(rows), dtype=np.int64)[:, None] * self.n_docs + rows
        pos = np.minimum(np.searchsorted(self.keys, key), max(len(self.keys) - 1, 0))
        hit = (rows >= 0) & (len(self.keys) > 0) & (self.keys[pos] == key) if len(self.keys) else np.zeros(rows.shape, bool)
        return np.where(hit, self.grades[pos] if len(self.keys) else 0.0, 0.0)


def trec_rerank(rows: np.ndarray, scores: np.ndarray, doc_ids: list[str]) -> np.ndarray:
    """Corpus rows of each query reordered as trec_eval ranks them: score descending, then doc id descending."""
    id_rank = np.empty(len(doc_ids), dtype=np.int64)
    id_rank[np.argsort(np.array(doc_ids, dtype=object), kind="stable")] = np.arange(len(doc_ids))
    tie = np.where(rows >= 0, id_rank[np.maximum(rows, 0)], -1)
    score = np.where(rows >= 0, scores.astype(np.float64), -np.inf)  # -1 = no result: ranked last
    order = np.lexsort((-tie, -score), axis=-1)  # the last key is the primary one
    return np.take_along_axis(rows, order, axis=-1)


def evaluate_search(rows: np.ndarray, scores: np.ndarray, judged: JudgedGrades, doc_ids: list[str],
                    ks: tuple[int, ...] = (10, 20)) -> dict[str, np.ndarray]:
    """Per-query metric arrays {"ndcg@10": (n_queries,), ...} of a search result (corpus rows and scores)."""
    ranked = judged.lookup(trec_rerank(rows, scores, doc_ids))
    out = {}
    for k in ks:
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, judged.ideal, k)
        out[f"recall@{k}"] = recall_at_k(ranked, judged.n_relevant, k)
        out[f"mrr@{k}"] = mrr_at_k(ranked, k)
    return out
