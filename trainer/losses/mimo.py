"""MIMO's Stage-2 objective (section 3.2): the one place where its terms are weighted."""

from __future__ import annotations

import torch

from trainer.losses.contrastive import info_nce
from trainer.losses.distill import distill_loss


def stage2_loss(query: torch.Tensor, passage: torch.Tensor, query_projected: torch.Tensor,
                passage_projected: torch.Tensor, query_target: torch.Tensor, passage_target: torch.Tensor,
                lam: float = 0.2, scale: float = 20.0) -> dict[str, torch.Tensor]:
    """L = lambda * XLCO + (1 - lambda) * Distill, Distill = [1 - cos(psi(q), t_q)] + [1 - cos(psi(p), t_p)].

    query, passage: (batch, d_student), E_s(q_XX) and E_s(p_YY): XLCO is InfoNCE over these, the
    embeddings retrieval uses (psi is dropped at inference). query_projected, passage_projected:
    (batch, d_teacher), psi of the same; query_target, passage_target: the cached E_t(q_en),
    E_t(p_en). Returns the loss and its two terms.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    xlco = info_nce(query, passage, scale)
    distill = distill_loss(query_projected, query_target) + distill_loss(passage_projected, passage_target)
    return {"loss": lam * xlco + (1.0 - lam) * distill, "xlco": xlco, "distill": distill}
