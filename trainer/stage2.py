"""Stage 2 (section 3.2) and the baselines (App. A) under one loop, data and hyperparameters.

method  | table (prepare)   | loss
mimo    | stage2/mimo       | lambda * XLCO(q_XX, p_YY) + (1 - lambda) * Distill (cached E_t(q_en), E_t(p_en))
xlco    | stage2/mimo       | XLCO: InfoNCE over cross-lingual pairs
infonce | stage2/infonce    | InfoNCE over monolingual pairs
lakda   | stage2/lakda      | (1 - alpha) * InfoNCE + alpha * KL alignment of two parallel queries (lakda_form)

An optimizer step takes `batch_size` rows (4096), cut into contrastive groups of `contrastive_group_size`
rows (2048) that share in-batch negatives; the step's loss is the mean of the groups' losses
(trainer/distributed.py). This is the authors' run: 2 GPUs x 2048 rows, no cross-device gathering; the
paper's "global batch size of 2048" is the group, its Table 6 "2,048 per GPU" the same number. The rows are
encoded in mini-batches of `mini_batch_size` (32) by gradient caching (trainer/gradcache.py): the same
loss and gradients as the full batch. The student and psi start from a Stage-1 output (`init`);
Stage-2-only runs start from the plain student.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import torch

from pipeline import prepared_layout
from pipeline.cache_read import TeacherTargets
from pipeline.config import WORK_FOLDER, changed_settings
from pipeline.errors import MimoError
from pipeline.prepared_layout import METHOD_COMPOSITION
from trainer import distributed
from trainer.data import TextColumn
from trainer.gradcache import cached_step
from trainer.loop import train_loop
from trainer.losses import DISTILL_REDUCTIONS, LAKDA_FORMS, info_nce, lakda_loss, stage2_loss
from trainer.setup import TrainingConfig, start_training
from trainer.student import load_student

METHODS = METHOD_COMPOSITION  # method -> composition (the prepared table it trains on)


@dataclass(frozen=True)
class Stage2Config(TrainingConfig):
    """Stage 2's settings: TrainingConfig's (trainer/setup.py) at the paper's Stage-2 values, and the method's."""

    WORK_PATHS: ClassVar[dict[str, str]] = {"prepared": WORK_FOLDER["prepared"], "cache": WORK_FOLDER["cache"],
                                            "init": WORK_FOLDER["stage1"], "out_dir": WORK_FOLDER["stage2"]}

    out_dir: str = "work/paper/stage2-mimo"
    method: str = "mimo"
    init: str = "work/paper/stage1"  # a Stage-1 output directory (student in model/, psi in projection.pt); "" = none
    # student (used when init is ""); student_layers: with init "", the first N layers (a Stage-1 output keeps its own)
    lam: float = 0.2  # lambda, the XLCO weight (MIMO)
    # Distill = (d_q + d_p) / 2 as the authors' code (mean) or d_q + d_p as the paper's equation (sum)
    distill_reduction: str = "mean"
    alpha: float = 0.5  # LaKDA's alignment weight
    lakda_form: str = "release"  # release: one-sided KL on unscaled cosines; paper: symmetric KL at 1/tau (App. A)
    scale: float = 20.0  # 1 / tau
    lr: float = 2e-5  # Table 6
    batch_size: int = 4096  # rows per optimizer step, over all ranks (the authors': 2 GPUs x 2048)
    contrastive_group_size: int = 2048  # rows sharing in-batch negatives; 0: the whole batch
    mini_batch_size: int = 32  # gradient-cache chunk
    max_length: int = 512
    checkpoint_every: int = 50

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise MimoError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 0.0 <= self.lam <= 1.0:
            raise MimoError(f"lam (lambda) must be in [0, 1], not {self.lam}")
        if not 0.0 <= self.alpha <= 1.0:
            raise MimoError(f"alpha must be in [0, 1], not {self.alpha}")
        if self.mini_batch_size < 1 or self.batch_size % self.mini_batch_size:
            raise MimoError(f"batch_size {self.batch_size} is not divisible by mini_batch_size {self.mini_batch_size}")
        if self.contrastive_group_size < 0 or (self.contrastive_group_size
                                               and self.batch_size % self.contrastive_group_size):
            raise MimoError(f"contrastive_group_size {self.contrastive_group_size} must divide batch_size "
                            f"{self.batch_size} (0: the whole batch)")
        if self.distill_reduction not in DISTILL_REDUCTIONS:
            raise MimoError(f"distill_reduction must be mean or sum, not {self.distill_reduction!r}")
        if self.lakda_form not in LAKDA_FORMS:
            raise MimoError(f"lakda_form must be release or paper, not {self.lakda_form!r}")


def load_initial_student(cfg: Stage2Config, targets: TeacherTargets):
    teacher_dim = targets.dim
    if not cfg.init:
        return load_student(cfg.student, teacher_dim, cfg.pooling, cfg.student_layers, cfg.freeze_embeddings)
    init = Path(cfg.init)
    if not (init / "model").is_dir() or not (init / "projection.pt").is_file():
        raise MimoError(f"init {init}: not a finished Stage-1 output (model/ and projection.pt expected)")
    recorded = init / "teacher_fingerprint.json"
    if recorded.is_file():
        theirs = json.loads(recorded.read_text())
        diffs = changed_settings(theirs, targets.fingerprint)
        if diffs:
            raise MimoError(f"init {init} was trained against a teacher cache built under other settings "
                            f"({', '.join(f'{k}: {theirs.get(k)!r} vs {targets.fingerprint.get(k)!r}' for k in diffs)})")
    student, tokenizer = load_student(str(init / "model"), teacher_dim, cfg.pooling, freeze_embeddings=cfg.freeze_embeddings)
    psi = torch.load(init / "projection.pt", map_location="cpu", weights_only=True)
    if psi["weight"].shape != student.projection.weight.shape:
        raise MimoError(f"init {init}: psi maps to {psi['weight'].shape[0]}-d, the teacher cache holds {teacher_dim}-d")
    student.projection.load_state_dict(psi)
    return student, tokenizer


def method_loss(cfg: Stage2Config):
    """The method's loss on one contrastive group, built once per run: it takes each input's
    (embedding, projected) pair, then the row-aligned teacher targets (MIMO only), and returns
    {"loss": ..., and its terms}: MIMO's xlco and distill; the baselines' loss alone."""
    if cfg.method == "mimo":
        def mimo(q, p, tq, tp):  # inputs: queries, passages; targets: E_t(q_en), E_t(p_en)
            return stage2_loss(q[0], p[0], q[1], p[1], tq, tp, lam=cfg.lam, scale=cfg.scale,
                               distill_reduction=cfg.distill_reduction)
        return mimo
    if cfg.method == "lakda":
        def lakda(q1, q2, p):  # inputs: two parallel queries, passages
            return {"loss": lakda_loss(q1[0], q2[0], p[0], scale=cfg.scale, alpha=cfg.alpha, form=cfg.lakda_form)}
        return lakda

    def contrastive(q, p):  # xlco and infonce: the same loss, the composition decides the languages
        return {"loss": info_nce(q[0], p[0], cfg.scale)}
    return contrastive


def run_stage2(cfg: Stage2Config, echo=print) -> dict:
    mimo, lakda = cfg.method == "mimo", cfg.method == "lakda"
    run = start_training(cfg, "stage2", prepared_layout.stage2_table(cfg.prepared, METHODS[cfg.method]),
                         ("q_text", "p_text", "q2_text") if lakda else ("q_text", "p_text"),
                         lambda targets: load_initial_student(cfg, targets), echo=echo, resolve=mimo,
                         rows_per_rank_unit=cfg.mini_batch_size, find_unused=not mimo)
    queries, passages = TextColumn(run.table.column("q_text")), TextColumn(run.table.column("p_text"))
    second = TextColumn(run.table.column("q2_text")) if lakda else None
    targets, where, device, rank, size = run.targets, run.where, run.device, run.rank, run.size
    groups = distributed.contrastive_groups(cfg.contrastive_group_size, cfg.batch_size, rank, size)
    loss_fn = method_loss(cfg)

    def encode(ids, mask):
        with run.autocast():
            embedding, projected = run.model(ids, mask)
        return embedding.float(), projected.float()

    def tokens(texts):
        batch = run.tokenize(texts)
        return batch["input_ids"], batch["attention_mask"]

    def prepare(rows):  # no model: runs ahead in the loop's prefetch thread
        rows = distributed.local_rows(rows, rank, size)
        inputs = [tokens(queries.take(rows)), tokens(passages.take(rows))]
        if lakda:
            inputs.insert(1, tokens(second.take(rows)))
        fetched = tuple(targets.fetch_stored(where[c][rows]) for c in ("q_teacher_id", "p_teacher_id")) if mimo else ()
        return inputs, fetched

    def step_fn(prepared):
        inputs, fetched = prepared
        inputs = [tuple(t.to(device) for t in pair) for pair in inputs]
        # row-aligned tensors the loss reads besides the representations (teacher targets, widened on the device)
        per_row = tuple(t.to(device).float() for t in fetched)
        # the mean over the contrastive groups (see distributed.py) of the loss and its terms
        terms = cached_step(encode, inputs, lambda *local: groups.mean_loss(loss_fn, local, per_row),
                            cfg.mini_batch_size, no_sync=run.no_sync)
        return {k: distributed.mean_over_ranks(v) for k, v in terms.items()}

    result = train_loop(cfg, f"stage 2 ({cfg.method})", len(queries), run.student, step_fn, echo,
                        write=run.writes, prepare=prepare)
    if run.finish(result):
        echo(f"stage 2 ({cfg.method}): {result['step']} steps done, loss {result['loss']:.4f}; "
             f"student in {run.out / 'model'}")
    return result
