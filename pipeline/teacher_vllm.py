"""The vLLM teacher backend (optional extra, GPU machines only; vLLM pins its own torch).

Same inputs as the transformers backend, by construction: this class reuses its tokenization
(prompts by role, truncation to each row's limit, the end-of-text token exactly once) and hands
vLLM token ids, not strings, so vLLM's own tokenizer and truncation never come into play. vLLM
only runs the model and the pooler, with the pooling type and normalization set explicitly.

Written against vLLM 0.33 (the `vllm` extra pins >=0.33,<0.34), read from that release's source:
- `vllm.config.PoolerConfig(seq_pooling_type="LAST" | "MEAN" | "CLS", use_activation=bool)`: an
  embedding pooler's activation *is* the L2 normalization (`PoolerNormalize`); the older
  `normalize=` argument is refused with a ValueError ("Parameter `normalize` was removed");
- `vllm.LLM(model, runner="pooling", convert="embed", pooler_config=..., dtype=..., max_model_len=...)`:
  a decoder checkpoint (Qwen3ForCausalLM) is adapted into an embedding model, a model that already
  pools is left as it is; explicit pooler settings win over the folder's sentence-transformers files;
- `LLM.embed([TokensPrompt(prompt_token_ids=...)], use_tqdm=False)` returns one
  `EmbeddingRequestOutput` per prompt in the input order, the vector in `.outputs.embedding` and a
  failed request's reason in `.error`.
Before a bulk run, compare the two backends on a sample: `mimo teacher-parity --config ...`
prints the cosine per text.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import MimoError
from pipeline.teacher import TeacherConfig, TransformersTeacher

VLLM_POOLING = {"last": "LAST", "mean": "MEAN", "cls": "CLS"}  # our pooling -> vLLM's seq_pooling_type
SUPPORTED = "vllm>=0.33,<0.34"  # the extra's pin; the API below is that release's


class VllmTeacher(TransformersTeacher):
    def __init__(self, cfg: TeacherConfig, gpu_memory_utilization: float = 0.85):
        import importlib.util

        if importlib.util.find_spec("vllm") is None:  # before anything is written to a store
            raise MimoError("teacher.backend=vllm needs vLLM: pip install -e '.[vllm]' on a GPU machine")
        super().__init__(cfg)
        self.gpu_memory_utilization = gpu_memory_utilization
        self._llm = None

    def llm_arguments(self) -> dict:
        """Keyword arguments of `vllm.LLM` (the pooler config object is added by `llm`)."""
        return dict(model=str(self.model_dir), runner="pooling", convert="embed",
                    # vLLM has no autocast mode: bf16 weights are its nearest equivalent
                    dtype="bfloat16" if self.compute_dtype == "autocast_bf16" else self.compute_dtype,
                    max_model_len=self.max_positions, gpu_memory_utilization=self.gpu_memory_utilization,
                    enforce_eager=False)

    @property
    def llm(self):
        if self._llm is None:
            import vllm
            from vllm.config import PoolerConfig

            version = getattr(vllm, "__version__", "?")
            try:
                pooler = PoolerConfig(seq_pooling_type=VLLM_POOLING[self.pooling], use_activation=self.normalize)
            except (TypeError, ValueError) as err:  # an API other than the one this backend was written for
                raise MimoError(f"teacher.backend=vllm: vLLM {version} refused the pooler settings "
                                f"({type(err).__name__}: {err}); this backend needs {SUPPORTED}") from None
            try:
                self._llm = vllm.LLM(pooler_config=pooler, **self.llm_arguments())
            except TypeError as err:  # a keyword this vLLM does not know
                raise MimoError(f"teacher.backend=vllm: vLLM {version} does not take these arguments "
                                f"({err}); this backend needs {SUPPORTED}") from None
        return self._llm

    def encode(self, texts, roles, max_lengths, on_batch=None):
        from vllm.inputs import TokensPrompt

        llm = self.llm
        rows, truncated = self.tokenize(texts, roles, max_lengths)
        lengths = np.array([len(r) for r in rows], dtype=np.int32)
        # vLLM schedules its own batches (by its token budget); hand it the whole shard at once
        outputs = llm.embed([TokensPrompt(prompt_token_ids=r) for r in rows], use_tqdm=False)
        failed = next((i for i, o in enumerate(outputs) if getattr(o, "error", None) is not None), None)
        if failed is not None:
            raise MimoError(f"vLLM could not encode text {failed} of this batch ({texts[failed][:60]!r}): "
                            f"{outputs[failed].error}")
        vectors = np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)
        if vectors.shape != (len(rows), self.dim):
            raise MimoError(f"vLLM returned vectors of shape {vectors.shape}, expected {(len(rows), self.dim)}")
        if on_batch is not None:
            on_batch(len(rows), int(lengths.sum()))
        return vectors, lengths, truncated


def parity(cfg: TeacherConfig, texts, roles, max_lengths) -> np.ndarray:
    """Cosine per text between the vLLM and the transformers backends on the same inputs.

    The transformers backend runs first and is released before vLLM starts: vLLM claims a fixed
    share of the GPU's memory at start-up and keeps it until its engine process ends.
    """
    import gc

    import torch

    reference = TransformersTeacher(cfg)
    b, _, _ = reference.encode(texts, roles, max_lengths)
    del reference
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    a, _, _ = VllmTeacher(cfg).encode(texts, roles, max_lengths)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
