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
