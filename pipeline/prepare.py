"""The `prepare` step: Stage-1 pairs, Stage-2 compositions and the teacher's worklist.

Output directory layout (every table has an explicit schema; same inputs and seed give the same bytes):
    stage1/pairs.parquet          Stage-1 pairs (t_en, t_XX) in training order
    stage1/report.json            rows dropped by each filter, per language
    stage2/{mimo,infonce,lakda}.parquet   the same instances under each composition
    stage2/report.json            pair counts and counted skips
    teacher_worklist.parquet      unique English texts the teacher must encode
    config.json                   the resolved config
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import permutations
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import write_resolved_config
from pipeline.errors import MimoError
from pipeline.outputs import staged_output_dir, write_table
from pipeline.stage1_data import FILTERS, Stage1DataConfig, prepare_stage1, stage1_worklist_entries
from pipeline.stage2_data import Stage2DataConfig, prepare_stage2, stage2_worklist_entries
from pipeline.worklist import build_worklist

STAGES = ("stage1", "stage2")


@dataclass(frozen=True)
class PrepareConfig:
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


def run_prepare(cfg: PrepareConfig, echo=print) -> Path:
    """Run preparation and write its outputs atomically into cfg.out_dir; return that directory."""
    entries = []
    with staged_output_dir(cfg.out_dir, "prepare") as out:
        if "stage1" in cfg.stages:
            pairs, report = prepare_stage1(cfg.stage1, cfg.seed, cfg.sample_dir)
            (out / "stage1").mkdir()
            write_table(pairs, out / "stage1" / "pairs.parquet")
            _dump(report, out / "stage1" / "report.json")
            entries.extend(stage1_worklist_entries(pairs, cfg.stage1))
            echo(_stage1_summary(report))
        if "stage2" in cfg.stages:
            tables, report = prepare_stage2(cfg.stage2, cfg.seed, cfg.sample_dir)
            (out / "stage2").mkdir()
            for name, table in tables.items():
                write_table(table, out / "stage2" / f"{name}.parquet")
            english = report.pop("english")
            _dump(report, out / "stage2" / "report.json")
            entries.extend(stage2_worklist_entries(english, cfg.stage2))
            echo(_stage2_summary(report, tables, cfg.stage2.languages))
        worklist = build_worklist(entries)
        write_table(worklist, out / "teacher_worklist.parquet")
        write_resolved_config(cfg, out, "prepare")
        roles = Counter(zip(worklist.column("role").to_pylist(), worklist.column("max_length").to_pylist()))
        echo("teacher worklist: " + ", ".join(f"{n} {role} texts at {length} tokens" for (role, length), n in sorted(roles.items())))
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
