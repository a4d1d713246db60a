"""FAISS exact search equals brute force (ties aside); approximate indexes report recall against it."""

from __future__ import annotations

import numpy as np
import pytest

from eval.retrieval import build_index, recall_against_exact, search
from pipeline.errors import MimoError

faiss = pytest.importorskip("faiss")


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_equals_brute_force():
    rng = np.random.default_rng(0)
    corpus, queries = unit(rng, 2000, 64), unit(rng, 100, 64)
    corpus[1500] = corpus[7]  # an exact tie
    scores, ids = search(build_index(corpus), queries, 20)
    brute = queries @ corpus.T
    for row in range(len(queries)):
        order = np.argsort(-brute[row], kind="stable")[:20]
        np.testing.assert_allclose(scores[row], brute[row, order], rtol=1e-5, atol=1e-6)
        # same documents, except where the k-th score ties with a document left out
        kth = brute[row, order[-1]]
        differing = set(ids[row]) ^ set(order)
        assert all(abs(brute[row, d] - kth) < 1e-5 for d in differing)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_keep_most_of_the_exact_top_k(kind):
    rng = np.random.default_rng(1)
    corpus, queries = unit(rng, 3000, 32), unit(rng, 50, 32)
    exact_scores, exact_ids = search(build_index(corpus), queries, 10)
    scores, ids = search(build_index(corpus, kind), queries, 10)
    recall = recall_against_exact(ids, exact_scores, exact_ids, scores)
    assert 0.5 <= recall <= 1.0  # random unit vectors have no clusters: the hard case for IVF
    assert recall_against_exact(exact_ids, exact_scores, exact_ids, exact_scores) == 1.0
    if kind == "ivf":  # probing every list is an exhaustive search
        scores, ids = search(build_index(corpus, "ivf", nlist=16, nprobe=16), queries, 10)
        assert recall_against_exact(ids, exact_scores, exact_ids, scores) == 1.0


def test_bad_input():
    rng = np.random.default_rng(2)
    index = build_index(unit(rng, 10, 8))
    with pytest.raises(MimoError, match=r"query embeddings have shape \(3, 4\), the index holds 8-d"):
        search(index, unit(rng, 3, 4), 5)
    with pytest.raises(MimoError, match="empty"):
        build_index(np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(MimoError, match="index must be one of"):
        build_index(unit(rng, 10, 8), "lsh")
