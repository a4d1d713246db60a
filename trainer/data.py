"""Training data: the prepared tables joined to the teacher cache, checked before the first step.

A stage's table refers to teacher targets by worklist id (`teacher_id` in Stage 1, `q_teacher_id` /
`p_teacher_id` in Stage 2). `resolve_targets` maps those ids to cache locations once, up front, and
refuses to start when the cache lacks any of them, saying how many and for which stage, so a run
never fails hours in (or silently trains on the wrong vectors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.cache_read import TeacherTargets
from pipeline.errors import MimoError

TARGET_COLUMNS = {"stage1": ("teacher_id",), "stage2": ("q_teacher_id", "p_teacher_id")}


def read_stage_table(path: str | Path, stage: str) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise MimoError(f"{path}: {stage} table not found (run prepare first)")
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise MimoError(f"{path}: not a readable {stage} table ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); run prepare again") from None
    missing = [c for c in TARGET_COLUMNS[stage] if c not in table.column_names]
    if missing:
        raise MimoError(f"{path}: not a {stage} table (missing column(s) {', '.join(missing)})")
    return table


def resolve_targets(table: pa.Table, targets: TeacherTargets, stage: str) -> dict[str, np.ndarray]:
    """Cache locations (n, 2) per target column; refuses when any target is not in the cache."""
    out = {}
    for column in TARGET_COLUMNS[stage]:
        ids = table.column(column).to_pylist()
        missing = targets.missing(ids)
        if missing:
            unique = len(set(missing))
            raise MimoError(
                f"{stage}: the teacher cache {targets.store.url} lacks {unique} of the {len(set(ids))} texts "
                f"the data needs ({column}, e.g. {missing[0]}); run teacher-cache on this data's worklist")
        out[column] = targets.locate(ids)
    return out


def check_teacher_dim(targets: TeacherTargets, projection_out: int) -> None:
    if targets.dim != projection_out:
        raise MimoError(f"the teacher cache holds {targets.dim}-d vectors, the student's projection gives "
                        f"{projection_out}-d (a Stage-1 checkpoint trained against another teacher?)")
