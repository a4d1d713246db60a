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
from trainer.gradcache import cached_step
from trainer.loop import train_loop, use_bf16
from trainer.losses import DISTILL_REDUCTIONS, LAKDA_FORMS, info_nce, lakda_loss, stage2_loss
from trainer.run_dir import finish_run_dir, open_run_dir
from trainer.student import load_student

METHODS = {"mimo": "mimo", "xlco": "mimo", "infonce": "infonce", "lakda": "lakda"}  # method -> composition


@dataclass(frozen=True)
class Stage2Config:
    prepared: str = "work/paper/prepared"
    cache: str = "work/paper/teacher_cache.zarr"
    out_dir: str = "work/paper/stage2"
    method: str = "mimo"
    init: str = "work/paper/stage1"  # a Stage-1 output directory (student in model/, psi in projection.pt); "" = none
    student: str = "xlm-roberta-large"  # used when init is ""
    student_layers: int = 0  # with init "": the student's first N layers (0: all); a Stage-1 output keeps its own
    freeze_embeddings: bool = False  # True: no gradient for the token embeddings (CPU speed; trainer/student.py)
    pooling: str = "mean"
    lam: float = 0.2  # lambda, the XLCO weight (MIMO)
    # Distill = (d_q + d_p) / 2 as the authors' code (mean) or d_q + d_p as the paper's equation (sum)
    distill_reduction: str = "mean"
    alpha: float = 0.5  # LaKDA's alignment weight
    lakda_form: str = "release"  # release: one-sided KL on unscaled cosines; paper: symmetric KL at 1/tau (App. A)
    scale: float = 20.0  # 1 / tau
    lr: float = 2e-5  # Table 6
    warmup_ratio: float = 0.1
    batch_size: int = 4096  # rows per optimizer step, over all ranks (the authors': 2 GPUs x 2048)
    contrastive_group_size: int = 2048  # rows sharing in-batch negatives; 0: the whole batch
    mini_batch_size: int = 32  # gradient-cache chunk
    max_length: int = 512
    epochs: int = 1
    weight_decay: float = 0.0  # AdamW on every parameter; 0 is the Hugging Face Trainer default the authors ran
    max_grad_norm: float = 1.0
    precision: str = "auto"
    seed: int = 42
    checkpoint_every: int = 50
    stop_after: int = 0
    prefetch: int = 2  # batches tokenized and read from the cache ahead, in a background thread (0: inline)
    verify_cache: bool = False  # compare every shard with its checksum at open (reads the whole store)
    progress: bool = True
    keep_checkpoint: bool = False  # keep checkpoint.pt after the run finishes (it is deleted by default)
    resume_anyway: bool = False  # resume a checkpoint made under other settings (refused by default)
    report_to: Literal["none", "tensorboard", "wandb"] = "none"  # besides metrics.jsonl (trainer/tracking.py)

    def __post_init__(self):
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
        if self.precision not in ("auto", "fp32", "bf16"):
            raise MimoError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        if self.prefetch < 0:
            raise MimoError(f"prefetch must be 0 or more, not {self.prefetch}")


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
        diffs = sorted(k for k in set(theirs) | set(targets.fingerprint) if theirs.get(k) != targets.fingerprint.get(k))
        if diffs:
            raise MimoError(f"init {init} was trained against a teacher cache built under other settings "
                            f"({', '.join(f'{k}: {theirs.get(k)!r} vs {targets.fingerprint.get(k)!r}' for k in diffs)})")
    student, tokenizer = load_student(str(init / "model"), teacher_dim, cfg.pooling, freeze_embeddings=cfg.freeze_embeddings)
    psi = torch.load(init / "projection.pt", map_location="cpu", weights_only=True)
    if psi["weight"].shape != student.projection.weight.shape:
        raise MimoError(f"init {init}: psi maps to {psi['weight'].shape[0]}-d, the teacher cache holds {teacher_dim}-d")
    student.projection.load_state_dict(psi)
    return student, tokenizer


def run_stage2(cfg: Stage2Config, echo=print) -> dict:
    out = Path(cfg.out_dir)
    table = read_stage_table(Path(cfg.prepared) / "stage2" / f"{METHODS[cfg.method]}.parquet", "stage2")
    targets = TeacherTargets(cfg.cache, verify=cfg.verify_cache)
    where = resolve_targets(table, targets, "stage2") if cfg.method == "mimo" else None  # refuses up front
    queries, passages = table.column("q_text").to_pylist(), table.column("p_text").to_pylist()
    second = table.column("q2_text").to_pylist() if cfg.method == "lakda" else None

    torch.manual_seed(cfg.seed)
    student, tokenizer = load_initial_student(cfg, targets)
    check_teacher_dim(targets, student.projection.out_features)
    rank, size = distributed.world()
    device = pick_device("auto")  # this rank's GPU (LOCAL_RANK), else the CPU
    if cfg.batch_size % (size * cfg.mini_batch_size):
        raise MimoError(f"batch_size {cfg.batch_size} must split into {size} ranks of whole mini-batches of "
                        f"{cfg.mini_batch_size}")
    distributed.init_if_needed(device)
    groups = distributed.contrastive_groups(cfg.contrastive_group_size, cfg.batch_size, rank, size)
    student.to(device).train()
    model, no_sync = distributed.wrap(student, device, find_unused=cfg.method != "mimo")
    bf16 = use_bf16(cfg.precision, device)
    open_run_dir(cfg, "stage2", [Path(cfg.prepared) / "stage2" / f"{METHODS[cfg.method]}.parquet"],
                 targets.fingerprint, write=rank == 0, echo=echo)

    def encode(ids, mask):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            embedding, projected = model(ids, mask)
        return embedding.float(), projected.float()

    def tokens(texts):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]

    def prepare(rows):  # no model: runs ahead in the loop's prefetch thread
        rows = distributed.local_rows(rows, rank, size)
        inputs = [tokens([queries[i] for i in rows]), tokens([passages[i] for i in rows])]
        if cfg.method == "lakda":
            inputs.insert(1, tokens([second[i] for i in rows]))
        fetched = tuple(targets.fetch_stored(where[c][rows]) for c in ("q_teacher_id", "p_teacher_id")) \
            if cfg.method == "mimo" else ()
        return inputs, fetched

    def step_fn(prepared):
        inputs, fetched = prepared
        inputs = [tuple(t.to(device) for t in pair) for pair in inputs]
        # row-aligned tensors the loss reads besides the representations (teacher targets, widened on the device)
        per_row = tuple(t.to(device).float() for t in fetched)
        if cfg.method == "mimo":

            def loss_fn(q, p, tq, tp):
                return stage2_loss(q[0], p[0], q[1], p[1], tq, tp, lam=cfg.lam, scale=cfg.scale,
                                   distill_reduction=cfg.distill_reduction)
        elif cfg.method == "lakda":

            def loss_fn(q1, q2, p):
                return {"loss": lakda_loss(q1[0], q2[0], p[0], scale=cfg.scale, alpha=cfg.alpha, form=cfg.lakda_form)}
        else:  # xlco and infonce: the same loss, the composition decides the languages

            def loss_fn(q, p):
                return {"loss": info_nce(q[0], p[0], cfg.scale)}

        terms = {}

        def step_loss(*local):  # the mean over the contrastive groups (see distributed.py)
            parts = groups.mean_loss(loss_fn, local, per_row)
            terms.update({k: v.detach() for k, v in parts.items() if k != "loss"})
            return parts["loss"]

        loss = cached_step(encode, inputs, step_loss, cfg.mini_batch_size, no_sync=no_sync)
        return {k: distributed.mean_over_ranks(v) for k, v in {"loss": loss, **terms}.items()}

    result = train_loop(cfg, f"stage 2 ({cfg.method})", len(queries), student, step_fn, echo,
                        write=rank == 0, prepare=prepare)
    if result["finished"] and rank == 0:
        export_sentence_transformer(student.cpu(), tokenizer, out / "model", cfg.max_length)
        finish_run_dir(cfg)
        write_training_card(out, result, targets.fingerprint, device)  # model/README.md (pipeline/model_card.py)
        echo(f"stage 2 ({cfg.method}): {result['step']} steps done, loss {result['loss']:.4f}; student in {out / 'model'}")
    return result
