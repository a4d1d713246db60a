"""Stage 1 (section 3.1): distill the cached teacher into the student on parallel pairs.

    L = 1 - cos(psi(E_s(t_XX)), E_t(t_en)),  E_t(t_en) read from the teacher cache.

Resolve the data's targets in the cache (refusing missing ones), build the student and psi, then
the shared loop (trainer/loop.py) with this step: tokenize t_XX -> psi(E_s) -> distill loss -> backward.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from pipeline.cache_read import TeacherTargets
from pipeline.errors import MimoError
from pipeline.encoder import pick_device
from pipeline.model_card import write_training_card
from trainer import distributed
from trainer.checkpoint import export_sentence_transformer
from trainer.data import check_teacher_dim, read_stage_table, resolve_targets
from trainer.loop import train_loop, use_bf16
from trainer.losses import distill_loss
from trainer.run_dir import finish_run_dir, open_run_dir
from trainer.student import load_student


@dataclass(frozen=True)
class Stage1Config:
    prepared: str = "work/paper/prepared"  # prepare's output directory
    cache: str = "work/paper/teacher_cache.zarr"
    out_dir: str = "work/paper/stage1"
    student: str = "xlm-roberta-large"
    student_layers: int = 0  # 0: all; N: the student's first N layers (the embedded default's weak student)
    freeze_embeddings: bool = False  # True: no gradient for the token embeddings (CPU speed; trainer/student.py)
    pooling: str = "mean"
    lr: float = 1e-4  # Table 6
    warmup_ratio: float = 0.1
    batch_size: int = 256  # rows per optimizer step over all ranks: the authors' 2 GPUs x 128 (Table 6: 128 per GPU)
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
        if self.precision not in ("auto", "fp32", "bf16"):
            raise MimoError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if self.prefetch < 0:
            raise MimoError(f"prefetch must be 0 or more, not {self.prefetch}")


def run_stage1(cfg: Stage1Config, echo=print) -> dict:
    out = Path(cfg.out_dir)
    table = read_stage_table(Path(cfg.prepared) / "stage1" / "pairs.parquet", "stage1")
    targets = TeacherTargets(cfg.cache, verify=cfg.verify_cache)
    where = resolve_targets(table, targets, "stage1")["teacher_id"]  # refuses before the first step
    texts = table.column("text").to_pylist()

    torch.manual_seed(cfg.seed)
    student, tokenizer = load_student(cfg.student, targets.dim, cfg.pooling, cfg.student_layers, cfg.freeze_embeddings)
    check_teacher_dim(targets, student.projection.out_features)
    rank, size = distributed.world()
    device = pick_device("auto")  # this rank's GPU (LOCAL_RANK), else the CPU
    if cfg.batch_size % size:
        raise MimoError(f"batch_size {cfg.batch_size} must split evenly into {size} ranks")
    distributed.init_if_needed(device)
    student.to(device).train()
    # each rank takes an equal slice; DDP's gradient average is then the global batch's mean
    # (the epoch's last, smaller batch drops the rows that do not split evenly)
    model, _ = distributed.wrap(student, device, find_unused=False)
    bf16 = use_bf16(cfg.precision, device)
    open_run_dir(cfg, "stage1", [Path(cfg.prepared) / "stage1" / "pairs.parquet"], targets.fingerprint,
                 write=rank == 0, echo=echo)

    def prepare(rows):  # no model: runs ahead in the loop's prefetch thread
        rows = distributed.local_rows(rows, rank, size)
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=cfg.max_length,
                          return_tensors="pt")
        return batch, targets.fetch_stored(where[rows])

    def step_fn(prepared):
        batch, teacher = prepared
        batch, teacher = batch.to(device), teacher.to(device).float()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, projected = model(batch["input_ids"], batch["attention_mask"])
        loss = distill_loss(projected.float(), teacher)
        loss.backward()
        return {"loss": loss.detach()}

    result = train_loop(cfg, "stage 1", len(texts), student, step_fn, echo, write=rank == 0, prepare=prepare)
    if result["finished"] and rank == 0:
        export_sentence_transformer(student.cpu(), tokenizer, out / "model", cfg.max_length)
        finish_run_dir(cfg)
        # which teacher psi maps into: Stage 2 refuses a cache built under other settings
        (out / "teacher_fingerprint.json").write_text(json.dumps(targets.fingerprint, indent=2, sort_keys=True))
        write_training_card(out, result, targets.fingerprint, device)  # model/README.md (pipeline/model_card.py)
        echo(f"stage 1: {result['step']} steps done, loss {result['loss']:.4f}; student in {out / 'model'}, "
             f"psi in {out / 'projection.pt'}")
    return result
