"""A training run's output folder: whose it is, and whether its checkpoint may be resumed.

Running a stage again into its output folder resumes from `checkpoint.pt`. That is only right if
the checkpoint was made by the same run: same step, same settings, same data, same teacher. Every
start records what the run is in `run.json`; the next start compares and refuses a checkpoint
made otherwise, listing the settings that differ (`resume_anyway=true` continues regardless).
A folder that holds something other than an earlier output of the same step is refused, as
`prepare` refuses it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.config import changed_settings, config_to_dict, write_resolved_config
from pipeline.errors import MimoError
from pipeline.outputs import _previous_output_of
from trainer.checkpoint import CHECKPOINT

RUN_FILE = "run.json"
# How a run is driven, not what it computes: these may change between a run and its resume.
RUN_CONTROL = frozenset({"out_dir", "work_dir", "stop_after", "checkpoint_every", "progress", "verify_cache",
                         "keep_checkpoint", "resume_anyway", "prefetch", "prefetch_batches", "tracking",
                         "report_to"})


def file_digest(path: Path) -> str:
    """blake2b of a file's bytes (a data table, once per start)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_identity(cfg, step: str, data_files, teacher_fingerprint: dict | None) -> dict:
    """What makes this run's checkpoint: the step, the settings that change results, data and teacher."""
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in RUN_CONTROL}
    return {"step": step, "settings": settings,
            "data": {str(p): file_digest(Path(p)) for p in data_files if Path(p).is_file()},
            "teacher": teacher_fingerprint}


def differences(before: dict, now: dict) -> list[str]:
    """`name: checkpoint's value -> this run's value`, one entry per differing setting."""
    a, b = _flat(before.get("settings") or {}), _flat(now.get("settings") or {})
    out = [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in changed_settings(a, b)
           if key.split(".")[-1] not in RUN_CONTROL]
    # None: recorded by a version that kept no digests
    if before.get("data") is not None and before["data"] != now["data"]:
        out.append("data (the contents of the data table changed)")
    if before.get("teacher") is not None and before["teacher"] != now["teacher"]:
        out.append("teacher (the teacher cache's fingerprint changed)")
    return out


def _previous_identity(out: Path) -> dict | None:
    try:
        data = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        pass
    try:  # a run made before run.json existed: its resolved config has the settings
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        step = config.pop("_step", None)
        return {"step": step, "settings": config, "data": None, "teacher": None}
    except (OSError, ValueError, AttributeError):
        return None


def open_run_dir(cfg, step: str, data_files, teacher_fingerprint: dict | None, write: bool = True,
                 echo=print) -> Path:
    """Check `cfg.out_dir` before the first step; then (if `write`) record the run in it.

    Refuses: a path that is not a folder; a non-empty folder that is not an earlier `step` output;
    a checkpoint made under other settings, data or teacher (unless `resume_anyway`). Only the
    writing process (rank 0) checks: the others would race with its writes (torchrun stops them
    when it fails).
    """
    out = Path(cfg.out_dir)
    if not write:
        out.mkdir(parents=True, exist_ok=True)
        return out
    now = run_identity(cfg, step, data_files, teacher_fingerprint)
    if out.exists() and not out.is_dir():
        raise MimoError(f"out_dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        before = _previous_identity(out)
        if not (before and before.get("step") == step) and not _previous_output_of(out, step):
            raise MimoError(f"out_dir {out} exists and is not an earlier {step} output: refusing to write a run into it "
                            "(choose another out_dir)")
        if (out / CHECKPOINT).is_file():
            diffs = differences(before or {}, now)
            if diffs and not getattr(cfg, "resume_anyway", False):
                raise MimoError(f"{out / CHECKPOINT} was made with other settings ({'; '.join(diffs)}): refusing to "
                                "resume and mix two runs; use another out_dir, delete the checkpoint to start over, "
                                "or set resume_anyway=true to continue with these settings")
            if diffs:
                echo(f"{step}: resuming under other settings as asked (resume_anyway): {'; '.join(diffs)}")
        else:
            # no checkpoint: this run starts at step 0, so an earlier run's log lines are not its own
            (out / "metrics.jsonl").unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MimoError(f"out_dir {out}: cannot create it ({err.strerror})") from None
    (out / RUN_FILE).write_text(json.dumps(now, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    write_resolved_config(cfg, out, step)
    return out


def finish_run_dir(cfg) -> None:
    """A finished run's checkpoint has done its job (the exported model is the result): delete it
    unless `keep_checkpoint` (it is as large as the student plus two optimizer moments)."""
    if not getattr(cfg, "keep_checkpoint", False):
        (Path(cfg.out_dir) / CHECKPOINT).unlink(missing_ok=True)
