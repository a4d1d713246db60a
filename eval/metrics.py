"""Retrieval metrics as trec_eval computes them (the MTEB convention), as plain numpy functions.

trec_eval rules followed here, each checked against pytrec_eval in tests/test_metrics.py:
- a run is ranked by score, descending; ties are broken by document id in *descending* string order;
- gain is the relevance grade itself (linear), only grades > 0 count; discount log2(rank + 1);
- the ideal DCG takes the query's judged grades sorted descending, cut at k;
- recall@k counts relevant documents (grade >= 1) in the top k over all relevant ones;
- queries without any relevant document are not evaluated.

The core functions take a (queries x k) matrix of grades in ranked order, so 40,000 queries cost a
few array operations; `evaluate` builds that matrix from dict runs and qrels.
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
    qids = [q for q in qrels if q in run and any(g > 0 for g in qrels[q].values())]
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
