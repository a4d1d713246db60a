"""Language-fairness metrics as the authors' release computes them (src/mimo/evaluation/metrics.py).

- MRC@k (Yang et al., EMNLP MRL 2024; the paper's section 5.5): for parallel queries q_a, q_b (the
  same question in languages a and b), Spearman's correlation between their *similarity scores* over
  the union of their top-k documents. A document of the union that one query did not retrieve still
  has a score for it (q . d can be computed for any document), and that score is what is correlated:
  nothing is tied last. A pair whose union holds fewer than 2 documents, or whose correlation is
  undefined (constant scores), is left out. RC_a = mean over the other languages b; MRC@k(a) = mean
  of RC_a over the queries of language a, x100; the overall figure is the mean over languages.
- PEER@k (Yang et al., SIGIR 2024): per query, the ranks of its relevant documents (1-based over the
  whole corpus, ranks past k set to k+1) grouped by document language; the Kruskal-Wallis p-value of
  those groups (high = relevant documents of every language are ranked alike). A query whose
  relevant documents are all in one language is not counted; all ranks equal (e.g. none retrieved
  in the top k) gives p = 1, as in the release. PEER@k = mean p-value, overall and per query language.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaincc


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values` (ascending), ties sharing the mean of their places (Spearman's convention)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # places starts+1 .. ends, averaged
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (Pearson's r of average ranks); nan when either side is constant."""
    ra, rb = average_ranks(np.asarray(a, np.float64)), average_ranks(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def mrc_at_k(queries: np.ndarray, corpus: np.ndarray, top: np.ndarray, groups: list[dict[str, int]],
             k: int = 10) -> tuple[dict[str, float], int]:
    """MRC@k x 100 per query language, and the number of groups that contributed.

    queries, corpus: the (normalized) embeddings; top: each query's retrieved corpus rows, best
    first (-1 = none); groups: {lang: query row} for the translations of one query.
    """
    per_lang: dict[str, list[float]] = {}
    used = 0
    for group in groups:
        langs = sorted(group)
        if len(langs) < 2:
            continue
        retrieved = {lang: set(int(r) for r in top[group[lang], :k] if r >= 0) for lang in langs}
        contributed = False
        for a in langs:
            pairs = []
            for b in langs:
                if b == a:
                    continue
                union = np.array(sorted(retrieved[a] | retrieved[b]), dtype=np.int64)
                if len(union) < 2:
                    continue
                docs = corpus[union].astype(np.float64)
                rho = spearman(docs @ queries[group[a]].astype(np.float64), docs @ queries[group[b]].astype(np.float64))
                if not np.isnan(rho):
                    pairs.append(rho)
            if pairs:
                per_lang.setdefault(a, []).append(float(np.mean(pairs)))
                contributed = True
        used += contributed
    return {lang: 100.0 * float(np.mean(v)) for lang, v in sorted(per_lang.items())}, used


def kruskal_wallis(groups: list[np.ndarray]) -> float:
    """p-value of the Kruskal-Wallis H test (tie-corrected, chi-square with g-1 degrees of freedom)."""
    values = np.concatenate(groups).astype(np.float64)
    n = len(values)
    ranks = average_ranks(values)
    sizes = np.array([len(g) for g in groups])
    bounds = np.r_[0, np.cumsum(sizes)]
    rank_sums = np.array([ranks[bounds[i]:bounds[i + 1]].sum() for i in range(len(groups))])
    h = 12.0 / (n * (n + 1)) * (rank_sums ** 2 / sizes).sum() - 3 * (n + 1)
    _, ties = np.unique(values, return_counts=True)
    correction = 1.0 - ((ties ** 3 - ties).sum()) / (n ** 3 - n)
    if correction <= 0:  # every value equal: no evidence of a difference
        return 1.0
    return float(gammaincc((len(groups) - 1) / 2.0, h / correction / 2.0))  # chi2 survival function


def peer_p_values(top: np.ndarray, relevant: list[np.ndarray], doc_langs: np.ndarray, k: int) -> np.ndarray:
    """Per query: the PEER p-value of its relevant corpus rows, nan where it is not defined.

    top: retrieved corpus rows, best first (at least k columns, -1 = none); relevant[i]: the corpus
    rows of query i's relevant documents; doc_langs: each corpus row's language.
    """
    out = np.full(len(relevant), np.nan)
    for i, rows in enumerate(relevant):
        if len(rows) < 2:
            continue
        position = {int(r): p for p, r in enumerate(top[i, :k], start=1) if r >= 0}
        ranks = np.array([position.get(int(r), k + 1) for r in rows], dtype=np.float64)
        langs = doc_langs[rows]
        groups = [ranks[langs == lang] for lang in np.unique(langs)]
        if len(groups) < 2:  # one language only: the test is undefined (the release skips the query)
            continue
        out[i] = 1.0 if np.all(ranks == ranks[0]) else kruskal_wallis(groups)
    return out


def peer_at_k(top: np.ndarray, relevant: list[np.ndarray], doc_langs: np.ndarray, query_langs: list[str],
              k: int) -> dict | None:
    """{"all": mean p-value, "per_language": {lang: mean}, "queries": n counted}; None if no query counts."""
    p = peer_p_values(top, relevant, doc_langs, k)
    counted = ~np.isnan(p)
    if not counted.any():
        return None
    qlang = np.array(query_langs)
    return {"all": float(p[counted].mean()), "queries": int(counted.sum()),
            "per_language": {lang: float(p[counted & (qlang == lang)].mean())
                             for lang in sorted(set(qlang[counted]))}}


def language_fairness(bench, queries: np.ndarray, corpus: np.ndarray, top: np.ndarray, mrc_k: int,
                      peer_ks: tuple[int, ...], mrc_more_ks: tuple[int, ...] = ()) -> dict:
    """MRC@k (parallel queries) and PEER@k (queries with relevant documents in >= 2 languages) of one
    MLIR benchmark, as result-row entries; a metric the benchmark does not support is left out.

    mrc_k's figures are `mrc` (per query language), `mrc_mean` and `mrc_groups`; each further cut-off
    of mrc_more_ks (the release logs MRC@5, @10 and @20) adds `mrc@k` (the mean over languages) and
    `mrc_more["mrc@k"]` (per query language)."""
    out: dict = {}
    qrow = {q: i for i, q in enumerate(bench.query_ids)}
    groups = [{lang: qrow[q] for lang, q in g.items() if q in qrow} for g in bench.query_groups]
    if any(len(g) > 1 for g in groups):
        mrc, used = mrc_at_k(queries, corpus, top, groups, mrc_k)
        if mrc:
            out.update(mrc=mrc, mrc_mean=float(np.mean(list(mrc.values()))), mrc_groups=used)
        for k in sorted(set(mrc_more_ks) - {mrc_k}):
            mrc, _ = mrc_at_k(queries, corpus, top, groups, k)
            if mrc:
                out[f"mrc@{k}"] = float(np.mean(list(mrc.values())))
                out.setdefault("mrc_more", {})[f"mrc@{k}"] = mrc
    row_of = {d: i for i, d in enumerate(bench.doc_ids)}
    relevant = [np.array([row_of[d] for d, g in bench.qrels.get(q, {}).items() if g > 0 and d in row_of], dtype=np.int64)
                for q in bench.query_ids]
    doc_langs = np.array(bench.doc_langs)
    for k in peer_ks:
        peer = peer_at_k(top, relevant, doc_langs, bench.query_langs, k)
        if peer is not None:
            out[f"peer@{k}"] = peer["all"]
            out.setdefault("peer", {})[f"peer@{k}"] = peer["per_language"]
            out.setdefault("peer_queries", {})[f"peer@{k}"] = peer["queries"]
    return out
