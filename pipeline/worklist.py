"""The teacher's worklist: every unique English text the teacher must encode, with a stable id.

The id hashes what preparation knows changes the vector: the role (a query gets the instruction
prompt, a document none), the maximum length in tokens, and the text. What the teacher cache adds
(model, revision, pooling, prompt string, dtype) goes into the cache's fingerprint, so the same
worklist id is served by any cache whose fingerprint matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

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
