"""The set-up Stage 1, Stage 2 and the sweep share, written once.

`TrainingConfig` holds the settings both stages take (data, student, optimizer, precision, run
control); `start_training` does what every run does before its first step, in this order: read the
stage's table and open the teacher cache, resolve the table's targets in the cache (refusing missing
ones), seed, load the student, check psi against the cache, find this rank and device, check the
batch splits over the ranks, start the process group, move the student, wrap it for DDP, decide the
precision, and open the run folder (resolved config, run identity, resume check). `Training.finish`
exports the student with its model card. What differs between the stages (the table, the student's
starting point, the step) stays in stage1.py and stage2.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch

from pipeline.cache_read import TeacherTargets
from pipeline.encoder import pick_device
from pipeline.errors import MimoError
from pipeline.model_card import write_training_card
from trainer import distributed
from trainer.checkpoint import export_sentence_transformer
from trainer.data import check_teacher_dim, read_stage_table, resolve_targets
from trainer.loop import use_bf16
from trainer.run_dir import finish_run_dir, open_run_dir

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainingConfig:
    """The settings Stage 1 and Stage 2 share (each stage sets its own defaults where the paper's differ)."""

    work_dir: str = "work/paper"  # the setup's work folder: the default paths below derive from it (pipeline/config.py)
    prepared: str = "work/paper/prepared"  # prepare's output directory
    cache: str = "work/paper/teacher_cache.zarr"
    out_dir: str = "work/paper/stage1"
    student: str = "xlm-roberta-large"
    student_layers: int = 0  # 0: all; N: the student's first N layers (the embedded default's weak student)
    freeze_embeddings: bool = False  # True: no gradient for the token embeddings (CPU speed; trainer/student.py)
    pooling: str = "mean"
    lr: float = 1e-4  # Table 6
    warmup_ratio: float = 0.1
    batch_size: int = 256  # rows per optimizer step over all ranks
    max_length: int = 256
    epochs: int = 1
    weight_decay: float = 0.0  # AdamW on every parameter; 0 is the Hugging Face Trainer default the authors ran
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    seed: int = 42
    checkpoint_every: int = 500
    stop_after: int = 0  # stop (with a checkpoint) after this many steps of this run, e.g. a job's time slot
    prefetch: int = 2  # batches tokenized and read from the cache ahead, in a background thread (0: inline)
    verify_cache: bool = False  # compare every shard with its checksum at open (reads the whole store)
    progress: bool = True
    keep_checkpoint: bool = False  # keep checkpoint.pt after the run finishes (it is deleted by default)
    resume_anyway: bool = False  # resume a checkpoint made under other settings (refused by default)
    report_to: Literal["none", "tensorboard", "wandb"] = "none"  # besides metrics.jsonl (trainer/tracking.py)

    def __post_init__(self):
        if self.pooling not in ("mean", "cls"):
            raise MimoError(f"pooling must be mean or cls, not {self.pooling!r}")
        if self.batch_size < 1 or self.epochs < 1 or self.max_length < 2:
            raise MimoError("batch_size and epochs must be positive, max_length at least 2")
        if not 0 <= self.warmup_ratio < 1 or self.lr <= 0:
            raise MimoError("warmup_ratio must be in [0, 1) and lr positive")
        if self.precision not in PRECISIONS:
            raise MimoError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if self.prefetch < 0:
            raise MimoError(f"prefetch must be 0 or more, not {self.prefetch}")


@dataclass
class Training:
    """A started run: its data, targets, student and where it runs."""

    cfg: Any
    step_name: str  # "stage1" / "stage2": the run folder's step and the table's kind
    table: pa.Table
    targets: TeacherTargets
    where: dict[str, np.ndarray] | None  # cache locations per target column (None: the run reads no targets)
    student: torch.nn.Module
    tokenizer: Any
    model: torch.nn.Module  # the student, DDP-wrapped when several ranks run
    no_sync: Callable | None  # DDP's no_sync (None on one rank)
    device: torch.device
    bf16: bool
    rank: int
    size: int

    @property
    def out(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def writes(self) -> bool:
        """This process writes logs, checkpoints and the export (rank 0)."""
        return self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def tokenize(self, texts: list[str]):
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.max_length,
                              return_tensors="pt")

    def finish(self, result: dict, extra_files: dict[str, str] | None = None) -> bool:
        """After a finished run, on rank 0: export the student, delete the checkpoint, write `extra_files`
        (name -> text) into the run folder, then the model card. True when it did (the run is done)."""
        if not (result["finished"] and self.writes):
            return False
        export_sentence_transformer(self.student.cpu(), self.tokenizer, self.out / "model", self.cfg.max_length)
        finish_run_dir(self.cfg)
        for name, text in (extra_files or {}).items():
            (self.out / name).write_text(text)
        write_training_card(self.out, result, self.targets.fingerprint, self.device)  # model/README.md
        return True


def start_training(cfg: TrainingConfig, step_name: str, table_path: Path, texts: tuple[str, ...],
                   load_student: Callable, echo=print, resolve: bool = True, rows_per_rank_unit: int = 1,
                   find_unused: bool = False) -> Training:
    """Everything before the first step (the module docstring), for `step_name` ("stage1" or "stage2").

    texts: the table's text columns the run reads (the rest are not read; the target ids are let go
    once resolved); load_student(targets) -> (student, tokenizer), called right after seeding; resolve: the run reads
    teacher targets (refused up front when the cache lacks any); rows_per_rank_unit: each rank's share
    of a batch must be a whole number of these (Stage 2's mini-batches); find_unused: DDP looks for
    parameters a step does not use (psi under the contrastive baselines).
    """
    table = read_stage_table(table_path, step_name, texts, ids=resolve)
    targets = TeacherTargets(cfg.cache, verify=cfg.verify_cache)
    where = resolve_targets(table, targets, step_name) if resolve else None  # refuses before the first step
    table = table.select(list(texts))  # the ids are not needed past here: `where` holds their locations

    torch.manual_seed(cfg.seed)
    student, tokenizer = load_student(targets)
    check_teacher_dim(targets, student.projection.out_features)
    rank, size = distributed.world()
    device = pick_device("auto")  # this rank's GPU (LOCAL_RANK), else the CPU
    if cfg.batch_size % (size * rows_per_rank_unit):
        if rows_per_rank_unit == 1:
            raise MimoError(f"batch_size {cfg.batch_size} must split evenly into {size} ranks")
        raise MimoError(f"batch_size {cfg.batch_size} must split into {size} ranks of whole mini-batches of "
                        f"{rows_per_rank_unit}")
    distributed.init_if_needed(device)
    student.to(device).train()
    # each rank takes an equal slice; DDP's gradient average is then the global batch's mean
    # (the epoch's last, smaller batch drops the rows that do not split evenly)
    model, no_sync = distributed.wrap(student, device, find_unused=find_unused)
    bf16 = use_bf16(cfg.precision, device)
    open_run_dir(cfg, step_name, [table_path], targets.fingerprint, write=rank == 0, echo=echo)
    return Training(cfg, step_name, table, targets, where, student, tokenizer, model, no_sync, device, bf16, rank, size)
