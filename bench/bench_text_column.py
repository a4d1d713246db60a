"""The texts of a stage's table: a Python list per rank (the trainer before TextColumn) against taking a batch's
texts from the Arrow column (trainer.data.TextColumn): anonymous RSS of each and the time of a 128-row take.

    nice .venv/bin/python bench/bench_text_column.py work/ps02/prepared/stage1/pairs.parquet
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainer.data import TextColumn, read_stage_table  # noqa: E402


def anon_mib() -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("RssAnon")) / 1024


def main() -> None:
    start = anon_mib()
    table = read_stage_table(sys.argv[1], "stage1")
    read = anon_mib()
    column = TextColumn(table.column("text"))
    rows = np.random.default_rng(0).integers(0, len(column), 128)
    started = time.perf_counter()
    for _ in range(100):
        column.take(rows)
    take = (time.perf_counter() - started) / 100
    started = time.perf_counter()
    for _ in range(10):
        table.column("text").take(rows)  # pyarrow's own take on the chunked column
    chunked = (time.perf_counter() - started) / 10
    arrow = anon_mib()
    texts = table.column("text").to_pylist()
    listed = anon_mib()
    started = time.perf_counter()
    for _ in range(100):
        [texts[i] for i in rows]
    index = (time.perf_counter() - started) / 100
    print(f"{table.num_rows:,} rows, {table.column('text').num_chunks} chunks: table read +{read - start:,.0f} MiB anon; "
          f"TextColumn +{arrow - read:,.0f} MiB; to_pylist of the texts +{listed - arrow:,.0f} MiB; take of 128 rows "
          f"{1e3 * take:.2f} ms (ChunkedArray.take {1e3 * chunked:.1f} ms) vs list indexing {1e3 * index:.3f} ms")


if __name__ == "__main__":
    main()
