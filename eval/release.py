"""The authors' MLIR benchmark files: source `mimo-release`.

The paper's MLIR figures come from files the authors published on the hub as
`yjoonjang/mlir-benchmarks`, one folder per data set under `MMLIR/` (Belebele_test, XQuAD_test,
MLQA_test, MultiEup_test): queries in every language, the gold context in every language positive.
Their release reads each folder with `src/mimo/evaluation/benchmarks.py: load_eval_benchmark`:
- `queries.jsonl`: one object a line, `{"_id": ..., "text": ..., "lang": ...}`;
- `corpus.jsonl`: one object a line whose key is the document id, `{doc_id: {"text": ..., "lang": ...}}`;
- `qrels.jsonl`: one object a line, `{query_id: {doc_id: relevance}}`.
Ids follow a scheme the release's MRC and PEER code parse: query ids `{lang}_q_{key}` (Belebele) or
`{lang}_{key}` (XQuAD, MLQA), where the translations of one query share `key`; document ids
`doc_{lang}_{n}`. A missing `lang` field is read from the id, as the release does.

Groups: parallel queries are the ids sharing `key` (the release's rule). Parallel documents are not
named by the ids (whether `n` is shared across languages is not documented), so a document group
is taken from the qrels instead: a query whose positives are one document in each of >= 2
languages has, as positives, the translations of its gold context.

`path` is a local folder holding the three files, or a hub id followed by the folder
(`yjoonjang/mlir-benchmarks/MMLIR/Belebele_test`). Bad input is reported as for local benchmarks:
malformed lines, duplicate ids and duplicate judgments are one-line errors naming file and line;
judgments of unknown queries or documents are counted (`Benchmark.checked`).
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.benchmark import Benchmark
from pipeline.errors import MimoError
from pipeline.readers import _lines, fetch_dataset_file, json_rows

RELEASE_REPO = "yjoonjang/mlir-benchmarks"
RELEASE_BENCHMARKS = ("Belebele_test", "XQuAD_test", "MLQA_test", "MultiEup_test")
FILES = ("queries.jsonl", "corpus.jsonl", "qrels.jsonl")


def query_lang_and_key(qid: str) -> tuple[str, str] | None:
    """(language, parallel key) of a query id `{lang}_q_{key}` or `{lang}_{key}`; None if neither."""
    parts = qid.split("_")
    if len(parts) < 2 or not parts[0]:
        return None
    key = "_".join(parts[2:]) if len(parts) > 2 and parts[1] == "q" else "_".join(parts[1:])
    return (parts[0], key) if key else None


def doc_lang(doc_id: str) -> str:
    """The language of a document id `doc_{lang}_{n}` ("und" for other ids)."""
    parts = doc_id.split("_")
    return parts[1] if len(parts) >= 3 and parts[1] else "und"


def resolve(path: str, revision: str = "main") -> dict[str, Path]:
    """The three files of a local folder, or of `hub_id/sub/folder` on the hub."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        missing = [f for f in FILES if not (folder / f).is_file()]
        if missing:
            raise MimoError(f"{folder}: not a mimo-release benchmark folder (no {', '.join(missing)})")
        return {f: folder / f for f in FILES}
    parts = path.strip("/").split("/")
    if path.startswith((".", "/", "~")) or len(parts) < 3:
        raise MimoError(f"mimo-release benchmark {path!r}: neither a local folder nor a hub id with a folder "
                        f"(e.g. {RELEASE_REPO}/MMLIR/{RELEASE_BENCHMARKS[0]})")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    return {f: fetch_dataset_file(repo, f"{sub}/{f}", revision) for f in FILES}


def _objects(path: Path):
    """(where, object) per non-empty line; each line must hold one JSON object."""
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise MimoError(f"{where}: invalid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not row:
            raise MimoError(f"{where}: expected a non-empty JSON object")
        yield where, row


def _text(value, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise MimoError(f"{where}: {what} must be a string, found {json.dumps(value)[:40]}")
    return value


def read_queries(path: Path):
    ids, texts, langs, seen = [], [], [], {}
    for number, row in json_rows(path, ("_id", "text")):
        where = f"{path}:{number}"
        qid = str(row["_id"])
        if qid in seen:
            raise MimoError(f"{where}: duplicate query id {qid!r} (first on line {seen[qid]})")
        parsed = query_lang_and_key(qid)
        if parsed is None:
            raise MimoError(f"{where}: query id {qid!r} is not of the form {{lang}}_q_{{key}} or {{lang}}_{{key}}")
        seen[qid] = number
        ids.append(qid)
        texts.append(_text(row["text"], where, "field 'text'"))
        langs.append(str(row.get("lang") or parsed[0]))
    return ids, texts, langs


def read_corpus(path: Path):
    ids, texts, langs, seen = [], [], [], {}
    for where, row in _objects(path):
        for did, doc in row.items():
            if did in seen:
                raise MimoError(f"{where}: duplicate document id {did!r} (first at {seen[did]})")
            if not isinstance(doc, dict) or "text" not in doc:
                raise MimoError(f"{where}: document {did!r}: expected {{\"text\": ..., \"lang\": ...}}, "
                                f"found {json.dumps(doc)[:60]}")
            seen[did] = where
            ids.append(did)
            texts.append(_text(doc["text"], where, f"document {did!r}: 'text'"))
            langs.append(str(doc.get("lang") or doc_lang(did)))
    return ids, texts, langs


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    first: dict[str, str] = {}
    for where, row in _objects(path):
        for qid, judged in row.items():
            if qid in first:  # the release would keep the last line only: ambiguous, so refused
                raise MimoError(f"{where}: query {qid!r} is judged again (first at {first[qid]})")
            if not isinstance(judged, dict):
                raise MimoError(f"{where}: query {qid!r}: expected {{doc_id: relevance}}, found {json.dumps(judged)[:60]}")
            first[qid] = where
            grades = {}
            for did, grade in judged.items():
                if isinstance(grade, bool) or not isinstance(grade, (int, float)) or int(grade) != grade:
                    raise MimoError(f"{where}: query {qid!r}, document {did!r}: relevance {grade!r} is not an integer")
                grades[did] = int(grade)
            qrels[qid] = grades
    return qrels


def _doc_groups(qrels: dict[str, dict[str, int]], doc_ids: list[str], doc_langs: list[str]) -> list[dict[str, str]]:
    lang_of = dict(zip(doc_ids, doc_langs))
    groups: dict[tuple, dict[str, str]] = {}
    for judged in qrels.values():
        docs = [d for d, g in judged.items() if g > 0 and d in lang_of]
        langs = [lang_of[d] for d in docs]
        if len(docs) > 1 and len(set(langs)) == len(langs):  # one document per language: translations
            group = dict(zip(langs, docs))
            groups.setdefault(tuple(sorted(group.items())), group)
    return list(groups.values())


def load_release(path: str, name: str = "", revision: str = "main", languages: tuple[str, ...] = (),
                 split: str = "") -> Benchmark:
    if not path:
        raise MimoError(f"eval benchmark {name or 'mimo-release'!r}: source mimo-release needs 'path' "
                        f"(a local MMLIR/<name>_test folder or e.g. {RELEASE_REPO}/MMLIR/{RELEASE_BENCHMARKS[0]})")
    if languages or split:
        raise MimoError(f"eval benchmark {name or path!r}: mimo-release files are evaluated whole, as the release "
                        "does ('languages' and 'split' do not apply)")
    files = resolve(path, revision)
    qids, qtexts, qlangs = read_queries(files["queries.jsonl"])
    dids, dtexts, dlangs = read_corpus(files["corpus.jsonl"])
    qrels = read_qrels(files["qrels.jsonl"])
    by_key: dict[str, dict[str, str]] = {}
    for qid, lang in zip(qids, qlangs):
        group = by_key.setdefault(query_lang_and_key(qid)[1], {})
        if lang in group:
            raise MimoError(f"{files['queries.jsonl']}: queries {group[lang]!r} and {qid!r} share a key and "
                            f"language {lang!r} (a key groups one query's translations, one per language)")
        group[lang] = qid
    query_groups = [g for g in by_key.values() if len(g) > 1]
    folder = str(Path(path).name) if Path(path).is_dir() else path.rstrip("/").split("/")[-1]
    return Benchmark(name or folder, "mlir", qids, qtexts, qlangs, dids, dtexts, dlangs, qrels, query_groups,
                     _doc_groups(qrels, dids, dlangs), source=path).checked()
