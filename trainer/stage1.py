"""Stage 1 (section 3.1): distill the cached teacher into the student on parallel pairs.

    L = 1 - cos(psi(E_s(t_XX)), E_t(t_en)),  E_t(t_en) read from the teacher cache.

Resolve the data's targets in the cache (refusing missing ones), build the student and psi, then
the shared loop (trainer/loop.py) with this step: tokenize t_XX -> psi(E_s) -> distill loss -> backward.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from pipeline import prepared_layout
from pipeline.config import WORK_FOLDER
from trainer import distributed
from trainer.data import TextColumn
from trainer.loop import train_loop
from trainer.losses import distill_loss
from trainer.setup import TrainingConfig, start_training
from trainer.student import load_student


@dataclass(frozen=True)
class Stage1Config(TrainingConfig):
    """Stage 1's settings: those of trainer/setup.py's TrainingConfig, at the paper's Stage-1 values."""

    WORK_PATHS: ClassVar[dict[str, str]] = {"prepared": WORK_FOLDER["prepared"], "cache": WORK_FOLDER["cache"],
                                            "out_dir": WORK_FOLDER["stage1"]}

    out_dir: str = "work/paper/stage1"
    lr: float = 1e-4  # Table 6
    batch_size: int = 256  # rows per optimizer step over all ranks: the authors' 2 GPUs x 128 (Table 6: 128 per GPU)
    max_length: int = 256
    checkpoint_every: int = 500


def run_stage1(cfg: Stage1Config, echo=print) -> dict:
    run = start_training(cfg, "stage1", prepared_layout.stage1_pairs(cfg.prepared), ("text",), echo=echo,
                         load_student=lambda t: load_student(cfg.student, t.dim, cfg.pooling, cfg.student_layers,
                                                             cfg.freeze_embeddings))
    where = run.where["teacher_id"]
    texts = TextColumn(run.table.column("text"))
    targets, device = run.targets, run.device

    def prepare(rows):  # no model: runs ahead in the loop's prefetch thread
        rows = distributed.local_rows(rows, run.rank, run.size)
        return run.tokenize(texts.take(rows)), targets.fetch_stored(where[rows])

    def step_fn(prepared):
        batch, teacher = prepared
        batch, teacher = batch.to(device), teacher.to(device).float()
        with run.autocast():
            _, projected = run.model(batch["input_ids"], batch["attention_mask"])
        loss = distill_loss(projected.float(), teacher)
        loss.backward()
        return {"loss": loss.detach()}

    result = train_loop(cfg, "stage 1", len(texts), run.student, step_fn, echo, write=run.writes, prepare=prepare)
    # teacher_fingerprint.json: which teacher psi maps into (Stage 2 refuses a cache built under other settings)
    if run.finish(result, {"teacher_fingerprint.json": json.dumps(targets.fingerprint, indent=2, sort_keys=True)}):
        echo(f"stage 1: {result['step']} steps done, loss {result['loss']:.4f}; student in {run.out / 'model'}, "
             f"psi in {run.out / 'projection.pt'}")
    return result
