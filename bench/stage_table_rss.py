"""A rank's memory for its stage table: read it (every column, or only those a Stage-1 run uses) and
resolve its teacher ids, printing the process's anonymous / file-backed RSS and peak after each step.

    .venv/bin/python bench/stage_table_rss.py work/ps10/prepared/stage1/pairs.parquet \\
        work/bench_targets/store-1000000x4096.zarr all|text

`all` reads every column (the trainer before it read only what it uses), `text` the text and
`teacher_id` columns (what `mimo stage1` reads). The ids are looked up in the store whether or not
it holds them (`TeacherTargets.lookup`: the cost is the same); bench/RESULTS.md, item 5.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss() -> str:
    status = Path("/proc/self/status").read_text()

    def mib(key: str) -> float:
        return int(status.split(key + ":")[1].split()[0]) / 1024
    return f"anon {mib('RssAnon'):,.0f} MiB, file {mib('RssFile'):,.0f} MiB, peak {mib('VmHWM'):,.0f} MiB"


def main() -> None:
    table_path, store, which = sys.argv[1:4]
    from pipeline.cache_read import TeacherTargets
    from trainer.data import read_stage_table

    print(f"imports: {rss()}")
    start = time.perf_counter()
    table = read_stage_table(table_path, "stage1", None if which == "all" else ("text",))
    print(f"read {table.num_columns} columns in {time.perf_counter() - start:.1f} s, a {table.nbytes / 2**30:.2f} GiB "
          f"table: {rss()}")
    targets = TeacherTargets(store)
    print(f"store opened: {rss()}")
    start = time.perf_counter()
    where, found = targets.lookup(table.column("teacher_id"))
    print(f"{len(where):,} ids looked up ({int(found.sum()):,} in the store) in {time.perf_counter() - start:.1f} s: "
          f"{rss()}")


if __name__ == "__main__":
    main()
