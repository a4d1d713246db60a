"""Checkpoints that resume a run exactly, and the trained student as a sentence-transformers folder.

A checkpoint holds the student (psi included), the optimizer, the scheduler, the RNG states and the
step; the data order is a function of (seed, epoch), so the step is the data position. It is
written to a temporary file and renamed, so a kill mid-write leaves the previous checkpoint (and
the next run deletes the partial `checkpoint.tmp-*`).

Loading never unpickles arbitrary objects: `torch.load(weights_only=True)` accepts only tensors
and plain values (dicts, lists, numbers, strings; torch's own allow-list), so a crafted
`checkpoint.pt` cannot run code, and the loaded structure is checked before anything is restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from pipeline.errors import MimoError
from pipeline.outputs import write_file_atomically

CHECKPOINT = "checkpoint.pt"


def rank_rng_states() -> list[torch.Tensor] | None:
    """Every rank's CPU (and current CUDA device's) RNG state, gathered: a collective, so every rank
    calls it at a checkpoint step. None in a single process (rng_cpu / rng_cuda say it all).

    Each rank draws its own dropout masks; restoring rank 0's state on every rank would give the
    other ranks different masks after a resume than in an uninterrupted run."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    parts = [torch.get_rng_state()]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_rng_state())
    mine = torch.cat(parts)  # uint8; the same length on every rank
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = [torch.empty_like(mine, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine.to(device))
    return [g.cpu() for g in gathered]


def save_checkpoint(out_dir: Path, step: int, student, optimizer, scheduler, extra: dict | None = None,
                    rng_ranks: list[torch.Tensor] | None = None) -> Path:
    state = {
        "step": step,
        "student": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "extra": extra or {},
    }
    if rng_ranks is not None:
        state["rng_ranks"] = rng_ranks  # rank_rng_states(): one state per rank, restored by that rank
    state["blake2b"] = content_digest(state)  # torch's zip reader checks no CRC: a flipped byte would load
    path = out_dir / CHECKPOINT
    write_file_atomically(path, lambda fh: torch.save(state, fh), path.with_suffix(f".tmp-{os.getpid()}"))
    return path


def content_digest(state) -> str:
    """blake2b over every tensor's bytes (with dtype and shape) and every plain value, in order:
    one hash pass over the checkpoint, once per checkpoint written or read."""
    h = hashlib.blake2b(digest_size=16)

    def feed(value):
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
        elif isinstance(value, dict):
            h.update(f"D{len(value)}".encode())
            for k, v in value.items():
                h.update(repr(k).encode())
                feed(v)
        elif isinstance(value, (list, tuple)):
            h.update(f"L{len(value)}".encode())
            for v in value:
                feed(v)
        else:
            h.update(f"V{value!r}".encode())

    feed({k: v for k, v in state.items() if k != "blake2b"})
    return h.hexdigest()


def remove_partial_checkpoints(out_dir: Path) -> None:
    """Delete `checkpoint.tmp-*` files a kill mid-write left behind (never the current process's)."""
    for tmp in Path(out_dir).glob(f"{Path(CHECKPOINT).stem}.tmp-*"):
        if tmp.name != f"{Path(CHECKPOINT).stem}.tmp-{os.getpid()}":
            tmp.unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, or a one-line MimoError: nothing but tensors and plain values is
    unpickled (torch's weights-only loader), and the expected keys and types must be there."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        # the weights-only loader refuses any other object (a crafted file would run code); its
        # message spans many lines, so only its kind is named here
        why = "it holds objects other than tensors and plain values, which are never unpickled" \
            if isinstance(err, pickle.UnpicklingError) else f"{type(err).__name__}"
        raise MimoError(f"{path}: not a readable checkpoint ({why}); delete it to start over") from None
    expected = {"step": int, "student": dict, "optimizer": dict, "scheduler": dict, "rng_cpu": torch.Tensor}
    wrong = [k for k, kind in expected.items() if not isinstance(state, dict) or not isinstance(state.get(k), kind)]
    if not wrong:
        wrong = sorted(set(state) - {*expected, "rng_cuda", "rng_ranks", "extra", "blake2b"})
    if wrong:
        raise MimoError(f"{path}: not a checkpoint of this tool (missing or wrong {', '.join(wrong)}); "
                        "delete it to start over")
    if "blake2b" in state and state["blake2b"] != content_digest(state):  # absent: written before checksums
        raise MimoError(f"{path}: damaged (its contents differ from the checksum written with them); "
                        "delete it to start over")
    return state


def load_checkpoint(out_dir: Path, student, optimizer, scheduler) -> int:
    """Restore everything saved; return the step to continue from (0 when there is no checkpoint)."""
    path = out_dir / CHECKPOINT
    remove_partial_checkpoints(out_dir)
    if not path.is_file():
        return 0
    state = read_checkpoint(path)
    try:
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
        raise MimoError(f"{path}: cannot resume from this checkpoint ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:300]}); delete it to start over") from None
    if state.get("rng_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    _restore_rank_rng(path, state.get("rng_ranks"))
    return state["step"]


def _restore_rank_rng(path: Path, rng_ranks) -> None:
    """This rank's own RNG state, when the checkpoint has one per rank and the world size is the same
    (another world size deals the rows to ranks differently anyway: rank 0's state stays restored)."""
    import torch.distributed as dist

    if not rng_ranks or not dist.is_initialized() or dist.get_world_size() != len(rng_ranks):
        return
    mine = rng_ranks[dist.get_rank()]
    n_cpu = torch.get_rng_state().numel()
    try:
        torch.set_rng_state(mine[:n_cpu].clone())
        if torch.cuda.is_available() and mine.numel() > n_cpu:
            torch.cuda.set_rng_state(mine[n_cpu:].clone())
    except (RuntimeError, TypeError) as err:
        raise MimoError(f"{path}: cannot restore rank {dist.get_rank()}'s random state ({type(err).__name__}); "
                        "delete it to start over") from None


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
    readable_as_umask_allows(out)
    return out


def readable_as_umask_allows(folder: Path) -> None:
    """transformers writes model.safetensors through a private temporary file (mode 0600): give the
    exported files the mode any other new file gets (0666 minus the umask), so the group can read them."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)
