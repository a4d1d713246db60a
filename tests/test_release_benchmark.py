"""The authors' benchmark files (source mimo-release, eval/release.py) and the release's scoring
(`scoring = "release"`, Benchmark.release_scoring): fixtures laid out like `MMLIR/<name>_test/`,
counts and metric values worked out by hand next to each case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.fairness import language_fairness
from eval.metrics import JudgedGrades, evaluate_search
from eval.release import doc_lang, query_lang_and_key
from eval.run import BenchmarkSpec, load_benchmark
from pipeline.errors import MimoError
from tests.test_hub_benchmarks import _offline_datasets, make_bench, make_hard_negatives  # noqa: F401 (autouse fixture)

QUERIES = [{"_id": "en_q_001a", "text": "where is it?", "lang": "en"},
           {"_id": "de_q_001a", "text": "wo ist es?", "lang": "de"},
           {"_id": "en_q_002b", "text": "who is it?", "lang": "en"},
           {"_id": "de_q_002b", "text": "wer ist es?"},  # no lang: read from the id
           {"_id": "ja_q_003c", "text": "dare?", "lang": "ja"},  # no translation: in no group
           {"_id": "zh_9", "text": "never judged", "lang": "zh"}]  # the {lang}_{key} form; no qrels
CORPUS = [{"doc_en_0": {"text": "context one", "lang": "en"}},
          {"doc_de_0": {"text": "Kontext eins", "lang": "de"}},
          {"doc_en_1": {"text": "context two", "lang": "en"}},
          {"doc_de_1": {"text": "Kontext zwei"}},  # no lang: read from the id
          {"doc_ja_0": {"text": "bunmyaku", "lang": "ja"}}]
QRELS = [{"en_q_001a": {"doc_en_0": 1, "doc_de_0": 1}},
         {"de_q_001a": {"doc_en_0": 1, "doc_de_0": 1}},
         {"en_q_002b": {"doc_en_1": 1, "doc_de_1": 1}},
         {"de_q_002b": {"doc_en_1": 1, "doc_de_1": 1, "doc_fr_7": 1}},  # doc_fr_7 is not in the corpus
         {"ja_q_003c": {"doc_ja_0": 1}},
         {"xx_q_404": {"doc_en_0": 1}}]  # no such query


def lines(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def make_release(folder, queries=QUERIES, corpus=CORPUS, qrels=QRELS, raw: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("queries.jsonl", queries), ("corpus.jsonl", corpus), ("qrels.jsonl", qrels)):
        (folder / name).write_text((raw or {}).get(name, lines(rows)), encoding="utf-8")
    return folder


def test_id_parsing_as_the_release():
    assert query_lang_and_key("ar_q_005a") == ("ar", "005a")
    assert query_lang_and_key("de_56beb4343aeaaa14008c925b") == ("de", "56beb4343aeaaa14008c925b")
    assert query_lang_and_key("zh_q_ab_cd") == ("zh", "ab_cd")
    assert query_lang_and_key("nounderscore") is None and query_lang_and_key("en_") is None
    assert doc_lang("doc_en_1466") == "en" and doc_lang("d17") == "und"


def test_release_folder_counts_groups_and_skips(tmp_path):
    folder = make_release(tmp_path / "MMLIR" / "Belebele_test")
    bench = load_benchmark(BenchmarkSpec("mimo-release", name="belebele", path=str(folder)))
    # zh_9 has no judgment (not evaluated); doc_fr_7 and xx_q_404 are counted; 5 queries, 5 documents
    assert bench.query_ids == ["en_q_001a", "de_q_001a", "en_q_002b", "de_q_002b", "ja_q_003c"]
    assert bench.query_langs == ["en", "de", "en", "de", "ja"] and bench.languages == ["de", "en", "ja"]
    assert bench.doc_ids == ["doc_en_0", "doc_de_0", "doc_en_1", "doc_de_1", "doc_ja_0"]
    assert bench.doc_langs == ["en", "de", "en", "de", "ja"]
    assert bench.skipped == {"qrels_unknown_document": 1, "qrels_unknown_query": 1, "query_without_judgments": 1}
    assert bench.query_groups == [{"en": "en_q_001a", "de": "de_q_001a"}, {"en": "en_q_002b", "de": "de_q_002b"}]
    # document groups from the qrels: positives one per language are the gold context's translations
    assert bench.doc_groups == [{"en": "doc_en_0", "de": "doc_de_0"}, {"en": "doc_en_1", "de": "doc_de_1"}]
    assert (bench.name, bench.setting, bench.metric) == ("belebele", "mlir", "ndcg@20")
    # the release's scoring drops the out-of-corpus judgment (nothing else changes: the grades are 1)
    scored = load_benchmark(BenchmarkSpec("mimo-release", name="b", path=str(folder), scoring="release"))
    assert scored.qrels["de_q_002b"] == {"doc_en_1": 1, "doc_de_1": 1}
    assert scored.skipped == {"qrels_unknown_document_dropped": 1, "qrels_unknown_query": 1, "query_without_judgments": 1}


def test_release_hub_path_fetches_the_three_files(tmp_path, monkeypatch):
    import eval.release

    folder = make_release(tmp_path / "copy")
    asked = []

    def fetch(repo, relpath, revision="main"):
        asked.append((repo, relpath, revision))
        return folder / relpath.rsplit("/", 1)[1]

    monkeypatch.setattr(eval.release, "fetch_dataset_file", fetch)
    bench = load_benchmark(BenchmarkSpec("mimo-release", path="yjoonjang/mlir-benchmarks/MMLIR/XQuAD_test", revision="r1"))
    assert asked == [("yjoonjang/mlir-benchmarks", f"MMLIR/XQuAD_test/{f}", "r1")
                     for f in ("queries.jsonl", "corpus.jsonl", "qrels.jsonl")]
    assert bench.name == "mimo-release" and len(bench.query_ids) == 5


@pytest.mark.parametrize("raw, message", [
    ({"queries.jsonl": lines(QUERIES + [{"_id": "en_q_001a", "text": "again"}])},
     r"queries.jsonl:7: duplicate query id 'en_q_001a' \(first on line 1\)"),
    ({"queries.jsonl": lines([{"_id": "plain", "text": "x"}])}, r"queries.jsonl:1: query id 'plain' is not of the form"),
    ({"queries.jsonl": lines([{"_id": "en_q_1"}])}, r"queries.jsonl:1: missing field\(s\) text"),
    ({"queries.jsonl": lines(QUERIES + [{"_id": "en_001a", "text": "same key and language"}])},
     r"queries 'en_q_001a' and 'en_001a' share a key and language 'en'"),
    ({"corpus.jsonl": lines(CORPUS) + '{"doc_en_0": {"text": "again"}}\n'}, r"corpus.jsonl:6: duplicate document id 'doc_en_0'"),
    ({"corpus.jsonl": lines(CORPUS) + '{"doc_en_9": "just text"}\n'}, r"corpus.jsonl:6: document 'doc_en_9': expected"),
    ({"corpus.jsonl": lines(CORPUS) + "{not json\n"}, r"corpus.jsonl:6: invalid JSON"),
    ({"corpus.jsonl": lines(CORPUS) + "[1, 2]\n"}, r"corpus.jsonl:6: expected a non-empty JSON object"),
    ({"corpus.jsonl": lines(CORPUS) + '{"doc_en_9": {"text": 7}}\n'}, r"corpus.jsonl:6: document 'doc_en_9': 'text' must be a string"),
    ({"qrels.jsonl": lines(QRELS + [{"en_q_001a": {"doc_ja_0": 1}}])}, r"qrels.jsonl:7: query 'en_q_001a' is judged again"),
    ({"qrels.jsonl": lines([{"en_q_001a": {"doc_en_0": "yes"}}])}, r"qrels.jsonl:1: .* relevance 'yes' is not an integer"),
    ({"qrels.jsonl": lines([{"en_q_001a": ["doc_en_0"]}])}, r"qrels.jsonl:1: query 'en_q_001a': expected \{doc_id: relevance\}"),
    ({"qrels.jsonl": lines([{"en_q_001a": {"doc_xx_0": 1}}])}, r"no qrels entry names a document of the corpus"),
])
def test_release_bad_input_is_one_line_error(tmp_path, raw, message):
    folder = make_release(tmp_path / "bad", raw=raw)
    with pytest.raises(MimoError, match=message) as err:
        load_benchmark(BenchmarkSpec("mimo-release", path=str(folder)))
    assert "\n" not in str(err.value)


def test_release_paths_and_settings_refused(tmp_path):
    folder = make_release(tmp_path / "partial")
    (folder / "qrels.jsonl").unlink()
    with pytest.raises(MimoError, match=r"not a mimo-release benchmark folder \(no qrels.jsonl\)"):
        load_benchmark(BenchmarkSpec("mimo-release", path=str(folder)))
    with pytest.raises(MimoError, match="neither a local folder nor a hub id with a folder"):
        load_benchmark(BenchmarkSpec("mimo-release", path="./nowhere/MMLIR/Belebele_test"))
    with pytest.raises(MimoError, match="source mimo-release needs 'path'"):
        BenchmarkSpec("mimo-release")
    with pytest.raises(MimoError, match="evaluated whole"):
        load_benchmark(BenchmarkSpec("mimo-release", path=str(make_release(tmp_path / "ok")), languages=("en",)))
    with pytest.raises(MimoError, match="scoring must be one of trec_eval, release"):
        BenchmarkSpec("sample", scoring="binary")


def test_release_fairness_on_the_fixture(tmp_path):
    bench = load_benchmark(BenchmarkSpec("mimo-release", path=str(make_release(tmp_path / "f")), scoring="release"))
    corpus = np.eye(5)  # similarity of a query to document j = the query vector's entry j
    queries = np.array([[0.9, 0.8, 0.1, 0.0, 0.2],   # en_q_001a: top-2 d0 (en) d1 (de)
                        [0.7, 0.9, 0.0, 0.1, 0.3],   # de_q_001a: top-2 d1 d0: over {d0, d1} the reverse of en
                        [0.0, 0.1, 0.9, 0.2, 0.5],   # en_q_002b: top-2 d2 (en), d4 (ja); its de positive d3 is 4th
                        [0.5, 0.0, 0.1, 0.9, 0.2],   # de_q_002b: top-2 d3 d0
                        [0.1, 0.2, 0.3, 0.4, 0.9]])  # ja_q_003c
    top = np.argsort(-queries, axis=1)
    out = language_fairness(bench, queries, corpus, top, mrc_k=2, peer_ks=(2, 4))
    # group 1: union {d0, d1}: en (.9, .8) vs de (.7, .9) -> rho -1. group 2: union {d0, d2, d3, d4}:
    # en (0, .9, .2, .5) ranks (1, 4, 2, 3), de (.5, .1, .9, .2) ranks (3, 1, 4, 2): d = (-2, 3, -2, 1) -> 1 - 6*18/60 = -0.8
    assert out["mrc"] == pytest.approx({"en": 100 * (-1 - 0.8) / 2, "de": 100 * (-1 - 0.8) / 2})
    assert out["mrc_mean"] == pytest.approx(-90.0) and out["mrc_groups"] == 2
    # PEER@2: q1 en d0 rank 1, de d1 rank 2 -> kruskal([1], [2]); q2 d0 2, d1 1; q3 en d2 1, de d3 past 2 -> 3;
    # q4 de d3 1, en d2 past 2 -> 3; ja_q_003c has one relevant document: not counted
    from scipy import stats

    p = stats.kruskal([1], [2]).pvalue
    assert out["peer@2"] == pytest.approx(p) and out["peer_queries"]["peer@2"] == 4
    assert out["peer"]["peer@2"] == pytest.approx({"en": p, "de": p})
    # PEER@4: q3's de positive d3 is at rank 3 and q4's en positive d2 at 4: two distinct values in two
    # groups of one each give the same p
    assert out["peer@4"] == pytest.approx(p)


def test_release_fairness_more_mrc_cutoffs(tmp_path):
    """mrc_more_ks: the release logs MRC@5, @10 and @20; each further cut-off is its own figure, mrc_k's stay."""
    from scipy import stats

    bench = load_benchmark(BenchmarkSpec("mimo-release", path=str(make_release(tmp_path / "f")), scoring="release"))
    corpus = np.eye(5)
    queries = np.array([[0.9, 0.8, 0.1, 0.0, 0.2], [0.7, 0.9, 0.0, 0.1, 0.3], [0.0, 0.1, 0.9, 0.2, 0.5],
                        [0.5, 0.0, 0.1, 0.9, 0.2], [0.1, 0.2, 0.3, 0.4, 0.9]])
    top = np.argsort(-queries, axis=1)
    out = language_fairness(bench, queries, corpus, top, mrc_k=2, peer_ks=(2,), mrc_more_ks=(4, 1, 2))
    assert out["mrc_mean"] == pytest.approx(-90.0)  # mrc_k's figures as without the further cut-offs
    assert "mrc@2" not in out and set(out["mrc_more"]) == {"mrc@1", "mrc@4"}
    # k = 4: both groups' unions are all 5 documents. Group 1: en ranks (5, 4, 2, 1, 3), de (4, 5, 1, 2, 3):
    # d^2 = 4, rho = 1 - 6*4/120 = 0.8. Group 2: en (1, 2, 5, 3, 4), de (4, 1, 2, 5, 3): d^2 = 24, rho = -0.2
    assert stats.spearmanr(queries[0], queries[1])[0] == pytest.approx(0.8)
    assert stats.spearmanr(queries[2], queries[3])[0] == pytest.approx(-0.2)
    assert out["mrc_more"]["mrc@4"] == pytest.approx({"en": 30.0, "de": 30.0}) and out["mrc@4"] == pytest.approx(30.0)
    # k = 1: unions {d0, d1} and {d2, d3}, each query prefers its own: -1 twice
    assert out["mrc@1"] == pytest.approx(-100.0)


def test_neuclir_release_scoring_by_hand(tmp_path):
    hn = make_hard_negatives(tmp_path / "hn22",
                             corpus={"fas": [("f1", "", "persian")],
                                     "rus": [("r1", "", "russian one"), ("r2", " Headline ", "body ")],
                                     "zho": [("z1", "", "chinese one"), ("z2", "", "two"), ("z3", "", "three")]},
                             queries={"fas": ["4"], "rus": ["1", "2"], "zho": ["2", "3", "5"]})
    path = f"{hn}+{make_bench(tmp_path / 'bench')}"
    faithful = load_benchmark(BenchmarkSpec("neuclir22", path=path))
    release = load_benchmark(BenchmarkSpec("neuclir22", path=path, scoring="release"))
    # trec_eval: graded, f1 (not pooled) kept, query 3 (grade 0 only) evaluated; release: binary, both dropped
    assert faithful.qrels == {"1": {"r1": 3, "r2": 0}, "2": {"r2": 1, "z1": 1, "f1": 1}, "3": {"z2": 0}}
    assert release.qrels == {"1": {"r1": 1}, "2": {"r2": 1, "z1": 1}}
    assert release.skipped == {"query_without_english_text": 1, "qrels_other_track": 1,
                               "qrels_unknown_document_dropped": 1, "query_without_positive_dropped": 1}
    assert faithful.doc_texts[1] == " Headline  body " and release.doc_texts[1] == "Headline\nbody"
    # the same ranking scored both ways (documents r1 r2 z1 z2 z3 = rows 0..4)
    ranking = {"1": [1, 0, 2], "2": [2, 4, 1], "3": [3, 0, 1]}

    def ndcg(bench):
        rows = np.array([ranking[q] for q in bench.query_ids])
        scores = np.tile(np.array([3.0, 2.0, 1.0]), (len(rows), 1))
        judged = JudgedGrades(bench.qrels, bench.query_ids, bench.doc_ids, 3)
        return evaluate_search(rows, scores, judged, bench.doc_ids, ks=(10,))["ndcg@10"]

    # query 1: r2 (0) then r1 (grade 3 / 1): 3/log2(3) / 3 = 1/log2(3) either way = 0.63093
    # query 2: z1 (1), z3 (0), r2 (1): DCG 1 + 1/2; ideal trec_eval 1 + 1/log2(3) + 1/2 (f1 counts) -> 0.70392,
    #          release 1 + 1/log2(3) -> 0.91972; query 3: trec_eval 0, release dropped
    assert ndcg(faithful) == pytest.approx([0.630930, 0.703918, 0.0], abs=1e-6)
    assert ndcg(release) == pytest.approx([0.630930, 0.919721], abs=1e-6)


def test_paper_config_evaluates_as_the_release():
    from pathlib import Path

    from pipeline.config import load_config
    from eval.run import EvalConfig

    cfg = load_config(EvalConfig, "eval", Path(__file__).resolve().parents[1] / "configs" / "paper.toml")
    spec = {b.label: (b.source, b.path, b.scoring, b.analysis) for b in cfg.benchmarks}
    assert spec == {
        "belebele": ("mimo-release", "yjoonjang/mlir-benchmarks/MMLIR/Belebele_test", "trec_eval", True),
        "mlqa": ("mimo-release", "yjoonjang/mlir-benchmarks/MMLIR/MLQA_test", "trec_eval", False),
        "xquad": ("mimo-release", "yjoonjang/mlir-benchmarks/MMLIR/XQuAD_test", "trec_eval", False),
        "multieup": ("mimo-release", "yjoonjang/mlir-benchmarks/MMLIR/MultiEup_test", "trec_eval", False),
        "neuclir22": ("neuclir22", "", "release", False), "neuclir23": ("neuclir23", "", "release", False),
        "miracl": ("miracl", "", "trec_eval", False)}
    # the built-in defaults are the same benchmarks; the release encodes in float32
    assert [(b.label, b.source, b.path, b.scoring, b.analysis) for b in EvalConfig().benchmarks] == \
        [(b.label, b.source, b.path, b.scoring, b.analysis) for b in cfg.benchmarks]
    assert (cfg.compute_dtype, cfg.mrc_k, cfg.mrc_more_ks, cfg.peer_ks) == ("float32", 10, (5, 20), (20, 100))
    assert EvalConfig().mrc_more_ks == (5, 20)  # the release's evaluate.py: mrc_ks 5, 10, 20
    assert {m.label: m.compute_dtype for m in cfg.models}["Qwen3-Embedding-8B (teacher)"] == "bfloat16"
