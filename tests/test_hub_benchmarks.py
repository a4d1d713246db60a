"""The paper's benchmarks from local folders laid out like their hub repositories (eval/hub.py).

Each fixture mirrors the real repo's configs, splits, file paths and columns (extra columns
included) as recorded in data/_notes/hub_schemas.md, "Eval loaders as built"; the expected
counts are worked out by hand next to each fixture.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval.hub import BELEBELE_CONFIGS, LOADERS, MIRACL_LANGUAGES
from pipeline.errors import MimoError
from pipeline.languages import LANGUAGES


@pytest.fixture(autouse=True)
def _offline_datasets(monkeypatch, tmp_path):
    """No hub access, and the datasets cache in tmp (the flags are read at import, so patch them too)."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def write_repo(root: Path, configs: dict[str, dict[str, tuple[str, list[dict]]]], extra_yaml: str = "") -> Path:
    """A hub-style dataset folder: configs[name][split] = (relative file path, rows).

    `.parquet` and `.jsonl` files are written from the rows; the README's `configs:` YAML points
    each split at its file, which is how datasets.load_dataset resolves a parquet/jsonl hub repo.
    """
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, (rel, rows) in splits.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if rel.endswith(".jsonl"):
                path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            else:
                pq.write_table(pa.Table.from_pylist(rows), path)
            lines += [f"  - split: {split}", f"    path: {rel}"]
    lines.append("---")
    (root / "README.md").write_text("\n".join(lines) + extra_yaml + "\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------------------
# Belebele: facebook/belebele, one config per FLORES code, split test, data/{config}.jsonl


def belebele_row(link, number, passage, question):
    return {"link": link, "question_number": number, "flores_passage": passage, "question": question,
            "mc_answer1": "a", "mc_answer2": "b", "mc_answer3": "c", "mc_answer4": "d",
            "correct_answer_num": "1", "dialect": "x", "ds": "2023-05-03 00:00:00"}


def make_belebele(root: Path) -> Path:
    """Two passages (L1 with questions 1 and 2, L2 with question 1) in 14 languages; zho_Hans lacks L2."""
    configs = {}
    for lang, code in BELEBELE_CONFIGS.items():
        rows = [belebele_row("https://L1", 1, f"passage one {lang}", f"q1 {lang}"),
                belebele_row("https://L1", 2, f"passage one {lang}", f"q2 {lang}")]
        if code != "zho_Hans":
            rows.append(belebele_row("https://L2", 1, f"passage two {lang}", f"q3 {lang}"))
        configs[code] = {"test": (f"data/{code}.jsonl", rows)}
    configs["acm_Arab"] = {"test": ("data/acm_Arab.jsonl", [belebele_row("https://L1", 1, "p", "q")])}
    return write_repo(root, configs)


def test_belebele_14_languages(tmp_path):
    b = LOADERS["belebele"](str(make_belebele(tmp_path / "belebele")))
    # 13 languages x 3 questions + zh x 2; 13 x 2 passages + zh x 1
    assert (len(b.query_ids), len(b.doc_ids), b.languages, b.setting) == (41, 27, sorted(LANGUAGES), "mlir")
    assert len(b.qrels["en-https://L1#1"]) == 14 and len(b.qrels["en-https://L2#1"]) == 13
    assert sorted(len(g) for g in b.query_groups) == [13, 14, 14]
    assert sorted(len(g) for g in b.doc_groups) == [13, 14]  # passage one in 14 languages, two in 13
    assert not b.skipped
    positives = {b.doc_texts[b.doc_ids.index(d)] for d in b.qrels["ja-https://L1#2"]}
    assert positives == {f"passage one {lang}" for lang in LANGUAGES}


def test_belebele_subset_and_bad_split(tmp_path):
    repo = make_belebele(tmp_path / "belebele")
    b = LOADERS["belebele"](str(repo), languages=("en", "zh"))
    assert (len(b.query_ids), len(b.doc_ids), b.languages) == (5, 3, ["en", "zh"])
    with pytest.raises(MimoError, match="'dev'"):
        LOADERS["belebele"](str(repo), split="dev", languages=("en",))


# ----------------------------------------------------------------------------------------------
# XQuAD: google/xquad, configs xquad.xx, split validation, parquet


def make_xquad(root: Path) -> Path:
    """Paragraph P1 with questions 'a' and 'b', P2 with 'c', in 8 languages (plus xquad.el, unused)."""
    configs = {}
    for lang in ("ar", "de", "el", "en", "es", "hi", "ru", "vi", "zh"):
        rows = [{"id": qid, "context": f"{ctx} {lang}", "question": f"{qid} {lang}?",
                 "answers": {"text": ["x"], "answer_start": [0]}} for qid, ctx in (("a", "P1"), ("b", "P1"), ("c", "P2"))]
        configs[f"xquad.{lang}"] = {"validation": (f"xquad.{lang}/validation-00000-of-00001.parquet", rows)}
    return write_repo(root, configs)


def test_xquad_8_languages(tmp_path):
    b = LOADERS["xquad"](str(make_xquad(tmp_path / "xquad")))
    assert (len(b.query_ids), len(b.doc_ids)) == (24, 16)  # 3 questions and 2 paragraphs x 8 languages
    assert b.languages == ["ar", "de", "en", "es", "hi", "ru", "vi", "zh"]
    assert {len(p) for p in b.qrels.values()} == {8}
    assert b.qrels["de-a"] == b.qrels["zh-b"]  # same paragraph, every language
    assert sorted(len(g) for g in b.query_groups) == [8, 8, 8] and len(b.doc_groups) == 2


def test_xquad_missing_column_names_config(tmp_path):
    repo = write_repo(tmp_path / "xquad", {"xquad.en": {"validation": (
        "xquad.en/validation-00000-of-00001.parquet", [{"id": "a", "question": "q?", "paragraph": "p"}])}})
    with pytest.raises(MimoError, match=r"config 'xquad.en' split 'validation' lacks column\(s\) context"):
        LOADERS["xquad"](str(repo), languages=("en",))


# ----------------------------------------------------------------------------------------------
# MLQA: google/xtreme configs MLQA.x.x (MLQA.x.x/{split}-00000-of-00001.parquet), or
# facebook/mlqa names mlqa.x.x (AdaMLLab/mlqa_repaired: data/mlqa.x.x/{split}-*); splits test, validation

MLQA_TEST = {  # lang -> [(id, context)]; ids shared across languages are translations
    "en": [("a", "E1"), ("b", "E1"), ("c", "E2"), ("d", "E3")],
    "de": [("a", "D1"), ("c", "D2")],
    "zh": [("b", "Z1")],
    **{lang: [("d", f"X-{lang}")] for lang in ("ar", "es", "hi", "vi")},
}


def make_mlqa(root: Path, upper: bool = True) -> Path:
    configs = {}
    for lang, items in MLQA_TEST.items():
        name = f"MLQA.{lang}.{lang}" if upper else f"mlqa.{lang}.{lang}"
        folder = name if upper else f"data/{name}"
        test = [{"id": i, "title": "t", "context": c, "question": f"{i} {lang}?",
                 "answers": {"answer_start": [0], "text": ["x"]}} for i, c in items]
        val = [{"id": "v", "title": "t", "context": "V", "question": "v?", "answers": {"answer_start": [0], "text": ["x"]}}]
        configs[name] = {"test": (f"{folder}/test-00000-of-00001.parquet", test),
                         "validation": (f"{folder}/validation-00000-of-00001.parquet", val)}
    configs["MLQA.en.de" if upper else "mlqa.en.de"] = configs[next(iter(configs))]  # a cross pair, unused
    return write_repo(root, configs)


def test_mlqa_partial_parallelism(tmp_path):
    b = LOADERS["mlqa"](str(make_mlqa(tmp_path / "xtreme")))
    # queries: en 4, de 2, zh 1, ar/es/hi/vi 1 each = 11; contexts: en 3 (E1 shared by a and b), de 2, zh 1, 4 others
    assert (len(b.query_ids), len(b.doc_ids), len(b.languages)) == (11, 10, 7)
    assert {q: len(b.qrels[f"{l}-{q}"]) for l, q in (("en", "a"), ("zh", "b"), ("de", "c"), ("vi", "d"))} == \
        {"a": 2, "b": 2, "c": 2, "d": 5}
    assert sorted(len(g) for g in b.query_groups) == [2, 2, 2, 5]
    assert sorted(len(g) for g in b.doc_groups) == [2, 2, 2, 5]


def test_mlqa_lowercase_config_names_and_split(tmp_path):
    repo = make_mlqa(tmp_path / "mlqa_repaired", upper=False)
    b = LOADERS["mlqa"](str(repo), languages=("en", "de"))
    assert (len(b.query_ids), len(b.doc_ids)) == (6, 5)
    assert b.qrels["en-b"] == {b.doc_ids[b.doc_texts.index("E1")]: 1}  # b has no German version
    v = LOADERS["mlqa"](str(repo), languages=("en", "de"), split="validation")
    assert (len(v.query_ids), len(v.doc_ids)) == (2, 2)


# ----------------------------------------------------------------------------------------------
# MultiEuP-v2: unimelb-nlp/MultiEup-v2, one CSV clean_all_with_did_qid.MEP.csv (config default)

EU = ("BG CS DA DE EL EN ES ET FI FR GA HR HU IT LT LV MT NL PL PT RO SK SL SV").split()


def multieup_row(did, lang, topic, text="speech", blank_title=()):
    row = {"did": did, "TEXT": text, "DATE": "2020-01-13", "LANGUAGE": lang, "NAME": "n", "MEPID": "1",
           "PARTY": "p", "country": "c", "gender": "Female"}
    for code in EU:
        row[f"title_{code}"] = "" if code in blank_title else f"topic {topic} in {code}"
        row[f"qid_{code}"] = "null" if code == "GA" else (f"{topic}#{code}" if topic else "")
    return row


def make_multieup(root: Path) -> Path:
    rows = [multieup_row("d1", "EN", "101"), multieup_row("d2", "DE", "101"),
            multieup_row("d3", "FR", "102"), multieup_row("d4", "PL", "102"),  # PL: not a chosen language
            multieup_row("d5", "NL", "103"),  # Dutch: not in the paper's six
            multieup_row("d6", "IT", "104", blank_title=("PT",)),  # no Portuguese descriptor
            multieup_row("d7", "ES", ""),  # no topic
            multieup_row("d8", "PT", "105", text="  "),  # no text
            multieup_row("d1", "EN", "101", text="again"),  # duplicate did
            multieup_row("d9", "PL", "106")]  # a topic with no speech in the chosen languages
    root.mkdir(parents=True)
    with open(root / "clean_all_with_did_qid.MEP.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "README.md").write_text('---\nconfigs:\n  - config_name: default\n    data_files: '
                                    '"clean_all_with_did_qid.MEP.csv"\n---\n', encoding="utf-8")
    return root


def test_multieup_topics_and_skips(tmp_path):
    b = LOADERS["multieup"](str(make_multieup(tmp_path / "multieup")))
    # speeches d1 d2 d3 d6; topics 101 (d1, d2), 102 (d3), 104 (d6); 6 + 6 + 5 queries
    assert (sorted(b.doc_ids), len(b.query_ids)) == (["d1", "d2", "d3", "d6"], 17)
    assert sorted(set(b.query_langs)) == ["de", "en", "es", "fr", "it", "pt"]
    assert b.qrels["es-101"] == {"d1": 1, "d2": 1} and b.qrels["pt-102"] == {"d3": 1}
    assert "pt-104" not in b.qrels
    assert b.query_texts[b.query_ids.index("fr-102")] == "topic 102 in FR"
    assert sorted(len(g) for g in b.query_groups) == [5, 6, 6] and b.doc_groups == []
    assert dict(b.skipped) == {"speech_without_topic": 1, "speech_without_text": 1, "duplicate_speech": 1,
                               "topic_without_title": 1}


def test_multieup_with_dutch(tmp_path):
    b = LOADERS["multieup"](str(make_multieup(tmp_path / "multieup")), languages=("nl", "en"))
    # speeches d1 (en) and d5 (nl); topics 101 and 103, each with an nl and an en descriptor
    assert (sorted(b.doc_ids), sorted(b.query_ids)) == (["d1", "d5"], ["en-101", "en-103", "nl-101", "nl-103"])
    with pytest.raises(MimoError, match="'test'"):
        LOADERS["multieup"](str(tmp_path / "multieup"), split="test")


# ----------------------------------------------------------------------------------------------
# NeuCLIR: mteb/NeuCLIR202xRetrievalHardNegatives ({fas,rus,zho}-{corpus,queries,qrels}, split test)
# + neuclir/bench (data/news.{lang}.tsv, data/qrels.{x}.gains.txt)


def make_hard_negatives(root: Path, corpus: dict, queries: dict) -> Path:
    configs = {}
    for code in corpus:
        configs[f"{code}-corpus"] = {"test": (f"{code}-corpus/test-00000-of-00001.parquet",
                                              [{"_id": d, "title": t, "text": x} for d, t, x in corpus[code]])}
        configs[f"{code}-queries"] = {"test": (f"{code}-queries/test-00000-of-00001.parquet",
                                               [{"_id": q, "text": f"translated {q}"} for q in queries[code]])}
        configs[f"{code}-qrels"] = {"test": (f"{code}-qrels/test-00000-of-00001.parquet",
                                             [{"query-id": q, "corpus-id": corpus[code][0][0], "score": 1} for q in queries[code]])}
    return write_repo(root, configs)


def make_bench(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    english = {"1": "Boeing 737 Max", "2": "Mars helicopter", "3": "Teflon risks", "4": "only in fas", "200": "a 2023 topic"}
    for code in ("eng", "fas", "rus", "zho"):
        (data / f"news.{code}.tsv").write_text("".join(f"{q}\t{t} ({code})\n" if code != "eng" else f"{q}\t{t}\n"
                                                       for q, t in english.items()), encoding="utf-8")
    qrels = {"rus": ["1 rus r1 3", "1 rus r2 0", "2 rus r2 1", "200 rus r9 1"],
             "zho": ["2 zho z1 1", "3 zho z2 0", "2 zho f1 1"],  # f1 is a Persian document
             "fas": ["4 fas f1 1"], "mlir": ["200 rus r9 1"]}
    for name, lines in qrels.items():
        (data / f"qrels.{name}.gains.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: queries\n  default: true\n  data_files:\n"
        + "".join(f"  - split: {c}\n    path: data/news.{c}.tsv\n" for c in ("eng", "fas", "rus", "zho"))
        + '  format: csv\n  sep: "\\t"\n  header: null\n  names: ["id", "query"]\n'
        + "- config_name: qrels\n  default: false\n  data_files:\n"
        + "".join(f"  - split: {c}\n    path: data/qrels.{c}.gains.txt\n" for c in ("mlir", "fas", "rus", "zho"))
        + '  format: csv\n  sep: " "\n  header: null\n  names: ["id", "ignore", "docid", "relevance"]\n---\n',
        encoding="utf-8")
    return root


def test_neuclir22_pooled_ru_zh(tmp_path):
    hn = make_hard_negatives(tmp_path / "hn22",
                             corpus={"fas": [("f1", "", "persian")],
                                     "rus": [("r1", "", "russian one"), ("r2", "Headline", "body")],
                                     "zho": [("z1", "", "chinese one"), ("z2", "", "two"), ("z3", "", "three")]},
                             queries={"fas": ["4"], "rus": ["1", "2"], "zho": ["2", "3", "5"]})
    b = LOADERS["neuclir22"](f"{hn}+{make_bench(tmp_path / 'bench')}")
    # track {1, 2, 3, 5}: 5 has no English text; 3 has only a grade-0 judgment (evaluated, scores 0, as
    # pytrec_eval does); f1 is not pooled (its judgment is kept: it counts in query 2's ideal DCG)
    assert (b.query_ids, b.query_texts, set(b.query_langs)) == (
        ["1", "2", "3"], ["Boeing 737 Max", "Mars helicopter", "Teflon risks"], {"en"})
    assert (b.doc_ids, b.doc_langs) == (["r1", "r2", "z1", "z2", "z3"], ["ru", "ru", "zh", "zh", "zh"])
    assert b.doc_texts[1] == "Headline body"
    assert b.qrels == {"1": {"r1": 3, "r2": 0}, "2": {"r2": 1, "z1": 1, "f1": 1}, "3": {"z2": 0}}
    assert dict(b.skipped) == {"query_without_english_text": 1, "qrels_other_track": 1,
                               "qrels_unknown_document": 1, "query_without_positive": 1}


def test_neuclir23_one_language(tmp_path):
    hn = make_hard_negatives(tmp_path / "hn23", corpus={"rus": [("r9", "", "russian 2023")]}, queries={"rus": ["200"]})
    b = LOADERS["neuclir23"](f"{hn}+{make_bench(tmp_path / 'bench')}", languages=("ru",))
    # qrels.zho is not read; of qrels.rus, only "200 rus r9 1" belongs to this track
    assert (b.query_ids, b.doc_ids, b.qrels) == (["200"], ["r9"], {"200": {"r9": 1}})
    assert dict(b.skipped) == {"qrels_other_track": 3}


# ----------------------------------------------------------------------------------------------
# MIRACL: mteb/MIRACLRetrievalHardNegatives ({lang}-corpus, {lang}-queries, {lang}-qrels; split dev)


def make_miracl(root: Path) -> Path:
    configs = {}
    for lang in MIRACL_LANGUAGES + ("bn",):
        corpus = [{"_id": "100#0", "text": f"passage zero {lang}", "title": "Title"},
                  {"_id": "100#1", "text": f"passage one {lang}", "title": ""}]
        queries = [{"_id": "0", "text": f"question {lang}"}]
        qrels = [{"query-id": "0", "corpus-id": "100#0", "score": 1}, {"query-id": "0", "corpus-id": "100#1", "score": 0}]
        if lang == "en":
            corpus.append({"_id": "999#0", "text": "only in English", "title": ""})
        if lang == "ar":  # names a document of the English corpus: not found in the Arabic one
            qrels.append({"query-id": "0", "corpus-id": "999#0", "score": 1})
        if lang == "ja":  # judged, but nothing relevant
            queries.append({"_id": "1", "text": "unanswered"})
            qrels.append({"query-id": "1", "corpus-id": "100#1", "score": 0})
        for kind, rows in (("corpus", corpus), ("queries", queries), ("qrels", qrels)):
            configs[f"{lang}-{kind}"] = {"dev": (f"{lang}-{kind}/dev-00000-of-00001.parquet", rows)}
    return write_repo(root, configs)


def test_miracl_monolingual_10_languages(tmp_path):
    b = LOADERS["miracl"](str(make_miracl(tmp_path / "miracl")))
    assert (b.setting, b.metric, len(b.languages)) == ("monolingual", "ndcg@10", 10)
    assert (len(b.doc_ids), len(b.query_ids)) == (21, 11)  # 2 passages x 10 + en's extra; ja-1 scores 0
    assert "ar-100#0" in b.doc_ids and "zh-100#0" in b.doc_ids
    assert b.doc_texts[b.doc_ids.index("de-100#0")] == "Title passage zero de"
    assert b.qrels["ar-0"] == {"ar-100#0": 1, "ar-100#1": 0, "ar-999#0": 1}  # unknown in ar: kept, as trec_eval
    assert dict(b.skipped) == {"qrels_unknown_document": 1, "query_without_positive": 1}
    assert b.query_groups == [] and b.doc_groups == []


# ----------------------------------------------------------------------------------------------
# Errors

UNAVAILABLE = {"belebele": "ko", "xquad": "fr", "mlqa": "ja", "multieup": "ru", "neuclir22": "en",
               "neuclir23": "fa", "miracl": "pt"}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_unavailable_language_names_it(name):
    lang = UNAVAILABLE[name]
    with pytest.raises(MimoError, match=rf"{name}: language\(s\) {lang} not available"):
        LOADERS[name]("nonexistent-org/nothing", languages=(lang,))


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_unreachable_hub_is_one_line_error(name):
    with pytest.raises(MimoError) as info:
        LOADERS[name]("nonexistent-org/nothing")
    message = str(info.value)
    assert message.startswith("nonexistent-org/nothing: cannot ") and "\n" not in message
