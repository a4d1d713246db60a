"""LaKDA (App. A): contrastive loss plus symmetric KL between two parallel queries' in-batch distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.losses.contrastive import info_nce, similarity_logits


def symmetric_kl(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """1/2 [KL(P1 || P2) + KL(P2 || P1)] of the row-wise softmax distributions, averaged over rows."""
    log_p1 = F.log_softmax(logits_1, dim=-1)
    log_p2 = F.log_softmax(logits_2, dim=-1)
    kl_12 = (log_p1.exp() * (log_p1 - log_p2)).sum(-1)
    kl_21 = (log_p2.exp() * (log_p2 - log_p1)).sum(-1)
    return 0.5 * (kl_12 + kl_21).mean()


def lakda_loss(query_1: torch.Tensor, query_2: torch.Tensor, passages: torch.Tensor, scale: float = 20.0,
               alpha: float = 0.5) -> torch.Tensor:
    """(1 - alpha) * InfoNCE(q_L1, p) + alpha * symmetric KL(P(.|q_L1), P(.|q_L2)).

    query_1, query_2: (batch, dim), the same queries in two distinct languages; passages: (n, dim),
    passage i the positive of query i. alpha = 0.5 as in the original implementation. The
    contrastive term uses the first query language (q_XX of the composition), as App. A writes it.
    """
    contrastive = info_nce(query_1, passages, scale)
    alignment = symmetric_kl(similarity_logits(query_1, passages, scale), similarity_logits(query_2, passages, scale))
    return (1.0 - alpha) * contrastive + alpha * alignment
