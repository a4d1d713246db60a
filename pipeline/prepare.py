"""The `prepare` step: Stage-1 pairs, Stage-2 compositions and the teacher's worklist.

Output directory layout: pipeline/prepared_layout.py (every table has an explicit schema; same
inputs and seed give the same bytes).
"""

from __future__ import annotations

import json
import resource
import time
from collections import Counter
from itertools import permutations
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa

from pipeline import prepared_layout as layout
from pipeline.config import WORK_FOLDER, write_resolved_config
from pipeline.errors import MimoError
from pipeline.outputs import staged_output_dir, write_table
from pipeline.stage1_data import FILTERS, Stage1DataConfig, prepare_stage1
from pipeline.stage2_data import Stage2DataConfig, prepare_stage2, stage2_worklist_entries
from pipeline.worklist import build_worklist, worklist_from_tables

STAGES = ("stage1", "stage2")


@dataclass(frozen=True)
class PrepareConfig:
    WORK_PATHS: ClassVar[dict[str, str]] = {"out_dir": WORK_FOLDER["prepared"]}

    work_dir: str = "work/paper"  # the setup's work folder (pipeline/config.py): out_dir defaults to {work_dir}/prepared
    out_dir: str = "work/paper/prepared"
    seed: int = 42
    stages: tuple[str, ...] = STAGES
    sample_dir: str = "data/sample"  # the embedded sample, for source=sample
    stage1: Stage1DataConfig = field(default_factory=Stage1DataConfig)
    stage2: Stage2DataConfig = field(default_factory=Stage2DataConfig)

    def __post_init__(self):
        if self.seed < 0:
            raise MimoError(f"seed must be a non-negative integer, not {self.seed}")
        if not self.out_dir.strip():
            raise MimoError("out_dir must name a directory")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise MimoError(f"stages must be a non-empty subset of {', '.join(STAGES)}, not {', '.join(self.stages)}")


def _dump(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


class _Phase:
    """Wall time and peak RSS of one phase, said when it ends (paper-scale runs take a while)."""

    def __init__(self, name: str, echo):
        self.name, self.echo = name, echo

    def __enter__(self):
        self.start = time.perf_counter()  # said when it ends only: a bad input's error stays the one line

    def __exit__(self, *exc):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        if exc[0] is None:
            self.echo(f"{self.name}: {time.perf_counter() - self.start:.1f} s (peak RSS so far {peak:.2f} GiB)")


def run_prepare(cfg: PrepareConfig, echo=print) -> Path:
    """Run preparation and write its outputs atomically into cfg.out_dir; return that directory."""
    parts = []  # (text_id, role, max_length, text) tables: the teacher's worklist
    with staged_output_dir(cfg.out_dir, "prepare") as out:
        if "stage1" in cfg.stages:
            with _Phase("stage 1: read, filter, draft", echo):
                pairs, report = prepare_stage1(cfg.stage1, cfg.seed, cfg.sample_dir, echo=echo)
                (out / layout.STAGE1_DIR).mkdir()
                write_table(pairs, layout.stage1_pairs(out))
                _dump(report, layout.report(out, layout.STAGE1_DIR))
            # Stage 1 has no prompt (App. C): every English side is a document at the Stage-1 length
            parts.append(pa.table({"text_id": pairs.column("teacher_id"),
                                   "role": pa.array(["document"] * pairs.num_rows, pa.string()),
                                   "max_length": pa.array(np.full(pairs.num_rows, cfg.stage1.teacher_max_length,
                                                                  np.int32)),
                                   "text": pairs.column("english")}))
            echo(_stage1_summary(report))
            del pairs
        if "stage2" in cfg.stages:
            with _Phase("stage 2: read, compose", echo):
                tables, report = prepare_stage2(cfg.stage2, cfg.seed, cfg.sample_dir)
                (out / layout.STAGE2_DIR).mkdir()
                for name, table in tables.items():
                    write_table(table, layout.stage2_table(out, name))
                english = report.pop("english")
                _dump(report, layout.report(out, layout.STAGE2_DIR))
            parts.append(build_worklist(stage2_worklist_entries(english, cfg.stage2)))
            echo(_stage2_summary(report, tables, cfg.stage2.languages))
            del tables, english
        with _Phase("teacher worklist", echo):
            worklist = worklist_from_tables(parts)
            write_table(worklist, layout.teacher_worklist(out))
        write_resolved_config(cfg, out, "prepare")
        roles = worklist.group_by(["role", "max_length"]).aggregate([("text_id", "count")]).to_pylist()
        roles = sorted((r["role"], r["max_length"], r["text_id_count"]) for r in roles)
        echo("teacher worklist: " + ", ".join(f"{n} {role} texts at {length} tokens" for role, length, n in roles))
    out_dir = Path(cfg.out_dir)
    echo(f"wrote {cfg.out_dir}/: " + ", ".join(sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())))
    return Path(cfg.out_dir)


def _stage1_summary(report: dict) -> str:
    malformed = ["malformed"] if any("malformed" in c for c in report["per_language"].values()) else []  # hub-legacy
    head = ["lang", "input", *malformed, *FILTERS, "kept"]
    rows = [head] + [[lang] + [str(c[k]) for k in head[1:]] for lang, c in report["per_language"].items()]
    total = sum(c["kept"] for c in report["per_language"].values())
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return f"stage 1: {total} pairs (rows dropped by each filter, per language)\n" + "\n".join(lines)


def _stage2_summary(report: dict, tables: dict, languages) -> str:
    skipped = sum(report["missing_translation"].values())
    lines = [f"stage 2: {report['pairs_out']} instances from {report['pairs_in']} (query, positive) pairs"
             + (f"; {skipped} language gaps skipped" if skipped else "")]
    cross = list(permutations(languages, 2))
    for name, table in tables.items():
        q, p = table.column("q_lang").to_pylist(), table.column("p_lang").to_pylist()
        if name == "infonce":
            counts, keys, what = Counter(q), languages, "monolingual pairs"
        else:
            second = table.column("q2_lang").to_pylist() if name == "lakda" else p
            counts, keys = Counter(zip(q, second)), cross
            what = "ordered query-language pairs" if name == "lakda" else "ordered language pairs"
        values = [counts.get(k, 0) for k in keys]
        lines.append(f"  {name}: {len(keys)} {what}, {min(values)}-{max(values)} instances each")
    return "\n".join(lines)
