"""Training data: the prepared tables joined to the teacher cache, checked before the first step.

A stage's table refers to teacher targets by worklist id (`teacher_id` in Stage 1, `q_teacher_id` /
`p_teacher_id` in Stage 2). `resolve_targets` maps those ids to cache locations once, up front, and
refuses to start when the cache lacks any of them, saying how many and for which stage, so a run
never fails hours in (or silently trains on the wrong vectors).

A batch's texts are taken from the Arrow table per batch (`TextColumn`), not held as Python strings:
at the paper's 5.6M Stage-1 rows a Python list of the texts costs each rank ~2 GB more than the
Arrow column it copies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.cache_read import TeacherTargets
from pipeline.errors import MimoError
from pipeline.store import take_rows

TARGET_COLUMNS = {"stage1": ("teacher_id",), "stage2": ("q_teacher_id", "p_teacher_id")}


class TextColumn:
    """A string column of a stage's table, read a batch at a time: `take(rows)` -> the texts of those rows.

    Takes from the column's chunks (row groups) one by one (`store.take_rows`): pyarrow's ChunkedArray.take
    concatenates every chunk first (a copy of the whole column per batch), combine_chunks would copy it once.
    """

    def __init__(self, column: pa.ChunkedArray):
        self.batches = [pa.RecordBatch.from_arrays([c], ["text"]) for c in column.chunks if len(c)]
        self.starts = np.cumsum([0] + [b.num_rows for b in self.batches], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, rows: np.ndarray) -> list[str]:
        return take_rows(self.batches, self.starts, rows).column(0).to_pylist() if len(rows) else []


def read_stage_table(path: str | Path, stage: str, texts: tuple[str, ...] | None = None,
                     ids: bool = True) -> pa.Table:
    """A stage's prepared table, checked. texts: the text columns the run reads; then only those and,
    with `ids`, the target-id columns are read (a rank holds no column it never uses: at 7M Stage-1
    rows the English side alone is ~0.7 GB); None reads every column. The target-id columns must
    exist either way. Page checksums are verified for the columns read."""
    path = Path(path)
    if not path.is_file():
        raise MimoError(f"{path}: {stage} table not found (run prepare first)")
    try:
        names = pq.read_schema(path).names
        missing = [c for c in (*TARGET_COLUMNS[stage], *(texts or ())) if c not in names]
        if missing:
            raise MimoError(f"{path}: not a {stage} table (missing column(s) {', '.join(missing)})")
        columns = None
        if texts is not None:  # in the file's order
            wanted = {*texts, *(TARGET_COLUMNS[stage] if ids else ())}
            columns = [c for c in names if c in wanted]
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise MimoError(f"{path}: not a readable {stage} table ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); run prepare again") from None


def resolve_targets(table: pa.Table, targets: TeacherTargets, stage: str) -> dict[str, np.ndarray]:
    """Cache locations (n,) per target column; refuses when any target is not in the cache."""
    out = {}
    for column in TARGET_COLUMNS[stage]:
        ids = table.column(column)
        where, found = targets.lookup(ids)
        if not found.all():
            missing = ids.filter(pa.array(~found))
            raise MimoError(
                f"{stage}: the teacher cache {targets.store.url} lacks {pc.count_distinct(missing).as_py()} of the "
                f"{pc.count_distinct(ids).as_py()} texts the data needs ({column}, e.g. {missing[0].as_py()}); "
                "run teacher-cache on this data's worklist")
        out[column] = where
    return out


def check_teacher_dim(targets: TeacherTargets, projection_out: int) -> None:
    if targets.dim != projection_out:
        raise MimoError(f"the teacher cache holds {targets.dim}-d vectors, the student's projection gives "
                        f"{projection_out}-d (a Stage-1 checkpoint trained against another teacher?)")
