"""Metrics on hand-made runs, and per-query agreement with pytrec_eval (trec_eval) on random runs with ties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k, trec_order


def test_ndcg_by_hand():
    # ranked grades [0, 2, 1]; judged grades {2, 1, 1}
    ranked = np.array([[0.0, 2.0, 1.0]])
    ideal = np.array([[2.0, 1.0, 1.0]])
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, ideal, 3)[0] == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, ideal, 1)[0] == 0.0
    assert recall_at_k(ranked, np.array([3.0]), 2)[0] == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, 10)[0] == pytest.approx(0.5) and mrr_at_k(ranked, 1)[0] == 0.0


def test_trec_tie_breaking():
    assert trec_order({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]


def test_agreement_with_pytrec_eval_on_random_runs():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(60)]
    run, qrels = {}, {}
    for q in range(200):
        qid = f"q{q}"
        retrieved = rng.choice(docs, size=int(rng.integers(5, 40)), replace=False)
        run[qid] = {d: float(np.round(rng.random(), 1)) for d in retrieved}  # rounded: many ties
        judged = rng.choice(docs, size=int(rng.integers(1, 12)), replace=False)
        qrels[qid] = {d: int(rng.integers(0, 4)) for d in judged}
    measures = {"ndcg_cut.10", "ndcg_cut.20", "recall.10", "recall.20"}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    ours = evaluate(run, qrels, ks=(10, 20))
    compared = 0
    for qid, values in ours.items():
        for k in (10, 20):
            assert values[f"ndcg@{k}"] == pytest.approx(theirs[qid][f"ndcg_cut_{k}"], abs=1e-9), (qid, k)
            assert values[f"recall@{k}"] == pytest.approx(theirs[qid][f"recall_{k}"], abs=1e-9), (qid, k)
            compared += 1
    assert compared > 300


def test_search_result_path_equals_pytrec_eval():
    """The array path (FAISS rows and scores -> trec ranking -> grades) agrees with pytrec_eval per query."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    from eval.metrics import JudgedGrades, evaluate_search

    rng = np.random.default_rng(1)
    doc_ids = [f"d{i}" for i in rng.permutation(80)]  # corpus order unrelated to id order
    query_ids = [f"q{i}" for i in range(150)]
    k = 25
    rows = np.stack([rng.choice(80, size=k, replace=False) for _ in query_ids])
    scores = np.round(rng.random(rows.shape), 1).astype(np.float32)  # many ties: trec breaks them by id
    rows[:5, -3:] = -1  # fewer results than k (FAISS pads with -1)
    qrels = {}
    for q in query_ids:
        judged = rng.choice(80, size=int(rng.integers(1, 15)), replace=False)
        qrels[q] = {doc_ids[d]: int(rng.integers(0, 4)) for d in judged}
    run = {q: {doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i]) if r >= 0} for i, q in enumerate(query_ids)}
    qrels["q0"] = {doc_ids[int(rows[0, 0])]: 0}  # judged, nothing relevant: pytrec_eval scores it 0
    qrels["q1"]["not-in-corpus"] = 2  # counts in the ideal DCG and recall's denominator
    expected = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "ndcg_cut.20", "recall.20", "recip_rank"}).evaluate(run)
    got = evaluate_search(rows, scores, JudgedGrades(qrels, query_ids, doc_ids, k), doc_ids, ks=(10, 20))
    dict_path = evaluate(run, qrels, ks=(10, 20))
    assert set(expected) == set(query_ids) == set(dict_path)  # every judged query is evaluated
    for i, q in enumerate(query_ids):
        assert got["ndcg@10"][i] == pytest.approx(expected[q]["ndcg_cut_10"], abs=1e-9)
        assert got["ndcg@20"][i] == pytest.approx(expected[q]["ndcg_cut_20"], abs=1e-9)
        assert got["recall@20"][i] == pytest.approx(expected[q]["recall_20"], abs=1e-9)
        rr = expected[q]["recip_rank"]  # trec's reciprocal rank is not cut: MRR@10 is it when the rank is <= 10
        assert got["mrr@10"][i] == pytest.approx(rr if rr >= 0.1 else 0.0, abs=1e-12)
        assert got["mrr@10"][i] == pytest.approx(dict_path[q]["mrr@10"], abs=1e-12)
    assert got["ndcg@20"][0] == 0.0 and expected["q1"]["ndcg_cut_20"] < 1.0
