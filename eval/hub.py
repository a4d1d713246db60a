"""The paper's evaluation benchmarks, built from the hub data sets it cites (section 4.2, App. D).

Every loader is `fn(hub_id="", revision="main", languages=(), split="") -> Benchmark`; an empty
value means the paper's choice (hub id, language subset, the split MTEB evaluates). `hub_id` may
also be a local folder laid out like the hub repository: `datasets.load_dataset` takes the same
path for it, and raw files are read from the same relative path. Hub ids, configs, splits and
columns, with what is verified and what is not: data/_notes/hub_schemas.md, "Eval loaders as built".

- belebele, xquad, mlqa: LAReQA-style mixed-language corpora (`parallel_qa`).
- multieup: topic descriptors (one query per language) against the speeches tagged with the topic.
- neuclir22 / neuclir23: English NeuCLIRBench queries against the pooled ru + zh hard-negative
  corpora of MTEB, judged by qrels.rus and qrels.zho together (Persian left out, as in the paper).
- miracl: per-language corpora in one `monolingual` Benchmark (doc and query ids get a language prefix).
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from eval.benchmark import Benchmark, parallel_qa
from eval.local import read_qrels
from pipeline.errors import MimoError
from pipeline.languages import LANGUAGES, check_languages
from pipeline.readers import fetch_dataset_file, read_columns

BELEBELE_CONFIGS = {  # FLORES-200 codes; Standard Arabic (MIMO's builder uses acm_Arab)
    "ar": "arb_Arab", "de": "deu_Latn", "nl": "nld_Latn", "en": "eng_Latn", "es": "spa_Latn",
    "fr": "fra_Latn", "hi": "hin_Deva", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "pt": "por_Latn", "ru": "rus_Cyrl", "vi": "vie_Latn", "zh": "zho_Hans",
}
XQUAD_LANGUAGES = ("ar", "de", "en", "es", "hi", "ru", "vi", "zh")
MLQA_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")
MULTIEUP_FILE = "clean_all_with_did_qid.MEP.csv"
MULTIEUP_LANGUAGES = ("de", "nl", "en", "es", "fr", "it", "pt")  # the EU languages among ours
MULTIEUP_PAPER = ("de", "en", "es", "fr", "it", "pt")  # the paper's six (no Dutch)
NEUCLIR_BENCH = "neuclir/bench"
NEUCLIR_CODES = {"ru": "rus", "zh": "zho"}  # MTEB subsets and NeuCLIRBench file names
MIRACL_LANGUAGES = ("ar", "zh", "en", "fr", "de", "hi", "id", "ja", "ru", "es")  # App. D.2


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _load(hub_id: str, config: str, split: str, revision: str, columns, optional=(), any_split=False) -> dict:
    """Columns of one config/split as lists. any_split: MTEB's rule, the named split or else the only one."""
    import datasets  # heavy import, only when loading

    try:
        if any_split:
            splits = datasets.load_dataset(hub_id, config, revision=revision)
        else:
            ds = datasets.load_dataset(hub_id, config, split=split, revision=revision)
    except Exception as err:  # the hub client raises many types; the message is what matters
        raise MimoError(f"{hub_id}: cannot load config {config!r} split {split!r} "
                        f"({type(err).__name__}: {_one_line(err)})") from None
    if any_split:
        if split not in splits and len(splits) != 1:
            raise MimoError(f"{hub_id}: config {config!r} has no split {split!r} (found: {', '.join(splits)})")
        ds = splits[split] if split in splits else next(iter(splits.values()))
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise MimoError(f"{hub_id}: config {config!r} split {split!r} lacks column(s) {', '.join(missing)} "
                        f"(found: {', '.join(ds.column_names)})")
    keep = list(columns) + [c for c in optional if c in ds.column_names]
    return ds.select_columns(keep).to_dict()


def _titled(table: dict) -> list[str]:
    """MTEB's document text: title, a space, then text (title only when there is one)."""
    titles = table.get("title") or [""] * len(table["text"])
    return [f"{t} {x}" if t else x for t, x in zip(titles, table["text"])]


def _release_titled(table: dict) -> list[str]:
    """The release's NeuCLIR document text (evaluate_neuclir.py): stripped title, a newline, stripped text."""
    titles = table.get("title") or [""] * len(table["text"])
    out = []
    for title, text in zip(titles, table["text"]):
        title, text = (title or "").strip(), (text or "").strip()
        out.append(f"{title}\n{text}".strip() if title else text)
    return out


def belebele(hub_id: str = "", revision: str = "main", languages: tuple[str, ...] = (), split: str = "") -> Benchmark:
    """Belebele: question stem -> FLORES passage; 900 questions on 488 passages per language."""
    hub_id, split = hub_id or "facebook/belebele", split or "test"
    langs = check_languages(languages, "belebele", tuple(BELEBELE_CONFIGS), LANGUAGES)
    rows = {}
    for lang in langs:
        t = _load(hub_id, BELEBELE_CONFIGS[lang], split, revision, ("link", "question_number", "question", "flores_passage"))
        keys = [f"{link}#{number}" for link, number in zip(t["link"], t["question_number"])]  # parallel key
        rows[lang] = list(zip(keys, t["question"], t["flores_passage"]))
    return parallel_qa("belebele", rows, source=f"{hub_id} ({split})")


def xquad(hub_id: str = "", revision: str = "main", languages: tuple[str, ...] = (), split: str = "") -> Benchmark:
    """XQuAD: 1,190 questions on 240 paragraphs per language, fully parallel by `id`."""
    hub_id, split = hub_id or "google/xquad", split or "validation"
    langs = check_languages(languages, "xquad", XQUAD_LANGUAGES, XQUAD_LANGUAGES)
    rows = {}
    for lang in langs:
        t = _load(hub_id, f"xquad.{lang}", split, revision, ("id", "question", "context"))
        rows[lang] = list(zip(map(str, t["id"]), t["question"], t["context"]))
    return parallel_qa("xquad", rows, source=f"{hub_id} ({split})")


def mlqa(hub_id: str = "", revision: str = "main", languages: tuple[str, ...] = (), split: str = "") -> Benchmark:
    """MLQA over the monolingual `X.X` configs: an `id` shared across languages marks translations.

    The default is google/xtreme (configs `MLQA.en.en`, parquet); repos with facebook/mlqa's names
    (`mlqa.en.en`, e.g. AdaMLLab/mlqa_repaired) work too.
    """
    import datasets

    hub_id, split = hub_id or "google/xtreme", split or "test"
    langs = check_languages(languages, "mlqa", MLQA_LANGUAGES, MLQA_LANGUAGES)
    try:
        configs = set(datasets.get_dataset_config_names(hub_id, revision=revision))
    except Exception as err:
        raise MimoError(f"{hub_id}: cannot list configs ({type(err).__name__}: {_one_line(err)})") from None
    rows = {}
    for lang in langs:
        names = (f"MLQA.{lang}.{lang}", f"mlqa.{lang}.{lang}")
        config = next((c for c in names if c in configs), None)
        if config is None:
            raise MimoError(f"{hub_id}: no config {' or '.join(names)}")
        t = _load(hub_id, config, split, revision, ("id", "question", "context"))
        rows[lang] = list(zip(map(str, t["id"]), t["question"], t["context"]))
    return parallel_qa("mlqa", rows, source=f"{hub_id} ({split})")


def multieup(hub_id: str = "", revision: str = "main", languages: tuple[str, ...] = (), split: str = "") -> Benchmark:
    """MultiEuP-v2: a topic descriptor (`title_XX`) per language -> the speeches tagged with the topic.

    Documents are the speeches (`did`, `TEXT`) whose `LANGUAGE` is chosen; the topic key is
    `qid_EN` up to '#'. The CSV is read as plain strings: its mixed-type columns (e.g. qid_GA holds
    "null") break `load_dataset`'s type inference.
    """
    hub_id = hub_id or "unimelb-nlp/MultiEup-v2"
    if split not in ("", "train"):
        raise MimoError(f"{hub_id}: MultiEuP-v2 has one split, 'train', not {split!r}")
    langs = check_languages(languages, "multieup", MULTIEUP_LANGUAGES, MULTIEUP_PAPER)
    path = fetch_dataset_file(hub_id, MULTIEUP_FILE, revision)
    skipped: Counter = Counter()
    docs: dict[str, tuple[str, str]] = {}  # did -> (text, lang)
    topic_docs: dict[str, list[str]] = {}  # topic -> dids, in file order
    titles: dict[str, dict[str, str]] = {}  # topic -> {lang: descriptor}
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))  # a long speech is one field
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("did", "TEXT", "LANGUAGE", "qid_EN") if c not in (reader.fieldnames or ())]
        if missing:
            raise MimoError(f"{path}: missing column(s) {', '.join(missing)}")
        try:
            for row in reader:
                lang = (row["LANGUAGE"] or "").strip().lower()
                if lang not in langs:
                    continue
                did, text, topic = (row["did"] or "").strip(), row["TEXT"] or "", (row["qid_EN"] or "").split("#")[0].strip()
                topic = "" if topic.lower() in ("null", "nan", "none") else topic  # v1's CSV writes "null" for none
                reason = ("speech_without_id" if not did else "speech_without_text" if not text.strip()
                          else "speech_without_topic" if not topic else "duplicate_speech" if did in docs else "")
                if reason:
                    skipped[reason] += 1
                    continue
                docs[did] = (text, lang)
                topic_docs.setdefault(topic, []).append(did)
                for q_lang in langs:
                    title = (row.get(f"title_{q_lang.upper()}") or "").strip()
                    if title:
                        titles.setdefault(topic, {}).setdefault(q_lang, title)
        except csv.Error as err:
            raise MimoError(f"{path}:{reader.line_num}: unreadable CSV ({err})") from None
    qids, qtexts, qlangs, qrels, groups = [], [], [], {}, []
    for topic, dids in topic_docs.items():
        group = {}
        for lang in langs:
            title = titles.get(topic, {}).get(lang)
            if title is None:
                skipped["topic_without_title"] += 1
                continue
            qid = group[lang] = f"{lang}-{topic}"
            qids.append(qid)
            qtexts.append(title)
            qlangs.append(lang)
            qrels[qid] = {d: 1 for d in dids}
        if len(group) > 1:
            groups.append(group)
    return Benchmark("multieup", "mlir", qids, qtexts, qlangs, list(docs), [t for t, _ in docs.values()],
                     [lang for _, lang in docs.values()], qrels, groups, [], skipped, source=str(path)).checked()


def _read_bench_queries(path: Path) -> dict[str, str]:
    """NeuCLIRBench topics: `id<TAB>query`, no header."""
    table = read_columns(path, ("id", "query"))
    return {q.strip(): t.strip() for q, t in zip(table["id"], table["query"])}


def _neuclir(name: str, default_corpus: str, hub_id: str, revision: str, languages, split: str,
             release_text: bool = False) -> Benchmark:
    """hub_id is `CORPUS_REPO[+BENCH_REPO]` (revision likewise `REV[+REV]`): the MTEB hard-negative
    repo gives the corpora and the track's query ids, neuclir/bench the English queries and qrels.
    release_text: documents as the release writes them ("title\ntext"), else MTEB's "title text"."""
    corpus_id, _, bench_id = (hub_id or default_corpus).partition("+")
    corpus_id, bench_id = corpus_id or default_corpus, bench_id or NEUCLIR_BENCH
    corpus_rev, _, bench_rev = (revision or "main").partition("+")
    corpus_rev, bench_rev, split = corpus_rev or "main", bench_rev or "main", split or "test"
    langs = check_languages(languages, name, tuple(NEUCLIR_CODES), tuple(NEUCLIR_CODES))
    skipped: Counter = Counter()
    doc_ids, doc_texts, doc_langs, track = [], [], [], set()
    for lang in langs:
        code = NEUCLIR_CODES[lang]
        corpus = _load(corpus_id, f"{code}-corpus", split, corpus_rev, ("_id", "text"), ("title",), any_split=True)
        doc_ids += map(str, corpus["_id"])
        doc_texts += _release_titled(corpus) if release_text else _titled(corpus)
        doc_langs += [lang] * len(corpus["_id"])
        track.update(map(str, _load(corpus_id, f"{code}-queries", split, corpus_rev, ("_id",), any_split=True)["_id"]))
    english = _read_bench_queries(fetch_dataset_file(bench_id, "data/news.eng.tsv", bench_rev))
    qids = [q for q in english if q in track]  # this track's queries, in NeuCLIRBench's order
    skipped["query_without_english_text"] = len(track) - len(qids)
    qrels: dict[str, dict[str, int]] = {}
    for lang in langs:  # qrels.rus and qrels.zho judge the same English topics: take their union
        qrels_file = fetch_dataset_file(bench_id, f"data/qrels.{NEUCLIR_CODES[lang]}.gains.txt", bench_rev)
        for qid, docs in read_qrels(qrels_file).items():  # TREC form: `id ignore docid relevance`
            if qid not in track:
                skipped["qrels_other_track"] += len(docs)
                continue
            judged = qrels.setdefault(qid, {})
            for doc, grade in docs.items():
                judged[doc] = max(grade, judged.get(doc, grade))
    return Benchmark(name, "mlir", qids, [english[q] for q in qids], ["en"] * len(qids), doc_ids, doc_texts,
                     doc_langs, qrels, [], [], skipped, source=f"{corpus_id} + {bench_id} ({split})").checked()


def neuclir22(hub_id: str = "", revision: str = "main", languages: tuple[str, ...] = (), split: str = "",
              release_text: bool = False) -> Benchmark:
    """NeuCLIR 2022 as MLIR: 49 English queries over 19,049 ru + zh documents in the paper."""
    return _neuclir("neuclir22", "mteb/NeuCLIR2022RetrievalHardNegatives", hub_id, revision, languages, split, release_text)


def neuclir23(hub_id: str = "", revision: str = "main", languages: tuple[str, ...] = (), split: str = "",
              release_text: bool = False) -> Benchmark:
    """NeuCLIR 2023 as MLIR: 63 English queries over 33,512 ru + zh documents in the paper."""
    return _neuclir("neuclir23", "mteb/NeuCLIR2023RetrievalHardNegatives", hub_id, revision, languages, split, release_text)


def miracl(hub_id: str = "", revision: str = "main", languages: tuple[str, ...] = (), split: str = "") -> Benchmark:
    """MIRACL (hard negatives), multi-monolingual: `{lang}-corpus`, `{lang}-queries`, `{lang}-qrels`.

    Ids get a `{lang}-` prefix (MIRACL's `docid` is a Wikipedia page#passage id, repeated across
    languages); a judgment is matched only within its own language's corpus.
    """
    hub_id, split = hub_id or "mteb/MIRACLRetrievalHardNegatives", split or "dev"
    langs = check_languages(languages, "miracl", MIRACL_LANGUAGES, MIRACL_LANGUAGES)
    qids, qtexts, qlangs, dids, dtexts, dlangs, qrels = [], [], [], [], [], [], {}
    for lang in langs:
        corpus = _load(hub_id, f"{lang}-corpus", split, revision, ("_id", "text"), ("title",), any_split=True)
        queries = _load(hub_id, f"{lang}-queries", split, revision, ("_id", "text"), any_split=True)
        judged = _load(hub_id, f"{lang}-qrels", split, revision, ("query-id", "corpus-id", "score"), any_split=True)
        dids += [f"{lang}-{d}" for d in corpus["_id"]]
        dtexts += _titled(corpus)
        dlangs += [lang] * len(corpus["_id"])
        qids += [f"{lang}-{q}" for q in queries["_id"]]
        qtexts += queries["text"]
        qlangs += [lang] * len(queries["_id"])
        for q, d, score in zip(judged["query-id"], judged["corpus-id"], judged["score"]):
            qrels.setdefault(f"{lang}-{q}", {})[f"{lang}-{d}"] = int(score)
    return Benchmark("miracl", "monolingual", qids, qtexts, qlangs, dids, dtexts, dlangs, qrels,
                     source=f"{hub_id} ({split})").checked()


LOADERS = {"belebele": belebele, "xquad": xquad, "mlqa": mlqa, "multieup": multieup,
           "neuclir22": neuclir22, "neuclir23": neuclir23, "miracl": miracl}
