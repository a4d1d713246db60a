"""Gradient caching equals the full batch: loss and every parameter's gradient, dropout on, loss scale 1 and 1000."""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import BertConfig, BertModel

from trainer import gradcache
from trainer.distributed import ContrastiveGroups
from trainer.gradcache import cached_step
from trainer.losses import info_nce, lakda_loss, stage2_loss
from trainer.student import Student

TEACHER_DIM = 24


def tiny_student(dropout: float = 0.1) -> Student:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, max_position_embeddings=64)
    student = Student(BertModel(config, add_pooling_layer=False), TEACHER_DIM)
    student.train()
    return student


def batch(n: int, width: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, width), generator=g)
    lengths = torch.randint(3, width + 1, (n,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


LOSSES = {
    # each takes the whole-batch representation tuples (embedding, projection) of its inputs
    "mimo": (2, lambda q, p: stage2_loss(q[0], p[0], q[1], p[1], TQ, TP, lam=0.2)["loss"]),
    "xlco": (2, lambda q, p: info_nce(q[0], p[0])),
    "infonce": (2, lambda q, p: info_nce(q[0], p[0])),
    "lakda": (3, lambda q1, q2, p: lakda_loss(q1[0], q2[0], p[0], alpha=0.5, form="release")),
    "lakda-paper": (3, lambda q1, q2, p: lakda_loss(q1[0], q2[0], p[0], alpha=0.5, form="paper")),
    # two contrastive groups of 4 rows (the mean of their losses), as Stage 2 takes them
    "xlco-groups": (2, lambda q, p: ContrastiveGroups(4, 1).mean_loss(lambda a, b: {"loss": info_nce(a[0], b[0])},
                                                                      [q, p])["loss"]),
}
TQ = torch.randn(8, TEACHER_DIM, generator=torch.Generator().manual_seed(7))
TP = torch.randn(8, TEACHER_DIM, generator=torch.Generator().manual_seed(8))


def reference_grads(student, inputs, loss_fn, chunk, scale, seed):
    """The full batch with a graph over every mini-batch, the RNG consumed in the same order."""
    torch.manual_seed(seed)
    student.zero_grad()
    whole = []
    for tensors in inputs:
        outs = [student(*(t[i:i + chunk] for t in tensors)) for i in range(0, tensors[0].shape[0], chunk)]
        whole.append(tuple(torch.cat([o[k] for o in outs]) for k in range(2)))
    loss = loss_fn(*whole)
    (loss * scale).backward()
    return loss.item(), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


def cached_grads(student, inputs, loss_fn, chunk, scale, seed):
    torch.manual_seed(seed)
    student.zero_grad()
    loss = cached_step(student, inputs, loss_fn, chunk_size=chunk, loss_scale=scale)
    return loss.item(), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_cached_equals_full_batch_with_dropout(name, scale):
    n_inputs, loss_fn = LOSSES[name]
    student = tiny_student(dropout=0.1)
    inputs = [batch(8, 12, seed=i) for i in range(n_inputs)]
    ref_loss, ref = reference_grads(student, inputs, loss_fn, 3, scale, seed=11)
    loss, got = cached_grads(student, inputs, loss_fn, 3, scale, seed=11)
    assert loss == pytest.approx(ref_loss, rel=1e-6, abs=1e-7)
    assert ref.keys() == got.keys() and len(got) > 10
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-4, atol=1e-6 * scale, msg=key)


def test_cached_equals_one_plain_full_batch_without_dropout():
    student = tiny_student(dropout=0.0)
    inputs = [batch(8, 12, seed=i) for i in range(2)]
    _, loss_fn = LOSSES["mimo"]
    student.zero_grad()
    q, p = (student(*t) for t in inputs)  # one forward of the whole batch per input
    loss_fn(q, p).backward()
    ref = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    _, got = cached_grads(student, inputs, loss_fn, 3, 1.0, seed=0)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-4, atol=1e-6, msg=key)


def test_without_rng_replay_the_gradients_differ(monkeypatch):
    """The equivalence above depends on replaying dropout masks: break the replay, and it fails."""
    n_inputs, loss_fn = LOSSES["xlco"]
    student = tiny_student(dropout=0.1)
    inputs = [batch(8, 12, seed=i) for i in range(n_inputs)]
    _, ref = reference_grads(student, inputs, loss_fn, 3, 1.0, seed=11)
    monkeypatch.setattr(gradcache.RngState, "replay", lambda self: contextlib.nullcontext())
    _, got = cached_grads(student, inputs, loss_fn, 3, 1.0, seed=11)
    assert any(not torch.allclose(got[k], ref[k], rtol=1e-3, atol=1e-5) for k in ref)


@pytest.mark.parametrize("chunk_size", [4, 8], ids=["cached", "one-chunk-plain"])
def test_a_loss_returns_its_terms_through_the_cached_step(chunk_size):
    """Stage 2's losses return {"loss", terms}: cached_step backpropagates "loss" and hands back every term
    detached, the same values and gradients as the loss alone (no term leaves through a side effect)."""
    from trainer.stage2 import Stage2Config, method_loss

    inputs = [batch(8, 12, 1), batch(8, 12, 2)]
    loss_fn = method_loss(Stage2Config(lam=0.2, batch_size=8, mini_batch_size=4, contrastive_group_size=0))
    grads = []
    for fn in (lambda q, p: loss_fn(q, p, TQ, TP), lambda q, p: loss_fn(q, p, TQ, TP)["loss"]):
        student = tiny_student(dropout=0.0)
        out = cached_step(student, inputs, fn, chunk_size=chunk_size)
        grads.append([p.grad.clone() for p in student.parameters() if p.grad is not None])
        if isinstance(out, dict):
            terms = out
    assert list(terms) == ["loss", "xlco", "distill"] and not any(t.requires_grad for t in terms.values())
    assert terms["loss"].item() == pytest.approx(0.2 * terms["xlco"].item() + 0.8 * terms["distill"].item(), rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    # built once per run, one per method: the baselines' losses return the loss alone
    for method, n_inputs in (("infonce", 2), ("xlco", 2), ("lakda", 3)):
        fn = method_loss(Stage2Config(method=method))
        reps = [(torch.randn(4, 8), torch.randn(4, 24)) for _ in range(n_inputs)]
        assert list(fn(*reps)) == ["loss"]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_one_chunk_is_one_plain_pass_with_the_cached_gradients(name):
    """A batch that fits in one chunk is encoded once per input (no no-grad pass), with the loss,
    gradients and dropout masks of the three-pass cached path on that one chunk."""
    n_inputs, loss_fn = LOSSES[name]
    student = tiny_student(dropout=0.1)
    inputs = [batch(8, 12, seed=i) for i in range(n_inputs)]
    torch.manual_seed(5)
    student.zero_grad()
    chunked = [gradcache.split(t, 8) for t in inputs]
    passes = [gradcache.forward_no_grad(student, chunks) for chunks in chunked]
    ref_loss, grads = gradcache.build_cache([reps for reps, _ in passes], loss_fn)
    for k, (chunks, (_, states)) in enumerate(zip(chunked, passes)):
        gradcache.forward_backward(student, chunks, states, grads[k])
    ref = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    calls = []

    def counting(*tensors):
        calls.append((tensors[0].shape[0], torch.is_grad_enabled()))
        return student(*tensors)

    torch.manual_seed(5)
    student.zero_grad()
    loss = cached_step(counting, inputs, loss_fn, chunk_size=8).item()
    assert calls == [(8, True)] * n_inputs  # one forward per input, with a graph
    assert loss == pytest.approx(ref_loss.item(), rel=1e-6, abs=1e-7)
    got = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    assert ref.keys() == got.keys() and len(got) > 10
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-4, atol=1e-6, msg=key)
