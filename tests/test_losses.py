"""The losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import distill_loss, info_nce, lakda_loss, stage2_loss, symmetric_kl

R = 1 / math.sqrt(2)


def test_distill_loss_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # cosines 1 and 1/sqrt(2); scale does not matter
    assert distill_loss(student, teacher).item() == pytest.approx(((1 - 1) + (1 - R)) / 2, abs=1e-7)
    with pytest.raises(ValueError):
        distill_loss(student, teacher[:, :1])


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # cos(q1, p) = [1, 1/sqrt2]; cos(q2, p) = [0, 1/sqrt2]; positives on the diagonal
    s = 2.0
    row1 = -s * 1 + math.log(math.exp(s * 1) + math.exp(s * R))
    row2 = -s * R + math.log(math.exp(0) + math.exp(s * R))
    assert info_nce(q, p, scale=s).item() == pytest.approx((row1 + row2) / 2, abs=1e-6)
    # an extra passage (e.g. gathered from another device) is one more negative for every query
    extra = torch.tensor([[0.0, 1.0]])
    row1b = -s + math.log(math.exp(s) + math.exp(s * R) + math.exp(0))
    row2b = -s * R + math.log(1 + math.exp(s * R) + math.exp(s))
    assert info_nce(q, torch.cat([p, extra]), scale=s).item() == pytest.approx((row1b + row2b) / 2, abs=1e-6)


def test_symmetric_kl_by_hand():
    a = torch.tensor([[0.0, math.log(2.0)]])  # P1 = [1/3, 2/3]
    b = torch.tensor([[0.0, 0.0]])  # P2 = [1/2, 1/2]
    kl12 = 1 / 3 * math.log((1 / 3) / 0.5) + 2 / 3 * math.log((2 / 3) / 0.5)
    kl21 = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    assert symmetric_kl(a, b).item() == pytest.approx(0.5 * (kl12 + kl21), abs=1e-7)
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_lakda_is_the_weighted_sum():
    torch.manual_seed(0)
    q1, q2, p = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    from trainer.losses import similarity_logits

    expected = 0.7 * info_nce(q1, p, 20.0) + 0.3 * symmetric_kl(similarity_logits(q1, p), similarity_logits(q2, p))
    assert lakda_loss(q1, q2, p, scale=20.0, alpha=0.3).item() == pytest.approx(expected.item(), rel=1e-6)
    # identical parallel queries: no alignment term left
    assert lakda_loss(q1, q1, p, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_stage2_weighting():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    qp, pp = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    qt, pt = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    distill = ((0 + (1 - R)) / 2) + ((0 + (1 - R)) / 2)
    xlco = info_nce(q, p, 20.0).item()
    for lam in (0.0, 0.2, 1.0):
        out = stage2_loss(q, p, qp, pp, qt, pt, lam=lam)
        assert out["distill"].item() == pytest.approx(distill, abs=1e-6)
        assert out["loss"].item() == pytest.approx(lam * xlco + (1 - lam) * distill, abs=1e-6)
    with pytest.raises(ValueError, match="lambda"):
        stage2_loss(q, p, qp, pp, qt, pt, lam=1.5)
