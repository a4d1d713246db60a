"""The eval step: local benchmark format and its bad input, retrieval per setting with hand-computed
metrics, approximate indexes against exact search, and a whole run (models x benchmarks -> report,
plots, embedding cache reuse, lambda curve) on tiny models."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval.benchmark import Benchmark
from eval.encoders import ModelSpec
from eval.local import load_local, load_sample
from eval.run import BenchmarkSpec, EvalConfig, retrieve, run_eval
from pipeline.errors import MimoError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


CORPUS = [{"_id": "d1", "title": "Eggs", "text": "Boil eggs for ten minutes.", "lang": "en", "group": "g1"},
          {"_id": "d2", "text": "Eier zehn Minuten kochen.", "lang": "de", "group": "g1"},
          {"_id": "d3", "text": "Rice needs twice its volume of water.", "lang": "en", "group": "g2"},
          {"_id": "d4", "text": "Reis braucht doppelt so viel Wasser.", "lang": "de", "group": "g2"}]
QUERIES = [{"_id": "q1", "text": "how long to boil eggs", "lang": "en", "group": "a"},
           {"_id": "q2", "text": "wie lange Eier kochen", "lang": "de", "group": "a"},
           {"_id": "q3", "text": "rice water ratio", "lang": "en"},
           {"_id": "q4", "text": "nicht beurteilt", "lang": "de"}]


def make_local(folder, qrels_lines, corpus=CORPUS, queries=QUERIES, qrels_name="qrels.trec"):
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "corpus.jsonl", corpus)
    pq.write_table(pa.Table.from_pylist(queries), folder / "queries.parquet")
    (folder / qrels_name).write_text("".join(l + "\n" for l in qrels_lines))
    return folder


def test_local_benchmark_counts_and_counted_skips(tmp_path):
    folder = make_local(tmp_path / "b", ["q1 0 d1 1", "q1 0 d2 1", "q2 0 d1 1", "q2 0 d2 2", "q2 0 d9 1",
                                         "q3 0 d3 0", "q7 0 d1 1"])
    bench = load_local(folder)
    # pytrec_eval's rules, each counted: q3 has only a grade-0 judgment (evaluated, scores 0); q4 has no
    # judgment (not evaluated); d9 is not in the corpus (kept: it counts in q2's ideal DCG); q7 does not exist
    assert bench.query_ids == ["q1", "q2", "q3"] and len(bench.doc_ids) == 4
    assert bench.skipped == {"qrels_unknown_document": 1, "qrels_unknown_query": 1, "query_without_positive": 1,
                             "query_without_judgments": 1}
    assert bench.qrels["q2"] == {"d1": 1, "d2": 2, "d9": 1}
    assert bench.doc_texts[0] == "Eggs Boil eggs for ten minutes."  # the title is prepended
    assert sorted(map(sorted, (g.values() for g in bench.doc_groups))) == [["d1", "d2"], ["d3", "d4"]]
    assert bench.query_groups == [{"en": "q1", "de": "q2"}]
    # BEIR's JSONL and TSV qrels read the same
    write_jsonl(folder / "qrels.jsonl", [{"query-id": "q1", "corpus-id": "d1", "score": 1}])
    (folder / "qrels.trec").unlink()
    assert load_local(folder).qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize("case, message", [
    ("duplicate_doc", "corpus.jsonl:2: duplicate id 'd1'"),
    ("duplicate_query", "queries.parquet: row 1: duplicate id 'q1'"),
    ("empty_corpus", "the corpus is empty"),
    ("unknown_docs_only", "no qrels entry names a document of the corpus"),
    ("no_positive", "no query has a relevant document"),
    ("unknown_positive_only", "no query has a relevant document"),
    ("bad_grade", "qrels.trec:1: relevance 'x' is not an integer"),
    ("short_line", "qrels.trec:1: a TREC qrels line has 4 fields"),
    ("missing_text", "corpus.jsonl:1: missing field 'text'"),
    ("fractional_grade", "relevance 0.5 is not an integer"),
    ("group_twice_in_a_language", "group 'g1' has two entries in language 'en'"),
])
def test_bad_local_input_is_one_line_error(tmp_path, case, message):
    corpus, queries, qrels = list(CORPUS), list(QUERIES), ["q1 0 d1 1"]
    if case == "duplicate_doc":
        corpus[1] = {**corpus[1], "_id": "d1"}
    elif case == "duplicate_query":
        queries[1] = {**queries[1], "_id": "q1"}
    elif case == "empty_corpus":
        corpus = []
    elif case == "unknown_docs_only":
        qrels = ["q1 0 x1 1", "q2 0 x2 1"]
    elif case == "no_positive":
        qrels = ["q1 0 d1 0"]
    elif case == "unknown_positive_only":
        qrels = ["q1 0 d1 0", "q1 0 x1 1"]
    elif case == "bad_grade":
        qrels = ["q1 0 d1 x"]
    elif case == "short_line":
        qrels = ["q1 d1 1"]
    elif case == "missing_text":
        corpus = [{"_id": "d1", "body": "no text field"}]
    elif case == "fractional_grade":
        write_jsonl(tmp_path / "q.jsonl", [{"query_id": "q1", "doc_id": "d1", "relevance": 0.5}])
    elif case == "group_twice_in_a_language":
        corpus[1] = {**corpus[1], "lang": "en"}
    folder = make_local(tmp_path / "b", qrels, corpus, queries)
    if case == "fractional_grade":
        (folder / "qrels.trec").unlink()
        (tmp_path / "q.jsonl").rename(folder / "qrels.jsonl")
    with pytest.raises(MimoError) as err:
        load_local(folder)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_sample_benchmark_construction():
    bench = load_sample("data/sample", "heldout", ("en", "de", "ja"))
    # 40 held-out items x 3 languages; each query's positives: its passage in all 3 languages
    assert len(bench.query_ids) == 120 and len(bench.doc_ids) == 120
    assert all(len(judged) == 3 for judged in bench.qrels.values())
    assert len(bench.query_groups) == 40 and all(len(g) == 3 for g in bench.query_groups)
    assert len(bench.doc_groups) == 40 and bench.languages == ["de", "en", "ja"]


def tiny_bench(setting: str) -> Benchmark:
    return Benchmark("tiny", setting, ["q0", "q1"], ["a", "b"], ["en", "de"], ["d0", "d1", "d2"], ["x", "y", "z"],
                     ["en", "de", "en"], {"q0": {"d0": 1, "d1": 1}, "q1": {"d1": 1}}).checked()


def test_retrieve_by_hand_and_monolingual_stays_in_language():
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    corpus = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
    found = retrieve(tiny_bench("mlir"), queries, corpus, EvalConfig(depth=20, peer_ks=(20,)))
    # q0 ranks d0 (1.0), d2 (0.8), d1 (0.6): gains 1, 0, 1
    ndcg = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert found["metrics"]["ndcg@20"][0] == pytest.approx(ndcg)
    assert found["metrics"]["mrr@10"][0] == 1.0 and found["metrics"]["recall@20"][0] == 1.0
    assert found["rows"][1, :3].tolist() == [1, 2, 0]
    # monolingual: q0 (en) searches d0 and d2 only, so its German positive d1 cannot be found; the
    # qrels check drops that judgment (counted) and q1 (de) sees d1 alone
    bench = tiny_bench("monolingual")
    assert bench.skipped["qrels_other_language"] == 1
    found = retrieve(bench, queries, corpus, EvalConfig(depth=20, peer_ks=(20,)))
    assert found["rows"][0, :2].tolist() == [0, 2] and found["rows"][0, 2] == -1
    assert found["rows"][1, 0] == 1 and (found["rows"][1, 1:] == -1).all()
    assert found["metrics"]["ndcg@20"].tolist() == [1.0, 1.0]


def test_wrong_dimension_is_an_error():
    with pytest.raises(MimoError, match="query embeddings are 3-d, corpus embeddings 2-d"):
        retrieve(tiny_bench("mlir"), np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), EvalConfig())


def test_approximate_index_reports_recall_against_exact():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(3000, 16)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    n = 50
    bench = Benchmark("r", "mlir", [f"q{i}" for i in range(n)], ["t"] * n, ["en"] * n,
                      [f"d{i}" for i in range(3000)], ["t"] * 3000, ["en"] * 3000,
                      {f"q{i}": {f"d{i}": 1} for i in range(n)}).checked()
    queries = corpus[:n] + 0.05 * rng.normal(size=(n, 16)).astype(np.float32)
    exact = retrieve(bench, queries, corpus, EvalConfig(depth=20, peer_ks=(20,)))
    assert "index_recall" not in exact
    for kind in ("ivf", "hnsw"):
        approx = retrieve(bench, queries, corpus, EvalConfig(index=kind, depth=20, nprobe=4, peer_ks=(20,)))
        assert 0.3 < approx["index_recall"] <= 1.0
    full = retrieve(bench, queries, corpus, EvalConfig(index="ivf", depth=20, nprobe=10_000, peer_ks=(20,)))
    assert full["index_recall"] == pytest.approx(1.0)  # probing every list is exact search
    assert np.array_equal(full["metrics"]["ndcg@20"], exact["metrics"]["ndcg@20"])


def fake_training_output(folder, student_dir):
    """A finished training output's layout: the exported model in model/, psi beside it."""
    shutil.copytree(student_dir, folder / "model")
    (folder / "projection.pt").write_bytes(b"unused at inference")
    return folder


def test_a_sweep_run_already_evaluated_is_not_added_twice(tmp_path):
    from eval.run import with_sweep

    (tmp_path / "sweep").mkdir()
    runs = [{"lambda": 0.0, "out_dir": str(tmp_path / "sweep/lambda-0")},
            {"lambda": 0.2, "out_dir": str(tmp_path / "stage2-mimo")},  # reused by the sweep
            {"lambda": 1.0, "out_dir": str(tmp_path / "sweep/lambda-1")}]
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps(runs))
    mimo = ModelSpec(name="MIMO", model=str(tmp_path / "sweep/../stage2-mimo"), lam=0.2, query_prompt="query: ")
    models = with_sweep([ModelSpec(name="Stage 1", model="s1"), mimo], str(tmp_path / "sweep"))
    assert [(m.label, m.lam) for m in models] == [("Stage 1", None), ("MIMO", 0.2), ("MIMO λ=0", 0.0), ("MIMO λ=1", 1.0)]
    assert models[2].query_prompt == "query: "  # the sweep's models take the lambda model's settings
    # the same folder at another lambda is another model (a mislabelled run is shown, not hidden)
    other = with_sweep([ModelSpec(name="MIMO", model=str(tmp_path / "stage2-mimo"), lam=0.5)], str(tmp_path / "sweep"))
    assert [m.label for m in other] == ["MIMO", "MIMO λ=0", "MIMO λ=0.2", "MIMO λ=1"]


def test_eval_end_to_end_report_cache_and_lambda_curve(training_setup, tmp_path, monkeypatch):
    student = training_setup / "tiny-student"
    runs = {lam: fake_training_output(tmp_path / f"lambda-{lam}", student) for lam in (0.0, 1.0)}
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps([{"lambda": lam, "out_dir": str(p)} for lam, p in runs.items()]))
    local = make_local(tmp_path / "mono", ["q1 0 d1 1", "q2 0 d2 1", "q3 0 d3 1"])
    cfg = EvalConfig(
        out_dir=str(tmp_path / "eval"), embeddings_dir=str(tmp_path / "emb"), sweep_dir=str(tmp_path / "sweep"),
        mrc_more_ks=(5, 10),  # 10 is mrc_k: not computed twice
        models=(
            ModelSpec(name="tiny", model=str(student)),
            ModelSpec(
                name="teacher", model=f"teacher:{training_setup / 'cache.zarr'}"),
        ),
        benchmarks=(BenchmarkSpec("sample", languages=("en", "de", "ja"), analysis=True),
                    BenchmarkSpec("local", name="mono", path=str(local), setting="monolingual")),
    )
    lines = []
    summary = run_eval(cfg, echo=lines.append)
    out = tmp_path / "eval"
    assert summary["models"] == ["tiny", "teacher", "MIMO λ=0", "MIMO λ=1"]
    assert len(summary["results"]) == 8
    for name in ("report.md", "results.csv", "results.json", "config.json", "scores_per_dataset.png",
                 "alignment_uniformity.png", "mrc_radar.png", "lambda_curve.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    for model in summary["models"]:
        assert f"| {model} |" in report
    sample = next(r for r in summary["results"] if r["model"] == "teacher" and r["benchmark"] == "sample")
    assert 0 < sample["main"] <= 1 and sample["metric"] == "ndcg@20"
    assert set(sample["mrc"]) == {"en", "de", "ja"} and sample["alignment"] > 0
    # the release's MRC (similarity scores over the union; tiny random models: any sign) and PEER (p-values)
    assert -100 <= sample["mrc_mean"] <= 100 and sample["mrc_groups"] > 0
    assert 0 <= sample["peer@20"] <= 1 and set(sample["peer"]["peer@20"]) == {"en", "de", "ja"}
    assert "## Language fairness: MRC and PEER" in report and "PEER@20" in report
    mono = next(r for r in summary["results"] if r["benchmark"] == "mono")
    assert mono["metric"] == "ndcg@10" and set(mono["per_language"]) == {"en", "de"}
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert csv_rows[0] == "model,benchmark,setting,measure,language,value" and len(csv_rows) > 50
    measures = {(row.split(",")[3], row.split(",")[4]) for row in csv_rows if row.startswith("teacher,sample,")}
    assert {("mrc@10", "de"), ("mrc_mean", "all"), ("peer@20", "all"), ("peer@100", "ja")} <= measures
    assert {("mrc@5", "all"), ("mrc@5", "de")} <= measures and ("mrc@10", "all") not in measures
    assert summary["mrc_more_ks"] == [5] and "| MRC@10 | MRC@5 | PEER@20 |" in report
    assert set(sample["mrc_more"]["mrc@5"]) == {"en", "de", "ja"} and -100 <= sample["mrc@5"] <= 100
    assert not any("mrc" in row or "peer" in row for row in csv_rows if ",mono," in row)  # monolingual: none
    # the fake sweep runs hold the same weights: the same embeddings, the same scores
    lam = [r for r in summary["results"] if r["lam"] is not None and r["benchmark"] == "sample"]
    assert lam[0]["main"] == lam[1]["main"]

    # a second eval encodes nothing: every embedding comes from the cache
    from pipeline.teacher import TransformersTeacher

    monkeypatch.setattr(TransformersTeacher, "encode", lambda *a, **k: pytest.fail("encoded again"))
    again = run_eval(cfg, echo=lambda *_: None)
    assert [r["main"] for r in again["results"]] == [r["main"] for r in summary["results"]]

    # a cached file of the wrong shape is named, not used
    cached = next((tmp_path / "emb").glob("tiny-*/sample.query.*.npy"))
    np.save(cached, np.zeros((3, 5), np.float32))
    with pytest.raises(MimoError, match="cached embeddings have shape"):
        run_eval(cfg, echo=lambda *_: None)


def test_eval_config_refusals(tmp_path):
    with pytest.raises(MimoError, match="'model' is not set"):
        EvalConfig(models=(ModelSpec(name="x"),))
    with pytest.raises(MimoError, match="distinct names"):
        EvalConfig(models=(ModelSpec(model="a"), ModelSpec(model="a")))
    with pytest.raises(MimoError, match="index must be one of"):
        EvalConfig(index="lsh")
    for bad, message in (({"mrc_k": 0}, "mrc_k must be between 1 and depth"), ({"mrc_k": 200}, "mrc_k must be"),
                         ({"mrc_more_ks": (5, 5)}, "mrc_more_ks must be distinct"), ({"mrc_more_ks": (0,)}, "mrc_more_ks must be"),
                         ({"peer_ks": (20, 200)}, "peer_ks must be distinct cut-offs"),
                         ({"peer_ks": (20, 20)}, "peer_ks must be distinct"), ({"nprobe": 0}, "nprobe must be at least 1"), ({"hnsw_m": 0}, "hnsw_m must be at least 2")):
        with pytest.raises(MimoError, match=message):
            EvalConfig(**bad)
    local = make_local(tmp_path / "mono", ["q1 0 d1 1"])
    with pytest.raises(MimoError, match="analysis .* needs a mixed-language"):
        run_eval(EvalConfig(out_dir=str(tmp_path / "o"), models=(ModelSpec(model="intfloat/multilingual-e5-small"),),
                            benchmarks=(BenchmarkSpec("local", path=str(local), setting="monolingual", analysis=True),)),
                 echo=lambda *_: None)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text('[{"lam": 0.2}]')
    with pytest.raises(MimoError, match="sweep.json: not a sweep result"):
        run_eval(EvalConfig(out_dir=str(tmp_path / "o"), sweep_dir=str(tmp_path / "sweep"),
                            benchmarks=(BenchmarkSpec("sample", languages=("en", "de")),)), echo=lambda *_: None)
    with pytest.raises(MimoError, match="not found"):
        run_eval(EvalConfig(out_dir=str(tmp_path / "o"), models=(ModelSpec(model="work/nothing/here"),),
                            benchmarks=(BenchmarkSpec("sample", languages=("en", "de")),)), echo=lambda *_: None)
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(MimoError, match="not a finished training output"):
        run_eval(EvalConfig(out_dir=str(tmp_path / "o"), models=(ModelSpec(model=str(unfinished)),),
                            benchmarks=(BenchmarkSpec("sample", languages=("en", "de")),)), echo=lambda *_: None)
    assert not (tmp_path / "o").exists()  # refused before writing anything


def test_eval_embeds_a_trained_output_as_the_trainer_does(training_setup, tmp_path):
    """The eval encoder over an exported training output gives the student's own (normalized) embeddings."""
    import torch

    from eval.encoders import Embedder
    from trainer.stage1 import Stage1Config, run_stage1
    from trainer.student import load_student

    out = tmp_path / "s1"
    run_stage1(Stage1Config(prepared=str(training_setup / "prepared"), cache=str(training_setup / "cache.zarr"),
                            out_dir=str(out), student=str(training_setup / "tiny-student"), batch_size=64,
                            max_length=32, lr=1e-3, progress=False), echo=lambda *_: None)
    texts = ["wie lange ein Ei kochen", "how long to boil an egg", "卵をゆでる時間", "Rice needs water. " * 5]
    got = Embedder(ModelSpec(name="s1", model=str(out)), tmp_path / "emb").embed("t", "document", texts, "d")
    student, tokenizer = load_student(str(out / "model"), teacher_dim=384)
    student.eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
        expected = torch.nn.functional.normalize(student.embed(batch["input_ids"], batch["attention_mask"]), dim=-1)
    cos = (torch.from_numpy(got) * expected).sum(-1)
    assert cos.min() > 0.9999, cos
    # a model's own compute_dtype overrides the eval's (the release loads each checkpoint in its dtype)
    own = Embedder(ModelSpec(name="s1", model=str(out), compute_dtype="bfloat16"), tmp_path / "emb", compute_dtype="float32")
    default = Embedder(ModelSpec(name="s1", model=str(out)), tmp_path / "emb", compute_dtype="float32")
    assert (own.encoder.compute_dtype, default.encoder.compute_dtype) == ("bfloat16", "float32")
    assert own.dir != default.dir  # and its embeddings are cached apart
    with pytest.raises(MimoError, match="compute_dtype must be one of"):
        ModelSpec(model="m", compute_dtype="fp8")


def test_a_killed_encode_resumes_from_its_last_part(training_setup, tmp_path, monkeypatch):
    import eval.encoders as encoders
    from pipeline.teacher import TransformersTeacher

    texts = [f"text number {i} about eggs and rice" for i in range(10)]
    spec = ModelSpec(name="tiny", model=str(training_setup / "tiny-student"))
    whole = encoders.Embedder(spec, tmp_path / "a").embed("b", "document", texts, "d")
    monkeypatch.setattr(encoders, "PART_ROWS", 4)
    real, calls = TransformersTeacher.encode, []

    def dies_on_the_second_part(self, rows, *args, **kwargs):
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job is killed while encoding texts 5-8
        return real(self, rows, *args, **kwargs)

    monkeypatch.setattr(TransformersTeacher, "encode", dies_on_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        encoders.Embedder(spec, tmp_path / "b").embed("b", "document", texts, "d")
    assert len(list((tmp_path / "b").glob("*/b.document.d.part*.npy"))) == 1
    resumed = encoders.Embedder(spec, tmp_path / "b").embed("b", "document", texts, "d")
    assert calls == [4, 4, 4, 2]  # the first part was not encoded again
    np.testing.assert_allclose(resumed, whole, atol=1e-6)
    assert not list((tmp_path / "b").glob("*/*.part*.npy"))  # parts are merged and removed


def test_summaries_average_by_setting_and_analysis_and_fairness_use_groups():
    from eval.analysis import alignment_groups, uniformity
    from eval.run import analyze, summarize

    found = {"metrics": {name: np.array([1.0, 0.0, 0.0]) for name in
                         ("ndcg@10", "ndcg@20", "recall@20", "recall@100", "mrr@10")},
             "timing": {"index_s": 0.0, "search_s": 0.0, "metrics_s": 0.0}}
    bench = Benchmark("b", "mlir", ["q0", "q1", "q2"], ["a", "b", "c"], ["en", "de", "de"], ["d0", "d1", "d2"],
                      ["x", "y", "z"], ["en", "de", "de"], {"q0": {"d0": 1}, "q1": {"d1": 1}, "q2": {"d2": 1}},
                      query_groups=[{"en": "q0", "de": "q1"}, {"de": "q2"}],
                      doc_groups=[{"en": "d0", "de": "d1"}]).checked()
    assert summarize(bench, found, 100)["main"] == pytest.approx(1 / 3)  # MLIR: every query counts once
    bench.setting = "monolingual"
    assert summarize(bench, found, 100)["main"] == pytest.approx(0.5)  # MIRACL: mean of en 1.0 and de 0.0
    bench.setting = "mlir"
    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    top = np.array([[0, 2, 1], [1, 2, 0], [2, 1, 0]])
    out = analyze(bench, corpus)
    assert out["alignment"] == pytest.approx(alignment_groups(corpus, [[0, 1]])) == pytest.approx(2.0)
    assert out["uniformity"] == pytest.approx(uniformity(corpus))
    # only the group with the query in two languages enters MRC: q0 = (1, 0) scores the corpus (1, 0, .6),
    # q1 = (0, 1) scores it (0, 1, .8); top-2 {d0, d2} and {d1, d2}: over the union Spearman -1 -> x100
    from eval.fairness import language_fairness

    queries = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    fair = language_fairness(bench, queries, corpus, top, mrc_k=2, peer_ks=(2,))
    assert fair["mrc_groups"] == 1 and fair["mrc"] == pytest.approx({"en": -100.0, "de": -100.0})
    assert "peer@2" not in fair  # every query has one relevant document: PEER is undefined


def test_models_embedded_ahead_one_call_each_give_the_eval_its_figures(training_setup, tmp_path, monkeypatch):
    """`mimo embed` per model (the demo's jobs beside training) fills the cache the eval reads: the eval
    then encodes nothing and reports the figures of an eval that encoded everything itself."""
    from eval.run import run_embed
    from pipeline.encoder import Encoder

    student = training_setup / "tiny-student"
    lam0 = fake_training_output(tmp_path / "lambda-0", student)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps([{"lambda": 0.0, "out_dir": str(lam0)}]))

    def config(name):
        return EvalConfig(out_dir=str(tmp_path / name / "eval"), embeddings_dir=str(tmp_path / name / "emb"),
                          sweep_dir=str(tmp_path / "sweep"), plots=False,
                          models=(ModelSpec(name="tiny", model=str(student)),
                                  ModelSpec(name="teacher", model=f"teacher:{training_setup / 'cache.zarr'}")),
                          benchmarks=(BenchmarkSpec("sample", languages=("en", "de", "ja"), analysis=True),))

    whole = run_eval(config("whole"), echo=lambda *_: None)
    ahead = config("ahead")
    assert run_embed(ahead, ["tiny"], echo=lambda *_: None) == ["tiny"]  # by report name
    assert run_embed(ahead, [f"{lam0}/"], echo=lambda *_: None) == ["MIMO λ=0"]  # by folder, however spelled
    assert run_embed(ahead, [f"teacher:{training_setup / 'cache.zarr'}", "MIMO λ=0"], echo=lambda *_: None) == [
        "teacher", "MIMO λ=0"]  # by model string, and the sweep's runs
    with pytest.raises(MimoError, match="no eval model named 'LaKDA'"):
        run_embed(ahead, ["LaKDA"], echo=lambda *_: None)
    monkeypatch.setattr(Encoder, "encode", lambda *a, **k: pytest.fail("encoded again"))
    got = run_eval(ahead, echo=lambda *_: None)

    def figures(summary):
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in summary["results"]]

    assert figures(got) == figures(whole) and len(got["results"]) == 3
