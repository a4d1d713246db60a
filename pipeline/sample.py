"""The embedded sample data set (data/sample/): fully parallel MS MARCO-style items in 14 languages.

`{lang}.jsonl` holds one item a line: {"id", "query", "passage": [sentences]}; `en.jsonl` also
carries "topic" and "split" ("train" for Stage 1/2, "heldout" for evaluation). Passages are lists
of sentences aligned 1:1 across languages, which is what makes the training items' sentences
usable as Stage-1 parallel pairs. data/README.md documents the set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import MimoError
from pipeline.languages import LANGUAGES
from pipeline.readers import json_rows

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class SampleItem:
    id: str
    query: str
    passage: tuple[str, ...]  # sentences; the passage text is their join

    def passage_text(self, lang: str) -> str:
        return join_sentences(self.passage, lang)


@dataclass(frozen=True)
class Sample:
    languages: tuple[str, ...]
    items: dict[str, tuple[SampleItem, ...]]  # lang -> items, same ids in the same order
    split: dict[str, str]  # item id -> "train" | "heldout"
    topic: dict[str, str]

    def ids(self, split: str) -> list[str]:
        return [it.id for it in self.items["en"] if self.split[it.id] == split]

    def by_id(self, lang: str) -> dict[str, SampleItem]:
        return {it.id: it for it in self.items[lang]}


def validation_ids(sample: Sample) -> list[str]:
    """A validation split carved from the training items (every 3rd: 40 of 120), for choices made
    without looking at the held-out items (stand-in models, seeds, step counts)."""
    return sample.ids("train")[::3]


def join_sentences(sentences, lang: str) -> str:
    # Chinese and Japanese run sentences together; the others separate them with a space.
    return ("" if lang in ("zh", "ja") else " ").join(sentences)


def _read_items(path: Path, with_meta: bool):
    if not path.is_file():
        raise MimoError(f"{path}: sample file not found")
    items, meta = [], []
    fields = ("id", "query", "passage") + (("topic", "split") if with_meta else ())
    for number, row in json_rows(path, fields):
        where = f"{path}:{number}"
        passage = row["passage"]
        if not isinstance(passage, list) or not passage:
            raise MimoError(f"{where}: 'passage' must be a non-empty list of sentences")
        for text in [row["query"], *passage]:
            if not isinstance(text, str) or not text.strip():
                raise MimoError(f"{where}: empty or non-text query/sentence in item {row['id']!r}")
        items.append(SampleItem(row["id"], row["query"].strip(), tuple(s.strip() for s in passage)))
        if with_meta:
            if row["split"] not in SPLITS:
                raise MimoError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
            meta.append((row["id"], row["topic"], row["split"]))
    return items, meta


def load_sample(sample_dir: str | Path, languages=LANGUAGES) -> Sample:
    """Load and cross-check the sample: every language has the same ids and sentence counts."""
    sample_dir = Path(sample_dir)
    if not sample_dir.is_dir():
        raise MimoError(f"{sample_dir}: sample directory not found")
    english, meta = _read_items(sample_dir / "en.jsonl", with_meta=True)
    items = {"en": tuple(english)}
    for lang in languages:
        if lang == "en":
            continue
        path = sample_dir / f"{lang}.jsonl"
        rows, _ = _read_items(path, with_meta=False)
        if [r.id for r in rows] != [e.id for e in english]:
            raise MimoError(f"{path}: item ids differ from en.jsonl (same ids in the same order expected)")
        for number, (row, eng) in enumerate(zip(rows, english), start=1):
            if len(row.passage) != len(eng.passage):
                raise MimoError(
                    f"{path}:{number}: item {row.id} has {len(row.passage)} sentences, en.jsonl has {len(eng.passage)}"
                )
        items[lang] = tuple(rows)
    return Sample(
        languages=tuple(lang for lang in LANGUAGES if lang in items),
        items=items,
        split={i: s for i, _, s in meta},
        topic={i: t for i, t, _ in meta},
    )


def sample_parallel_sentences(sample: Sample, lang: str) -> dict[str, list]:
    """Stage-1 pairs (english, non_english) from the training items: queries and passage sentences.

    Held-out items never contribute, so no evaluation text is seen in training.
    """
    english, other = [], []
    by_id = sample.by_id(lang)
    for eng in sample.items["en"]:
        if sample.split[eng.id] != "train":
            continue
        item = by_id[eng.id]
        english.extend([eng.query, *eng.passage])
        other.extend([item.query, *item.passage])
    return {"english": english, "non_english": other}
