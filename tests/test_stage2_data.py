"""Stage-2 preparation: round-robin balance, the baselines' compositions, the mMARCO loader, bad input."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import numpy as np
import pytest

from pipeline.errors import MimoError
from pipeline.languages import LANGUAGES
from pipeline.stage2_data import Stage2DataConfig, compose, prepare_stage2, round_robin
from pipeline.worklist import text_id
from tests.conftest import make_mmarco_repo


def test_round_robin_balances_the_182_pairs():
    pairs = list(permutations(LANGUAGES, 2))
    assert len(pairs) == 182
    for n in (1, 181, 182, 415_938 // 100, 2287):
        counts = Counter(round_robin(pairs, n, np.random.default_rng(0)))
        values = [counts.get(p, 0) for p in pairs]
        assert sum(values) == n and max(values) - min(values) <= 1


def test_round_robin_shuffles_each_cycle():
    draws = round_robin(list(range(14)), 14 * 3, np.random.default_rng(5))
    cycles = [draws[i:i + 14] for i in (0, 14, 28)]
    assert all(sorted(c) == list(range(14)) for c in cycles)  # each cycle is a permutation
    assert len({tuple(c) for c in cycles}) == 3  # a fresh order every cycle


def test_compositions_of_the_paper():
    n = 182 * 3 + 50
    comp = compose(n, LANGUAGES, seed=7)
    mimo = Counter((q, p) for q, p, _ in comp["mimo"])
    assert all(q != p for q, p in mimo) and len(mimo) == 182
    assert max(mimo.values()) - min(mimo.values()) <= 1
    infonce = Counter(q for q, p, _ in comp["infonce"])
    assert all(q == p for q, p, _ in comp["infonce"]) and len(infonce) == 14
    assert max(infonce.values()) - min(infonce.values()) <= 1
    lakda_q = Counter((q1, q2) for q1, _, q2 in comp["lakda"])
    lakda_p = Counter(p for _, p, _ in comp["lakda"])
    assert all(q1 != q2 for q1, q2 in lakda_q) and len(lakda_q) == 182
    assert max(lakda_q.values()) - min(lakda_q.values()) <= 1
    assert len(lakda_p) == 14 and max(lakda_p.values()) - min(lakda_p.values()) <= 1
    # the passage language is drawn independently of the query pair: not a function of it
    by_pair = {}
    for q1, p, q2 in comp["lakda"]:
        by_pair.setdefault((q1, q2), set()).add(p)
    assert any(len(ps) > 1 for ps in by_pair.values())
    assert compose(n, LANGUAGES, seed=7) == comp and compose(n, LANGUAGES, seed=8) != comp


LANGS = ("en", "de", "ja")


def _mmarco(tmp_path, drop=None, empty=None):
    queries = {lang: {str(q): f"{lang} query {q}" for q in range(1, 9)} for lang in LANGS}
    passages = {lang: {str(p): f"{lang} passage {p}" for p in range(100, 112)} for lang in LANGS}
    if drop:
        lang, qid = drop
        del queries[lang][qid]
    if empty:
        lang, pid = empty
        passages[lang][pid] = "   "
    # query 1 has two positives; a repeated triple with another negative is the same pair
    triples = [("1", "100", "105"), ("1", "101", "106"), ("1", "100", "107")] + \
              [(str(q), str(98 + q), "110") for q in range(2, 9)]
    return make_mmarco_repo(tmp_path / "mmarco", LANGS, queries, passages, triples)


def test_mmarco_layout_loader_builds_aligned_instances(tmp_path):
    root = _mmarco(tmp_path)
    cfg = Stage2DataConfig(source="local", root=str(root), languages=LANGS)
    tables, report = prepare_stage2(cfg, seed=0, sample_dir=None)
    assert report["pairs_in"] == report["pairs_out"] == 9  # distinct (qid, positive) pairs
    mimo = tables["mimo"]
    assert mimo.num_rows == 9
    for row in mimo.to_pylist():
        assert row["q_lang"] != row["p_lang"]
        assert row["q_text"] == f"{row['q_lang']} query {row['query_id']}"
        assert row["p_text"] == f"{row['p_lang']} passage {row['passage_id']}"
        assert row["q_teacher_id"] == text_id("query", 512, f"en query {row['query_id']}")
        assert row["p_teacher_id"] == text_id("document", 512, f"en passage {row['passage_id']}")
        assert row["q2_lang"] is None
    # the three compositions hold the same instances in the same order
    for name in ("infonce", "lakda"):
        assert tables[name].column("query_id").to_pylist() == mimo.column("query_id").to_pylist()
        assert tables[name].column("passage_id").to_pylist() == mimo.column("passage_id").to_pylist()
    for row in tables["lakda"].to_pylist():
        assert row["q2_lang"] != row["q_lang"] and row["q2_text"] == f"{row['q2_lang']} query {row['query_id']}"
    english = report["english"]
    assert ("en query 1", "en passage 100") in english and ("en query 1", "en passage 101") in english


def test_max_pairs_takes_a_seeded_subset(tmp_path):
    cfg = Stage2DataConfig(source="local", root=str(_mmarco(tmp_path)), languages=LANGS, max_pairs=4)
    tables, _ = prepare_stage2(cfg, seed=0, sample_dir=None)
    assert tables["mimo"].num_rows == 4


def test_missing_translation_is_a_counted_skip(tmp_path):
    cfg = Stage2DataConfig(source="local", root=str(_mmarco(tmp_path, drop=("ja", "1"))), languages=LANGS)
    tables, report = prepare_stage2(cfg, seed=0, sample_dir=None)
    assert report["missing_translation"] == {"en": 0, "de": 0, "ja": 2}  # query 1 has two pairs
    assert tables["mimo"].num_rows == 7 and "1" not in tables["mimo"].column("query_id").to_pylist()


def test_empty_passage_is_an_error_naming_file_and_id(tmp_path):
    cfg = Stage2DataConfig(source="local", root=str(_mmarco(tmp_path, empty=("de", "103"))), languages=LANGS)
    with pytest.raises(MimoError, match=r"german_collection\.tsv: id 103: empty or whitespace-only text"):
        prepare_stage2(cfg, seed=0, sample_dir=None)


def test_missing_mmarco_file(tmp_path):
    root = _mmarco(tmp_path)
    (root / "data/google/queries/train/japanese_queries.train.tsv").unlink()
    cfg = Stage2DataConfig(source="local", root=str(root), languages=LANGS)
    with pytest.raises(MimoError, match=r"japanese_queries\.train\.tsv: file not found"):
        prepare_stage2(cfg, seed=0, sample_dir=None)


def test_bad_settings():
    with pytest.raises(MimoError, match="must include en"):
        Stage2DataConfig(languages=("de", "fr"))
    with pytest.raises(MimoError, match="stage2.root"):
        Stage2DataConfig(source="local")
    with pytest.raises(MimoError, match="unknown language code 'xx'"):
        Stage2DataConfig(languages=("en", "xx"))
