"""Stage-1 preparation: the paper's filters on hand-made rows, the dedup draft, loaders, bad input."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import MimoError
from pipeline.stage1_data import Candidates, Stage1DataConfig, draft, prepare_stage1
from pipeline.worklist import text_id
from tests.conftest import make_parallel_sentences_repo

# Hand-made rows: (english, german, the filter that must drop it, or None if kept).
ROWS = [
    ("Hello world, my friend.", "Hallo Welt, mein Freund.", None),
    ("   ", "Hallo zusammen", "empty"),
    ("Short", "Kurz und gut hier", "too_short"),  # 5 characters < 10
    ("A" * 513, "B" * 400, "too_long"),  # 513 > 512
    ("This is a fairly long English sentence, really.", "Kurz, ja, gut.", "length_ratio"),  # 47/14 = 3.4
    ("x" * 30, "y" * 10, "length_ratio"),  # ratio exactly 3.0: the paper keeps pairs *below* 3
    ("x" * 29 + "z", "y" * 10 + "z", None),  # 30/11 = 2.7
    ("Exactly ten", "Zehn Zeich", None),  # 11 and 10 characters: both inside 10-512
    ("Hello world, my friend.", "Hallo Welt, meine Freundin.", "duplicate_english"),
]


def _tsv(path, rows):
    path.write_text("english\tnon_english\n" + "".join(f"{e}\t{x}\n" for e, x, *_ in rows), encoding="utf-8")
    return path


def test_filters_count_each_drop_under_its_rule(tmp_path):
    cfg = Stage1DataConfig(source="local", languages=("de",), local_files=(f"de:{_tsv(tmp_path / 'de.tsv', ROWS)}",))
    table, report = prepare_stage1(cfg, seed=0, sample_dir=None)
    counts = report["per_language"]["de"]
    expected = Counter(rule for *_, rule in ROWS if rule)
    assert counts["input"] == len(ROWS)
    for rule in ("empty", "too_short", "too_long", "length_ratio", "duplicate_english"):
        assert counts[rule] == expected[rule], rule
    assert counts["over_cap"] == 0
    assert counts["kept"] == table.num_rows == 3
    kept = set(table.column("english").to_pylist())
    assert kept == {"Hello world, my friend.", "x" * 29 + "z", "Exactly ten"}
    assert table.column("lang").to_pylist() == ["de"] * 3
    # teacher ids point at the English side as a Stage-1 document (no prompt, 256 tokens)
    for english, tid in zip(table.column("english").to_pylist(), table.column("teacher_id").to_pylist()):
        assert tid == text_id("document", 256, english)


def test_filters_are_configurable(tmp_path):
    cfg = Stage1DataConfig(source="local", languages=("de",), local_files=(f"de:{_tsv(tmp_path / 'de.tsv', ROWS)}",),
                           min_chars=3, max_chars=1000, max_length_ratio=10.0, dedup_english=False)
    table, report = prepare_stage1(cfg, seed=0, sample_dir=None)
    assert report["per_language"]["de"]["empty"] == 1
    assert table.num_rows == len(ROWS) - 1  # everything but the empty row


def _parallel(n, langs):
    return {lang: Candidates([f"english sentence {i}" for i in range(n)], [f"{lang} {i}" for i in range(n)],
                             ["src"] * n) for lang in langs}


def test_draft_splits_a_fully_parallel_corpus_evenly():
    chosen, dups = draft(_parallel(30, ("ar", "de", "fr")), cap=1000, dedup=True, seed=3)
    assert [len(chosen[lang]) for lang in ("ar", "de", "fr")] == [10, 10, 10]
    anchors = [i for idx in chosen.values() for i in idx]
    assert sorted(anchors) == list(range(30))  # every English anchor used exactly once
    assert sum(dups.values()) == 60


def test_draft_respects_the_cap_and_is_seeded():
    chosen, _ = draft(_parallel(30, ("ar", "de")), cap=4, dedup=True, seed=1)
    assert [len(v) for v in chosen.values()] == [4, 4]
    again, _ = draft(_parallel(30, ("ar", "de")), cap=4, dedup=True, seed=1)
    other, _ = draft(_parallel(30, ("ar", "de")), cap=4, dedup=True, seed=2)
    assert chosen == again and chosen != other


def test_draft_without_dedup_lets_languages_share_anchors():
    chosen, dups = draft(_parallel(5, ("ar", "de")), cap=100, dedup=False, seed=0)
    assert [sorted(v) for v in chosen.values()] == [list(range(5))] * 2 and sum(dups.values()) == 0


def test_english_pairs_come_from_every_source_and_dedup_across_languages(tmp_path):
    de = [(f"Shared sentence number {i}.", f"Geteilter Satz Nummer {i}.") for i in range(6)]
    fr = [(f"Shared sentence number {i}.", f"Phrase partagée numéro {i}.") for i in range(3, 9)]
    cfg = Stage1DataConfig(source="local", languages=("en", "de", "fr"),
                           local_files=(f"de:{_tsv(tmp_path / 'de.tsv', de)}", f"fr:{_tsv(tmp_path / 'fr.tsv', fr)}"))
    table, report = prepare_stage1(cfg, seed=0, sample_dir=None)
    english = table.column("english").to_pylist()
    assert len(english) == len(set(english)) == 9  # 9 distinct anchors, each used once
    en_rows = [(e, t) for e, t, lang in zip(english, table.column("text").to_pylist(),
                                             table.column("lang").to_pylist()) if lang == "en"]
    assert en_rows and all(e == t for e, t in en_rows)  # English pairs are (t_en, t_en)
    assert {lang: c["kept"] for lang, c in report["per_language"].items()} == {"en": 3, "de": 3, "fr": 3}


def test_local_formats_agree(tmp_path):
    rows = [("The river flooded the valley.", "Der Fluss überflutete das Tal."),
            ("We walked home after dinner.", "Wir gingen nach dem Essen nach Hause.")]
    tsv = _tsv(tmp_path / "p.tsv", rows)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps({"english": e, "non_english": x}, ensure_ascii=False) + "\n" for e, x in rows),
                     encoding="utf-8")
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"english": [e for e, _ in rows], "non_english": [x for _, x in rows]}), parquet)
    (tmp_path / "c.en").write_text("".join(e + "\n" for e, _ in rows), encoding="utf-8")
    (tmp_path / "c.de").write_text("".join(x + "\n" for _, x in rows), encoding="utf-8")
    moses = f"{tmp_path / 'c.en'}+{tmp_path / 'c.de'}"
    results = []
    for spec in (tsv, jsonl, parquet, moses):
        cfg = Stage1DataConfig(source="local", languages=("de",), local_files=(f"de:{spec}",))
        table, _ = prepare_stage1(cfg, seed=0, sample_dir=None)
        results.append(sorted(zip(table.column("english").to_pylist(), table.column("text").to_pylist())))
    assert all(r == sorted(rows) for r in results)


def test_hub_loader_on_a_local_copy_of_the_hub_layout(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # datasets reads HF_DATASETS_CACHE at import, and its cache keys a local folder by its name:
    # a private cache keeps another run's folder of the same name from being served
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    talks = make_parallel_sentences_repo(tmp_path / "parallel-sentences-talks", {
        "en-de": [("Good morning to all of you.", "Guten Morgen euch allen.")],
        # TED2020 spells Chinese "zh-cn" (no plain en-zh config)
        "en-zh-cn": [("It is sunny today.", "今天阳光明媚，天气很好。")],
    })
    europarl = make_parallel_sentences_repo(tmp_path / "parallel-sentences-europarl", {
        "en-de": [("The session is adjourned.", "Die Sitzung ist geschlossen.")],
    })
    cfg = Stage1DataConfig(source="hub", languages=("de", "zh"), hub_datasets=(str(talks), str(europarl)))
    table, report = prepare_stage1(cfg, seed=0, sample_dir=None)
    pairs = set(zip(table.column("lang").to_pylist(), table.column("text").to_pylist()))
    assert pairs == {("de", "Guten Morgen euch allen."), ("de", "Die Sitzung ist geschlossen."), ("zh", "今天阳光明媚，天气很好。")}
    sources = set(table.column("source").to_pylist())
    assert f"{talks}:en-zh-cn" in sources
    assert report["per_language"]["zh"]["input"] == 1


# ---- bad input: one-line errors that name the file and row -------------------------------------

def _run_local(tmp_path, spec, langs=("de",)):
    cfg = Stage1DataConfig(source="local", languages=langs, local_files=(spec,))
    return prepare_stage1(cfg, seed=0, sample_dir=None)


def test_missing_file(tmp_path):
    with pytest.raises(MimoError, match=r"nope\.tsv: file not found"):
        _run_local(tmp_path, f"de:{tmp_path / 'nope.tsv'}")


def test_misnamed_parquet_columns(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"en": ["a sentence here"], "de": ["ein Satz hier"]}), path)
    with pytest.raises(MimoError, match=r"bad\.parquet: missing column\(s\) english, non_english \(found: en, de\)"):
        _run_local(tmp_path, f"de:{path}")


# (file name -> bytes) written to tmp_path, the local_files spec, the one-line error expected
BAD_TEXT_FILES = {
    "misnamed jsonl field": ({"p.jsonl": b'{"english": "one", "non_english": "eins"}\n{"english": "two", "german": "zwei"}\n'},
                             "p.jsonl", r"p\.jsonl:2: missing field\(s\) non_english"),
    "null jsonl value": ({"p.jsonl": b'{"english": "Hi there, Bobby.", "non_english": null}\n'},
                         "p.jsonl", r"p\.jsonl:1: field 'non_english' must be text, found null"),
    "invalid utf-8": ({"p.tsv": b"english\tnon_english\nGood day to you.\tGuten Tag.\nBad bytes here.\t\xff\xfe oops\n"},
                      "p.tsv", r"p\.tsv:3: invalid UTF-8"),
    "missing tsv field": ({"p.tsv": b"english\tnon_english\nA line without its translation\n"},
                          "p.tsv", r"p\.tsv:2: expected 2 tab-separated fields, found 1"),
    "extra tsv field": ({"p.tsv": b"english\tnon_english\nA good sentence.\tEin guter Satz.\tstray field\n"},
                        "p.tsv", r"p\.tsv:2: expected 2 tab-separated fields, found 3"),
    "parallel files of different lengths": ({"c.en": b"one line here\ntwo lines here\n", "c.de": b"eine Zeile hier\n"},
                                            "c.en+c.de", r"c\.en has 2 lines, .*c\.de has 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXT_FILES))
def test_bad_local_text_file(tmp_path, case):
    files, spec, message = BAD_TEXT_FILES[case]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    spec = "+".join(str(tmp_path / part) for part in spec.split("+"))
    with pytest.raises(MimoError, match=message):
        _run_local(tmp_path, f"de:{spec}")


def test_unknown_language_code(tmp_path):
    with pytest.raises(MimoError, match="unknown language code 'xx'"):
        _run_local(tmp_path, f"xx:{_tsv(tmp_path / 'p.tsv', ROWS)}")
    with pytest.raises(MimoError, match="stage1.languages: unknown language code 'klingon'"):
        Stage1DataConfig(languages=("de", "klingon"))


def test_invalid_utf8_in_parquet_names_the_row(tmp_path):
    bad = pa.array([b"Guten Tag, Freunde.", b"\xff\xfe kaputt"], pa.binary()).view(pa.string())
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"english": ["Good day, friends.", "Broken text here."], "non_english": bad}), path)
    with pytest.raises(MimoError, match=r"p\.parquet: row 1, column 'non_english': invalid UTF-8"):
        _run_local(tmp_path, f"de:{path}")


def test_nothing_survives(tmp_path):
    with pytest.raises(MimoError, match="no pair survived"):
        _run_local(tmp_path, f"de:{_tsv(tmp_path / 'p.tsv', [('tiny', 'klein', None)])}")


def _extra_file(path, pairs):
    path.write_text("".join(json.dumps({"english": e, "non_english": x}, ensure_ascii=False) + "\n" for e, x in pairs))
    return str(path)


def test_sample_with_extra_local_files(tmp_path):
    """source = sample + local_files: the files' pairs join the sample's, streamed and in memory alike."""
    de = _extra_file(tmp_path / "en-de.jsonl", [("The river froze early that winter.", "Der Fluss fror in jenem Winter früh zu."),
                                                ("ok", "gut"),  # too short: counted, dropped
                                                ("We missed the last train home.", "Wir haben den letzten Zug verpasst.")])
    fr = _extra_file(tmp_path / "en-fr.jsonl", [("The museum opens at nine on Sundays.", "Le musée ouvre à neuf heures le dimanche.")])
    plain_cfg = Stage1DataConfig(source="sample")
    cfg = Stage1DataConfig(source="sample", local_files=(f"de:{de}", f"fr:{fr}"))
    base, base_report = prepare_stage1(plain_cfg, seed=0, sample_dir="data/sample")
    table, report = prepare_stage1(cfg, seed=0, sample_dir="data/sample")
    again, again_report = prepare_stage1(cfg, seed=0, sample_dir="data/sample", stream=False)
    assert table.equals(again) and report == again_report
    counts, base_counts = report["per_language"], base_report["per_language"]
    assert counts["de"]["input"] == base_counts["de"]["input"] + 3 and counts["de"]["too_short"] == base_counts["de"]["too_short"] + 1
    assert counts["fr"]["input"] == base_counts["fr"]["input"] + 1
    # fair dedup: the files' English sides are English candidates too (3 + 1 more)
    assert counts["en"]["input"] == base_counts["en"]["input"] + 4
    rows = table.to_pylist()
    new = {(r["lang"], r["english"]) for r in rows if r["source"] != "sample"}
    assert new <= {("de", "The river froze early that winter."), ("de", "We missed the last train home."),
                   ("fr", "The museum opens at nine on Sundays."), ("en", "The river froze early that winter."),
                   ("en", "We missed the last train home."), ("en", "The museum opens at nine on Sundays.")}
    # each new English sentence is drafted once (by its language or by English), and none is lost
    assert sorted(e for _, e in new) == ["The museum opens at nine on Sundays.", "The river froze early that winter.",
                                        "We missed the last train home."]
    assert sum(counts[lang]["kept"] for lang in counts) == sum(base_counts[lang]["kept"] for lang in base_counts) + 3
    with pytest.raises(MimoError, match="not in stage1.languages"):
        prepare_stage1(Stage1DataConfig(source="sample", languages=("en", "fr"), local_files=(f"de:{de}",)),
                       seed=0, sample_dir="data/sample")
    with pytest.raises(MimoError, match="en: files do not apply"):
        prepare_stage1(Stage1DataConfig(source="sample", dedup="release", local_files=(f"en:{de}",)),
                       seed=0, sample_dir="data/sample")
