"""The teacher encoder: equal to sentence-transformers, batch invariant, prompts, end-of-text token, bf16."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pipeline.errors import MimoError
from pipeline.store import from_storage, to_storage
from pipeline.teacher import TeacherConfig, TransformersTeacher
from tests.conftest import REPO

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def sample_texts(n=24):
    items = [json.loads(line) for line in (REPO / "data/sample/en.jsonl").read_text().splitlines()[:n]]
    return [it["query"] for it in items] + [" ".join(it["passage"]) for it in items]


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def minilm():
    return TransformersTeacher(TeacherConfig(model=MINILM, query_prompt="", max_batch_tokens=2048))


def test_minilm_matches_sentence_transformers_encode(minilm):
    from sentence_transformers import SentenceTransformer

    texts = sample_texts()
    ours, ntokens, truncated = minilm.encode(texts, ["document"] * len(texts), [256] * len(texts))
    reference = SentenceTransformer(str(minilm.model_dir), device="cpu").encode(texts, batch_size=7)
    assert (minilm.pooling, minilm.dim, minilm.normalize) == ("mean", 384, True)  # from its ST config
    assert cosines(ours, reference).min() >= 0.9999
    assert not truncated.any() and ntokens.max() < 256


@pytest.mark.parametrize("side", ["left", "right"])
def test_minilm_batch_invariance(side):
    teacher = TransformersTeacher(TeacherConfig(model=MINILM, padding_side=side, max_batch_tokens=4096))
    texts = sample_texts(12)
    roles = ["document"] * len(texts)
    batched, _, _ = teacher.encode(texts, roles, [512] * len(texts))
    alone = np.stack([teacher.encode([t], ["document"], [512])[0][0] for t in texts])
    assert cosines(batched, alone).min() >= 0.9999


@pytest.mark.parametrize("side", ["left", "right"])
def test_qwen3_batch_invariance_under_last_token_pooling(tiny_qwen3, side):
    teacher = TransformersTeacher(TeacherConfig(model=str(tiny_qwen3), padding_side=side, max_batch_tokens=4096))
    assert teacher.pooling == "last"  # decoder-only architecture
    texts = sample_texts(10)
    roles = ["query"] * 10 + ["document"] * 10
    batched, _, _ = teacher.encode(texts, roles, [512] * len(texts))
    alone = np.stack([teacher.encode([t], [r], [512])[0][0] for t, r in zip(texts, roles)])
    assert cosines(batched, alone).min() >= 0.9999
    # a pad token's state instead of the last real token's would make batched rows collapse together
    assert cosines(batched[:-1], batched[1:]).max() < 0.9999


def test_qwen3_end_of_text_token_exactly_once(tiny_qwen3, tmp_path):
    teacher = TransformersTeacher(TeacherConfig(model=str(tiny_qwen3)))
    end = teacher.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert teacher.end_id == end and teacher.padding_side == "left"
    long_text = "word " * 600
    rows, truncated = teacher.tokenize(["short text", long_text], ["document", "document"], [512, 64])
    assert [r.count(end) for r in rows] == [1, 1] and rows[0][-1] == rows[1][-1] == end
    assert len(rows[1]) == 64 and list(truncated) == [False, True]
    # a text of exactly the limit: the end token takes the last text token's place, which is a truncation
    exact = teacher.tokenizer("word " * 100, add_special_tokens=False)["input_ids"][:16]
    text16 = teacher.tokenizer.decode(exact)
    assert len(teacher.tokenizer(text16, add_special_tokens=False)["input_ids"]) == 16
    (row,), flags = teacher.tokenize([text16], ["document"], [16])
    assert len(row) == 16 and row[-1] == end and row[:-1] == exact[:15] and flags[0]
    # a tokenizer that appends <|endoftext|> itself (as Qwen3-Embedding's hub tokenizer does) gets no second one
    appending = tmp_path / "appending"
    shutil.copytree(tiny_qwen3, appending)
    spec = json.loads((appending / "tokenizer.json").read_text())
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [end], "tokens": ["<|endoftext|>"]}},
    }
    (appending / "tokenizer.json").write_text(json.dumps(spec))
    hub_like = TransformersTeacher(TeacherConfig(model=str(appending)))
    assert hub_like.tokenizer("hi")["input_ids"][-1] == end  # the tokenizer really appends it
    rows2, _ = hub_like.tokenize(["short text", long_text], ["document", "document"], [512, 64])
    assert rows2 == rows  # same ids: one end token, truncation keeps it last


def test_prompt_goes_on_queries_only(tiny_qwen3):
    prompt = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
    teacher = TransformersTeacher(TeacherConfig(model=str(tiny_qwen3)))
    assert teacher.cfg.query_prompt == prompt and teacher.cfg.document_prompt == ""
    text = "how long to boil an egg"
    (q, d), _ = teacher.tokenize([text, text], ["query", "document"], [512, 512])
    plain = teacher.tokenizer(text, add_special_tokens=False)["input_ids"]
    prompted = teacher.tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
    assert d[:-1] == plain and q[:-1] == prompted
    vq, _, _ = teacher.encode([text], ["query"], [512])
    vp, _, _ = teacher.encode([prompt + text], ["document"], [512])
    assert cosines(vq, vp)[0] >= 0.99999


def test_truncation_counts_special_tokens(minilm):
    rows, truncated = minilm.tokenize(["word " * 400], ["document"], [256])
    cls, sep = minilm.tokenizer.cls_token_id, minilm.tokenizer.sep_token_id
    assert len(rows[0]) == 256 and rows[0][0] == cls and rows[0][-1] == sep and truncated[0]


def test_token_budget_batches(minilm):
    lengths = np.array([5, 300, 7, 120, 6, 250, 9])
    batches = minilm.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len(b) * lengths[b].max() <= minilm.max_batch_tokens or len(b) == 1
        assert list(lengths[b]) == sorted(lengths[b])


def test_bf16_round_trip():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    stored = to_storage(x, "bfloat16")
    assert stored.dtype == np.uint16
    back = from_storage(stored, "bfloat16")
    # the same bits torch's round-to-nearest-even bfloat16 conversion gives
    assert np.array_equal(back, torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    assert np.abs(back - x).max() <= 2.0 ** -9  # half an ulp of bf16 on values below 1
    assert np.array_equal(from_storage(to_storage(back, "bfloat16"), "bfloat16"), back)  # exact on bf16 values
    assert cosines(back, x).min() >= 0.9999
    f16 = from_storage(to_storage(x, "float16"), "float16")
    assert np.abs(f16 - x).max() < np.abs(back - x).max()  # float16 is finer for unit vectors


def test_model_that_does_not_load(tmp_path):
    with pytest.raises(MimoError, match="teacher model 'no-such/model'.*cannot load"):
        TransformersTeacher(TeacherConfig(model="no-such/model"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(MimoError, match="cannot load its config or tokenizer"):
        TransformersTeacher(TeacherConfig(model=str(broken)))


def test_folders_with_the_same_tokenizer_files_share_one_tokenizer(training_setup, tmp_path):
    """The eval's students are copies of one tokenizer: loaded once per process, not once per model; a folder
    whose tokenizer files differ gets its own, and encodes as before."""
    from pipeline.encoder import Encoder, shared_tokenizer

    copies = []
    for name in ("a", "b"):
        shutil.copytree(training_setup / "tiny-student", tmp_path / name)
        copies.append(tmp_path / name)
    (tmp_path / "b" / "README.md").write_text("another model card: not a tokenizer file")
    assert shared_tokenizer(copies[0]) is shared_tokenizer(copies[1])
    first = Encoder(TeacherConfig(model=str(copies[0])), role="eval")
    assert Encoder(TeacherConfig(model=str(copies[1])), role="eval").tokenizer is first.tokenizer
    other = tmp_path / "c"
    shutil.copytree(training_setup / "tiny-student", other)
    tok = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**tok, "do_lower_case": not tok.get("do_lower_case", True)}))
    own = Encoder(TeacherConfig(model=str(other)), role="eval")
    assert own.tokenizer is not first.tokenizer
    text = ["Boil The EGGS"]
    assert own.tokenize(text, ["document"], [32])[0] != first.tokenize(text, ["document"], [32])[0]
