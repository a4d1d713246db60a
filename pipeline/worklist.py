"""The teacher's worklist: every unique English text the teacher must encode, with a stable id.

The id hashes what preparation knows changes the vector: the role (a query gets the instruction
prompt, a document none), the maximum length in tokens, and the text. What the teacher cache adds
(model, revision, pooling, prompt string, dtype) goes into the cache's fingerprint, so the same
worklist id is served by any cache whose fingerprint matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import MimoError

ROLES = ("query", "document")

WORKLIST_SCHEMA = pa.schema(
    [
        ("text_id", pa.string()),  # 32 hex chars of blake2b-128: collisions are negligible at 10^9 texts
        ("role", pa.string()),  # "query" (instruction prompt) or "document" (no prompt)
        ("max_length", pa.int32()),  # teacher's token limit: 256 for Stage 1, 512 for Stage 2
        ("text", pa.string()),
    ]
)


def text_id(role: str, max_length: int, text: str) -> str:
    """The stable id of one teacher input; training tables refer to teacher targets by it."""
    payload = f"{role}\x1f{max_length}\x1f{text}".encode("utf-8")
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def build_worklist(entries: Iterable[tuple[str, int, str]]) -> pa.Table:
    """Deduplicate (role, max_length, text) entries into a table sorted by text_id (stable order)."""
    unique: dict[str, tuple[str, int, str]] = {}
    for role, max_length, text in entries:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        unique.setdefault(text_id(role, max_length, text), (role, max_length, text))
    ids = sorted(unique)
    return pa.table(
        {
            "text_id": ids,
            "role": [unique[i][0] for i in ids],
            "max_length": [unique[i][1] for i in ids],
            "text": [unique[i][2] for i in ids],
        },
        schema=WORKLIST_SCHEMA,
    )


def worklist_from_tables(parts: Iterable[pa.Table]) -> pa.Table:
    """The worklist of tables that already carry text_id, role, max_length and text: the same table
    `build_worklist` gives for their entries, built with Arrow (sort by id, drop repeats)."""
    table = pa.concat_tables([t.select(WORKLIST_SCHEMA.names).cast(WORKLIST_SCHEMA) for t in parts]).combine_chunks()
    table = table.take(pc.sort_indices(table, [("text_id", "ascending")]))
    ids = table.column("text_id")
    if table.num_rows > 1:  # an id hashes role, length and text: rows with the same id are the same row
        first = pc.not_equal(ids.slice(1), ids.slice(0, table.num_rows - 1))
        table = table.filter(pa.concat_arrays([pa.array([True]), first.combine_chunks()]))
    return table.combine_chunks()


def merge_worklists(tables: Iterable[pa.Table]) -> pa.Table:
    rows = []
    for table in tables:
        rows.extend(zip(table.column("role").to_pylist(), table.column("max_length").to_pylist(),
                        table.column("text").to_pylist()))
    return build_worklist(rows)


# ---- reading worklists (the teacher cache's input) ----------------------------------------------

KEY_COLUMNS = ("text_id", "role", "max_length")  # what a row is, without its text


def open_worklist(path) -> pq.ParquetFile:
    """A worklist file opened for reading (page checksums verified), with the columns the cache needs."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise MimoError(f"{path}: worklist not found (run prepare first)") from None
    except (pa.ArrowException, OSError) as err:
        raise MimoError(f"{path}: not a readable worklist Parquet file ({err})") from None
    missing = [f.name for f in WORKLIST_SCHEMA if f.name not in schema.names]
    if missing:
        raise MimoError(f"{path}: not a teacher worklist: missing column(s) {', '.join(missing)}")
    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err) from None


def _unreadable(path, err) -> MimoError:
    return MimoError(f"{path}: not a readable worklist Parquet file ({type(err).__name__}: "
                     f"{' '.join(str(err).split())[:200]})")


def _read_columns(path, pf: pq.ParquetFile, names, row_groups=None) -> pa.Table:
    """Some columns of a worklist file, row group by row group (~1.1 GB for the paper's 6.5M texts,
    where read_table held ~1.7 GB), cast to the worklist's types."""
    schema = pa.schema([WORKLIST_SCHEMA.field(n) for n in names])
    try:
        groups = range(pf.num_row_groups) if row_groups is None else row_groups
        table = pa.concat_tables([pf.read_row_group(g, columns=list(names)) for g in groups]) \
            if pf.num_row_groups else pf.read(columns=list(names))
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err) from None
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise MimoError(f"{path}: worklist columns have the wrong types ({err})") from None


def first_rows(ids: pa.ChunkedArray) -> np.ndarray | None:
    """Rows (ascending) of the first occurrence of each id; None when no id repeats."""
    n = len(ids)
    if n < 2 or pc.all(pc.greater(ids.slice(1), ids.slice(0, n - 1))).as_py():
        return None  # strictly ascending ids, as prepare writes them: no repeats
    # Arrow's hash table: codes in order of first appearance, no Python strings
    codes = pc.dictionary_encode(ids)
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in codes.chunks])
    _, first = np.unique(codes, return_index=True)
    return None if len(first) == n else np.sort(first)


def read_worklists(paths) -> pa.Table:
    """Union of worklists (deduplicated by text_id), checked for the columns and values the cache needs."""
    tables = []
    for path in paths:
        table = _read_columns(path, open_worklist(path), WORKLIST_SCHEMA.names)
        check_worklist_values(path, table)
        tables.append(table)
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    keep = first_rows(table.column("text_id"))
    return table if keep is None else table.take(keep)


# Python's whitespace (the code points whose str.isspace() is true, which str.strip() removes)
PY_WHITESPACE = (*range(0x9, 0xE), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                 0x202F, 0x205F, 0x3000)
# a text that is empty or only such whitespace, as an RE2 pattern
BLANK = "^[" + "".join(f"\\x{{{c:x}}}" for c in PY_WHITESPACE) + "]*$"


def _bad_keys(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(no id, bad role, bad max_length) flags per row."""
    role, length = table.column("role"), table.column("max_length")
    bad_role = ~pc.fill_null(pc.is_in(role, value_set=pa.array(ROLES)), False).to_numpy(zero_copy_only=False)
    bad_length = ~pc.fill_null(pc.greater_equal(length, 1), False).to_numpy(zero_copy_only=False)
    no_id = pc.is_null(table.column("text_id")).to_numpy(zero_copy_only=False)
    return no_id, bad_role, bad_length


def _blank(text) -> np.ndarray:
    """Per row: the text is null, empty or only characters Python's str.strip() removes."""
    return pc.fill_null(pc.match_substring_regex(text, BLANK), True).to_numpy(zero_copy_only=False)


def check_worklist_values(path, table: pa.Table) -> None:
    """The first bad row, as one line: a null text_id, a role that is not query/document, a
    max_length below 1 (or null), a text that is null, empty or only whitespace (`str.isspace`)."""
    no_id, bad_role, bad_length = _bad_keys(table)
    bad_text = _blank(table.column("text"))
    bad = bad_role | bad_length | bad_text | no_id
    if bad.any():
        i = int(np.argmax(bad))
        if no_id[i]:
            raise MimoError(f"{path}: row {i}: text_id is missing (null)")
        if bad_role[i]:
            raise MimoError(f"{path}: row {i}: role {table.column('role')[i].as_py()!r} is not one of {', '.join(ROLES)}")
        if bad_length[i]:
            raise MimoError(f"{path}: row {i}: max_length must be a positive integer")
        raise MimoError(f"{path}: row {i}: empty text")


class Worklist:
    """The union of worklists as `read_worklists` gives it, read in two steps: at open, `keys` (text_id,
    role and max_length of every row, checked and deduplicated), and the texts only of the rows
    asked for (`rows`), row group by row group.

    Why: a store that already holds most of the worklist needs its texts only for the rows it does
    not hold (the plans hold the texts they encode). At the paper's 6.5M texts the keys take ~0.3 GB
    and the texts ~0.8 GB more; a rerun on a finished store or a resume reads no text at all.
    A text is checked (not null, not blank) when it is read: texts the store already holds were
    checked when they were planned, and their id (a hash of role, length and text) says which they are.
    """

    def __init__(self, paths):
        paths = list(paths)
        self._files: list[tuple[object, pq.ParquetFile, int]] = []  # (path, file, its first row in the union)
        parts, first = [], 0
        for k, path in enumerate(paths):
            pf = open_worklist(path)
            keys = _read_columns(path, pf, KEY_COLUMNS)
            if any(flags.any() for flags in _bad_keys(keys)):
                # the first bad row by read_worklists' order (file by file, row by row, texts included)
                read_worklists(paths[:k + 1])
            try:  # the text column's type, before any text is read
                pa.array([], type=pf.schema_arrow.field("text").type).cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise MimoError(f"{path}: worklist columns have the wrong types ({err})") from None
            self._files.append((path, pf, first))
            parts.append(keys)
            first += keys.num_rows
        keys = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        self._source = first_rows(keys.column("text_id"))  # row of the union of each kept row; None: every row
        self.keys = keys if self._source is None else keys.take(self._source)

    @property
    def num_rows(self) -> int:
        return self.keys.num_rows

    def column(self, name: str) -> pa.ChunkedArray:
        return self.keys.column(name)

    def rows(self, indices: np.ndarray) -> pa.Table:
        """The rows at `indices` (ascending), every column, texts read from the files' row groups
        they fall in; a null or blank text is a one-line error naming its file and row."""
        indices = np.asarray(indices, dtype=np.int64)
        everything = len(indices) == self.num_rows  # ascending and unique: then 0..n-1
        source = indices if self._source is None else self._source[indices]
        texts = []
        for path, pf, first in self._files:
            end = first + pf.metadata.num_rows
            local = source[np.searchsorted(source, first):np.searchsorted(source, end)] - first
            meta, start = pf.metadata, 0
            for g in range(meta.num_row_groups):
                stop = start + meta.row_group(g).num_rows
                pick = local[np.searchsorted(local, start):np.searchsorted(local, stop)]
                if len(pick):
                    text = _read_columns(path, pf, ["text"], row_groups=[g]).column("text")
                    if len(pick) < stop - start:
                        text = text.take(pa.array(pick - start))
                    blank = _blank(text)
                    if blank.any():
                        raise MimoError(f"{path}: row {int(pick[np.argmax(blank)])}: empty text")
                    texts.extend(text.chunks)
                start = stop
        keys = self.keys if everything else self.keys.take(pa.array(indices))
        return keys.append_column(WORKLIST_SCHEMA.field("text"), pa.chunked_array(texts, type=pa.string()))
