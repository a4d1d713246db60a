"""The model layer's encoder: any Hugging Face embedding model, batched by token budget.

The teacher cache (as the teacher's transformers backend), eval (students, off-the-shelf models,
the teacher itself) and the benchmarks encode through this one class; pipeline/model_files.py
finds the files, pipeline/pooling.py pools. What it gets right, each checked by a test:
- pooling from the model's own sentence-transformers config (modules.json, 1_Pooling/config.json,
  a Normalize module), else from the architecture (decoder-only -> last token, else mean);
- last-token pooling with left padding, explicit position ids from the attention mask (starting
  where the model's own start: 2 for XLM-R) so either padding side gives the same vectors as
  encoding a text alone;
- the end-of-text token present exactly once for last-token models (Qwen3-Embedding's hub
  tokenizer appends `<|endoftext|>` itself; other Qwen tokenizers don't);
- the instruction prompt on queries only; truncation to each text's maximum length, counting the
  prompt and special tokens, as the model's tokenizer would;
- bf16 on GPU, fp32 on CPU; the fastest attention implementation available; freed heap pages
  handed back to the OS on long CPU runs.
"""

from __future__ import annotations

import importlib.util
import inspect
import os

import numpy as np
import torch

from pipeline.errors import MimoError
from pipeline.model_files import auto_model, has_pooler_weights, resolve_model_dir, sentence_transformers_settings
from pipeline.pooling import first_position, pool, positions_from_mask

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16", "autocast_bf16")

DECODER_TYPES = ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3", "phi3")


def pick_device(requested: str, setting: str = "device") -> torch.device:
    """auto: this worker's GPU (torchrun's LOCAL_RANK) if CUDA is available, else the CPU.
    `setting`: the config key that asked for it, named in errors (teacher.device, eval.device)."""
    if requested == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        requested = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise MimoError(f"{setting} {requested!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MimoError(f"{setting} {requested!r}: this torch build or machine has no CUDA")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MimoError(f"{setting} {requested!r}: only {torch.cuda.device_count()} GPU(s) here")
    return device


# the files a tokenizer is read from (AutoTokenizer also reads config.json's model_type, hashed with them)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
                   "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")
_TOKENIZERS: dict[str, object] = {}


def shared_tokenizer(model_dir):
    """The folder's tokenizer, one instance per process for folders whose tokenizer files are the same bytes: the
    eval's students are copies of one tokenizer (e5-small's 250k-piece tokenizer.json costs ~1.5 CPU s a load,
    once per model before). Encoders only read it (model_max_length is set alike by every one of them)."""
    import hashlib
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    folder = Path(model_dir)
    h = hashlib.blake2b(digest_size=16)
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    try:
        config = json.loads((folder / "config.json").read_text())
        h.update(json.dumps([config.get("model_type"), config.get("tokenizer_class")]).encode())
    except (OSError, ValueError):
        pass
    key = h.hexdigest()
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = AutoTokenizer.from_pretrained(model_dir)
    return _TOKENIZERS[key]


class Encoder:
    """Encodes (text, role, max_length) rows into float32 vectors; the model is loaded once.

    `cfg` holds the encoder settings (a TeacherConfig: model, pooling, prompts, dtype, ...);
    `role` names the model in errors ("teacher", "eval", "student") and the settings' prefix.
    """

    def __init__(self, cfg, role: str = "teacher"):
        from transformers import AutoConfig

        self.cfg, self.role = cfg, role
        model_dir, self.revision = resolve_model_dir(cfg.model, cfg.revision, role)
        try:
            hf_config = AutoConfig.from_pretrained(model_dir)
            self.tokenizer = shared_tokenizer(model_dir)
        except Exception as err:
            raise MimoError(f"{role} model {cfg.model!r}: cannot load its config or tokenizer ({type(err).__name__}: {err})") from None
        have = getattr(hf_config, "num_hidden_layers", None)
        if getattr(cfg, "num_layers", 0) and have is not None and cfg.num_layers > have:
            raise MimoError(f"{role} model {cfg.model!r}: num_layers {cfg.num_layers} exceeds its {have} layers")
        st = sentence_transformers_settings(model_dir, role)
        decoder = hf_config.model_type in DECODER_TYPES or bool(getattr(hf_config, "is_decoder", False))
        self.pooling = cfg.pooling if cfg.pooling != "auto" else st.get("pooling", "last" if decoder else "mean")
        self.normalize = st.get("normalize", True) if cfg.normalize == "auto" else cfg.normalize == "true"
        self.padding_side = cfg.padding_side if cfg.padding_side != "auto" else ("left" if self.pooling == "last" else "right")
        self.device = pick_device(cfg.device, f"{role}.device")
        self.compute_dtype = cfg.compute_dtype if cfg.compute_dtype != "auto" else (
            "bfloat16" if self.device.type == "cuda" else "float32")
        # weights' dtype; autocast keeps float32 weights and runs matmuls in bf16
        self.weight_dtype = torch.float32 if self.compute_dtype == "autocast_bf16" else getattr(torch, self.compute_dtype)
        self.max_batch_tokens = cfg.max_batch_tokens or (32768 if self.device.type == "cuda" else 2048)
        self._hf_config, self._attn = hf_config, None
        self.model_dir, self._model = model_dir, None
        self.dim = int(hf_config.hidden_size)
        self.max_positions = self._max_positions(hf_config)
        # `tokenize` truncates each row to its own limit after tokenizing whole texts; the tokenizer's
        # "sequence longer than the maximum" warning would be a false alarm
        self.tokenizer.model_max_length = int(1e30)
        self.end_id = self._end_token_id()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.end_id or 0)
        self._lead, self._tail = self._special_layout()

    @property
    def model(self):
        """The weights, loaded on first use: a run with nothing left to encode never loads them."""
        if self._model is None:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            try:  # students exported without a pooler: do not build one
                model = auto_model(self.model_dir, without_pooler=not has_pooler_weights(self.model_dir),
                                   num_layers=getattr(self.cfg, "num_layers", 0), dtype=self.weight_dtype,
                                   attn_implementation=self.attn_implementation)
            except Exception as err:
                raise MimoError(f"{self.role} model {self.cfg.model!r}: cannot load its weights ({type(err).__name__}: {err})") from None
            self.set_model(model)
        return self._model

    @property
    def attn_implementation(self) -> str:
        """Resolved on first use: asking the model's class imports its modeling code (~10 s of
        transformers imports on a loaded CPU), which a run that loads no weights never needs."""
        if self._attn is None:
            self._attn = self._attention(self.cfg.attn_implementation, self._hf_config)
        return self._attn

    def warm_up(self) -> None:
        """Load the weights onto the device and encode one text: device and weight errors surface here."""
        self.encode(["warm-up"], ["document"], [8])

    def set_model(self, model) -> None:
        """Use this module as the encoder (the benchmarks pass randomly initialized ones)."""
        self._model = model.to(self.device).eval()
        params = inspect.signature(model.forward).parameters
        self._takes_positions = "position_ids" in params
        # explicit positions keep left padding right; they must start where the model's own do
        # (XLM-R: at 2), or every token's position embedding is shifted (cosine ~0.96 to its own)
        self._first_position = first_position(model)
        # decoder models would otherwise build a KV cache nobody reads (GBs at 8B and 32k tokens)
        self._no_cache = {"use_cache": False} if "use_cache" in params else {}

    # ---- set-up helpers ----------------------------------------------------------------------

    def _attention(self, requested: str, hf_config) -> str:
        """auto: flash-attention 2 on a GPU when installed, else SDPA, else eager, whichever the
        model's class supports (an unknown class is assumed to support them all)."""
        if requested != "auto":
            return requested
        from transformers import AutoModel

        try:
            cls = AutoModel._model_mapping[type(hf_config)]
        except (KeyError, ValueError):
            cls = None

        def supports(flag: str) -> bool:
            return cls is None or bool(getattr(cls, flag, False))

        if (self.device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None
                and supports("_supports_flash_attn")):
            return "flash_attention_2"
        return "sdpa" if supports("_supports_sdpa") else "eager"

    def _max_positions(self, hf_config) -> int:
        limit = getattr(hf_config, "max_position_embeddings", 1 << 20)
        if hf_config.model_type in ("roberta", "xlm-roberta", "camembert"):
            limit -= 2  # positions start after the padding index
        tok_limit = getattr(self.tokenizer, "model_max_length", limit) or limit
        return int(min(limit, tok_limit if tok_limit < 1e6 else limit))

    def _end_token_id(self) -> int | None:
        if self.pooling != "last" or self.cfg.end_token == "":
            return None
        token = self.cfg.end_token
        if token == "auto":
            vocab = self.tokenizer.get_vocab()
            token = "<|endoftext|>" if "<|endoftext|>" in vocab else self.tokenizer.eos_token
        if token is None:
            return None
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise MimoError(f"{self.role}.end_token {token!r} is not in the tokenizer's vocabulary")
        return int(tid)

    def _special_layout(self) -> tuple[int, int]:
        """How many special tokens the tokenizer puts before and after the text ([CLS] x [SEP]: 1, 1)."""
        plain = self.tokenizer("hello", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("hello", add_special_tokens=True)["input_ids"]
        lead = next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)
        return lead, len(full) - lead - len(plain)

    def identity(self) -> dict:
        """Everything about this encoder that changes a vector (goes into the store's fingerprint)."""
        return {
            "model": self.cfg.model, "revision": self.revision, "pooling": self.pooling,
            "normalize": self.normalize, "query_prompt": self.cfg.query_prompt,
            "document_prompt": self.cfg.document_prompt,
            "end_token": None if self.end_id is None else self.tokenizer.convert_ids_to_tokens(self.end_id),
            # absent when 0: old caches keep their keys
            **({"num_layers": self.cfg.num_layers} if getattr(self.cfg, "num_layers", 0) else {}),
        }

    # ---- encoding ------------------------------------------------------------------------------

    def tokenize(self, texts, roles, max_lengths) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per row (prompt by role, truncated to the row's limit) and a truncated flag."""
        prompts = {"query": self.cfg.query_prompt, "document": self.cfg.document_prompt}
        inputs = [prompts[r] + t for r, t in zip(roles, texts)]
        ids = self.tokenizer(inputs, add_special_tokens=True, truncation=False)["input_ids"]
        truncated = np.zeros(len(ids), dtype=bool)
        out = []
        for i, (row, limit) in enumerate(zip(ids, max_lengths)):
            limit = min(int(limit), self.max_positions)
            if len(row) > limit:
                truncated[i] = True
                head, tail = row[: self._lead], row[len(row) - self._tail:] if self._tail else []
                row = head + row[self._lead: limit - self._tail] + tail
            if self.end_id is not None and (not row or row[-1] != self.end_id):
                if len(row) >= limit:  # no room: the end token replaces the last text token
                    row, truncated[i] = row[: limit - 1], True
                row = row + [self.end_id]
            out.append(row)
        return out, truncated

    def batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Row indices grouped by length (shortest first), each batch within the token budget."""
        order = np.argsort(lengths, kind="stable")
        batches, start = [], 0
        while start < len(order):
            end = start + 1
            # sorted ascending: the batch's padded size is (rows) x (length of its last row)
            while end < len(order) and (end - start + 1) * lengths[order[end]] <= self.max_batch_tokens:
                end += 1
            batches.append(order[start:end])
            start = end
        return batches

    @torch.inference_mode()
    def forward(self, rows: list[list[int]]) -> torch.Tensor:
        """Pooled (and normalized) float32 vectors for one padded batch of token id lists."""
        lengths = np.array([len(r) for r in rows])
        width = int(lengths.max())
        # one flat copy into a padded numpy array: per-row tensor building costs more than the model on small texts
        cols = np.arange(width)
        mask_np = (cols >= width - lengths[:, None]) if self.padding_side == "left" else (cols < lengths[:, None])
        ids_np = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        ids_np[mask_np] = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
        ids = torch.from_numpy(ids_np).to(self.device)
        mask = torch.from_numpy(mask_np.astype(np.int64)).to(self.device)
        model = self.model
        kwargs = {"position_ids": positions_from_mask(mask, self._first_position)} if self._takes_positions else {}
        kwargs.update(self._no_cache)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "autocast_bf16"):
            hidden = model(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
        vectors = pool(hidden, mask, self.pooling).float()
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.cpu()

    def encode(self, texts, roles, max_lengths, on_batch=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vectors float32 N x D, token counts int32, truncated flags) in the input order."""
        rows, truncated = self.tokenize(texts, roles, max_lengths)
        lengths = np.array([len(r) for r in rows], dtype=np.int32)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for k, batch in enumerate(self.batches(lengths), start=1):
            out[batch] = self.forward([rows[i] for i in batch]).numpy()
            if on_batch is not None:
                on_batch(len(batch), int(lengths[batch].sum()))
            if k % 4 == 0:
                release_freed_memory()
        return out, lengths, truncated


def _libc_trim():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_MALLOC_TRIM = _libc_trim()


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only; a no-op elsewhere).

    Batches of ever-changing shapes fragment glibc's heap: without this, peak RSS of a long CPU run
    grew 1.28x from 3,000 to 30,000 texts (bench/RESULTS.md). Trimming after every 4th batch rather
    than every batch keeps the syscall and page-fault cost out of the throughput.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
