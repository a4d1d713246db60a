"""The teacher: its settings (TeacherConfig, the paper's Qwen3-Embedding-8B by default) and its
transformers backend, which is the model layer's encoder (pipeline/encoder.py) in the teacher's role.

The vLLM backend is pipeline/teacher_vllm.py; the cache of the teacher's vectors is
pipeline/teacher_cache.py. Names that used to live here are re-exported from the model layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.encoder import COMPUTE_DTYPES, DECODER_TYPES, Encoder, pick_device, release_freed_memory  # noqa: F401
from pipeline.errors import MimoError
from pipeline.model_files import (BUNDLED, has_pooler_weights, resolve_model_dir,  # noqa: F401
                                  sentence_transformers_settings)
from pipeline.pooling import POOLINGS

QWEN3_QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"


@dataclass(frozen=True)
class TeacherConfig:
    model: str = "Qwen/Qwen3-Embedding-8B"  # hub id or local directory
    revision: str = "main"
    backend: str = "transformers"  # or "vllm" (optional extra, GPU only)
    pooling: str = "auto"  # auto (the model's sentence-transformers config), mean, cls, last
    normalize: str = "auto"  # auto: as the model's sentence-transformers config says (else yes); true; false
    query_prompt: str = QWEN3_QUERY_PROMPT  # App. C; part of the cache's identity
    document_prompt: str = ""
    end_token: str = "auto"  # last-token pooling: "<|endoftext|>" if the vocabulary has it, else eos; "" for none
    padding_side: str = "auto"  # auto: left for last-token pooling, right otherwise
    device: str = "auto"  # auto: cuda if available, else cpu
    # auto: bfloat16 on GPU, float32 on CPU; autocast_bf16: float32 weights, bf16 matmuls with float32
    # accumulation (2x faster on CPUs with native bf16, cosine >= 0.9999 to float32 on MiniLM)
    compute_dtype: str = "auto"
    attn_implementation: str = "auto"  # auto: flash_attention_2 if installed on GPU, else sdpa, else eager (as the model supports)
    max_batch_tokens: int = 0  # padded tokens per forward pass; 0: 2048 on CPU (cache-sized), 32768 on GPU
    # 0: all of the model's layers; N: only its first N (a truncated student's zero-shot eval row)
    num_layers: int = 0

    def __post_init__(self):
        if self.backend not in ("transformers", "vllm"):
            raise MimoError(f"teacher.backend must be transformers or vllm, not {self.backend!r}")
        if self.pooling not in ("auto", *POOLINGS):
            raise MimoError(f"teacher.pooling must be auto, mean, cls or last, not {self.pooling!r}")
        if self.normalize not in ("auto", "true", "false"):
            raise MimoError(f"teacher.normalize must be auto, true or false, not {self.normalize!r}")
        if self.padding_side not in ("auto", "left", "right"):
            raise MimoError(f"teacher.padding_side must be auto, left or right, not {self.padding_side!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise MimoError(f"teacher.compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, not {self.compute_dtype!r}")
        if self.max_batch_tokens < 0:
            raise MimoError("teacher.max_batch_tokens must be positive (or 0 for the device's default)")
        if self.num_layers < 0:
            raise MimoError(f"teacher.num_layers must be 0 (all layers) or positive, not {self.num_layers}")


# The teacher's transformers backend is the encoder itself (role "teacher", the default): one class,
# so that what a test or a benchmark sets on TransformersTeacher holds for every encoder.
TransformersTeacher = Encoder
_has_pooler_weights = has_pooler_weights
