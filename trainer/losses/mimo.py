"""MIMO's Stage-2 objective (section 3.2): the one place where its terms are weighted."""

from __future__ import annotations

import torch

from trainer.losses.contrastive import info_nce
from trainer.losses.distill import distill_loss

DISTILL_REDUCTIONS = ("mean", "sum")


def stage2_loss(query: torch.Tensor, passage: torch.Tensor, query_projected: torch.Tensor,
                passage_projected: torch.Tensor, query_target: torch.Tensor, passage_target: torch.Tensor,
                lam: float = 0.2, scale: float = 20.0, distill_reduction: str = "mean") -> dict[str, torch.Tensor]:
    """L = lambda * XLCO + (1 - lambda) * Distill, with Distill from d_q = 1 - cos(psi(q), t_q) and
    d_p = 1 - cos(psi(p), t_p) (each averaged over the batch):

    - distill_reduction="mean": (d_q + d_p) / 2, as the authors' code computes it (the reported numbers);
    - distill_reduction="sum": d_q + d_p, the paper's equation (twice Distill's weight: at lambda 0.2 the
      sum gives the same XLCO:Distill ratio as the mean at lambda ~0.11).

    query, passage: (batch, d_student), E_s(q_XX) and E_s(p_YY): XLCO is InfoNCE over these, the
    embeddings retrieval uses (psi is dropped at inference). query_projected, passage_projected:
    (batch, d_teacher), psi of the same; query_target, passage_target: the cached E_t(q_en),
    E_t(p_en). Returns the loss and its two terms.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if distill_reduction not in DISTILL_REDUCTIONS:
        raise ValueError(f"distill_reduction must be one of {', '.join(DISTILL_REDUCTIONS)}, got {distill_reduction!r}")
    xlco = info_nce(query, passage, scale)
    distill = distill_loss(query_projected, query_target) + distill_loss(passage_projected, passage_target)
    if distill_reduction == "mean":
        distill = distill / 2
    return {"loss": lam * xlco + (1.0 - lam) * distill, "xlco": xlco, "distill": distill}
