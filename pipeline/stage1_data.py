"""Stage 1 preparation: parallel pairs (t_en, t_XX) with the paper's filters (App. B.1).

Longer than ~300 lines for a reason: the sources, the filters and the draft share one config and are read
in the order they run; the release's selection and the streaming path live apart (stage1_release.py,
stage1_stream.py).

Sources: the sentence-transformers `parallel-sentences-*` data sets on the hub (the eight OPUS
corpora the paper names), the legacy single repository `sentence-transformers/parallel-sentences`
that the authors' release reads (`source = "hub-legacy"`, pipeline/stage1_release.py), local
files, or the embedded sample. Filters, each configurable and each counted per language: 10-512
characters on both sides, longer/shorter length ratio below 3, English-side deduplication across
languages, and a cap per language.

Deduplication (`dedup = "fair"`) is a draft: languages take turns, each drawing its next pair in
a seeded random order and skipping pairs whose English side another language (or itself) already
took, until the cap or its candidates run out. Every English anchor is used once, and languages share
anchors fairly (a fully parallel corpus splits evenly) instead of the first language taking all.
English itself is one of the 14 languages (Table 5): its pairs are (t_en, t_en), drawn from the
English sides of every source. `dedup = "release"` selects as the authors' release does instead
(first come over corpora then languages, English pairs from the first English texts; see
pipeline/stage1_release.py).
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import MimoError
from pipeline.languages import LANGUAGES, check_languages
from pipeline.readers import read_aligned_text, read_columns
from pipeline.sample import load_sample, sample_parallel_sentences
from pipeline.stage1_release import LEGACY_CORPORA, LEGACY_REPO, legacy_pairs, release_rows
from pipeline.worklist import text_id

OPUS_CORPORA = ("europarl", "global-voices", "jw300", "news-commentary", "opensubtitles", "talks",
                "tatoeba", "wikimatrix")

# Hub subsets are named after the language pair; a few of these data sets spell Chinese differently
# (talks has only en-zh-cn and en-zh-tw): the Chinese names are a setting, stage1.chinese_subsets.
HUB_SUBSET_NAMES = {lang: (f"en-{lang}",) for lang in LANGUAGES if lang not in ("en", "zh")}
HUB_SUBSET_NAMES["pt"] = ("en-pt", "en-pt-br")

STAGE1_SCHEMA = pa.schema(
    [
        ("pair_id", pa.int64()),  # position in training order
        ("lang", pa.string()),  # language of `text`
        ("text", pa.string()),  # t_XX: what the student encodes
        ("english", pa.string()),  # t_en: what the teacher encoded
        ("teacher_id", pa.string()),  # worklist text_id of t_en
        ("source", pa.string()),  # data set, file or "sample" the pair came from
    ]
)

FILTERS = ("empty", "too_short", "too_long", "length_ratio", "duplicate_english", "over_cap")


@dataclass(frozen=True)
class Stage1DataConfig:
    source: str = "hub"  # "hub", "hub-legacy" (the release's TSV repository), "local" or "sample"
    hub_datasets: tuple[str, ...] = tuple(f"sentence-transformers/parallel-sentences-{c}" for c in OPUS_CORPORA)
    hub_split: str = "train"
    # source = "hub-legacy": a hub data set id or a local folder laid out like it, its revision, and the
    # corpus folders in the order the release visits them
    legacy_repo: str = LEGACY_REPO
    legacy_revision: str = "main"
    legacy_corpora: tuple[str, ...] = LEGACY_CORPORA
    # Chinese subsets read (per corpus, the first it has): `en-{name}` configs of the hub data sets,
    # `{Corpus}-en-{name}-train.tsv.gz` files of the legacy repository. The release reads "zh" only.
    chinese_subsets: tuple[str, ...] = ("zh", "zh-cn", "zh_cn")
    # "LANG:PATH" (a .tsv/.jsonl/.parquet with columns english, non_english) or
    # "LANG:EN_PATH+XX_PATH" (an OPUS Moses pair: one sentence a line, aligned by line)
    local_files: tuple[str, ...] = ()
    languages: tuple[str, ...] = LANGUAGES
    min_chars: int = 10
    max_chars: int = 512
    max_length_ratio: float = 3.0  # longer/shorter, in characters; a pair passes when below it
    max_length_ratio_inclusive: bool = False  # the release also keeps a ratio equal to it (`<= 3`)
    dedup_english: bool = True
    # how pairs are chosen: "fair" (a seeded draft, languages taking turns) or "release" (first come
    # over corpora then languages, cap after dedup, English pairs from the first English texts)
    dedup: str = "fair"
    cap_per_language: int = 500_000
    teacher_max_length: int = 256  # Table 6: teacher max length in Stage 1

    def __post_init__(self):
        if self.source not in ("hub", "hub-legacy", "local", "sample"):
            raise MimoError(f"stage1.source must be hub, hub-legacy, local or sample, not {self.source!r}")
        if self.dedup not in ("fair", "release"):
            raise MimoError(f"stage1.dedup must be fair or release, not {self.dedup!r}")
        if not self.chinese_subsets or not all(s.strip() for s in self.chinese_subsets):
            raise MimoError("stage1.chinese_subsets must name at least one subset (e.g. zh)")
        if self.source == "hub-legacy" and not self.legacy_corpora:
            raise MimoError("stage1.legacy_corpora must name at least one corpus folder")
        check_languages(self.languages, "stage1.languages")
        if not 0 <= self.min_chars <= self.max_chars:
            raise MimoError("stage1.min_chars must be between 0 and stage1.max_chars")
        if self.max_length_ratio <= 1.0:
            raise MimoError("stage1.max_length_ratio must be above 1")
        if self.cap_per_language < 1:
            raise MimoError("stage1.cap_per_language must be at least 1")


@dataclass
class Candidates:
    """Filtered pairs of one language, in source order."""

    english: list[str]
    other: list[str]
    source: list[str]


def _hub_pairs(cfg: Stage1DataConfig, lang: str) -> list[tuple[str, dict[str, list]]]:
    import datasets  # heavy import, only for hub sources

    out = []
    for name in cfg.hub_datasets:
        try:
            subsets = set(datasets.get_dataset_config_names(name))
        except Exception as err:  # the hub client raises many types; the message is what matters
            raise MimoError(f"stage1 hub data set {name}: cannot list its subsets ({type(err).__name__}: {err})") from None
        names = tuple(f"en-{s}" for s in cfg.chinese_subsets) if lang == "zh" else HUB_SUBSET_NAMES[lang]
        subset = next((s for s in names if s in subsets), None)
        if subset is None:
            continue  # not every OPUS corpus covers every language
        try:
            ds = datasets.load_dataset(name, subset, split=cfg.hub_split)
        except Exception as err:
            raise MimoError(f"stage1 hub data set {name} ({subset}): cannot load ({type(err).__name__}: {err})") from None
        missing = [c for c in ("english", "non_english") if c not in ds.column_names]
        if missing:
            raise MimoError(f"stage1 hub data set {name} ({subset}): missing column(s) {', '.join(missing)} "
                            f"(found: {', '.join(ds.column_names)})")
        out.append((f"{name}:{subset}", {"english": ds["english"], "non_english": ds["non_english"]}))
    return out


def _local_pairs(cfg: Stage1DataConfig) -> dict[str, list[tuple[str, dict[str, list]]]]:
    by_lang: dict[str, list] = {}
    for entry in cfg.local_files:
        lang, sep, spec = entry.partition(":")
        if not sep or not spec:
            raise MimoError(f"stage1.local_files entry {entry!r}: expected LANG:PATH or LANG:EN_PATH+XX_PATH")
        check_languages([lang], f"stage1.local_files entry {entry!r}")
        if "+" in spec:
            en_path, xx_path = spec.split("+", 1)
            columns = read_aligned_text(en_path, xx_path)
        else:
            columns = read_columns(spec, ("english", "non_english"), header=True)
            for row, (e, x) in enumerate(zip(columns["english"], columns["non_english"])):
                if e is None or x is None:
                    raise MimoError(f"{spec}: row {row}: missing text")
        by_lang.setdefault(lang, []).append((spec, columns))
    return by_lang


def _filter(cfg: Stage1DataConfig, english: list[str], other: list[str], source: str,
            counts: dict[str, int], out: Candidates) -> None:
    """Apply the per-pair filters; count each dropped pair under the first filter it fails."""
    lo, hi, ratio = cfg.min_chars, cfg.max_chars, cfg.max_length_ratio
    beyond = operator.gt if cfg.max_length_ratio_inclusive else operator.ge  # the paper: kept only *below* the ratio
    for e, x in zip(english, other):
        e, x = e.strip(), x.strip()
        le, lx = len(e), len(x)
        if le == 0 or lx == 0:
            counts["empty"] += 1
        elif le < lo or lx < lo:
            counts["too_short"] += 1
        elif le > hi or lx > hi:
            counts["too_long"] += 1
        elif beyond(max(le, lx) / min(le, lx), ratio):
            counts["length_ratio"] += 1
        else:
            out.english.append(e)
            out.other.append(x)
            out.source.append(source)


def _english_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def draft(candidates: dict[str, Candidates | np.ndarray], cap: int, dedup: bool,
          seed: int) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Pick up to `cap` pairs per language; with `dedup`, every English side is used at most once.

    `candidates`: per language, its candidates or the 64-bit keys of their English sides
    (`_english_key`, as the streamed path keeps them). Returns the chosen candidate indices per
    language and the count of candidates skipped as duplicates. Languages draw in turn (fixed
    order), each in its own seeded random order.
    """
    keys = {lang: c if isinstance(c, np.ndarray) else np.array(
        [int.from_bytes(_english_key(t), "little") for t in c.english], dtype=np.uint64) for lang, c in candidates.items()}
    rng = np.random.default_rng(seed)
    order = {lang: rng.permutation(len(k)) for lang, k in keys.items()}
    pos = dict.fromkeys(keys, 0)
    chosen: dict[str, list[int]] = {lang: [] for lang in keys}
    duplicates = dict.fromkeys(keys, 0)
    taken: set[int] = set()
    active = [lang for lang in keys if len(order[lang])]
    while active:
        still = []
        for lang in active:
            perm, lang_keys = order[lang], keys[lang]
            while pos[lang] < len(perm):
                idx = int(perm[pos[lang]])
                pos[lang] += 1
                if dedup:
                    key = int(lang_keys[idx])
                    if key in taken:
                        duplicates[lang] += 1
                        continue
                    taken.add(key)
                chosen[lang].append(idx)
                break
            if len(chosen[lang]) < cap and pos[lang] < len(perm):
                still.append(lang)
        active = still
    return chosen, duplicates


def _corpus_ranks(cfg: Stage1DataConfig, raw) -> dict[str, int]:
    """Each source's corpus position, the order `dedup = "release"` visits sources in."""
    if cfg.source == "hub":
        return {src: cfg.hub_datasets.index(src.rsplit(":", 1)[0]) for entries in raw.values() for src, _ in entries}
    if cfg.source in ("local", "sample"):
        specs = ["sample"] * (cfg.source == "sample") + [entry.partition(":")[2] for entry in cfg.local_files]
        return {src: specs.index(src) for entries in raw.values() for src, _ in entries}
    return {}  # hub-legacy: given by its reader


def sample_pairs(cfg: Stage1DataConfig, sample_dir: str | Path) -> dict[str, list[tuple[str, dict[str, list]]]]:
    """source = "sample": the sample's training pairs, then `local_files` (more pairs, e.g. data/parallel/).

    Per language, the sample first and each file after it, in `local_files` order. With `dedup = "fair"`
    English pairs are explicit: the sample's English sentences and the English side of each file (an
    `en:` file adds its own); `dedup = "release"` takes them from the first English texts instead.
    """
    sample = load_sample(sample_dir, cfg.languages)
    raw = {lang: [("sample", sample_parallel_sentences(sample, lang))] for lang in cfg.languages if lang != "en"}
    fair_english = "en" in cfg.languages and cfg.dedup == "fair"
    if fair_english:
        raw["en"] = [("sample", sample_parallel_sentences(sample, "en"))]
    extra = _local_pairs(cfg)
    check_local_languages(extra, cfg)
    if "en" in extra and cfg.dedup == "release":
        raise MimoError("stage1.local_files: en: files do not apply with stage1.dedup=release "
                        "(its English pairs are the first English sides of the other languages' pairs)")
    for entry in cfg.local_files:  # in the order given
        lang, _, spec = entry.partition(":")
        columns = next(cols for src, cols in extra[lang] if src == spec)
        if lang == "en" or fair_english:
            english = {"english": columns["english"], "non_english": columns["english"]}
            raw.setdefault("en", []).append((spec, columns if lang == "en" else english))
        if lang != "en":
            raw[lang].append((spec, columns))
    return raw


def check_local_languages(named, cfg: Stage1DataConfig) -> None:
    """Refuse stage1.local_files entries for languages stage1.languages does not list."""
    unused = sorted(set(named) - set(cfg.languages))
    if unused:
        raise MimoError(f"stage1.local_files names language(s) {', '.join(unused)} not in stage1.languages")


def prepare_stage1(cfg: Stage1DataConfig, seed: int, sample_dir: str | Path,
                   stream: bool = True, echo=None) -> tuple[pa.Table, dict]:
    """Build the Stage-1 pair table (training order) and the per-language filter report.

    `dedup = "fair"` runs streamed (pipeline/stage1_stream.py: bounded memory at any corpus size)
    unless `stream` is False: the plain in-memory path below, which the streamed one equals. `echo`
    (streamed path) receives progress lines, at most one every PROGRESS_SECONDS.
    """
    if stream and cfg.dedup == "fair" and cfg.source != "hub-legacy":
        from pipeline.stage1_stream import prepare_stage1_streamed

        return prepare_stage1_streamed(cfg, seed, sample_dir, echo)
    raw: dict[str, list[tuple[str, dict[str, list]]]] = {}
    non_english = [lang for lang in cfg.languages if lang != "en"]
    extra: dict = {}  # hub-legacy: malformed lines per language and the files read
    if cfg.source == "sample":
        raw = sample_pairs(cfg, sample_dir)
    elif cfg.source == "local":
        raw = _local_pairs(cfg)
        check_local_languages(raw, cfg)
        if "en" in raw and cfg.dedup == "release":
            raise MimoError("stage1.local_files: en: files do not apply with stage1.dedup=release "
                            "(its English pairs are the first English sides of the other languages' pairs)")
    elif cfg.source == "hub-legacy":
        legacy, malformed, files = legacy_pairs(cfg.legacy_repo, cfg.legacy_revision, cfg.legacy_corpora,
                                                non_english, cfg.chinese_subsets)
        raw = {lang: [(src, cols) for src, cols, _ in entries] for lang, entries in legacy.items()}
        extra = {"ranks": {src: rank for entries in legacy.values() for src, _, rank in entries},
                 "malformed": malformed, "files": files}
    else:
        for lang in non_english:
            raw[lang] = _hub_pairs(cfg, lang)
    ranks = extra.get("ranks") or _corpus_ranks(cfg, raw)

    head = ("input", "malformed") if extra else ("input",)
    counts = {lang: dict.fromkeys(head + FILTERS, 0) for lang in cfg.languages}
    candidates = {lang: Candidates([], [], []) for lang in cfg.languages}
    blocks = []  # (corpus rank, lang, first candidate, end): the release's visit units
    for lang in non_english:
        for source, cols in raw.get(lang, []):
            start = len(candidates[lang].english)
            counts[lang]["input"] += len(cols["english"])
            _filter(cfg, cols["english"], cols["non_english"], source, counts[lang], candidates[lang])
            blocks.append((ranks.get(source, 0), lang, start, len(candidates[lang].english)))
        if extra:
            counts[lang]["malformed"] = extra["malformed"][lang]
            counts[lang]["input"] += extra["malformed"][lang]
    if cfg.dedup == "release":
        rows = release_rows(candidates, blocks, cfg.languages, cfg.cap_per_language, cfg.dedup_english,
                            _english_key, counts)
        perm_seed = seed  # the release's Dataset.shuffle(seed)
    else:
        rows = _draft_rows(cfg, raw, non_english, candidates, counts, seed)
        perm_seed = seed + 1
    if not rows:
        raise MimoError("stage 1: no pair survived the filters (see the per-language counts with stage1.* settings)")

    perm = np.random.default_rng(perm_seed).permutation(len(rows))
    rows = [rows[i] for i in perm]
    table = pa.table(
        {
            "pair_id": np.arange(len(rows), dtype=np.int64),
            "lang": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "english": [r[2] for r in rows],
            "teacher_id": [text_id("document", cfg.teacher_max_length, r[2]) for r in rows],
            "source": [r[3] for r in rows],
        },
        schema=STAGE1_SCHEMA,
    )
    report = {"per_language": counts}
    if extra:
        report["legacy_files"] = extra["files"]
    return table, report


def _draft_rows(cfg: Stage1DataConfig, raw, non_english, candidates, counts, seed) -> list[tuple]:
    """`dedup = "fair"`: English pairs from every source's English side, then the seeded draft."""
    if "en" in cfg.languages:
        # English pairs (t_en, t_en): explicit English sources, else the English side of every source.
        pools = raw.get("en") or [(src, {"english": c["english"], "non_english": c["english"]})
                                  for lang in non_english for src, c in raw.get(lang, [])]
        for source, cols in pools:
            counts["en"]["input"] += len(cols["english"])
            _filter(cfg, cols["english"], cols["english"], source, counts["en"], candidates["en"])

    chosen, duplicates = draft(candidates, cfg.cap_per_language, cfg.dedup_english, seed)
    rows = []
    for lang in cfg.languages:
        c = candidates[lang]
        counts[lang]["duplicate_english"] = duplicates[lang]
        counts[lang]["over_cap"] = len(c.english) - len(chosen[lang]) - duplicates[lang]
        counts[lang]["kept"] = len(chosen[lang])
        # source order within a language; shuffled by the caller
        rows += [(lang, c.other[idx], c.english[idx], c.source[idx]) for idx in sorted(chosen[lang])]
    return rows
