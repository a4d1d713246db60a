"""Writing a step's outputs so that a crash never leaves a half-written result behind.

A step writes everything into a staging directory beside its output directory, then swaps it in
with renames; a reader sees the old complete output or the new complete output, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import MimoError


@contextlib.contextmanager
def staged_output_dir(out_dir: str | Path):
    """Yield a fresh staging directory; on success it replaces `out_dir` whole."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MimoError(f"{out_dir}: cannot create the output directory ({err.strerror})") from None
    staging = out_dir.with_name(f".{out_dir.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
    except OSError as err:
        raise MimoError(f"{out_dir.parent}: cannot write there ({err.strerror})") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def write_table(table: pa.Table, path: Path) -> None:
    # zstd: text columns shrink ~4x; no statistics-dependent or time-dependent metadata, so
    # the same table always gives the same bytes.
    pq.write_table(table, path, compression="zstd", write_statistics=False)
