"""Checkpoints that resume a run exactly, and the trained student as a sentence-transformers folder.

A checkpoint holds the student (psi included), the optimizer, the scheduler, the RNG states and the
step; the data order is a function of (seed, epoch), so the step is the data position. It is
written to a temporary file and renamed, so a kill mid-write leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pipeline.errors import MimoError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(out_dir: Path, step: int, student, optimizer, scheduler, extra: dict | None = None) -> Path:
    state = {
        "step": step,
        "student": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "extra": extra or {},
    }
    path = out_dir / CHECKPOINT
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(out_dir: Path, student, optimizer, scheduler) -> int:
    """Restore everything saved; return the step to continue from (0 when there is no checkpoint)."""
    path = out_dir / CHECKPOINT
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, EOFError) as err:
        raise MimoError(f"{path}: cannot resume from this checkpoint ({type(err).__name__}: {err}); "
                        "delete it to start over") from None
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(state["step"])


def export_sentence_transformer(student, tokenizer, out: Path, max_seq_length: int) -> Path:
    """The student without psi as a sentence-transformers folder (`SentenceTransformer(out)` loads it);
    psi beside it as projection.pt, for Stage 2 or analysis, never for retrieval."""
    out.mkdir(parents=True, exist_ok=True)
    student.encoder.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "1_Pooling").mkdir(exist_ok=True)
    dim = student.dim
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": dim, "pooling_mode_cls_token": student.pooling == "cls",
        "pooling_mode_mean_tokens": student.pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ], indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                               "do_lower_case": False}, indent=2))
    torch.save(student.projection.state_dict(), out.parent / "projection.pt")
    return out
