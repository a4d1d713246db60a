"""Synthetic data at the paper's scale, in the exact layouts `mimo prepare` reads from the hub.

    .venv/bin/python bench/paper_scale.py --out work/paper_scale --scale 1.0     # ~61M Stage-1 pairs, 39.8M triples
    .venv/bin/python bench/paper_scale.py --out /tmp/ps --scale 0.0001           # a few seconds
    .venv/bin/python -m mimo_cli prepare --config work/paper_scale/prepare.toml

Writes under --out (seeded: the same arguments give the same bytes; streamed: memory stays
bounded by one batch of `--batch-rows` rows whatever the scale):

- `parallel-sentences-{corpus}/` for the eight OPUS corpora of sentence-transformers: a README.md
  whose YAML `configs` name each `en-xx` subset, and `en-xx/train-0000i-of-0000N.parquet` files
  with the hub's two columns `english`, `non_english` (data/_notes/hub_schemas.md, section 1).
  Each corpus has the target languages the hub repo has (talks' Chinese is `en-zh-cn`).
  At scale 1.0: 61.0M raw pairs (CORPORA below; the paper chose 5.6M out of "tens of millions").
- `mmarco/data/google/collections/{language}_collection.tsv`, `.../queries/train/
  {language}_queries.train.tsv` (id<TAB>text, no header) and `mmarco/data/triples.train.ids.small.tsv`
  (qid<TAB>pos<TAB>neg): at scale 1.0 39,780,811 triples over 532,761 distinct (query, positive)
  pairs and 808,731 training queries, as in mMARCO (hub_schemas.md, section 2). Collections hold
  `--collection-fraction` of the 8,841,823 passages (every positive among them): a full-size
  collection is 14 x 3-7 GB of text; what reading it costs is extrapolated from the fraction.
- `prepare.toml`: `mimo prepare` pointed at these folders (stage1.source=hub with the folders as
  hub ids, stage2.source=local).

Texts: English sides are a pure function of an English sentence number, so the same sentence
recurs across the languages of a multi-parallel corpus (30% of rows share their row number's
sentence with the corpus's other languages) and across corpora (0.5% come from a pool of 10,000
short stock sentences); lengths are log-normal like OPUS sentences (median ~85 characters) and
MS MARCO (queries ~33, passages ~330 characters). Non-English sides are in the language's script
(Latin, Cyrillic, Arabic, Devanagari, CJK). About 4% of Stage-1 pairs fail an App. B.1 filter:
0.2% empty, 1% shorter than 10 characters, 0.5% longer than 512, 2.3% a length ratio of 3 or more.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipeline.languages import LANGUAGES, MMARCO_NAMES  # noqa: E402

L = ("ar", "de", "nl", "es", "fr", "hi", "id", "it", "ja", "pt", "ru", "vi", "zh")
# corpus -> (raw pairs per target language at scale 1.0, target languages as the hub repo has them)
CORPORA = {
    "europarl": (1_900_000, ("de", "nl", "es", "fr", "it", "pt")),
    "global-voices": (60_000, ("ar", "de", "nl", "es", "fr", "hi", "id", "it", "pt", "ru")),
    "jw300": (600_000, ("ar", "de", "nl", "es", "fr", "hi", "id", "it", "ja", "pt", "ru", "vi")),
    "news-commentary": (300_000, ("ar", "de", "nl", "es", "fr", "it", "ja", "pt", "ru")),
    "opensubtitles": (2_500_000, ("ar", "de", "es", "fr", "hi", "id", "it", "ja", "pt", "ru", "vi")),
    "talks": (350_000, L),
    "tatoeba": (100_000, ("ar", "de", "es", "fr", "hi", "id", "it", "ja", "pt", "ru", "vi", "zh")),
    "wikimatrix": (450_000, L),
}
SUBSET = {"talks": {"zh": "en-zh-cn"}}  # the hub's spelling where it is not en-xx
MMARCO = {"triples": 39_780_811, "pairs": 532_761, "queries": 808_731, "passages": 8_841_823}

# script per language: (first code point, number of letters, UTF-8 bytes a letter, spaces between words)
SCRIPTS = {"latin": (0x61, 26, 1, True), "cyrillic": (0x430, 32, 2, True), "arabic": (0x627, 20, 2, True),
           "devanagari": (0x905, 52, 3, True), "cjk": (0x4E00, 20000, 3, False)}
SCRIPT_OF = {"ar": "arabic", "ru": "cyrillic", "hi": "devanagari", "ja": "cjk", "zh": "cjk"}

def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64: a stateless hash of uint64 keys (vectorized; wraps mod 2**64)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def texts(keys: np.ndarray, lengths: np.ndarray, script: str = "latin") -> pa.Array:
    """One string per key: `lengths` characters of the script, a pure function of (key, length)."""
    first, letters, width, sep = SCRIPTS[script]
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    row = np.repeat(np.arange(len(keys)), lengths)
    pos = np.arange(total, dtype=np.int64) - starts[row]
    with np.errstate(over="ignore"):
        h = mix(keys.astype(np.uint64)[row] * np.uint64(0x100000001B3) + pos.astype(np.uint64))
    cp = first + (h % np.uint64(letters)).astype(np.int64)
    # a space about every sixth letter, never first or last (no spaces in CJK)
    space = (((h >> np.uint64(40)) % np.uint64(6) == 0) & (pos > 0) & (pos < lengths[row] - 1)
             if sep else np.zeros(total, dtype=bool))
    chars = np.empty((total, width), dtype=np.uint8)
    if width == 1:
        chars[:, 0] = cp
    elif width == 2:
        chars[:, 0] = 0xC0 | (cp >> 6)
        chars[:, 1] = 0x80 | (cp & 0x3F)
    else:
        chars[:, 0] = 0xE0 | (cp >> 12)
        chars[:, 1] = 0x80 | ((cp >> 6) & 0x3F)
        chars[:, 2] = 0x80 | (cp & 0x3F)
    chars[space] = 0x20  # every character stays `width` bytes: a space of a wide script is a run of spaces
    data = chars.reshape(-1)
    offsets = np.concatenate([[0], np.cumsum(lengths * width)]).astype(np.int64)
    return pa.LargeStringArray.from_buffers(len(keys), pa.py_buffer(offsets), pa.py_buffer(data)).cast(pa.string())


def lognormal_lengths(rng, n, median, sigma, lo, hi):
    return np.clip(np.round(rng.lognormal(np.log(median), sigma, n)), lo, hi).astype(np.int64)


def stage1_batch(rng, corpus_id: int, lang: str, first_row: int, n: int):
    """Rows first_row.. of one (corpus, language) subset: (english, non_english) Arrow arrays."""
    r = np.arange(first_row, first_row + n, dtype=np.uint64)
    u = rng.random(n)
    # English sentence number: shared across the corpus's languages (30%), stock (0.5%), own (rest)
    lang_id = np.uint64(L.index(lang) + 1)
    own = (np.uint64(corpus_id + 1) << np.uint64(56)) | (lang_id << np.uint64(48)) | r
    shared = (np.uint64(corpus_id + 1) << np.uint64(56)) | r
    stock = mix(r ^ np.uint64(corpus_id)) % np.uint64(10_000)
    number = np.where(u < 0.005, stock, np.where(u < 0.305, shared, own))
    is_stock = u < 0.005
    en_len = np.where(is_stock, 10 + (mix(number) % np.uint64(30)).astype(np.int64),
                      np.clip(np.round(np.exp(np.log(85) + 0.6 * _normal(number))), 10, 480).astype(np.int64))
    english = texts(mix(number + np.uint64(7)), en_len)
    # non-English length: the English one times a translation ratio, then the filters' share of bad pairs
    xx_len = np.clip(np.round(en_len * rng.lognormal(0.0, 0.2, n)), 10, 500).astype(np.int64)
    v = rng.random(n)
    xx_len = np.where(v < 0.002, 0, xx_len)  # empty (after strip)
    xx_len = np.where((v >= 0.002) & (v < 0.012), rng.integers(1, 10, n), xx_len)  # too short
    xx_len = np.where((v >= 0.012) & (v < 0.017), rng.integers(513, 900, n), xx_len)  # too long
    bad_ratio = (v >= 0.017) & (v < 0.040)
    xx_len = np.where(bad_ratio, np.minimum(en_len * 4, 512), xx_len)
    xx_len = np.where(bad_ratio & (en_len * 4 > 512), np.maximum(en_len // 4, 10), xx_len)
    script = SCRIPT_OF.get(lang, "latin")
    keys = mix(rng.integers(0, 2**63, n, dtype=np.uint64))
    non_english = texts(keys, xx_len, script)
    return english, non_english


def _normal(keys: np.ndarray) -> np.ndarray:
    """A standard normal deviate per key (Box-Muller on two hashes): lengths are functions of the sentence."""
    a = (mix(keys) >> np.uint64(11)).astype(np.float64) / 2**53
    b = (mix(keys ^ np.uint64(0xABCDEF)) >> np.uint64(11)).astype(np.float64) / 2**53
    return np.sqrt(-2 * np.log(np.maximum(a, 1e-12))) * np.cos(2 * np.pi * b)


def write_stage1(out: Path, scale: float, seed: int, batch_rows: int, rows_per_file: int, echo) -> int:
    total = 0
    for corpus_id, (corpus, (per_lang, langs)) in enumerate(CORPORA.items()):
        repo = out / f"parallel-sentences-{corpus}"
        repo.mkdir(parents=True, exist_ok=True)
        subsets = [SUBSET.get(corpus, {}).get(lang, f"en-{lang}") for lang in langs]
        yaml = ["---", "configs:"]
        for subset in subsets:
            yaml += [f"- config_name: {subset}", "  data_files:", "  - split: train", f"    path: {subset}/train-*"]
        yaml += ["---", "", f"# parallel-sentences-{corpus} (synthetic, bench/paper_scale.py --scale {scale})", ""]
        (repo / "README.md").write_text("\n".join(yaml))
        n = max(1, round(per_lang * scale))
        for lang, subset in zip(langs, subsets):
            rng = np.random.default_rng([seed, corpus_id, L.index(lang)])
            files = -(-n // rows_per_file)
            (repo / subset).mkdir(exist_ok=True)
            for f in range(files):
                lo, hi = f * rows_per_file, min(n, (f + 1) * rows_per_file)
                schema = pa.schema([("english", pa.string()), ("non_english", pa.string())])
                with pq.ParquetWriter(repo / subset / f"train-{f:05d}-of-{files:05d}.parquet", schema) as writer:
                    for start in range(lo, hi, batch_rows):
                        english, other = stage1_batch(rng, corpus_id, lang, start, min(batch_rows, hi - start))
                        writer.write_table(pa.table([english, other], schema=schema))
            total += n
            echo(f"stage 1: {corpus} {subset}: {n:,} pairs ({total:,} so far)")
    return total


def write_tsv(path: Path, columns: dict[str, pa.Array], append: bool) -> None:
    table = pa.table(columns)
    options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with open(path, "ab" if append else "wb") as fh:
        pcsv.write_csv(table, fh, write_options=options)


def write_mmarco(out: Path, scale: float, collection_fraction: float, seed: int, batch_rows: int, echo) -> dict:
    rng = np.random.default_rng([seed, 99])
    root = out / "mmarco" / "data"
    n_pairs = max(1, round(MMARCO["pairs"] * scale))
    n_triples = max(n_pairs, round(MMARCO["triples"] * scale))
    n_queries = max(n_pairs, round(MMARCO["queries"] * scale))
    n_passages = max(n_pairs, round(MMARCO["passages"] * scale * collection_fraction))
    # pair k: query k % queries_in_pairs, positive passage k (queries with several positives, as in MS MARCO)
    queries_in_pairs = max(1, round(n_pairs * 0.94))
    qids = np.arange(n_queries, dtype=np.int64) * 7 + 3  # sparse ids, as mMARCO's
    pids = np.arange(n_passages, dtype=np.int64) * 3 + 1
    pair_q = qids[np.arange(n_pairs) % queries_in_pairs]
    pair_p = pids[rng.permutation(n_passages)[:n_pairs]]
    (root / "google/collections").mkdir(parents=True, exist_ok=True)
    (root / "google/queries/train").mkdir(parents=True, exist_ok=True)
    # triples: every pair at least once, the rest drawn uniformly; negatives from the collection
    path = root / "triples.train.ids.small.tsv"
    for start in range(0, n_triples, batch_rows):
        k = np.arange(start, min(n_triples, start + batch_rows))
        which = np.where(k < n_pairs, k, rng.integers(0, n_pairs, len(k)))
        neg = pids[rng.integers(0, n_passages, len(k))]
        write_tsv(path, {"q": pair_q[which], "p": pair_p[which], "n": neg}, append=start > 0)
    echo(f"mmarco: {n_triples:,} triples over {n_pairs:,} (query, positive) pairs")
    for lang in LANGUAGES:
        name = MMARCO_NAMES[lang]
        script = SCRIPT_OF.get(lang, "latin")
        for start in range(0, n_queries, batch_rows):
            ids = qids[start:start + batch_rows]
            lengths = lognormal_lengths(np.random.default_rng([seed, 1, start]), len(ids), 30, 0.4, 8, 200)
            text = texts(mix(ids.astype(np.uint64) * np.uint64(31) + np.uint64(LANGUAGES.index(lang))), lengths, script)
            write_tsv(root / f"google/queries/train/{name}_queries.train.tsv", {"id": ids, "text": text},
                      append=start > 0)
        for start in range(0, n_passages, batch_rows):
            ids = pids[start:start + batch_rows]
            lengths = lognormal_lengths(np.random.default_rng([seed, 2, start]), len(ids), 300, 0.45, 20, 2000)
            text = texts(mix(ids.astype(np.uint64) * np.uint64(131) + np.uint64(LANGUAGES.index(lang))), lengths, script)
            write_tsv(root / f"google/collections/{name}_collection.tsv", {"id": ids, "text": text}, append=start > 0)
        echo(f"mmarco: {name}: {n_queries:,} queries, {n_passages:,} passages")
    return {"triples": n_triples, "pairs": n_pairs, "queries": n_queries, "passages": n_passages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "work/paper_scale"))
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = the paper's row counts")
    ap.add_argument("--collection-fraction", type=float, default=0.1,
                    help="share of mMARCO's 8.8M passages written per language (positives always included)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-rows", type=int, default=200_000, help="rows generated at a time (bounds memory)")
    ap.add_argument("--rows-per-file", type=int, default=1_000_000, help="Stage-1 rows per Parquet file")
    ap.add_argument("--only", choices=("stage1", "stage2"), help="write one stage's data only")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def echo(msg):
        print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True)

    if args.only != "stage2":
        write_stage1(out, args.scale, args.seed, args.batch_rows, args.rows_per_file, echo)
    if args.only != "stage1":
        write_mmarco(out, args.scale, args.collection_fraction, args.seed, args.batch_rows, echo)
    repos = ", ".join(f'"{out.resolve()}/parallel-sentences-{c}"' for c in CORPORA)
    (out / "prepare.toml").write_text(f"""# `mimo prepare` on bench/paper_scale.py's output (--scale {args.scale})
[prepare]
out_dir = "{out.resolve()}/prepared"

[prepare.stage1]
source = "hub"
hub_datasets = [{repos}]

[prepare.stage2]
source = "local"
root = "{out.resolve()}/mmarco"
""")
    echo(f"done; config for prepare: {out / 'prepare.toml'}")


if __name__ == "__main__":
    main()
