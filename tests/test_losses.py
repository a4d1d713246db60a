"""The losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import distill_loss, info_nce, kl_divergence, lakda_loss, stage2_loss, symmetric_kl

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
    assert kl_divergence(a, b).item() == pytest.approx(kl12, abs=1e-7)  # KL(P || Q): the first argument is P
    assert kl_divergence(b, a).item() == pytest.approx(kl21, abs=1e-7)
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_lakda_is_the_weighted_sum():
    torch.manual_seed(0)
    q1, q2, p = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    from trainer.losses import similarity_logits

    expected = 0.7 * info_nce(q1, p, 20.0) + 0.3 * symmetric_kl(similarity_logits(q1, p), similarity_logits(q2, p))
    assert lakda_loss(q1, q2, p, scale=20.0, alpha=0.3, form="paper").item() == pytest.approx(expected.item(), rel=1e-6)
    # the release's term with torch's own KL: KLDivLoss(batchmean)(log P_a, P_b) on unscaled cosines = KL(P_b || P_a)
    kl = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(similarity_logits(q1, p, 1.0), -1),
                                                   torch.softmax(similarity_logits(q2, p, 1.0), -1))
    expected = 0.7 * info_nce(q1, p, 20.0) + 0.3 * kl
    assert lakda_loss(q1, q2, p, scale=20.0, alpha=0.3, form="release").item() == pytest.approx(expected.item(), rel=1e-6)
    # identical parallel queries: no alignment term left
    for form in ("paper", "release"):
        assert lakda_loss(q1, q1, p, alpha=1.0, form=form).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="LaKDA form"):
        lakda_loss(q1, q2, p, form="symmetric")


def test_lakda_both_forms_by_hand():
    q1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # the second query agrees with q1's; the first sits between
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cos(q1, p) = [[1, 0], [0, 1]]; cos(q2, p) = [[R, R], [0, 1]]; positives on the diagonal
    s, alpha = 2.0, 0.3
    nce = math.log(1 + math.exp(-s))  # both rows: -s + log(e^s + e^0)
    # paper: P = softmax(s * cos); row 1: P1 = [e^s, 1] / (e^s + 1), P2 = [1/2, 1/2]; row 2: P1 = P2
    p1 = [math.exp(s) / (math.exp(s) + 1), 1 / (math.exp(s) + 1)]
    kl_12 = sum(a * math.log(a / 0.5) for a in p1)
    kl_21 = sum(0.5 * math.log(0.5 / a) for a in p1)
    paper = (1 - alpha) * nce + alpha * 0.5 * (kl_12 + kl_21) / 2  # / 2: the mean over the two rows
    assert lakda_loss(q1, q2, p, scale=s, alpha=alpha, form="paper").item() == pytest.approx(paper, abs=1e-6)
    # release: P = softmax(cos) (temperature 1), KL(P2 || P1) only; row 1: P1 = [e, 1] / (e + 1)
    p1 = [math.e / (math.e + 1), 1 / (math.e + 1)]
    release = (1 - alpha) * nce + alpha * sum(0.5 * math.log(0.5 / a) for a in p1) / 2
    assert lakda_loss(q1, q2, p, scale=s, alpha=alpha, form="release").item() == pytest.approx(release, abs=1e-6)


def test_stage2_weighting():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    qp, pp = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    qt, pt = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    d_q, d_p = (0 + (1 - R)) / 2, (0 + (1 - R)) / 2  # each term's mean over the two rows
    xlco = info_nce(q, p, 20.0).item()
    # sum: the paper's equation; mean: the authors' code (the default)
    for reduction, distill in (("sum", d_q + d_p), ("mean", (d_q + d_p) / 2)):
        for lam in (0.0, 0.2, 1.0):
            out = stage2_loss(q, p, qp, pp, qt, pt, lam=lam, distill_reduction=reduction)
            assert out["distill"].item() == pytest.approx(distill, abs=1e-6)
            assert out["loss"].item() == pytest.approx(lam * xlco + (1 - lam) * distill, abs=1e-6)
    assert stage2_loss(q, p, qp, pp, qt, pt)["distill"].item() == pytest.approx((d_q + d_p) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="lambda"):
        stage2_loss(q, p, qp, pp, qt, pt, lam=1.5)
    with pytest.raises(ValueError, match="distill_reduction"):
        stage2_loss(q, p, qp, pp, qt, pt, distill_reduction="max")


def test_distill_mean_halves_distill_weight():
    """At lambda 0.2 the sum weighs Distill against XLCO as the mean does at lambda 1/9 (~0.11)."""
    torch.manual_seed(1)
    args = [torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)]
    total = stage2_loss(*args, lam=0.2, distill_reduction="sum")["loss"].item()
    mean = stage2_loss(*args, lam=1 / 9, distill_reduction="mean")["loss"].item()
    # 0.2 X + 0.8 (d_q + d_p) = 1.8 [X / 9 + (8 / 9) (d_q + d_p) / 2]: the same loss up to a factor
    assert total == pytest.approx(1.8 * mean, rel=1e-5)
