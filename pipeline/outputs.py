"""Writing a step's outputs so that a crash never leaves a half-written result behind.

A step writes everything into a staging directory beside its output directory, then swaps it in
with renames; a reader sees the old complete output or the new complete output, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import MimoError


def write_file_atomically(path: str | Path, write, tmp: str | Path | None = None, exclusive: bool = False) -> bool:
    """Write `path` through `write(fh)` so that no reader sees half of it: into `tmp` beside it (default
    `<name>.tmp-<pid>`), flushed to disk, then renamed over `path`. `exclusive`: linked instead, so an
    existing `path` is kept and False returned. The temporary file never outlives the call (a kill -9
    aside: whoever owns the folder sweeps those)."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # atomic create-if-absent
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _previous_output_of(out_dir: Path, step: str) -> bool:
    try:
        return json.loads((out_dir / "config.json").read_text(encoding="utf-8")).get("_step") == step
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def staged_output_dir(out_dir: str | Path, step: str):
    """Yield a fresh staging directory; on success it replaces `out_dir` whole.

    An existing `out_dir` is replaced only if it is empty or holds an earlier output of the same
    step (its config.json says so): a mistyped out_dir never deletes someone's data.
    """
    out_dir = Path(out_dir).resolve()
    if not out_dir.name or out_dir == Path.home():
        raise MimoError(f"out_dir {out_dir}: not a directory this step may replace")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not _previous_output_of(out_dir, step))):
        raise MimoError(f"out_dir {out_dir} exists and is not an earlier {step} output: refusing to replace it")
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
    # the same table always gives the same bytes. Page checksums: a reader can tell a damaged page
    # from data (readers verify them).
    pq.write_table(table, path, compression="zstd", write_statistics=False, write_page_checksum=True)
