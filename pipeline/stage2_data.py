"""Stage 2 preparation: mMARCO instances {q_en, p_en, q_XX, p_YY} and the baselines' compositions.

mMARCO (hub `unicamp-dl/mmarco`, "google" translations) shares query and passage ids across its 14
languages: `collections/{language}_collection.tsv` and `queries/train/{language}_queries.train.tsv`
hold `id<TAB>text` without a header, and `triples.train.ids.small.tsv` holds
`qid<TAB>positive_pid<TAB>negative_pid`; its distinct (qid, positive) pairs are the training pairs.
The repository's loading script does not run under datasets >= 4, so the files are fetched with
huggingface_hub and read by the same code that reads a local copy of the same layout.

Compositions (App. B.2), each a uniform round-robin with per-cycle shuffling (seeded):
- mimo (also XLCO): (q_XX, p_YY) over the 182 ordered pairs XX != YY;
- infonce: monolingual (q_L, p_L) over the 14 languages;
- lakda: two distinct query languages (XX, YY) over the 182 pairs, and the passage language
  drawn by an independent round-robin over the 14 languages.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import MimoError
from pipeline.languages import LANGUAGES, MMARCO_NAMES, check_languages
from pipeline.readers import _lines, fetch_dataset_file, read_columns, trec_judgment
from pipeline.sample import load_sample
from pipeline.worklist import text_id

COMPOSITIONS = ("mimo", "infonce", "lakda")

STAGE2_SCHEMA = pa.schema(
    [
        ("instance_id", pa.int64()),  # position in training order
        ("query_id", pa.string()),  # mMARCO qid (shared by every language)
        ("passage_id", pa.string()),  # mMARCO pid of the positive
        ("q_lang", pa.string()),
        ("q_text", pa.string()),  # q_XX: the student's query
        ("p_lang", pa.string()),
        ("p_text", pa.string()),  # p_YY: the student's positive passage
        ("q2_lang", pa.string()),  # LaKDA's second query language; null elsewhere
        ("q2_text", pa.string()),
        ("q_teacher_id", pa.string()),  # worklist text_id of q_en (role query)
        ("p_teacher_id", pa.string()),  # worklist text_id of p_en (role document)
    ]
)


@dataclass(frozen=True)
class Stage2DataConfig:
    source: str = "hub"  # "hub", "local" (a directory in the hub's layout) or "sample"
    hub_id: str = "unicamp-dl/mmarco"
    hub_revision: str = "main"
    root: str = ""  # the local directory for source=local
    # Paths relative to the hub repo or `root`; {language} is mMARCO's name ("arabic"), {lang} the code.
    collection_path: str = "data/google/collections/{language}_collection.tsv"
    queries_path: str = "data/google/queries/train/{language}_queries.train.tsv"
    pairs_path: str = "data/triples.train.ids.small.tsv"  # qid, positive pid[, negative pid]; or TREC qrels
    languages: tuple[str, ...] = LANGUAGES
    max_pairs: int = 0  # 0 keeps every pair; else a seeded subset of this size
    teacher_max_length: int = 512  # Table 6: teacher max length in Stage 2

    def __post_init__(self):
        if self.source not in ("hub", "local", "sample"):
            raise MimoError(f"stage2.source must be hub, local or sample, not {self.source!r}")
        langs = check_languages(self.languages, "stage2.languages")
        if "en" not in langs or len(langs) < 2:
            raise MimoError("stage2.languages must include en (the teacher's side) and at least one other language")
        if self.max_pairs < 0:
            raise MimoError("stage2.max_pairs must be 0 (all) or positive")
        if self.source == "local" and not self.root:
            raise MimoError("stage2.root must name a directory when stage2.source=local")


@dataclass
class ParallelRetrievalData:
    """Training pairs and their texts in every language: texts[lang][kind][id] -> text."""

    pairs: list[tuple[str, str]]  # (qid, pid), in source order
    queries: dict[str, dict[str, str]]
    passages: dict[str, dict[str, str]]
    where: dict[str, str]  # lang -> description of the files, for messages


def _fetch(cfg: Stage2DataConfig, relpath: str) -> Path:
    if cfg.source == "local":
        return Path(cfg.root) / relpath
    return fetch_dataset_file(cfg.hub_id, relpath, cfg.hub_revision)


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    """Distinct (qid, positive pid) from a triples file or TREC qrels (qid 0 pid rel), in file order."""
    seen, pairs = set(), []
    for number, line in _lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 4:  # TREC qrels: qid iteration pid relevance
            qid, pid, relevance = trec_judgment(fields, f"{path}:{number}")
            if relevance in ("0", "-1"):
                continue
            pair = (qid, pid)
        elif len(fields) in (2, 3):
            pair = (fields[0], fields[1])
        else:
            raise MimoError(f"{path}:{number}: expected qid<TAB>pid[<TAB>neg] or TREC qrels, found {len(fields)} fields")
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def _language_files(cfg: Stage2DataConfig, lang: str) -> tuple[Path, Path]:
    names = {"language": MMARCO_NAMES[lang], "lang": lang}
    return _fetch(cfg, cfg.queries_path.format(**names)), _fetch(cfg, cfg.collection_path.format(**names))


def _read_texts(path: Path, keep: set[str]) -> dict[str, str]:
    rows = read_columns(path, ("id", "text"), keep=keep)
    texts = dict(zip(rows["id"], rows["text"]))
    _check_texts(texts, path)
    return texts


def _load_files(cfg: Stage2DataConfig) -> ParallelRetrievalData:
    """The pairs and which of their queries and passages each language has (ids only: at mMARCO's size
    the texts of every language at once are ~6 GB; `_texts_used` reads those the instances take)."""
    pairs_file = _fetch(cfg, cfg.pairs_path)
    if not pairs_file.is_file():
        raise MimoError(f"{pairs_file}: file not found (stage2.pairs_path)")
    pairs = _read_pairs(pairs_file)
    qids, pids = {q for q, _ in pairs}, {p for _, p in pairs}
    queries, passages, where = {}, {}, {}
    for lang in cfg.languages:
        qfile, pfile = _language_files(cfg, lang)
        queries[lang] = dict.fromkeys(_read_texts(qfile, qids))  # checked, then only the ids kept
        passages[lang] = dict.fromkeys(_read_texts(pfile, pids))
        where[lang] = f"{qfile} / {pfile}"
    return ParallelRetrievalData(pairs, queries, passages, where)


def _texts_used(cfg: Stage2DataConfig, data: ParallelRetrievalData, pairs, compositions) -> None:
    """Second pass over the files: each language's texts that an instance takes (English: all of them)."""
    want_q = {lang: set() for lang in cfg.languages}
    want_p = {lang: set() for lang in cfg.languages}
    want_q["en"].update(q for q, _ in pairs)
    want_p["en"].update(p for _, p in pairs)
    for langs in compositions.values():
        for (ql, pl, q2), (q, p) in zip(langs, pairs):
            want_q[ql].add(q)
            want_p[pl].add(p)
            if q2 is not None:
                want_q[q2].add(q)
    for lang in cfg.languages:
        qfile, pfile = _language_files(cfg, lang)
        data.queries[lang] = _read_texts(qfile, want_q[lang])
        data.passages[lang] = _read_texts(pfile, want_p[lang])


def _check_texts(texts: dict[str, str], path: Path) -> None:
    for key, text in texts.items():
        if not text or not text.strip():
            raise MimoError(f"{path}: id {key}: empty or whitespace-only text")


def _load_sample(cfg: Stage2DataConfig, sample_dir) -> ParallelRetrievalData:
    sample = load_sample(sample_dir, cfg.languages)
    train = sample.ids("train")
    queries, passages = {}, {}
    for lang in cfg.languages:
        by_id = sample.by_id(lang)
        queries[lang] = {i: by_id[i].query for i in train}
        passages[lang] = {i: by_id[i].passage_text(lang) for i in train}
    where = {lang: f"{sample_dir}/{lang}.jsonl" for lang in cfg.languages}
    return ParallelRetrievalData([(i, i) for i in train], queries, passages, where)


def round_robin(choices: list, n: int, rng: np.random.Generator) -> list:
    """n draws cycling through `choices`, each cycle in a fresh random order: counts differ by <= 1."""
    out: list = []
    while len(out) < n:
        out.extend(choices[i] for i in rng.permutation(len(choices)))
    return out[:n]


def compose(n: int, languages: tuple[str, ...], seed: int) -> dict[str, list[tuple[str, str, str | None]]]:
    """Language assignments (q_lang, p_lang, q2_lang) for n instances of each composition."""
    cross = [pair for pair in permutations(languages, 2)]  # the 182 ordered pairs XX != YY
    mono = list(languages)
    mimo = round_robin(cross, n, np.random.default_rng([seed, 1]))
    infonce = round_robin(mono, n, np.random.default_rng([seed, 2]))
    lakda_q = round_robin(cross, n, np.random.default_rng([seed, 3]))
    lakda_p = round_robin(mono, n, np.random.default_rng([seed, 4]))
    return {
        "mimo": [(q, p, None) for q, p in mimo],
        "infonce": [(lang, lang, None) for lang in infonce],
        "lakda": [(q1, p, q2) for (q1, q2), p in zip(lakda_q, lakda_p)],
    }


def prepare_stage2(cfg: Stage2DataConfig, seed: int, sample_dir) -> tuple[dict[str, pa.Table], dict]:
    """Build the three composition tables (same instances, same order) and a report."""
    data = _load_sample(cfg, sample_dir) if cfg.source == "sample" else _load_files(cfg)
    report = {"pairs_in": len(data.pairs), "missing_translation": dict.fromkeys(cfg.languages, 0)}
    complete = []
    for qid, pid in data.pairs:
        ok = True
        for lang in cfg.languages:
            if qid not in data.queries[lang] or pid not in data.passages[lang]:
                report["missing_translation"][lang] += 1  # counted skip: the pair cannot take every language
                ok = False
        if ok:
            complete.append((qid, pid))
    if not complete:
        raise MimoError(f"stage 2: no training pair has its query and passage in all of {' '.join(cfg.languages)}")
    rng = np.random.default_rng([seed, 0])
    order = rng.permutation(len(complete))
    if cfg.max_pairs and cfg.max_pairs < len(order):
        order = order[: cfg.max_pairs]
    pairs = [complete[i] for i in order]
    report["pairs_out"] = len(pairs)
    compositions = compose(len(pairs), cfg.languages, seed)
    if cfg.source != "sample":
        _texts_used(cfg, data, pairs, compositions)

    q_teacher = [text_id("query", cfg.teacher_max_length, data.queries["en"][q]) for q, _ in pairs]
    p_teacher = [text_id("document", cfg.teacher_max_length, data.passages["en"][p]) for _, p in pairs]
    tables = {}
    for name, langs in compositions.items():
        tables[name] = pa.table(
            {
                "instance_id": np.arange(len(pairs), dtype=np.int64),
                "query_id": [q for q, _ in pairs],
                "passage_id": [p for _, p in pairs],
                "q_lang": [ql for ql, _, _ in langs],
                "q_text": [data.queries[ql][q] for (ql, _, _), (q, _) in zip(langs, pairs)],
                "p_lang": [pl for _, pl, _ in langs],
                "p_text": [data.passages[pl][p] for (_, pl, _), (_, p) in zip(langs, pairs)],
                "q2_lang": [q2 for _, _, q2 in langs],
                "q2_text": [None if q2 is None else data.queries[q2][q] for (_, _, q2), (q, _) in zip(langs, pairs)],
                "q_teacher_id": q_teacher,
                "p_teacher_id": p_teacher,
            },
            schema=STAGE2_SCHEMA,
        )
    english = [(data.queries["en"][q], data.passages["en"][p]) for q, p in pairs]
    return tables, {**report, "english": english}


def stage2_worklist_entries(english: list[tuple[str, str]], cfg: Stage2DataConfig):
    """q_en gets the query role (the teacher's instruction prompt), p_en the document role."""
    for query, passage in english:
        yield "query", cfg.teacher_max_length, query
        yield "document", cfg.teacher_max_length, passage
