"""Stage-1 data as the authors' release builds it: the legacy TSV repository, first-come dedup, zh subsets.

The fixture below mirrors the layout of `sentence-transformers/parallel-sentences` (one gzipped
TSV per corpus and pair, `{Corpus}/{Corpus}-en-{xx}-train.tsv.gz`, lines `english<TAB>non_english`,
no header; data/_notes/hub_schemas.md section 1) and is a small Table 5: its per-language counts
under `dedup = "release"` and `dedup = "fair"` are derived by hand in the comments.
"""

from __future__ import annotations

import gzip
from collections import Counter

import pytest

from pipeline.errors import MimoError
from pipeline.stage1_data import Stage1DataConfig, prepare_stage1
from tests.conftest import make_parallel_sentences_repo


def E(n: int) -> str:  # the twelve English anchors E01..E12
    return f"This is English sentence number {n:02d}."


def X(n: int) -> str:  # English sides that only the zh-cn / zh_cn / zh-tw files hold
    return f"An English line of a Chinese variant file, {n}."


def _pair(english: str, lang: str) -> tuple[str, str]:
    return english, f"[{lang}] {english[:-1]} (translated)."


def make_legacy_repo(root, files: dict[str, list]):
    """A local copy of the legacy repository: `files` maps a path to its lines (pairs or raw strings)."""
    for relpath, lines in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join((line if isinstance(line, str) else "\t".join(line)) + "\n" for line in lines)
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    return root


def table5_repo(root):
    span = lambda lang, a, b: [_pair(E(n), lang) for n in range(a, b + 1)]  # noqa: E731
    return make_legacy_repo(root, {
        # Europarl is multi-parallel: de, es, nl translate the same E01-E04
        "Europarl/Europarl-en-de-train.tsv.gz": span("de", 1, 4) + [("Short.", "Kurz."), "a line with no tab"],
        "Europarl/Europarl-en-es-train.tsv.gz": span("es", 1, 4) + ["one\ttwo\tthree fields"],
        "Europarl/Europarl-en-nl-train.tsv.gz": span("nl", 1, 4),
        "News-Commentary/News-Commentary-en-es-train.tsv.gz": span("es", 5, 7),
        "News-Commentary/News-Commentary-en-nl-train.tsv.gz": span("nl", 5, 7),
        "OpenSubtitles/OpenSubtitles-en-nl-train.tsv.gz": span("nl", 8, 9),
        "OpenSubtitles/OpenSubtitles-en-zh_cn-train.tsv.gz": [_pair(X(1), "zh")],
        "Talks/Talks-en-de-train.tsv.gz": span("de", 5, 12),
        "Talks/Talks-en-de-dev.tsv.gz": [_pair("A development sentence, never read.", "de")],
        "Talks/Talks-en-es-train.tsv.gz": span("es", 8, 12),
        "Talks/Talks-en-nl-train.tsv.gz": span("nl", 10, 12),
        "Talks/Talks-en-zh-cn-train.tsv.gz": [_pair(X(2), "zh"), _pair(X(3), "zh")],
        "Talks/Talks-en-zh-tw-train.tsv.gz": [_pair(X(4), "zh")],
        "Tatoeba/Tatoeba-en-zh-train.tsv.gz": span("zh", 1, 6),
        "Tatoeba/Tatoeba-eng-vie-train.tsv.gz": [_pair(E(1), "vi")],  # three-letter names: never read
        "WikiMatrix/WikiMatrix-en-zh-train.tsv.gz": span("zh", 7, 12),
    })  # no GlobalVoices, JW300 folders: the release skips a missing file


LANGS = ("de", "nl", "en", "es", "zh")  # the project's order (the fair draft's turn order)


def _run(repo, seed=42, **kw):
    cfg = Stage1DataConfig(source="hub-legacy", legacy_repo=str(repo), languages=kw.pop("languages", LANGS),
                           cap_per_language=3, **kw)
    table, report = prepare_stage1(cfg, seed=seed, sample_dir=None)
    return table, report["per_language"], report


def _kept(counts):
    return {lang: c["kept"] for lang, c in counts.items()}


def test_table5_under_release_dedup(tmp_path):
    # Visit order: corpora as listed (Europarl, News-Commentary, OpenSubtitles, Talks, Tatoeba, WikiMatrix
    # here), languages by code (de es nl zh) within each. English side first seen wins:
    #   Europarl: de takes E01-E04; es, nl: 4 duplicates each.
    #   News-Commentary: es takes E05-E07; nl: 3 duplicates.
    #   OpenSubtitles: nl takes E08-E09 (zh_cn is not read with chinese_subsets = zh).
    #   Talks: de takes E10-E12 (E05-E09 duplicates), es 5 and nl 3 duplicates.
    #   Tatoeba, WikiMatrix: zh's E01-E12 are all taken: 12 duplicates.
    # Cap 3 after dedup: de keeps E01-E03 (4 over the cap); es E05-E07; nl E08-E09; zh nothing.
    # English pairs: the first 3 of E01..E12 in that order: E01-E03 (also de's anchors).
    table, counts, report = _run(table5_repo(tmp_path / "ps"), dedup="release", chinese_subsets=("zh",))
    assert _kept(counts) == {"de": 3, "nl": 2, "en": 3, "es": 3, "zh": 0}
    assert {lang: c["duplicate_english"] for lang, c in counts.items()} == {"de": 5, "nl": 10, "en": 0, "es": 9,
                                                                           "zh": 12}
    assert {lang: c["over_cap"] for lang, c in counts.items()} == {"de": 4, "nl": 0, "en": 9, "es": 0, "zh": 0}
    assert (counts["de"]["input"], counts["de"]["malformed"], counts["de"]["too_short"]) == (14, 1, 1)
    assert (counts["es"]["input"], counts["es"]["malformed"]) == (13, 1)
    assert counts["en"]["input"] == 12  # the English texts taken, in visit order
    by_lang = {}
    for lang, english, text in zip(*(table.column(c).to_pylist() for c in ("lang", "english", "text"))):
        by_lang.setdefault(lang, set()).add(english)
        assert (english == text) == (lang == "en")
    assert by_lang == {"de": {E(1), E(2), E(3)}, "es": {E(5), E(6), E(7)}, "nl": {E(8), E(9)},
                       "en": {E(1), E(2), E(3)}}
    assert report["legacy_files"]["zh"] == ["Tatoeba/Tatoeba-en-zh-train.tsv.gz",
                                            "WikiMatrix/WikiMatrix-en-zh-train.tsv.gz"]


def test_table5_under_fair_dedup(tmp_path):
    # Every language's candidates hold the same twelve anchors E01-E12 (en: the English sides of all
    # files), so the seeded draft splits them by turns whatever the seed: de nl en es zh take one each
    # in rounds 1 and 2 (10 anchors), de and nl take the last two in round 3 and reach the cap.
    repo = table5_repo(tmp_path / "ps")
    for seed in (0, 1, 42):
        table, counts, _ = _run(repo, seed=seed, dedup="fair", chinese_subsets=("zh",))
        assert _kept(counts) == {"de": 3, "nl": 3, "en": 2, "es": 2, "zh": 2}
        english = table.column("english").to_pylist()
        assert sorted(english) == [E(n) for n in range(1, 13)]  # each anchor used once


def test_chinese_subsets_pick_the_variant_files(tmp_path):
    # With zh-cn and zh_cn read (per corpus, the first of the list it has: zh-tw is never read),
    # zh takes X1 (OpenSubtitles zh_cn) and X2, X3 (Talks zh-cn) first-come: 0 -> 3 pairs.
    table, counts, report = _run(table5_repo(tmp_path / "ps"), dedup="release")
    assert _kept(counts) == {"de": 3, "nl": 2, "en": 3, "es": 3, "zh": 3}
    zh = {e for lang, e in zip(table.column("lang").to_pylist(), table.column("english").to_pylist()) if lang == "zh"}
    assert zh == {X(1), X(2), X(3)}
    assert report["legacy_files"]["zh"][:2] == ["OpenSubtitles/OpenSubtitles-en-zh_cn-train.tsv.gz",
                                                "Talks/Talks-en-zh-cn-train.tsv.gz"]


def test_release_rows_come_out_as_the_release_saves_them(tmp_path):
    """Languages by code, English last, each in visit order, then datasets' own shuffle(seed)."""
    datasets = pytest.importorskip("datasets")
    table, _, _ = _run(table5_repo(tmp_path / "ps"), dedup="release")
    ordered = ([("de", E(n)) for n in (1, 2, 3)] + [("es", E(n)) for n in (5, 6, 7)] + [("nl", E(8)), ("nl", E(9))]
               + [("zh", X(n)) for n in (1, 2, 3)] + [("en", E(n)) for n in (1, 2, 3)])
    shuffled = datasets.Dataset.from_list([{"lang": lang, "english": e} for lang, e in ordered]).shuffle(seed=42)
    assert list(zip(table.column("lang").to_pylist(), table.column("english").to_pylist())) == \
        [(r["lang"], r["english"]) for r in shuffled]
    assert table.column("pair_id").to_pylist() == list(range(14))


def test_release_parsing_and_ratio_boundary(tmp_path):
    repo = make_legacy_repo(tmp_path / "ps", {"Europarl/Europarl-en-de-train.tsv.gz": [
        "  Leading spaces are stripped.\tFührende Leerzeichen weg.  ",  # the whole line is stripped
        "",  # an empty line: one field
        "Only the English side here.\t",  # stripped to one field: malformed, as in the release
        ("x" * 30, "y" * 10),  # ratio exactly 3: the release keeps it (<= 3), the paper drops it (below 3)
    ]})
    table, counts, _ = _run(repo, languages=("de",), dedup="release", max_length_ratio_inclusive=True)
    assert (counts["de"]["input"], counts["de"]["malformed"], counts["de"]["kept"]) == (4, 2, 2)
    assert set(table.column("english").to_pylist()) == {"Leading spaces are stripped.", "x" * 30}
    _, counts, _ = _run(repo, languages=("de",), dedup="release")
    assert (counts["de"]["length_ratio"], counts["de"]["kept"]) == (1, 1)


def test_release_dedup_on_the_hub_data_sets_follows_their_order(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # datasets reads HF_DATASETS_CACHE once, at import; its cache keys a local folder by its name,
    # so another test's folder of the same name would be served from the cache
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    shared = "We have a shared sentence here."
    talks = make_parallel_sentences_repo(tmp_path / "release-order-talks", {
        "en-es": [(shared, "Tenemos una frase compartida.")]})
    europarl = make_parallel_sentences_repo(tmp_path / "release-order-europarl", {
        "en-de": [(shared, "Wir haben einen gemeinsamen Satz."), ("Another sentence for German.", "Ein Satz.....")]})
    cfg = Stage1DataConfig(source="hub", languages=("de", "es"), hub_datasets=(str(talks), str(europarl)),
                           dedup="release")
    table, report = prepare_stage1(cfg, seed=0, sample_dir=None)
    # talks is visited first, so es takes the shared anchor although de comes first by code
    assert Counter(table.column("lang").to_pylist()) == {"de": 1, "es": 1}
    assert report["per_language"]["de"]["duplicate_english"] == 1


def test_sample_under_release_dedup_gives_every_anchor_to_the_first_language(repo_root):
    # The sample is fully parallel (637 English sentences in every language): first come, the first
    # language by code takes every anchor it keeps, the next one gets nothing.
    cfg = Stage1DataConfig(source="sample", languages=("ar", "de", "en"), dedup="release")
    _, report = prepare_stage1(cfg, seed=0, sample_dir=repo_root / "data" / "sample")
    assert {lang: (c["kept"], c["duplicate_english"]) for lang, c in report["per_language"].items()} == \
        {"ar": (637, 0), "de": (0, 637), "en": (637, 0)}
    # ja drops 65 pairs to the length filters (34 on the ratio): zh keeps only those anchors' pairs
    # that pass for zh (4), the rest of zh's survivors are duplicates
    cfg = Stage1DataConfig(source="sample", languages=("en", "ja", "zh"), dedup="release")
    table, report = prepare_stage1(cfg, seed=0, sample_dir=repo_root / "data" / "sample")
    counts = report["per_language"]
    assert (counts["ja"]["kept"], counts["zh"]["kept"], counts["en"]["kept"]) == (572, 4, 576)
    anchors = {lang: {e for code, e in zip(table.column("lang").to_pylist(), table.column("english").to_pylist())
                      if code == lang} for lang in ("en", "ja", "zh")}
    assert not anchors["ja"] & anchors["zh"] and anchors["en"] == anchors["ja"] | anchors["zh"]


# ---- bad input --------------------------------------------------------------------------------

def test_legacy_repo_without_files(tmp_path):
    repo = make_legacy_repo(tmp_path / "ps", {
        "Europarl/Europarl-en-sv-train.tsv.gz": [("Hello there, Sweden.", "Hej där, Sverige.")]})
    with pytest.raises(MimoError, match=r"stage1\.legacy_repo .*ps: no file for languages de fr \(expected e\.g\. "
                                        r"Europarl/Europarl-en-xx-train\.tsv\.gz"):
        _run(repo, languages=("de", "fr"))


def test_legacy_file_not_gzip_or_bad_utf8(tmp_path):
    path = tmp_path / "ps" / "Europarl" / "Europarl-en-de-train.tsv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(MimoError, match=r"Europarl-en-de-train\.tsv\.gz: cannot read as gzip"):
        _run(tmp_path / "ps", languages=("de",))
    with gzip.open(path, "wb") as fh:
        fh.write(b"Good day to you all.\tGuten Tag euch allen.\nBad bytes.\t\xff\xfe kaputt\n")
    with pytest.raises(MimoError, match=r"Europarl-en-de-train\.tsv\.gz: invalid UTF-8"):
        _run(tmp_path / "ps", languages=("de",))


def test_settings_are_checked(tmp_path):
    with pytest.raises(MimoError, match="stage1.dedup must be fair or release, not 'first'"):
        Stage1DataConfig(dedup="first")
    with pytest.raises(MimoError, match="stage1.source must be hub, hub-legacy, local or sample"):
        Stage1DataConfig(source="legacy")
    with pytest.raises(MimoError, match="stage1.chinese_subsets must name at least one"):
        Stage1DataConfig(chinese_subsets=())
    en = tmp_path / "en.tsv"
    en.write_text("english\tnon_english\nAn English sentence.\tAn English sentence.\n", encoding="utf-8")
    cfg = Stage1DataConfig(source="local", languages=("en",), local_files=(f"en:{en}",), dedup="release")
    with pytest.raises(MimoError, match="en: files do not apply with stage1.dedup=release"):
        prepare_stage1(cfg, seed=0, sample_dir=None)


def test_the_hub_path_lists_once_and_fetches_the_files_it_needs(tmp_path, monkeypatch):
    """A hub id (not a folder): one listing of the repository, then one download per file read."""
    import huggingface_hub

    local = table5_repo(tmp_path / "copy")
    calls = []

    def list_repo_files(self, repo_id, repo_type=None, revision=None):
        calls.append(("list", repo_id, repo_type, revision))
        return sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())

    def hf_hub_download(repo_id, filename, repo_type=None, revision=None):
        calls.append(("get", filename, repo_type, revision))
        return str(local / filename)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    _, counts, _ = _run("sentence-transformers/parallel-sentences", legacy_revision="abc123", dedup="release",
                        chinese_subsets=("zh",))
    assert _kept(counts) == {"de": 3, "nl": 2, "en": 3, "es": 3, "zh": 0}
    assert calls[0] == ("list", "sentence-transformers/parallel-sentences", "dataset", "abc123")
    # files read: de 2 (Europarl, Talks), es 3, nl 4, zh 2 (Tatoeba, WikiMatrix en-zh)
    assert len(calls) == 1 + 11 and all(c[2:] == ("dataset", "abc123") for c in calls)
