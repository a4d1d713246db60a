"""The paper's analysis metrics (sections 5.4 and 5.5) as plain numpy functions.

- Cross-lingual alignment: mean squared distance between parallel documents, over every pair of
  distinct languages (Wang and Isola's l_align with alpha = 2, extended across languages).
- Uniformity: log of the mean Gaussian potential exp(-t ||x - y||^2) over all pairs of distinct
  documents of the mixed corpus, t = 2.
- MRC@k (Yang et al., 2024): Spearman's rank correlation between the top-k rankings that the same
  query gets in two languages, over the union of the documents they retrieved; averaged over the
  other languages and the queries, x100, per query language.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np


def alignment(parallel: np.ndarray) -> float:
    """parallel: (items, languages, dim) embeddings of the same documents in each language."""
    n_langs = parallel.shape[1]
    distances = [((parallel[:, i] - parallel[:, j]) ** 2).sum(-1) for i, j in combinations(range(n_langs), 2)]
    return float(np.mean(distances))


def alignment_groups(embeddings: np.ndarray, groups: list[list[int]]) -> float:
    """Alignment over groups of rows holding the same document in different languages.

    Mean squared distance over every pair of distinct rows within a group; with complete groups
    (every language present) this equals `alignment` of the (items, languages, dim) array.
    """
    pairs = np.array([(a, b) for g in groups for a, b in combinations(g, 2)], dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        raise ValueError("alignment needs at least one group with two languages")
    x = embeddings.astype(np.float64)
    return float(((x[pairs[:, 0]] - x[pairs[:, 1]]) ** 2).sum(-1).mean())


def uniformity(embeddings: np.ndarray, t: float = 2.0, chunk: int = 2048) -> float:
    """embeddings: (n, dim), every document of the mixed corpus; pairs of distinct documents only."""
    if len(embeddings) < 2:
        raise ValueError("uniformity needs at least two documents")
    x = embeddings.astype(np.float64)
    sq = (x ** 2).sum(1)
    total, pairs = 0.0, 0
    for start in range(0, len(x), chunk):  # (chunk x n) distances at a time: memory stays bounded
        block = x[start:start + chunk]
        d2 = np.maximum(sq[start:start + chunk, None] + sq[None, :] - 2 * block @ x.T, 0)
        rows = np.arange(len(block))
        upper = np.arange(len(x))[None, :] > (start + rows)[:, None]  # each unordered pair once
        total += np.exp(-t * d2[upper]).sum()
        pairs += int(upper.sum())
    return float(np.log(total / pairs))


def _ranks_over(union: list, ranking: list) -> np.ndarray:
    """Ranks 1..len(ranking) for retrieved documents; the rest of the union tie for the places after."""
    position = {doc: r for r, doc in enumerate(ranking, start=1)}
    missing = len(union) - len(position)
    tied = len(ranking) + (missing + 1) / 2  # the average of the tied places, as Spearman's rho ranks ties
    return np.array([position.get(doc, tied) for doc in union], dtype=np.float64)


def spearman_over_union(ranking_a: list, ranking_b: list) -> float:
    union = list(dict.fromkeys([*ranking_a, *ranking_b]))
    ra, rb = _ranks_over(union, ranking_a), _ranks_over(union, ranking_b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    if denominator == 0:  # a single document in the union: the rankings agree
        return 1.0
    return float((ra * rb).sum() / denominator)


def mrc_at_k(rankings: dict[str, list[list]], k: int = 10) -> dict[str, float]:
    """rankings[lang][i]: documents retrieved for query i in language `lang` (best first).

    Returns MRC@k x 100 per query language.
    """
    langs = sorted(rankings)
    n = len(rankings[langs[0]])
    out = {}
    for a in langs:
        per_query = [np.mean([spearman_over_union(rankings[a][i][:k], rankings[b][i][:k]) for b in langs if b != a])
                     for i in range(n)]
        out[a] = 100.0 * float(np.mean(per_query))
    return out
