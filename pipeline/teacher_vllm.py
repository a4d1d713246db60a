"""The vLLM teacher backend (optional extra, GPU machines only; vLLM pins its own torch).

Same inputs as the transformers backend, by construction: this class reuses its tokenization
(prompts by role, truncation to each row's limit, the end-of-text token exactly once) and hands
vLLM token ids, not strings, so vLLM's own tokenizer and truncation never come into play. vLLM
only runs the model and the pooler (pooling type and normalization set explicitly).

vLLM's API moved from `LLM(task="embed", override_pooler_config=...)` to
`LLM(runner="pooling", pooler_config=...)`; both are tried. Before a bulk run, compare the two
backends on a sample: `mimo teacher-parity --config ...` prints the cosine per text.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import MimoError
from pipeline.teacher import TeacherConfig, TransformersTeacher

VLLM_POOLING = {"last": "LAST", "mean": "MEAN", "cls": "CLS"}


class VllmTeacher(TransformersTeacher):
    def __init__(self, cfg: TeacherConfig, gpu_memory_utilization: float = 0.85):
        import importlib.util

        if importlib.util.find_spec("vllm") is None:  # before anything is written to a store
            raise MimoError("teacher.backend=vllm needs vLLM: pip install -e '.[vllm]' on a GPU machine")
        super().__init__(cfg)
        self.gpu_memory_utilization = gpu_memory_utilization
        self._llm = None

    @property
    def llm(self):
        if self._llm is None:
            import vllm
            from vllm.config import PoolerConfig

            pooler = PoolerConfig(pooling_type=VLLM_POOLING[self.pooling], normalize=self.normalize)
            common = dict(model=str(self.model_dir), dtype=self.compute_dtype if self.compute_dtype != "autocast_bf16"
                          else "bfloat16", max_model_len=self.max_positions,
                          gpu_memory_utilization=self.gpu_memory_utilization, enforce_eager=False)
            try:
                self._llm = vllm.LLM(runner="pooling", pooler_config=pooler, **common)
            except TypeError:  # vLLM before the runner/pooler_config arguments
                self._llm = vllm.LLM(task="embed", override_pooler_config=pooler, **common)
        return self._llm

    def encode(self, texts, roles, max_lengths, on_batch=None):
        from vllm.inputs import TokensPrompt

        llm = self.llm

        rows, truncated = self.tokenize(texts, roles, max_lengths)
        lengths = np.array([len(r) for r in rows], dtype=np.int32)
        # vLLM schedules its own batches (by its token budget); hand it the whole shard at once
        outputs = llm.embed([TokensPrompt(prompt_token_ids=r) for r in rows], use_tqdm=False)
        vectors = np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)
        if vectors.shape != (len(rows), self.dim):
            raise MimoError(f"vLLM returned vectors of shape {vectors.shape}, expected {(len(rows), self.dim)}")
        if on_batch is not None:
            on_batch(len(rows), int(lengths.sum()))
        return vectors, lengths, truncated


def parity(cfg: TeacherConfig, texts, roles, max_lengths) -> np.ndarray:
    """Cosine per text between the vLLM and the transformers backends on the same inputs."""
    import gc

    import torch

    vllm_teacher = VllmTeacher(cfg)
    a, _, _ = vllm_teacher.encode(texts, roles, max_lengths)
    del vllm_teacher
    gc.collect()
    torch.cuda.empty_cache()
    b, _, _ = TransformersTeacher(cfg).encode(texts, roles, max_lengths)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
