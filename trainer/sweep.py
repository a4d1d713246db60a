"""Lambda sweeps: Stage 2 (MIMO) once per lambda, from one teacher cache and one Stage-1 output.

Nothing here loads the teacher: every run reads the same cache. Each lambda gets its own output
directory (resumable like any Stage-2 run), and the final metrics of all runs are collected in
`sweep.json` and `sweep.csv` beside them. `reuse` names finished Stage-2 outputs made elsewhere (the
demo's `mimo stage2` at lambda 0.2): a lambda whose run one of them already is (same settings but
out_dir, same data, same teacher: trainer/run_dir.py's run identity) is taken from it, not trained again;
so is a finished run of that lambda already in the sweep's own folder.
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
    reuse: tuple[str, ...] = ()  # finished Stage-2 output folders that may stand for a lambda's run
    # train only these of `lambdas` and collect nothing: `make demo` trains its lambdas side by side, one such job
    # each, then one `mimo sweep` (only unset) takes them from their folders and writes sweep.json
    only: tuple[float, ...] = ()

    def __post_init__(self):
        if not self.lambdas or any(not 0.0 <= lam <= 1.0 for lam in self.lambdas):
            raise MimoError(f"lambdas must be a non-empty list of values in [0, 1], not {list(self.lambdas)}")
        if any(lam not in self.lambdas for lam in self.only):
            raise MimoError(f"only: {list(self.only)} must be some of lambdas {list(self.lambdas)}")
        if self.stage2.method != "mimo":
            raise MimoError("a lambda sweep runs method=mimo")


def finished_run(run: Stage2Config, candidates) -> tuple[Path, dict] | None:
    """(folder, its last logged step) of the first candidate that is a finished run of exactly `run`
    (trainer/run_dir.py's identity, out_dir aside; exported model and training record present)."""
    from pipeline.cache_read import TeacherTargets
    from trainer.run_dir import RUN_FILE, differences, run_identity
    from trainer.stage2 import METHODS

    if not candidates:
        return None
    data = Path(run.prepared) / "stage2" / f"{METHODS[run.method]}.parquet"
    now = run_identity(run, "stage2", [data], TeacherTargets(run.cache).fingerprint)
    for folder in map(Path, candidates):
        try:
            before = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
            last = json.loads((folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])
        except (OSError, ValueError, IndexError):
            continue
        if (isinstance(before, dict) and before.get("step") == "stage2" and before.get("data") is not None
                and before.get("teacher") is not None and not differences(before, now)
                and (folder / "model" / "mimo_training.json").is_file() and isinstance(last, dict)):
            return folder, last
    return None


def run_sweep(cfg: SweepConfig, echo=print) -> list[dict]:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.only:  # a job of `only` lambdas writes nothing the other jobs also write
        write_resolved_config(cfg, out, "sweep")
    rows = []
    for lam in cfg.only or cfg.lambdas:
        run_dir = out / f"lambda-{lam:g}"
        run = replace(cfg.stage2, lam=lam, out_dir=str(run_dir))
        # its own folder first: a lambda already trained there (by an earlier sweep, or by `mimo stage2 lam=..
        # out_dir=<sweep>/lambda-..`, as `make demo` trains the lambdas side by side) is not trained again
        found = finished_run(run, (run_dir, *cfg.reuse))
        if found:
            run_dir, last = found
            echo(f"sweep: lambda = {lam:g}: {run_dir} is this run, finished (reused, not trained again)")
            result = {"finished": True, **last}
        else:
            echo(f"sweep: lambda = {lam:g} -> {run_dir}")
            result = run_stage2(run, echo=echo)
        rows.append({"lambda": lam, "out_dir": str(run_dir), **{k: result.get(k) for k in
                     ("finished", "step", "loss", "xlco", "distill")}})
    if cfg.only:
        return rows
    (out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    echo(f"sweep: {len(rows)} runs; results in {out / 'sweep.json'} and {out / 'sweep.csv'}")
    return rows
