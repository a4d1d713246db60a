"""LaKDA (App. A): contrastive loss plus a KL alignment of two parallel queries' in-batch distributions.

Two forms, which differ in the alignment term (the InfoNCE term is the same: scale * cosine, first query):
- "paper" (App. A): 1/2 [KL(P1 || P2) + KL(P2 || P1)], P = softmax(scale * cos) as the paper's P(p_j|q)
  with tau = 1/20;
- "release" (the authors' `src/mimo/losses/cached_lakda.py`, which produced the reported LaKDA rows):
  one-sided KL(P2 || P1), P = softmax(cos) on unscaled cosines (temperature 1), gradients through both
  queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.losses.contrastive import info_nce, similarity_logits

LAKDA_FORMS = ("release", "paper")


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) of the row-wise softmax distributions, averaged over rows (KLDivLoss "batchmean")."""
    log_p = F.log_softmax(logits_p, dim=-1)
    log_q = F.log_softmax(logits_q, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def symmetric_kl(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """1/2 [KL(P1 || P2) + KL(P2 || P1)] of the row-wise softmax distributions, averaged over rows."""
    return 0.5 * (kl_divergence(logits_1, logits_2) + kl_divergence(logits_2, logits_1))


def lakda_loss(query_1: torch.Tensor, query_2: torch.Tensor, passages: torch.Tensor, scale: float = 20.0,
               alpha: float = 0.5, form: str = "release") -> torch.Tensor:
    """(1 - alpha) * InfoNCE(q_L1, p) + alpha * alignment(P(.|q_L1), P(.|q_L2)), alignment by `form` (above).

    query_1, query_2: (batch, dim), the same queries in two distinct languages (q_XX, q_YY of the
    composition; the release's anchor and anchor_b); passages: (n, dim), passage i the positive of
    query i. alpha = 0.5 as in the original implementation. The contrastive term uses the first query.
    """
    contrastive = info_nce(query_1, passages, scale)
    if form == "paper":
        alignment = symmetric_kl(similarity_logits(query_1, passages, scale), similarity_logits(query_2, passages, scale))
    elif form == "release":
        alignment = kl_divergence(similarity_logits(query_2, passages, 1.0), similarity_logits(query_1, passages, 1.0))
    else:
        raise ValueError(f"LaKDA form must be one of {', '.join(LAKDA_FORMS)}, got {form!r}")
    return (1.0 - alpha) * contrastive + alpha * alignment
