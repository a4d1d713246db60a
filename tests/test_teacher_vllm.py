"""The vLLM backend against vLLM 0.33's API, without vLLM (it needs a GPU and its own torch).

A small stand-in `vllm` package is put in `sys.modules`. Its signatures are copied from the
vllm 0.33.0 wheel's source (vllm/config/pooler.py, vllm/entrypoints/llm.py,
vllm/entrypoints/pooling/offline.py, vllm/inputs/llm.py, vllm/outputs.py): PoolerConfig refuses
`normalize` with vLLM's own message and takes seq_pooling_type / use_activation; LLM takes
runner / convert / pooler_config / dtype and hands other keywords to EngineArgs, which refuses
unknown ones; LLM.embed takes token-id prompts and returns one output per prompt in the input
order. Its "model runner" encodes each prompt alone with transformers, unpadded, as vLLM does,
and pools and normalizes as the pooler config says, so the backend's vectors can be compared with
the transformers backend's: what `mimo teacher-parity` checks on a GPU machine with the real vLLM.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import sys
import types

import numpy as np
import pytest
import torch

from pipeline.errors import MimoError
from pipeline.teacher import TeacherConfig, TransformersTeacher
from pipeline.teacher_vllm import VllmTeacher, parity

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["how long do eggs boil", "Boil the eggs for ten minutes, then cool them in cold water.",
         "rice", "A longer passage about rice: it needs twice its volume of water and twenty minutes."]
ROLES = ["query", "document", "query", "document"]

SEQ_POOLING_TYPES = ("CLS", "LAST", "MEAN")  # vllm/config/pooler.py SequencePoolingType
MODEL_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")  # vllm/config/model.py ModelDType
ENGINE_ARGS = {"max_model_len", "tokenizer", "seed", "tensor_parallel_size", "revision"}  # a few EngineArgs fields


def fake_vllm(calls: dict) -> dict[str, types.ModuleType]:
    """Modules `vllm`, `vllm.config`, `vllm.inputs` with vLLM 0.33.0's signatures.
    `calls` records what the backend passed; `calls["failing"] = i` makes request i fail."""

    @dataclasses.dataclass
    class _PoolerFields:
        task: str | None = None
        pooling_type: str | None = None
        seq_pooling_type: str | None = None
        tok_pooling_type: str | None = None
        use_activation: bool | None = None
        dimensions: int | None = None

    def PoolerConfig(**kwargs):  # a pydantic dataclass with a "before" validator in vLLM
        if "normalize" in kwargs:
            raise ValueError("Parameter `normalize` was removed; use `use_activation` instead.")
        cfg = _PoolerFields(**kwargs)  # unknown fields: TypeError
        if cfg.pooling_type is not None:
            cfg.seq_pooling_type = cfg.pooling_type
        if cfg.seq_pooling_type not in (None, *SEQ_POOLING_TYPES):
            raise ValueError(f"seq_pooling_type {cfg.seq_pooling_type!r}")
        return cfg

    class EmbeddingOutput:
        def __init__(self, embedding: list[float]):
            self.embedding = embedding

    class EmbeddingRequestOutput:
        def __init__(self, request_id, outputs, prompt_token_ids, error=None):
            self.request_id, self.outputs, self.prompt_token_ids, self.error = request_id, outputs, prompt_token_ids, error

    class LLM:
        def __init__(self, model: str, *, runner: str = "auto", convert: str = "auto", tokenizer=None,
                     dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.92,
                     enforce_eager: bool = False, pooler_config=None, **kwargs):
            unknown = set(kwargs) - ENGINE_ARGS
            if unknown:  # EngineArgs(**kwargs) is a dataclass
                raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}")
            assert runner in ("auto", "generate", "pooling", "draft") and convert in ("auto", "none", "embed", "classify")
            assert dtype in MODEL_DTYPES and isinstance(pooler_config, _PoolerFields)
            calls["llm"] = dict(model=model, runner=runner, convert=convert, dtype=dtype, pooler=pooler_config,
                                gpu_memory_utilization=gpu_memory_utilization, **kwargs)
            from transformers import AutoModel

            self.model = AutoModel.from_pretrained(model, dtype=getattr(torch, dtype)).eval()
            self.pooler = pooler_config

        def embed(self, prompts, *, use_tqdm=True, pooling_params=None, lora_request=None,
                  tokenization_kwargs=None):
            calls["embed"] = len(prompts)
            out = []
            for i, prompt in enumerate(prompts):
                assert set(prompt) == {"prompt_token_ids"}, prompt  # token ids only: no text, no tokenizer
                ids = torch.tensor([prompt["prompt_token_ids"]])
                with torch.inference_mode():
                    hidden = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
                vector = {"LAST": hidden[-1], "CLS": hidden[0], "MEAN": hidden.mean(0)}[self.pooler.seq_pooling_type]
                if self.pooler.use_activation in (None, True):  # the embed pooler's activation: L2 normalization
                    vector = torch.nn.functional.normalize(vector, dim=-1)
                error = "prompt too long" if i == calls.get("failing") else None
                out.append(EmbeddingRequestOutput(str(i), EmbeddingOutput([] if error else vector.tolist()),
                                                  prompt["prompt_token_ids"], error))
            return out

    def TokensPrompt(**kwargs):  # a TypedDict: a plain dict at run time
        return dict(kwargs)

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec reads it
        mod.__dict__.update(attrs)
        return mod

    config = module("vllm.config", PoolerConfig=PoolerConfig)
    inputs = module("vllm.inputs", TokensPrompt=TokensPrompt)
    root = module("vllm", __version__="0.33.0", LLM=LLM, TokensPrompt=TokensPrompt, config=config, inputs=inputs)
    return {"vllm": root, "vllm.config": config, "vllm.inputs": inputs}


@pytest.fixture(scope="module")
def fake_modules():
    calls = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in fake_vllm(calls).items():
            mp.setitem(sys.modules, name, mod)
        yield calls


@pytest.fixture
def vllm_calls(fake_modules):
    fake_modules.clear()
    return fake_modules


@pytest.fixture(scope="module")
def qwen3(fake_modules, tiny_qwen3):
    """The vLLM backend on a tiny Qwen3 (last token, left padding, end token), and the transformers one."""
    return (VllmTeacher(TeacherConfig(model=str(tiny_qwen3), backend="vllm")),
            TransformersTeacher(TeacherConfig(model=str(tiny_qwen3))))


def test_the_stand_in_refuses_normalize_as_vllm_033_does(vllm_calls):
    from vllm.config import PoolerConfig

    with pytest.raises(ValueError, match="Parameter `normalize` was removed"):
        PoolerConfig(pooling_type="LAST", normalize=True)  # what the backend passed before vLLM 0.33
    with pytest.raises(TypeError):
        import vllm

        vllm.LLM("m", task="embed", pooler_config=PoolerConfig())  # `task` is no longer an engine argument


def test_qwen3_last_token_backend_matches_the_transformers_backend(vllm_calls, qwen3, tiny_qwen3):
    teacher, plain = qwen3
    teacher._llm = None
    batches = []
    vectors, ntokens, truncated = teacher.encode(TEXTS, ROLES, [512, 512, 512, 8],
                                                 on_batch=lambda rows, tokens: batches.append((rows, tokens)))
    llm = vllm_calls["llm"]
    assert (llm["runner"], llm["convert"], llm["dtype"]) == ("pooling", "embed", "float32")
    assert (llm["pooler"].seq_pooling_type, llm["pooler"].use_activation) == ("LAST", True)
    assert llm["model"] == str(tiny_qwen3) and llm["max_model_len"] == teacher.max_positions
    assert vllm_calls["embed"] == len(TEXTS)  # one call for the whole shard
    assert vectors.dtype == np.float32 and vectors.shape == (4, teacher.dim)
    assert list(truncated) == [False, False, False, True] and ntokens[3] == 8
    assert batches == [(4, int(ntokens.sum()))]
    reference, ref_tokens, _ = plain.encode(TEXTS, ROLES, [512, 512, 512, 8])
    assert list(ntokens) == list(ref_tokens)
    cos = (vectors * reference).sum(1)  # both unit vectors
    assert cos.min() >= 0.9999, cos
    assert np.abs(vectors - reference).max() < 1e-4  # row i is text i: the order is the input order
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_mean_pooling_without_normalization_and_autocast_dtype(vllm_calls):
    cfg = TeacherConfig(model=MINILM, backend="vllm", normalize="false", compute_dtype="autocast_bf16")
    assert VllmTeacher(cfg).llm_arguments()["dtype"] == "bfloat16"  # vLLM has no autocast: bf16 weights
    cfg = TeacherConfig(model=MINILM, backend="vllm", normalize="false", query_prompt="")
    vectors, _, _ = VllmTeacher(cfg).encode(TEXTS, ROLES, [256] * 4)
    assert (vllm_calls["llm"]["pooler"].seq_pooling_type, vllm_calls["llm"]["pooler"].use_activation) == ("MEAN", False)
    reference, _, _ = TransformersTeacher(cfg).encode(TEXTS, ROLES, [256] * 4)
    assert not np.allclose(np.linalg.norm(reference, axis=1), 1, atol=1e-3)  # really not normalized
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=1e-4)


def test_parity_is_one_on_identical_runners(vllm_calls):
    cos = parity(TeacherConfig(model=MINILM, backend="vllm"), TEXTS, ROLES, [256] * 4)
    assert vllm_calls["llm"]["pooler"].seq_pooling_type == "MEAN"
    assert cos.shape == (4,) and cos.min() >= 0.9999


def test_a_failed_request_and_an_older_api_are_one_line_errors(vllm_calls, qwen3, monkeypatch):
    teacher, _ = qwen3
    teacher._llm = None
    vllm_calls["failing"] = 1
    with pytest.raises(MimoError, match=r"vLLM could not encode text 1 of this batch .*prompt too long"):
        teacher.encode(TEXTS, ROLES, [512] * 4)

    def old_pooler_config(pooling_type=None, normalize=None):  # a vLLM from before seq_pooling_type
        return None

    monkeypatch.setattr(sys.modules["vllm.config"], "PoolerConfig", old_pooler_config)
    teacher._llm = None
    with pytest.raises(MimoError, match=r"vLLM 0.33.0 refused the pooler settings .*needs vllm>=0.33,<0.34"):
        teacher.llm
