"""`mimo cache export`: the prepared pairs with their cached teacher vectors as a `datasets` dataset that
sentence-transformers trains on (EmbedDistillLoss reads the `label` column); a few steps of its own
trainer on the export lower the loss."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.cache_export import CacheExportConfig, run_cache_export
from pipeline.cache_read import TeacherTargets
from pipeline.errors import MimoError

QUIET = dict(echo=lambda *_: None)


def export(setup, out, stage, rows_per_shard=100):
    cfg = CacheExportConfig(cache=str(setup / "cache.zarr"), prepared=str(setup / "prepared"), out_dir=str(out),
                            stage=stage, rows_per_shard=rows_per_shard, batch_rows=64)
    return run_cache_export(cfg, **QUIET)


def test_stage1_export_is_a_sharded_dataset_of_texts_and_teacher_labels(training_setup, tmp_path):
    from datasets import load_dataset

    info = export(training_setup, tmp_path / "st", "stage1")
    pairs = pq.read_table(training_setup / "prepared/stage1/pairs.parquet")
    shards = sorted(p.name for p in (tmp_path / "st/data").iterdir())
    assert info["rows"] == pairs.num_rows and len(shards) == -(-pairs.num_rows // 100) == info["shards"]
    assert shards[0] == f"train-00000-of-{len(shards):05d}.parquet"
    ds = load_dataset(str(tmp_path / "st"), split="train")  # the dataset card's configs find the shards
    assert ds.column_names == ["text", "label"] and len(ds) == pairs.num_rows
    assert ds["text"] == pairs.column("text").to_pylist()
    targets = TeacherTargets(str(training_setup / "cache.zarr"))
    ids = pairs.column("teacher_id").to_pylist()
    for row in (0, 99, 100, len(ds) - 1):  # both sides of a shard boundary and of a read batch
        np.testing.assert_array_equal(np.array(ds[row]["label"], np.float32), targets.get([ids[row]])[0].numpy())
    assert json.loads((tmp_path / "st/mimo_export.json").read_text())["teacher_fingerprint"] == targets.fingerprint


def test_stage2_export_has_one_target_per_text_column(training_setup, tmp_path):
    from datasets import load_dataset

    export(training_setup, tmp_path / "st2", "stage2", rows_per_shard=10_000)
    table = pq.read_table(training_setup / "prepared/stage2/mimo.parquet")
    ds = load_dataset(str(tmp_path / "st2"), split="train")
    assert ds.column_names == ["query", "passage", "label"] and len(ds) == table.num_rows
    targets = TeacherTargets(str(training_setup / "cache.zarr"))
    label = np.array(ds[3]["label"], np.float32)
    assert label.shape == (2, targets.dim)
    np.testing.assert_array_equal(label[0], targets.get([table.column("q_teacher_id")[3].as_py()])[0].numpy())
    np.testing.assert_array_equal(label[1], targets.get([table.column("p_teacher_id")[3].as_py()])[0].numpy())
    assert ds[3]["query"] == table.column("q_text")[3].as_py()


def test_export_refusals(training_setup, tmp_path):
    with pytest.raises(MimoError, match="stage must be one of stage1, stage2"):
        CacheExportConfig(stage="stage3")
    with pytest.raises(MimoError, match="table not found"):
        run_cache_export(CacheExportConfig(cache=str(training_setup / "cache.zarr"), prepared=str(tmp_path),
                                           out_dir=str(tmp_path / "x")), **QUIET)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep")
    with pytest.raises(MimoError, match="not an earlier cache_export output"):
        export(training_setup, tmp_path / "precious", "stage1")


def test_sentence_transformers_trainer_lowers_the_loss_on_the_export(training_setup, tmp_path):
    pytest.importorskip("accelerate")
    import torch
    from datasets import load_dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import EmbedDistillLoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    export(training_setup, tmp_path / "st", "stage1")
    train = load_dataset(str(tmp_path / "st"), split="train")
    torch.manual_seed(0)
    body = Transformer(str(training_setup / "tiny-student"), max_seq_length=32)
    student = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean")], device="cpu")
    dim = len(train[0]["label"])  # the teacher's 384 dims, the tiny student's 32: a projection, as psi
    loss = EmbedDistillLoss(student, distance_metric="cosine", projection_dim=dim)
    probe = train.select(range(64))

    def probe_loss():
        with torch.no_grad():
            features = student.preprocess(probe["text"])
            return float(loss([features], torch.tensor(probe["label"])))

    before = probe_loss()
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=16,
                                                per_device_train_batch_size=32, learning_rate=3e-3, report_to="none",
                                                save_strategy="no", logging_steps=1, use_cpu=True, seed=0,
                                                disable_tqdm=True)
    SentenceTransformerTrainer(model=student, args=args, train_dataset=train, loss=loss).train()
    student.eval()
    after = probe_loss()
    assert after < 0.92 * before, (before, after)  # measured: 1.012 -> 0.882
