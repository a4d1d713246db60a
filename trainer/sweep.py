"""Lambda sweeps: Stage 2 (MIMO) once per lambda, from one teacher cache and one Stage-1 output.

Nothing here loads the teacher: every run reads the same cache. Each lambda gets its own output
directory (resumable like any Stage-2 run), and the final metrics of all runs are collected in
`sweep.json` and `sweep.csv` beside them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from pipeline.config import WORK_FOLDER, write_resolved_config
from pipeline.errors import MimoError
from trainer.stage2 import Stage2Config, run_stage2


@dataclass(frozen=True)
class SweepConfig:
    WORK_PATHS: ClassVar[dict[str, str]] = {"out_dir": WORK_FOLDER["sweep"]}

    work_dir: str = "work/paper"  # the setup's work folder (pipeline/config.py); the runs' paths derive from it too
    out_dir: str = "work/paper/sweep"
    lambdas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # Figure 2
    stage2: Stage2Config = field(default_factory=Stage2Config)  # a setup file's [stage2], then [sweep.stage2]

    def __post_init__(self):
        if not self.lambdas or any(not 0.0 <= lam <= 1.0 for lam in self.lambdas):
            raise MimoError(f"lambdas must be a non-empty list of values in [0, 1], not {list(self.lambdas)}")
        if self.stage2.method != "mimo":
            raise MimoError("a lambda sweep runs method=mimo")


def run_sweep(cfg: SweepConfig, echo=print) -> list[dict]:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(cfg, out, "sweep")
    rows = []
    for lam in cfg.lambdas:
        run_dir = out / f"lambda-{lam:g}"
        echo(f"sweep: lambda = {lam:g} -> {run_dir}")
        result = run_stage2(replace(cfg.stage2, lam=lam, out_dir=str(run_dir)), echo=echo)
        rows.append({"lambda": lam, "out_dir": str(run_dir), **{k: result.get(k) for k in
                     ("finished", "step", "loss", "xlco", "distill")}})
    (out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    echo(f"sweep: {len(rows)} runs; results in {out / 'sweep.json'} and {out / 'sweep.csv'}")
    return rows
