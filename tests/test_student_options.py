"""Student options of the embedded default: the first N layers (num_layers / student_layers) and frozen
token embeddings; the validation split carved from the sample's training items."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.errors import MimoError
from trainer.student import load_student

REPO = Path(__file__).resolve().parents[1]


def _tiny(setup: Path) -> str:
    return str(setup / "tiny-student")


def test_num_layers_keeps_the_first_layers_unchanged(training_setup):
    full, tokenizer = load_student(_tiny(training_setup), teacher_dim=8)
    cut, _ = load_student(_tiny(training_setup), teacher_dim=8, num_layers=1)
    assert len(full.encoder.encoder.layer) == 2 and len(cut.encoder.encoder.layer) == 1
    assert cut.encoder.config.num_hidden_layers == 1
    # the kept layer and the embeddings are the saved weights, not a fresh initialization
    for name, value in cut.encoder.state_dict().items():
        assert torch.equal(value, full.encoder.state_dict()[name]), name
    # the cut model is the full model stopped after its first layer
    batch = tokenizer(["a short text", "another one here"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = full.encoder(**batch, output_hidden_states=True).hidden_states[1]
        ours = cut.encoder(**batch).last_hidden_state
    torch.testing.assert_close(ours, hidden)


def test_num_layers_out_of_range_is_refused(training_setup):
    with pytest.raises(MimoError, match="num_layers must be between 1 and its 2 layers, not 3"):
        load_student(_tiny(training_setup), teacher_dim=8, num_layers=3)


def test_frozen_embeddings_get_no_gradient_and_no_optimizer_state(training_setup):
    student, tokenizer = load_student(_tiny(training_setup), teacher_dim=8, freeze_embeddings=True)
    word = student.encoder.get_input_embeddings().weight
    before = word.detach().clone()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    batch = tokenizer(["a short text", "another one here"], padding=True, return_tensors="pt")
    emb, projected = student(batch["input_ids"], batch["attention_mask"])
    (emb.sum() + projected.sum()).backward()
    optimizer.step()
    assert word.grad is None and word not in optimizer.state
    assert torch.equal(word, before)
    layer = student.encoder.encoder.layer[0].attention.self.query.weight
    assert layer.grad is not None and layer in optimizer.state  # everything else still trains


def test_truncated_eval_encoder_equals_the_truncated_student(training_setup):
    """The eval's zero-shot row of a cut student (TeacherConfig.num_layers) encodes like the cut student."""
    from pipeline.pooling import pool
    from pipeline.teacher import TeacherConfig, TransformersTeacher

    encoder = TransformersTeacher(TeacherConfig(model=_tiny(training_setup), query_prompt="", pooling="mean",
                                                normalize="false", device="cpu", num_layers=1))
    assert encoder.identity()["num_layers"] == 1
    texts = ["a short text", "another one, a little longer than the first"]
    ours, _, _ = encoder.encode(texts, ["document", "document"], [64, 64])
    cut, tokenizer = load_student(_tiny(training_setup), teacher_dim=8, num_layers=1)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = pool(cut.encoder(**batch).last_hidden_state, batch["attention_mask"], "mean")
    torch.testing.assert_close(torch.from_numpy(ours), reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(MimoError, match="num_layers 5 exceeds its 2 layers"):
        TransformersTeacher(TeacherConfig(model=_tiny(training_setup), device="cpu", num_layers=5))
    assert "num_layers" not in TransformersTeacher(TeacherConfig(model=_tiny(training_setup), device="cpu")).identity()


def test_validation_split_is_carved_from_training_items():
    from pipeline.sample import load_sample, validation_ids

    sample = load_sample(REPO / "data" / "sample")
    val = validation_ids(sample)
    assert len(val) == 40 and set(val) <= set(sample.ids("train"))
    assert not set(val) & set(sample.ids("heldout"))
    assert val[:2] == [sample.ids("train")[0], sample.ids("train")[3]]
