"""Stage-1 data as the authors' release builds it (`scripts/prepare_data/prepare_stage1_parallel.py`).

Two pieces, each a setting of `Stage1DataConfig`:

- `source = "hub-legacy"`: the legacy single repository `sentence-transformers/parallel-sentences`
  (or a local folder laid out like it), one gzipped TSV per corpus and language pair,
  `{Corpus}/{Corpus}-en-{xx}-train.tsv.gz`, lines `english<TAB>non_english`. Lines are read as the
  release reads them: the whole line stripped, split on tabs, kept only with exactly two fields
  (the others are counted as `malformed`). Chinese is read from the files named in
  `chinese_subsets` (the release: `zh` only, so TED's `zh-cn` and OpenSubtitles' `zh_cn` are
  left out; Table 5's 35,407 Chinese pairs).
- `dedup = "release"`: first come, first served. Corpora are visited in order and, within a
  corpus, languages in the order of their codes (the release's `TARGET_LANGUAGES`); a pair whose
  English side was already seen is dropped, and only then is each language cut to its first
  `cap` pairs, so a language's pairs past the cap still keep their English sides from later
  languages. The English pairs (t_en, t_en) are the first `cap` English texts in the same visit
  order (they share their anchors with the other languages' pairs). The rows come out as the
  release saves them: languages in that order, English last, shuffled with
  `numpy.random.default_rng(seed).permutation` (what `datasets.Dataset.shuffle(seed=seed)` does).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from pipeline.errors import MimoError
from pipeline.readers import fetch_dataset_file

LEGACY_REPO = "sentence-transformers/parallel-sentences"
# The release's DATASET_NAMES, in its order (also the order of first-come deduplication).
LEGACY_CORPORA = ("Europarl", "GlobalVoices", "JW300", "News-Commentary", "OpenSubtitles", "Talks", "Tatoeba",
                  "WikiMatrix")


def legacy_file(corpus: str, subset: str) -> str:
    """Path of one language pair's training file inside the legacy repository."""
    return f"{corpus}/{corpus}-en-{subset}-train.tsv.gz"


def _repo_files(repo: str, revision: str) -> set[str]:
    """Every file path of the legacy repository (a hub data set, or a local folder laid out like it)."""
    if Path(repo).is_dir():
        root = Path(repo)
        return {p.relative_to(root).as_posix() for p in root.rglob("*.tsv.gz")}
    from huggingface_hub import HfApi  # network, only for hub sources

    try:
        return set(HfApi().list_repo_files(repo, repo_type="dataset", revision=revision))
    except Exception as err:  # the hub client raises many types; the message (on one line) is what matters
        raise MimoError(f"stage1.legacy_repo {repo}: cannot list its files "
                        f"({type(err).__name__}: {' '.join(str(err).split())})") from None


def read_legacy_tsv_gz(path: Path) -> tuple[dict[str, list[str]], int]:
    """(columns english/non_english, malformed line count) of one legacy file, read as the release does.

    Text mode with universal newlines (what `gzip.open(path, "rt")` gives the release), each line
    stripped and split on tabs; a line without exactly two fields is counted, not kept.
    """
    english, other, malformed, number = [], [], 0, 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                fields = line.strip().split("\t")
                if len(fields) != 2:
                    malformed += 1
                    continue
                english.append(fields[0])
                other.append(fields[1])
    except UnicodeDecodeError as err:
        raise MimoError(f"{path}: invalid UTF-8 after line {number} (byte {err.start} of a read block)") from None
    except (OSError, EOFError) as err:  # not gzip, or truncated
        raise MimoError(f"{path}: cannot read as gzip ({type(err).__name__}: {err})") from None
    return {"english": english, "non_english": other}, malformed


def legacy_pairs(repo: str, revision: str, corpora, languages, chinese_subsets):
    """The legacy files for `languages`, corpus by corpus.

    Returns ({lang: [(source, columns, corpus rank)]}, {lang: malformed lines}, {lang: [files read]}).
    A corpus need not cover every language (the release skips a missing file); per corpus, Chinese
    is read from the first of `chinese_subsets` that the corpus has. No file at all is an error.
    """
    files = _repo_files(repo, revision)
    raw: dict[str, list] = {lang: [] for lang in languages}
    malformed = dict.fromkeys(languages, 0)
    read: dict[str, list[str]] = {lang: [] for lang in languages}
    for rank, corpus in enumerate(corpora):
        for lang in languages:
            names = chinese_subsets if lang == "zh" else (lang,)
            relpath = next((legacy_file(corpus, s) for s in names if legacy_file(corpus, s) in files), None)
            if relpath is None:
                continue
            columns, bad = read_legacy_tsv_gz(fetch_dataset_file(repo, relpath, revision))
            raw[lang].append((f"{repo}:{relpath}", columns, rank))
            malformed[lang] += bad
            read[lang].append(relpath)
    if not any(read.values()):
        wanted = ", ".join(legacy_file(c, "xx") for c in corpora[:2])
        raise MimoError(f"stage1.legacy_repo {repo}: no file for languages {' '.join(languages)} "
                        f"(expected e.g. {wanted}, ...)")
    return raw, malformed, read


def first_come(english: dict[str, list[bytes]], blocks, cap: int, dedup: bool):
    """The release's selection over filtered candidates.

    `english[lang]` holds the dedup keys of `lang`'s candidates; `blocks` lists (lang, start, stop)
    index ranges in visit order (corpus by corpus, languages by code within a corpus). Returns
    ({lang: chosen candidate indices, in visit order}, {lang: duplicates}, {lang: over cap},
    [(lang, index)] of every English side taken, in visit order: the English pairs' pool).
    """
    seen: set[bytes] = set()
    taken: dict[str, list[int]] = {lang: [] for lang in english}
    duplicates = dict.fromkeys(english, 0)
    english_order: list[tuple[str, int]] = []
    for lang, start, stop in blocks:
        keys = english[lang]
        for idx in range(start, stop):
            if dedup:
                if keys[idx] in seen:
                    duplicates[lang] += 1
                    continue
                seen.add(keys[idx])
            taken[lang].append(idx)
            english_order.append((lang, idx))
    chosen = {lang: idx[:cap] for lang, idx in taken.items()}
    over_cap = {lang: len(taken[lang]) - len(chosen[lang]) for lang in taken}
    return chosen, duplicates, over_cap, english_order


def release_rows(candidates, blocks, languages, cap: int, dedup: bool, key, counts):
    """Rows (lang, text, english, source) in the order the release saves them, before its shuffle.

    `candidates[lang]` has `.english`, `.other`, `.source` (filtered, in source order); `blocks`
    lists (corpus rank, lang, start, stop); `counts[lang]` gets duplicate_english, over_cap, kept.
    """
    non_english = sorted(lang for lang in languages if lang != "en")  # the release's TARGET_LANGUAGES order
    rank = {lang: i for i, lang in enumerate(non_english)}
    visit = [(lang, start, stop) for _, lang, start, stop in sorted(blocks, key=lambda b: (b[0], rank[b[1]]))]
    keys = {lang: [key(e) for e in candidates[lang].english] for lang in non_english}
    chosen, duplicates, over_cap, english_order = first_come(keys, visit, cap, dedup)
    rows = []
    for lang in non_english:
        c = candidates[lang]
        counts[lang].update(duplicate_english=duplicates[lang], over_cap=over_cap[lang], kept=len(chosen[lang]))
        rows += [(lang, c.other[i], c.english[i], c.source[i]) for i in chosen[lang]]
    if "en" in languages:  # (t_en, t_en) from the first `cap` English texts taken, whatever language took them
        english = [(candidates[lang].english[i], candidates[lang].source[i]) for lang, i in english_order]
        counts["en"].update(input=len(english), over_cap=max(0, len(english) - cap), kept=min(cap, len(english)))
        rows += [("en", e, e, source) for e, source in english[:cap]]
    return rows
