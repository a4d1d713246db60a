"""Benchmarks from local files, and the embedded default (the sample's held-out items).

Local format (a folder; documented in README.md "Evaluating"), BEIR-like:
- `queries.{jsonl,parquet,tsv}`: `id` (or `_id`), `text`, optional `lang`, optional `group`
  (the same value for the translations of one query: used for MRC);
- `corpus.{jsonl,parquet,tsv}`: `id` (or `_id`), `text`, optional `title` (prepended to the text),
  optional `lang`, optional `group` (the same value for the translations of one document: used for
  cross-lingual alignment);
- `qrels.{jsonl,parquet,tsv}` with `query_id`, `doc_id`, `relevance` (BEIR's `query-id`,
  `corpus-id`, `score` also work), or `qrels.trec` / `qrels.txt` in TREC form `qid iter docid rel`.
TSV files need a header line. A missing `lang` reads as "und".
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eval.benchmark import Benchmark, parallel_qa
from pipeline.errors import MimoError
from pipeline.readers import _lines, json_rows, trec_qrels

ALIASES = {"id": ("id", "_id"), "query_id": ("query_id", "query-id", "qid"),
           "doc_id": ("doc_id", "corpus-id", "docid", "corpus_id"), "relevance": ("relevance", "score", "label")}


def _find(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path:
    found = [folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").is_file()]
    if not found:
        raise MimoError(f"{folder}: no {stem} file ({' or '.join(stem + s for s in suffixes)})")
    if len(found) > 1:
        raise MimoError(f"{folder}: more than one {stem} file ({', '.join(p.name for p in found)})")
    return found[0]


def read_rows(path: Path):
    """Yield (where, row dict) from a JSONL, Parquet or headed TSV file; `where` names file and row."""
    if path.suffix == ".jsonl":
        for number, row in json_rows(path, ()):
            yield f"{path}:{number}", row
    elif path.suffix == ".parquet":
        try:
            table = pq.read_table(path, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as err:
            raise MimoError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())[:200]})") from None
        for i, row in enumerate(table.to_pylist()):
            yield f"{path}: row {i}", row
    else:  # .tsv with a header line
        header = None
        for number, line in _lines(path):
            fields = line.split("\t")
            if header is None:
                header = fields
                continue
            if not line.strip():
                continue
            if len(fields) != len(header):
                raise MimoError(f"{path}:{number}: expected {len(header)} tab-separated fields, found {len(fields)}")
            yield f"{path}:{number}", dict(zip(header, fields))


def _field(row: dict, name: str, where: str, default=None):
    for alias in ALIASES.get(name, (name,)):
        if alias in row and row[alias] is not None:
            return row[alias]
    if default is not None:
        return default
    raise MimoError(f"{where}: missing field {name!r} (found: {', '.join(row)})")


def _texts(path: Path, with_title: bool):
    ids, texts, langs, groups = [], [], [], []
    seen: set[str] = set()
    for where, row in read_rows(path):
        text = _field(row, "text", where)
        if not isinstance(text, str):
            raise MimoError(f"{where}: field 'text' must be a string")
        title = row.get("title") if with_title else None
        ident = str(_field(row, "id", where))
        if ident in seen:
            raise MimoError(f"{where}: duplicate id {ident!r}")
        seen.add(ident)
        ids.append(ident)
        texts.append(f"{title} {text}" if title else text)
        langs.append(str(row.get("lang") or "und"))
        groups.append(row.get("group"))
    return ids, texts, langs, groups


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}

    def add(where, qid, doc, grade):
        try:
            whole = int(grade)
        except (TypeError, ValueError):
            raise MimoError(f"{where}: relevance {grade!r} is not an integer") from None
        if isinstance(grade, float) and grade != whole or isinstance(grade, bool):
            raise MimoError(f"{where}: relevance {grade!r} is not an integer")
        grade = whole
        judged = qrels.setdefault(str(qid), {})
        if str(doc) in judged:
            raise MimoError(f"{where}: duplicate judgment for query {qid!r}, document {doc!r}")
        judged[str(doc)] = grade

    if path.suffix in (".trec", ".txt"):
        for where, qid, doc, grade in trec_qrels(path):
            add(where, qid, doc, grade)
    else:
        for where, row in read_rows(path):
            add(where, _field(row, "query_id", where), _field(row, "doc_id", where), _field(row, "relevance", where))
    return qrels


def _groups(ids, langs, groups, path: Path) -> list[dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for i, lang, g in zip(ids, langs, groups):
        if g is not None and g != "":
            group = out.setdefault(str(g), {})
            if lang in group:
                raise MimoError(f"{path}: group {g!r} has two entries in language {lang!r} ({group[lang]!r} and {i!r}); "
                                "a group holds the translations of one text, one per language (set 'lang')")
            group[lang] = i
    return [g for g in out.values() if len(g) > 1]


def load_local(path: str | Path, name: str = "", setting: str = "mlir") -> Benchmark:
    folder = Path(path)
    if not folder.is_dir():
        raise MimoError(f"{folder}: benchmark folder not found")
    qpath, dpath = _find(folder, "queries", (".jsonl", ".parquet", ".tsv")), _find(folder, "corpus", (".jsonl", ".parquet", ".tsv"))
    qids, qtexts, qlangs, qgroups = _texts(qpath, with_title=False)
    dids, dtexts, dlangs, dgroups = _texts(dpath, with_title=True)
    qrels = read_qrels(_find(folder, "qrels", (".jsonl", ".parquet", ".tsv", ".trec", ".txt")))
    return Benchmark(name or folder.name, setting, qids, qtexts, qlangs, dids, dtexts, dlangs, qrels,
                     _groups(qids, qlangs, qgroups, qpath), _groups(dids, dlangs, dgroups, dpath), source=str(folder)).checked()


def load_sample(path: str | Path = "data/sample", split: str = "heldout", languages: tuple[str, ...] = ()) -> Benchmark:
    """The sample's held-out items as an MLIR benchmark: each query's positives are its passage in every language."""
    from pipeline.sample import load_sample as read_sample

    sample = read_sample(Path(path))
    langs = [l for l in sample.languages if not languages or l in languages]
    if languages and len(langs) != len(set(languages)):
        raise MimoError(f"sample {path}: languages {sorted(set(languages) - set(langs))} are not in the sample")
    ids = set(sample.ids(split))
    rows = {lang: [(it.id, it.query, it.passage_text(lang)) for it in sample.items[lang] if it.id in ids] for lang in langs}
    return parallel_qa(f"sample-{split}", rows, source=f"{path} ({split} items)")
