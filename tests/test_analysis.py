"""Alignment, uniformity and MRC@k on hand-computed cases (and Spearman against scipy's)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.analysis import alignment, mrc_at_k, spearman_over_union, uniformity


def test_alignment_by_hand():
    parallel = np.array([[[1.0, 0.0], [0.0, 1.0]],  # item 1 in two languages: squared distance 2
                         [[1.0, 0.0], [1.0, 0.0]]])  # item 2: identical, 0
    assert alignment(parallel) == pytest.approx(1.0)
    three = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # pairs: 2, 4, 2
    assert alignment(three) == pytest.approx(8 / 3)


def test_uniformity_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # squared distances 2, 4, 2
    expected = math.log((2 * math.exp(-2 * 2) + math.exp(-2 * 4)) / 3)
    assert uniformity(x, t=2.0) == pytest.approx(expected)
    assert uniformity(x, t=2.0, chunk=1) == pytest.approx(expected)  # chunking changes nothing


def test_spearman_over_union_by_hand():
    assert spearman_over_union(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert spearman_over_union(["a", "b", "c"], ["c", "b", "a"]) == pytest.approx(-1.0)
    # union {d1, d2, d3}: ranks (1, 2, 3) and (3, 1, 2): Pearson = -1/2
    assert spearman_over_union(["d1", "d2"], ["d2", "d3"]) == pytest.approx(-0.5)


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(30)]
    for _ in range(50):
        a, b = list(rng.choice(docs, 10, replace=False)), list(rng.choice(docs, 10, replace=False))
        union = list(dict.fromkeys(a + b))
        big = len(union) + 1  # unretrieved documents tie after the retrieved ones; scipy averages ties
        ra = [a.index(d) + 1 if d in a else big for d in union]
        rb = [b.index(d) + 1 if d in b else big for d in union]
        assert spearman_over_union(a, b) == pytest.approx(stats.spearmanr(ra, rb).statistic, abs=1e-12)


def test_mrc_per_language():
    rankings = {"en": [["a", "b"], ["x", "y"]], "de": [["a", "b"], ["y", "x"]], "fr": [["a", "b"], ["x", "y"]]}
    # query 0: all agree (1); query 1: en-de -1, en-fr 1, de-fr -1
    out = mrc_at_k(rankings, k=2)
    assert out["en"] == pytest.approx(100 * (1 + 0) / 2)
    assert out["de"] == pytest.approx(100 * (1 + -1) / 2)
    assert out["fr"] == pytest.approx(100 * (1 + 0) / 2)


def test_alignment_over_groups_equals_the_complete_array_and_handles_partial_groups():
    from eval.analysis import alignment_groups

    rng = np.random.default_rng(0)
    parallel = rng.normal(size=(5, 3, 4))  # 5 documents x 3 languages
    flat = parallel.reshape(15, 4)
    groups = [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(5)]
    assert alignment_groups(flat, groups) == pytest.approx(alignment(parallel))
    # partial groups (MLQA: a question exists in some languages only): mean over the pairs present
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [1.0, 1.0], [9.0, 9.0]])
    # pairs: (0,1): 25, (0,2): 1, (1,2): 18; (3,4): 128 -> mean 43
    assert alignment_groups(x, [[0, 1, 2], [3, 4]]) == pytest.approx((25 + 1 + 18 + 128) / 4)
    with pytest.raises(ValueError):
        alignment_groups(x, [[0]])
