"""Stage 2 (section 3.2) and the baselines (App. A) under one loop, data and hyperparameters.

method  | table (prepare)   | loss
mimo    | stage2/mimo       | lambda * XLCO(q_XX, p_YY) + (1 - lambda) * Distill (cached E_t(q_en), E_t(p_en))
xlco    | stage2/mimo       | XLCO: InfoNCE over cross-lingual pairs
infonce | stage2/infonce    | InfoNCE over monolingual pairs
lakda   | stage2/lakda      | (1 - alpha) * InfoNCE + alpha * symmetric KL of two parallel queries

A global batch of `batch_size` rows (2048) is encoded in mini-batches of `mini_batch_size` (32) by
gradient caching (trainer/gradcache.py): the same loss and gradients as the full batch. The student
and psi start from a Stage-1 output (`init`); Stage-2-only runs start from the plain student.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.cache_read import TeacherTargets
from pipeline.config import write_resolved_config
from pipeline.errors import MimoError
from pipeline.teacher import pick_device
from trainer import distributed
from trainer.checkpoint import export_sentence_transformer
from trainer.data import check_teacher_dim, read_stage_table, resolve_targets
from trainer.gradcache import cached_step
from trainer.loop import train_loop, use_bf16
from trainer.losses import info_nce, lakda_loss, stage2_loss
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
    alpha: float = 0.5  # LaKDA's alignment weight
    scale: float = 20.0  # 1 / tau
    lr: float = 2e-5  # Table 6
    warmup_ratio: float = 0.1
    batch_size: int = 2048  # global batch (in-batch negatives)
    mini_batch_size: int = 32  # gradient-cache chunk
    max_length: int = 512
    epochs: int = 1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    precision: str = "auto"
    seed: int = 42
    checkpoint_every: int = 50
    stop_after: int = 0
    cache_in_memory: bool = True
    progress: bool = True
    cross_device_negatives: bool = True  # DDP: every rank's passages are negatives for every query

    def __post_init__(self):
        if self.method not in METHODS:
            raise MimoError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 0.0 <= self.lam <= 1.0:
            raise MimoError(f"lam (lambda) must be in [0, 1], not {self.lam}")
        if not 0.0 <= self.alpha <= 1.0:
            raise MimoError(f"alpha must be in [0, 1], not {self.alpha}")
        if self.mini_batch_size < 1 or self.batch_size % self.mini_batch_size:
            raise MimoError(f"batch_size {self.batch_size} is not divisible by mini_batch_size {self.mini_batch_size}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise MimoError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")


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
    targets = TeacherTargets(cfg.cache, in_memory=cfg.cache_in_memory)
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
    student.to(device).train()
    model, no_sync = distributed.wrap(student, device, find_unused=cfg.method != "mimo")
    bf16 = use_bf16(cfg.precision, device)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        write_resolved_config(cfg, out, "stage2")

    def encode(ids, mask):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            embedding, projected = model(ids, mask)
        return embedding.float(), projected.float()

    def tokens(texts):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return batch["input_ids"].to(device), batch["attention_mask"].to(device)

    def step_fn(rows):
        rows = distributed.local_rows(rows, rank, size)
        inputs = [tokens([queries[i] for i in rows]), tokens([passages[i] for i in rows])]
        terms = {}
        if cfg.method == "mimo":
            share = distributed.gather if cfg.cross_device_negatives else (lambda t: t)
            tq = share(targets.fetch(where["q_teacher_id"][rows]).to(device))
            tp = share(targets.fetch(where["p_teacher_id"][rows]).to(device))

            def loss_fn(q, p):
                parts = stage2_loss(q[0], p[0], q[1], p[1], tq, tp, lam=cfg.lam, scale=cfg.scale)
                terms.update(xlco=parts["xlco"].detach(), distill=parts["distill"].detach())
                return parts["loss"]
        elif cfg.method == "lakda":
            inputs.insert(1, tokens([second[i] for i in rows]))

            def loss_fn(q1, q2, p):
                return lakda_loss(q1[0], q2[0], p[0], scale=cfg.scale, alpha=cfg.alpha)
        else:  # xlco and infonce: the same loss, the composition decides the languages

            def loss_fn(q, p):
                return info_nce(q[0], p[0], cfg.scale)

        def global_loss(*local):  # every rank: the loss over the whole global batch (see distributed.py)
            if not cfg.cross_device_negatives:
                return loss_fn(*local)
            return loss_fn(*[tuple(distributed.gather_with_grad(t) for t in reps) for reps in local])

        loss = cached_step(encode, inputs, global_loss, cfg.mini_batch_size, no_sync=no_sync)
        return {"loss": loss, **terms}

    result = train_loop(cfg, f"stage 2 ({cfg.method})", len(queries), student, step_fn, echo,
                        write=rank == 0)
    if result["finished"] and rank == 0:
        export_sentence_transformer(student.cpu(), tokenizer, out / "model", cfg.max_length)
        echo(f"stage 2 ({cfg.method}): {result['step']} steps done, loss {result['loss']:.4f}; student in {out / 'model'}")
    return result
