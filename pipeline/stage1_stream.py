"""Stage-1 preparation streamed: the same pairs and report as stage1_data.prepare_stage1 with
`dedup = "fair"`, at the paper's tens of millions of raw pairs in bounded memory.

Two passes over the sources. The first reads each source in batches (a hub subset's Parquet
files, read directly, not through `datasets`, which would copy each one into its cache and then
into Python lists), applies the App. B.1 filters with Arrow kernels and keeps, per candidate,
only its source, its row and a 64-bit key of its English side (16 bytes, against ~200 bytes of
text). The draft (stage1_data.draft) picks among the keys. The second pass reads the chosen rows'
texts. tests/test_paper_scale.py checks the bytes equal the in-memory path's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import MimoError
from pipeline.readers import fetch_dataset_file
from pipeline.stage1_data import (FILTERS, HUB_SUBSET_NAMES, STAGE1_SCHEMA, Stage1DataConfig, _english_key, _local_pairs,
                                  check_local_languages, draft, sample_pairs)
from pipeline.worklist import text_id


@dataclass
class Source:
    """One table of pairs (a hub subset's Parquet files, a local file, the sample), read in batches."""

    label: str
    batches: Callable[[], Iterator[pa.Table]]  # each call streams the source from its start


BATCH_ROWS = 65_536  # rows read at a time from a Parquet file: memory stays bounded at any corpus size
PROGRESS_SECONDS = 30.0  # at most one progress line this often: the sample's runs stay silent


class Progress:
    """Progress lines of a long pass, at most one every PROGRESS_SECONDS (and none for a short run)."""

    def __init__(self, echo):
        self.echo, self.start = echo, time.perf_counter()
        self.last = self.start

    def __call__(self, message: Callable[[], str]) -> None:
        now = time.perf_counter()
        if self.echo is not None and now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self.echo(f"  {message()} [{now - self.start:.0f} s]")


def _table_source(label: str, columns: dict[str, list]) -> Source:
    table = pa.table({"english": pa.array(columns["english"], pa.string()),
                      "non_english": pa.array(columns["non_english"], pa.string())})
    return Source(label, lambda: iter([table]))


def _parquet_source(label: str, paths: list[Path]) -> Source:
    def batches():
        for path in paths:
            try:
                reader = pq.ParquetFile(path)
            except (pa.ArrowInvalid, OSError) as err:
                raise MimoError(f"{path}: not a readable Parquet file ({err})") from None
            missing = [c for c in ("english", "non_english") if c not in reader.schema_arrow.names]
            if missing:
                raise MimoError(f"{label}: missing column(s) {', '.join(missing)} "
                                f"(found: {', '.join(reader.schema_arrow.names)})")
            for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=["english", "non_english"]):
                yield pa.Table.from_batches([batch])

    return Source(label, batches)


def _repo_files(name: str) -> list[str]:
    """Every file of a hub data set repository (or a local folder laid out like one), relative paths."""
    root = Path(name)
    if root.is_dir():
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))
    from huggingface_hub import HfApi  # network, only for hub sources

    try:
        return sorted(HfApi().list_repo_files(name, repo_type="dataset"))
    except Exception as err:  # the hub client raises many types; the message is what matters
        raise MimoError(f"stage1 hub data set {name}: cannot list its files ({type(err).__name__}: "
                        f"{' '.join(str(err).split())})") from None


def _hub_sources(cfg: Stage1DataConfig, lang: str, listings: dict[str, list[str]]) -> list[Source]:
    """The language's subset of each hub data set, as its `{subset}/{split}-*.parquet` files, streamed."""
    out = []
    for name in cfg.hub_datasets:
        if name not in listings:
            listings[name] = _repo_files(name)
        by_subset: dict[str, list[str]] = {}
        for rel in listings[name]:
            parts = rel.split("/")
            if len(parts) == 2 and parts[1].startswith(f"{cfg.hub_split}-") and parts[1].endswith(".parquet"):
                by_subset.setdefault(parts[0], []).append(rel)
        names = tuple(f"en-{s}" for s in cfg.chinese_subsets) if lang == "zh" else HUB_SUBSET_NAMES[lang]
        subset = next((s for s in names if s in by_subset), None)
        if subset is None:
            continue  # not every OPUS corpus covers every language
        paths = [fetch_dataset_file(name, rel) for rel in sorted(by_subset[subset])]
        out.append(_parquet_source(f"{name}:{subset}", paths))
    return out


def _local_sources(cfg: Stage1DataConfig) -> dict[str, list[Source]]:
    """The local files, read as the in-memory path reads them (header, missing-text checks)."""
    return {lang: [_table_source(spec, columns) for spec, columns in entries]
            for lang, entries in _local_pairs(cfg).items()}


def _filter_batch(cfg: Stage1DataConfig, english: pa.ChunkedArray, other: pa.ChunkedArray,
                  counts: dict[str, int]) -> np.ndarray:
    """The rows of a batch that pass the per-pair filters (each drop counted under the first filter it fails).

    Lengths are in characters (code points) after stripping surrounding whitespace, as in App. B.1.
    """
    le = pc.utf8_length(pc.utf8_trim_whitespace(english)).fill_null(0).to_numpy()
    lx = pc.utf8_length(pc.utf8_trim_whitespace(other)).fill_null(0).to_numpy()
    lo, hi = cfg.min_chars, cfg.max_chars
    empty = (le == 0) | (lx == 0)
    short = ~empty & ((le < lo) | (lx < lo))
    long_ = ~empty & ~short & ((le > hi) | (lx > hi))
    rest = ~(empty | short | long_)
    quotient = np.maximum(le, lx) / np.maximum(np.minimum(le, lx), 1)
    # the paper keeps a pair only *below* the ratio; the release also keeps one equal to it
    ratio = rest & ((quotient > cfg.max_length_ratio) if cfg.max_length_ratio_inclusive
                    else (quotient >= cfg.max_length_ratio))
    for name, mask in (("empty", empty), ("too_short", short), ("too_long", long_), ("length_ratio", ratio)):
        counts[name] += int(mask.sum())
    return rest & ~ratio


def english_keys(english: pa.Array) -> np.ndarray:
    """A 64-bit key per (stripped) English text, for deduplication: blake2b of its UTF-8 bytes."""
    return np.array([int.from_bytes(_english_key(t), "little") for t in english.to_pylist()], dtype=np.uint64)


@dataclass
class Pool:
    """The candidates of one language: where each one is (source, row in it) and its English key."""

    source: list[np.ndarray]
    row: list[np.ndarray]
    key: list[np.ndarray]

    def add(self, source: int, rows: np.ndarray, keys: np.ndarray) -> None:
        self.source.append(np.full(len(rows), source, dtype=np.int32))
        self.row.append(rows.astype(np.int32))  # a row within one source (< 2**31)
        self.key.append(keys)

    def done(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The candidates as three arrays; the pool lets go of its pieces (at the paper's scale the
        pools hold ~120M candidates, ~2 GB: never twice)."""
        out = []
        for name, dtype in (("source", np.int32), ("row", np.int32), ("key", np.uint64)):
            parts = getattr(self, name)
            setattr(self, name, [])
            out.append(np.concatenate(parts) if parts else np.empty(0, dtype))
            del parts
        return out[0], out[1], out[2]


def _collect(cfg: Stage1DataConfig, sources: list[Source], picks: dict[str, tuple[np.ndarray, np.ndarray]],
             english_only: set[str], progress=lambda message: None) -> dict[str, pa.Table]:
    """Second pass: the chosen rows' stripped texts, per language in candidate order (sources read again)."""
    wanted: dict[int, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for lang, (src, row) in picks.items():
        for s in np.unique(src):
            sel = np.nonzero(src == s)[0]
            wanted.setdefault(int(s), []).append((lang, sel, row[sel]))
    parts: dict[str, list[tuple[np.ndarray, pa.Table]]] = {lang: [] for lang in picks}
    for s, requests in sorted(wanted.items()):
        start = 0
        for batch in sources[s].batches():
            n = batch.num_rows
            for lang, sel, rows in requests:
                inside = (rows >= start) & (rows < start + n)
                if inside.any():
                    taken = batch.take(pa.array(rows[inside] - start))
                    english = pc.utf8_trim_whitespace(taken.column("english"))
                    other = english if lang in english_only else pc.utf8_trim_whitespace(taken.column("non_english"))
                    parts[lang].append((sel[inside], pa.table({"english": english, "text": other,
                                                               "source": pa.array([sources[s].label] * len(taken))})))
            start += n
            progress(lambda: f"stage 1: texts of the chosen pairs: {sources[s].label}, row {start:,}")
    out = {}
    for lang in list(parts):
        pieces = parts.pop(lang)  # each language's pieces let go once it is put in order: never all twice
        if not pieces:
            continue
        order = np.argsort(np.concatenate([p for p, _ in pieces]), kind="stable")
        out[lang] = pa.concat_tables([t for _, t in pieces]).take(pa.array(order))
        del pieces
    return out


def prepare_stage1_streamed(cfg: Stage1DataConfig, seed: int, sample_dir: str | Path,
                            echo=None) -> tuple[pa.Table, dict]:
    """`prepare_stage1` for `dedup = "fair"`, streamed: the same table and report, in bounded memory.

    Two passes over the sources, so memory holds keys and positions, never the raw corpora:
    the first filters every pair (vectorized, batch by batch) and keeps, per candidate, its
    source, row and English key; the draft picks among the keys; the second pass reads the
    chosen rows' texts.
    """
    by_lang: dict[str, list[Source]] = {}
    non_english = [lang for lang in cfg.languages if lang != "en"]
    if cfg.source == "sample":
        by_lang = {lang: [_table_source(label, columns) for label, columns in entries]
                   for lang, entries in sample_pairs(cfg, sample_dir).items()}
    elif cfg.source == "local":
        by_lang = _local_sources(cfg)
        check_local_languages(by_lang, cfg)
    else:
        listings: dict[str, list[str]] = {}
        for lang in non_english:
            by_lang[lang] = _hub_sources(cfg, lang, listings)

    sources: list[Source] = []
    plan: list[tuple[str, int, bool]] = []  # (language, source index, English pairs from the English side)
    for lang in non_english:
        for src in by_lang.get(lang, []):
            sources.append(src)
            plan.append((lang, len(sources) - 1, False))
    if "en" in cfg.languages:
        # English pairs (t_en, t_en): explicit English sources, else the English side of every source.
        if by_lang.get("en"):
            for src in by_lang["en"]:
                sources.append(src)
                plan.append(("en", len(sources) - 1, True))
        else:
            plan += [("en", s, True) for lang, s, _ in list(plan)]

    counts = {lang: dict.fromkeys(("input",) + FILTERS, 0) for lang in cfg.languages}
    pools = {lang: Pool([], [], []) for lang in cfg.languages}
    progress, seen = Progress(echo), 0
    for lang, s, english_only in plan:
        start = 0
        for batch in sources[s].batches():
            english = batch.column("english")
            other = english if english_only else batch.column("non_english")
            counts[lang]["input"] += batch.num_rows
            keep = np.nonzero(_filter_batch(cfg, english, other, counts[lang]))[0]
            kept = pc.utf8_trim_whitespace(english.take(pa.array(keep))).combine_chunks()
            pools[lang].add(s, start + keep, english_keys(kept))
            start += batch.num_rows
            seen += batch.num_rows
            progress(lambda: f"stage 1: filtering {sources[s].label} ({lang}{', English side' if english_only else ''}): "
                             f"row {start:,}; {seen:,} rows read in all")

    located = {lang: pools.pop(lang).done() for lang in cfg.languages}
    progress.last = progress.start  # said whenever the phase has taken long: the draft and the second pass follow
    progress(lambda: f"stage 1: {seen:,} rows read and filtered; drafting among "
                     f"{sum(len(v[2]) for v in located.values()):,} candidates")
    chosen, duplicates = draft({lang: located[lang][2] for lang in cfg.languages}, cfg.cap_per_language,
                               cfg.dedup_english, seed)
    picks = {}
    for lang in cfg.languages:
        n_candidates = len(located[lang][2])
        counts[lang]["duplicate_english"] = duplicates[lang]
        counts[lang]["over_cap"] = n_candidates - len(chosen[lang]) - duplicates[lang]
        counts[lang]["kept"] = len(chosen[lang])
        idx = np.sort(np.array(chosen[lang], dtype=np.int64))  # source order within a language; shuffled below
        picks[lang] = (located[lang][0][idx], located[lang][1][idx])
    del located, chosen
    progress.last = progress.start
    progress(lambda: f"stage 1: drafted {sum(len(p[0]) for p in picks.values()):,} pairs; reading their texts")
    texts = _collect(cfg, sources, {lang: p for lang, p in picks.items() if len(p[0])}, {"en"}, progress)
    parts = [t.append_column("lang", pa.array([lang] * t.num_rows, pa.string()))
             for lang in cfg.languages if (t := texts.get(lang)) is not None]
    if not parts:
        raise MimoError("stage 1: no pair survived the filters (see the per-language counts with stage1.* settings)")
    rows = pa.concat_tables(parts)
    del parts, texts
    n_rows = rows.num_rows
    perm = pa.array(np.random.default_rng(seed + 1).permutation(n_rows))
    # shuffled a column at a time, each column's pieces let go before the next: a table `take` over many chunks
    # joins every column first, holding the pairs' texts three times at once (7M pairs at scale 1.0: ~5 GB)
    columns = {name: rows.column(name) for name in rows.column_names}
    del rows
    shuffled = {}
    for name in list(columns):
        joined = columns.pop(name).combine_chunks()
        shuffled[name] = joined.take(perm)
        del joined
    english = shuffled["english"]
    table = pa.table(
        {
            "pair_id": np.arange(n_rows, dtype=np.int64),
            "lang": shuffled["lang"],
            "text": shuffled["text"],
            "english": english,
            "teacher_id": pa.chunked_array(  # 100,000 at a time: never all the English sides as Python strings
                [pa.array([text_id("document", cfg.teacher_max_length, e) for e in english.slice(i, 100_000).to_pylist()],
                          pa.string()) for i in range(0, len(english), 100_000)], pa.string()),
            "source": shuffled["source"],
        },
        schema=STAGE1_SCHEMA,
    )
    return table, {"per_language": counts}


def stage1_worklist_entries(table: pa.Table, cfg: Stage1DataConfig):
    """Stage 1 has no prompt (App. C): every English side is a document at the Stage-1 length."""
    for english in table.column("english").to_pylist():
        yield "document", cfg.teacher_max_length, english
