"""Dense retrieval with FAISS over a (mixed-language) corpus: exact inner product by default.

Embeddings are L2-normalized float32, so inner product is cosine. IVF and HNSW are options for
large corpora; `recall_against_exact` reports how much of the exact top-k they keep, the check
faiss's own contrib/evaluation.py suggests (allowing for ties at the k-th score).
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import MimoError

INDEXES = ("flat", "ivf", "hnsw")


def build_index(corpus: np.ndarray, kind: str = "flat", nlist: int = 0, nprobe: int = 32, hnsw_m: int = 32,
                ef_search: int = 128):
    """A FAISS inner-product index over corpus rows (float32, contiguous)."""
    import faiss

    if kind not in INDEXES:
        raise MimoError(f"index must be one of {', '.join(INDEXES)}, not {kind!r}")
    if corpus.ndim != 2 or len(corpus) == 0:
        raise MimoError(f"the corpus to index is empty or not a matrix (shape {corpus.shape})")
    x = np.ascontiguousarray(corpus, dtype=np.float32)
    dim = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        lists = min(nlist or max(1, int(4 * np.sqrt(len(x)))), len(x))  # the usual 4 sqrt(n), never more than n
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = min(nprobe, lists)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    index.add(x)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, corpus row ids), each (n_queries, k), best first; ids are -1 past the corpus size."""
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise MimoError(f"query embeddings have shape {queries.shape}, the index holds {index.d}-d vectors")
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, index.ntotal))


def recall_against_exact(approx_ids: np.ndarray, exact_scores: np.ndarray, exact_ids: np.ndarray,
                         approx_scores: np.ndarray, atol: float = 1e-5) -> float:
    """Share of exact top-k results the approximate search also returns.

    A document the approximate search returns in place of an exact one counts as found when its
    score ties the exact k-th score (any of the tied documents is a correct answer).
    """
    found = 0
    for row in range(len(exact_ids)):
        exact = set(exact_ids[row].tolist())
        kth = exact_scores[row, -1]
        found += sum(1 for doc, score in zip(approx_ids[row], approx_scores[row])
                     if doc in exact or (doc >= 0 and abs(score - kth) <= atol))
    return found / exact_ids.size
