"""The paper's analysis metrics (sections 5.4 and 5.5) as plain numpy functions.

- Cross-lingual alignment: mean squared distance between parallel documents, over every pair of
  distinct languages (Wang and Isola's l_align with alpha = 2, extended across languages).
- Uniformity: log of the mean Gaussian potential exp(-t ||x - y||^2) over all pairs of distinct
  documents of the mixed corpus, t = 2.
MRC@k and PEER@k (language fairness, section 5.5) are in eval/fairness.py.
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
