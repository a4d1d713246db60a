"""Experiment tracking: the terms a training step logs to metrics.jsonl, also sent to TensorBoard
or Weights & Biases (`report_to`, as in Hugging Face's Trainer).

    report_to = "none"         metrics.jsonl only (always written)
    report_to = "tensorboard"  + event files in <out_dir>/tensorboard (extra `tensorboard`)
    report_to = "wandb"        + a wandb run in <out_dir>/wandb (extra `wandb`; WANDB_PROJECT,
                               default "mimo"; WANDB_MODE=offline to sync later)

Every numeric field of a metrics.jsonl line except `step` becomes a scalar of that name at that
step. A resumed run continues the same series: TensorBoard drops events past the resume step
(purge_step), wandb resumes the run whose id is derived from the output directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipeline.extras import require

REPORT_TO = ("none", "tensorboard", "wandb")


class Tracker:
    """Nothing to report to (report_to=none, or a DDP rank other than 0)."""

    def log(self, metrics: dict, step: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path, start_step: int, config: dict):
        require("tensorboard", "tensorboard", "tensorboard", "report_to=tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        # steps logged after the checkpoint a run resumes from are dropped (they are done again)
        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step else None)
        if not start_step:  # the resolved config, once, as text (TensorBoard's "Text" tab)
            self.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in config.items()), 0)

    def log(self, metrics: dict, step: int) -> None:
        for key, value in metrics.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, out_dir: Path, name: str, config: dict):
        wandb = require("wandb", "wandb", "wandb", "report_to=wandb")
        out_dir.joinpath("wandb").mkdir(parents=True, exist_ok=True)
        # one id per output directory, so that running the command again resumes the same run
        run_id = hashlib.blake2b(str(out_dir.resolve()).encode(), digest_size=8).hexdigest()
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mimo"), name=name, id=run_id,
                              resume="allow", dir=str(out_dir), config=config, group=out_dir.parent.name)

    def log(self, metrics: dict, step: int) -> None:
        # commit: the step's row is written now, not when the next step arrives
        self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=step, commit=True)

    def close(self) -> None:
        self.run.finish()


def open_tracker(report_to: str, out_dir: str | Path, name: str, config: dict, start_step: int = 0,
                 enabled: bool = True) -> Tracker:
    """The tracker `report_to` names, writing under `out_dir`; a silent one when not `enabled`."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, not {report_to!r}")
    out_dir = Path(out_dir)
    if not enabled or report_to == "none":
        return Tracker()
    if report_to == "tensorboard":
        return TensorBoardTracker(out_dir / "tensorboard", start_step, config)
    return WandbTracker(out_dir, f"{out_dir.name} ({name})", config)
