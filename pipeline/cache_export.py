"""`mimo cache export`: the prepared pairs with their cached teacher vectors as a Hugging Face
`datasets` dataset, in the shape sentence-transformers' `EmbedDistillLoss` / `MSELoss` read:
the text columns, then a `label` column of teacher embeddings.

    stage1: text (t_XX)                 label (dim,)     = E_t(t_en)      (Stage 1: 1 - cos(psi(E_s(t_XX)), E_t(t_en)))
    stage2: query (q_XX), passage (p_YY) label (2, dim)  = [E_t(q_en), E_t(p_en)]   (the Distill term of Stage 2)

Written as Parquet shards `data/train-NNNNN-of-MMMMM.parquet` plus a dataset card whose `configs`
entry makes `datasets.load_dataset(<out_dir>)` (or the hub, after an upload) find them. The table
is streamed in record batches and the cache read per batch (not loaded whole), so memory stays at
one batch of vectors however large the cache is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import prepared_layout as layout
from pipeline.cache_read import TeacherTargets
from pipeline.config import write_resolved_config
from pipeline.errors import MimoError
from pipeline.outputs import staged_output_dir

# stage -> (prepared table, [(output column, table column)], teacher id columns in label order)
LAYOUTS = {
    "stage1": (layout.STAGE1_PAIRS, [("text", "text")], ["teacher_id"]),
    "stage2": (f"{layout.STAGE2_DIR}/mimo.parquet", [("query", "q_text"), ("passage", "p_text")],
               ["q_teacher_id", "p_teacher_id"]),
}


@dataclass(frozen=True)
class CacheExportConfig:
    cache: str = "work/paper/teacher_cache.zarr"
    prepared: str = "work/paper/prepared"
    out_dir: str = "work/paper/st-dataset"
    stage: str = "stage1"
    rows_per_shard: int = 100_000  # a shard of 4096-d float32 labels: ~1.6 GB
    batch_rows: int = 4096  # rows read, looked up and written at a time: the memory bound

    def __post_init__(self):
        if self.stage not in LAYOUTS:
            raise MimoError(f"stage must be one of {', '.join(LAYOUTS)}, not {self.stage!r}")
        if self.rows_per_shard < 1 or self.batch_rows < 1:
            raise MimoError("rows_per_shard and batch_rows must be positive")


def export_schema(stage: str, dim: int) -> pa.Schema:
    # float32 labels: the loss compares in float32, and sentence-transformers collates the lists as they are
    vector = pa.list_(pa.float32(), dim)
    label = vector if stage == "stage1" else pa.list_(vector, 2)
    return pa.schema([*(pa.field(name, pa.string()) for name, _ in LAYOUTS[stage][1]), pa.field("label", label)])


def run_cache_export(cfg: CacheExportConfig, echo=print) -> dict:
    table_rel, text_columns, id_columns = LAYOUTS[cfg.stage]
    source = Path(cfg.prepared) / table_rel
    if not source.is_file():
        raise MimoError(f"{source}: {cfg.stage} table not found (run prepare first)")
    reader = pq.ParquetFile(source)
    needed = [c for _, c in text_columns] + id_columns
    missing = [c for c in needed if c not in reader.schema_arrow.names]
    if missing:
        raise MimoError(f"{source}: not a {cfg.stage} table (missing column(s) {', '.join(missing)})")
    targets = TeacherTargets(cfg.cache)  # memory-mapped per-batch reads: no copy of the cache in RAM
    total = reader.metadata.num_rows
    if not total:
        raise MimoError(f"{source}: no rows to export")
    shards = -(-total // cfg.rows_per_shard)
    schema = export_schema(cfg.stage, targets.dim)
    with staged_output_dir(cfg.out_dir, "cache_export") as staging:
        (staging / "data").mkdir()
        written, writer, shard = 0, None, -1
        for batch in reader.iter_batches(batch_size=cfg.batch_rows, columns=needed):
            start = 0
            while start < batch.num_rows:
                if written % cfg.rows_per_shard == 0:  # roll over to the next shard
                    if writer:
                        writer.close()
                    shard += 1
                    writer = pq.ParquetWriter(staging / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet", schema,
                                              compression="zstd")
                take = min(batch.num_rows - start, cfg.rows_per_shard - written % cfg.rows_per_shard)
                writer.write_table(_rows(batch.slice(start, take), cfg.stage, targets, schema))
                start += take
                written += take
        writer.close()
        write_resolved_config(cfg, staging, "cache_export")
        info = {"rows": written, "shards": shards, "dim": targets.dim, "stage": cfg.stage,
                "columns": schema.names, "teacher_fingerprint": targets.fingerprint}
        (staging / "mimo_export.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        (staging / "README.md").write_text(_card(cfg, info), encoding="utf-8")
    echo(f"cache export: {written} {cfg.stage} rows with {targets.dim}-d teacher labels in {shards} shard(s) "
         f"under {cfg.out_dir}")
    return info


def _rows(batch: pa.RecordBatch, stage: str, targets: TeacherTargets, schema: pa.Schema) -> pa.Table:
    _, text_columns, id_columns = LAYOUTS[stage]
    vectors = []
    for column in id_columns:
        ids = batch.column(column).to_pylist()
        absent = targets.missing(ids)
        if absent:
            raise MimoError(f"cache export: the teacher cache {targets.store.url} has no vector for {column} "
                            f"{absent[0]} ({len(set(absent))} missing); run teacher-cache on this data's worklist")
        vectors.append(targets.get(ids).numpy())
    stacked = np.stack(vectors, axis=1)  # (n, columns, dim)
    label = pa.FixedSizeListArray.from_arrays(pa.array(stacked.reshape(-1)), stacked.shape[2])
    if stage != "stage1":  # one target per text column: (n, 2, dim)
        label = pa.FixedSizeListArray.from_arrays(label, stacked.shape[1])
    texts = [batch.column(col) for _, col in text_columns]
    return pa.Table.from_arrays([*texts, label], schema=schema)


def _card(cfg: CacheExportConfig, info: dict) -> str:
    fp = info["teacher_fingerprint"]
    usage = ("losses.EmbedDistillLoss(student, projection_dim=%d)  # or losses.MSELoss(student) when the "
             "student is %d-d" % (info["dim"], info["dim"]))
    return "\n".join([
        "---", "configs:", "- config_name: default", "  data_files:", "  - split: train", "    path: data/train-*",
        "tags:", "- sentence-transformers", "- embedding-distillation", "---", "",
        f"# Teacher-labelled {cfg.stage} pairs (mimo cache export)", "",
        f"{info['rows']} rows from `{cfg.prepared}`; columns {', '.join(f'`{c}`' for c in info['columns'])}. "
        f"`label` holds the teacher's {info['dim']}-d embeddings of the English side"
        + (" (query, passage)" if cfg.stage == "stage2" else "") + f": teacher `{fp.get('model')}` "
        f"(revision `{fp.get('revision')}`, {fp.get('pooling')} pooling; the full fingerprint is in `mimo_export.json`).",
        "", "```python", "from datasets import load_dataset", "from sentence_transformers import losses", "",
        f'train = load_dataset("{cfg.out_dir}", split="train")', f"loss = {usage}", "```", ""])
