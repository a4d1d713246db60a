"""MRC@k and PEER@k as the authors' release computes them: hand-computed cases and scipy cross-checks.

The corpus in most cases is the identity matrix, so a query's similarity to document j is the
query vector's j-th entry: the scores are written out directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from eval.fairness import average_ranks, kruskal_wallis, mrc_at_k, peer_at_k, peer_p_values, spearman


def test_average_ranks_and_spearman_match_scipy():
    values = np.array([0.3, 0.1, 0.3, 0.9, 0.1, 0.5])
    assert average_ranks(values).tolist() == stats.rankdata(values).tolist() == [3.5, 1.5, 3.5, 6, 1.5, 5]
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 4, 7).astype(float), rng.normal(size=7)  # ties on one side
        if len(set(a)) > 1:
            assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(3), np.arange(3.0)))  # constant scores: undefined (the release skips the pair)


def test_mrc_correlates_scores_over_the_union():
    corpus = np.eye(5)
    q = np.array([[0.9, 0.8, 0.3, 0.1, 0.0],    # en: top-2 {d0, d1}
                  [0.5, 0.1, 0.9, 0.8, 0.0],    # de: top-2 {d2, d3}
                  [0.9, 0.8, 0.3, 0.1, 0.0]])   # fr: as en
    top = np.argsort(-q, axis=1)
    out, used = mrc_at_k(q, corpus, top, [{"en": 0, "de": 1, "fr": 2}], k=2)
    # en-de over the union {d0..d3}: scores [.9 .8 .3 .1] vs [.5 .1 .9 .8], ranks [4 3 2 1] vs [2 1 4 3],
    # d = [2 2 -2 -2]: rho = 1 - 6 * 16 / (4 * 15) = -0.6. en-fr: 1. de-fr: -0.6.
    assert stats.spearmanr([.9, .8, .3, .1], [.5, .1, .9, .8]).statistic == pytest.approx(-0.6)
    assert used == 1
    assert out == pytest.approx({"en": 100 * (-0.6 + 1) / 2, "de": -60.0, "fr": 20.0})
    # d2 and d3 are not in en's top 2 but still have en scores (.3, .1): a rank-based MRC that ties
    # them last would give en-de rho = -8/9 here, not -0.6
    ranks_en, ranks_de = [1, 2, 3.5, 3.5], [3.5, 3.5, 1, 2]
    assert stats.spearmanr(ranks_en, ranks_de).statistic == pytest.approx(-8 / 9)


def test_mrc_skips_small_unions_undefined_pairs_and_singletons():
    corpus = np.eye(4)
    q = np.array([[0.9, 0.2, 0.1, 0.0],  # en, group 1
                  [0.8, 0.1, 0.3, 0.0],  # de, group 1: the same top-1 as en -> union of 1 document: skipped
                  [0.5, 0.5, 0.5, 0.5],  # ja, group 2: constant scores -> rho undefined: skipped
                  [0.1, 0.9, 0.2, 0.0],  # zh, group 2
                  [0.3, 0.2, 0.1, 0.0]])  # en, alone in group 3
    top = np.argsort(-q, axis=1, kind="stable")
    out, used = mrc_at_k(q, corpus, top, [{"en": 0, "de": 1}, {"ja": 2, "zh": 3}, {"en": 4}], k=1)
    assert out == {} and used == 0
    out, used = mrc_at_k(q, corpus, top, [{"en": 0, "de": 1}], k=2)
    # en top-2 {d0, d1}, de {d0, d2}: union {d0, d1, d2}: [.9 .2 .1] vs [.8 .1 .3]: ranks [3 2 1] vs [3 1 2]: rho 0.5
    assert out == pytest.approx({"en": 50.0, "de": 50.0}) and used == 1


def test_kruskal_wallis_by_hand_and_against_scipy():
    # [1 2] vs [3 4]: N 4, rank sums 3 and 7: H = 12 / 20 * (9/2 + 49/2) - 15 = 2.4, p = chi2_1(2.4) tail
    assert kruskal_wallis([np.array([1.0, 2]), np.array([3.0, 4])]) == pytest.approx(0.121335, abs=1e-6)
    assert stats.kruskal([1, 2], [3, 4]).pvalue == pytest.approx(0.121335, abs=1e-6)
    for groups in ([[1, 11, 11], [3, 11]], [[2, 2, 5], [5, 7], [1, 11]], [[4], [11, 11, 11]]):
        arrays = [np.array(g, dtype=float) for g in groups]
        assert kruskal_wallis(arrays) == pytest.approx(stats.kruskal(*groups).pvalue, rel=1e-10)
    assert kruskal_wallis([np.array([11.0, 11]), np.array([11.0])]) == 1.0  # all equal


def test_peer_ranks_with_cutoff_against_scipy():
    k = 3
    # corpus rows 0..5; languages by row
    doc_langs = np.array(["en", "de", "en", "de", "fr", "fr"])
    top = np.array([[0, 1, 4, 2, 3],    # q0
                    [5, 4, 3, 2, 1],    # q1
                    [0, 2, 1, 3, 4],    # q2
                    [1, 2, 3, 4, 5]])   # q3
    relevant = [np.array([0, 1, 2, 3]),  # en {0: 1, 2: past k -> 4}, de {1: 2, 3: 4}
                np.array([0, 2, 4]),     # en {0: not retrieved -> 4, 2: 4}, fr {4: 2}
                np.array([0, 2]),        # one language only: not counted
                np.array([0, 5])]        # en {0: 4}, fr {5: 4}: all equal -> p = 1
    p = peer_p_values(top, relevant, doc_langs, k)
    assert p[0] == pytest.approx(stats.kruskal([1, 4], [2, 4]).pvalue)
    assert p[1] == pytest.approx(stats.kruskal([4, 4], [2]).pvalue)
    assert np.isnan(p[2]) and p[3] == 1.0
    out = peer_at_k(top, relevant, doc_langs, ["en", "en", "de", "de"], k)
    assert out["queries"] == 3
    assert out["all"] == pytest.approx((p[0] + p[1] + 1.0) / 3)
    assert out["per_language"] == pytest.approx({"en": (p[0] + p[1]) / 2, "de": 1.0})
    assert peer_at_k(top, [np.array([0, 2])] * 4, doc_langs, ["en"] * 4, k) is None
