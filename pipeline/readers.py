"""Readers for local text tables (TSV, JSONL, Parquet, and OPUS-style aligned plain-text files).

Every reader returns plain Python columns and turns bad input into a MimoError that names the file
and the row (1-based line number for text files, 0-based row index for Parquet): missing file,
missing column, invalid UTF-8, malformed line, parallel files of different lengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import MimoError

TEXT_SUFFIXES = (".tsv", ".jsonl", ".parquet")


def fetch_dataset_file(repo: str, relpath: str, revision: str = "main") -> Path:
    """A file of a hub data set repository; `repo` may also be a local folder laid out like it."""
    if Path(repo).is_dir():
        path = Path(repo) / relpath
        _check_file(path)
        return path
    from huggingface_hub import hf_hub_download  # network, only for hub sources

    try:
        return Path(hf_hub_download(repo, relpath, repo_type="dataset", revision=revision))
    except Exception as err:  # the hub client raises many types; the message (on one line) is what matters
        raise MimoError(f"{repo}: cannot fetch {relpath!r} ({type(err).__name__}: {' '.join(str(err).split())})") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MimoError(f"{path}: file not found")
    if not path.is_file():
        raise MimoError(f"{path}: not a file")


def _lines(path: Path):
    """Yield (line_number, text) with the newline stripped; invalid UTF-8 names the line."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise MimoError(f"{path}:{number}: invalid UTF-8 (byte {err.start})") from None
            yield number, line.rstrip("\r\n")


def trec_judgment(fields: list[str], where: str) -> tuple[str, str, str]:
    """(query id, document id, relevance) of one TREC qrels line split into `qid iteration docid relevance`."""
    if len(fields) != 4:
        raise MimoError(f"{where}: a TREC qrels line has 4 fields (qid iter docid rel), found {len(fields)}")
    return fields[0], fields[2], fields[3]


def trec_qrels(path: Path):
    """Yield (where, query id, document id, relevance string) for each non-blank line of a TREC qrels file."""
    for number, line in _lines(path):
        fields = line.split()
        if fields:
            where = f"{path}:{number}"
            yield (where, *trec_judgment(fields, where))


def read_columns(path: str | Path, columns: tuple[str, ...], keep=None, header: bool = False) -> dict[str, list]:
    """Read `columns` from a .tsv, .jsonl or .parquet file into lists.

    TSV files may start with a header line naming the columns, and then every line must have as
    many fields as the header; without one, fields are taken in order and the last column keeps
    any further tabs (the mMARCO layout: `id<TAB>text`, read like mMARCO's own loader does).
    `header=True` (a user's own files): the header is required, so a first line naming other
    columns is an error, never a row of data.
    `keep`, if given, is a set of values of the first column: other rows are skipped unread
    (how a 8.8M-passage collection is read for the few passages a data set uses).
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix
    if suffix == ".parquet":
        return _read_parquet(path, columns, keep)
    if suffix == ".jsonl":
        return _read_jsonl(path, columns, keep)
    if suffix in (".tsv", ".txt"):
        return _read_tsv(path, columns, keep, header)
    raise MimoError(f"{path}: unsupported file type {suffix!r} (expected one of {', '.join(TEXT_SUFFIXES)})")


def _read_tsv(path: Path, columns, keep, header: bool = False) -> dict[str, list]:
    out: dict[str, list] = {c: [] for c in columns}
    order, header_width = list(range(len(columns))), None
    for number, line in _lines(path):
        fields = line.split("\t")
        if number == 1 and all(c in fields for c in columns):
            order, header_width = [fields.index(c) for c in columns], len(fields)  # a header: names to positions
            continue
        if number == 1 and header:
            raise MimoError(f"{path}:1: a TSV file needs a header line naming its columns ({', '.join(columns)}); "
                            f"its first line has: {', '.join(repr(f[:40]) for f in fields[:8])}")
        if not line.strip():
            raise MimoError(f"{path}:{number}: empty line")
        if header_width is None:
            fields = line.split("\t", len(columns) - 1)
        expected = header_width or len(columns)
        if len(fields) != expected:
            raise MimoError(f"{path}:{number}: expected {expected} tab-separated fields, found {len(fields)}")
        if keep is not None and fields[order[0]] not in keep:
            continue
        for name, pos in zip(columns, order):
            out[name].append(fields[pos])
    return out


def json_rows(path: Path, fields):
    """Yield (line number, object) for each non-empty line of a JSONL file holding every one of `fields`."""
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise MimoError(f"{path}:{number}: invalid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise MimoError(f"{path}:{number}: expected a JSON object")
        missing = [c for c in fields if c not in row]
        if missing:
            raise MimoError(f"{path}:{number}: missing field(s) {', '.join(missing)} (found: {', '.join(row)})")
        yield number, row


def _read_jsonl(path: Path, columns, keep) -> dict[str, list]:
    out: dict[str, list] = {c: [] for c in columns}
    for number, row in json_rows(path, columns):
        if keep is not None and str(row[columns[0]]) not in keep:
            continue
        for c in columns:
            value = row[c]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise MimoError(f"{path}:{number}: field {c!r} must be text, found {json.dumps(value)}")
            out[c].append(value if isinstance(value, str) else str(value))
    return out


def _read_parquet(path: Path, columns, keep) -> dict[str, list]:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise MimoError(f"{path}: not a readable Parquet file ({err})") from None
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise MimoError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(schema.names)})")
    try:  # page checksums, where the file has them, are verified: a damaged page is an error, not data
        table = pq.read_table(path, columns=list(columns), page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise MimoError(f"{path}: not a readable Parquet file ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None
    out = {}
    for c in columns:
        col = table.column(c)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            _check_utf8(path, c, col)
        out[c] = [v if isinstance(v, str) or v is None else str(v) for v in col.to_pylist()]
    if keep is not None:
        first = out[columns[0]]
        rows = [i for i, v in enumerate(first) if v in keep]
        out = {c: [vals[i] for i in rows] for c, vals in out.items()}
    return out


def _check_utf8(path: Path, name: str, col: pa.ChunkedArray) -> None:
    """Arrow does not validate UTF-8 on read; find the first bad row so the error can name it."""
    offset = 0
    for chunk in col.chunks:
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid:
            for i, value in enumerate(chunk.cast(pa.binary()).to_pylist()):
                if value is not None:
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        raise MimoError(f"{path}: row {offset + i}, column {name!r}: invalid UTF-8") from None
        offset += len(chunk)


def read_aligned_text(en_path: str | Path, xx_path: str | Path) -> dict[str, list]:
    """Read an OPUS Moses-format pair (one sentence per line, line i of one file = line i of the other)."""
    en_path, xx_path = Path(en_path), Path(xx_path)
    _check_file(en_path)
    _check_file(xx_path)
    english = [line for _, line in _lines(en_path)]
    other = [line for _, line in _lines(xx_path)]
    if len(english) != len(other):
        raise MimoError(
            f"parallel files differ in length: {en_path} has {len(english)} lines, {xx_path} has {len(other)}"
        )
    return {"english": english, "non_english": other}
