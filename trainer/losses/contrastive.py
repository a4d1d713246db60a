"""InfoNCE with in-batch negatives over cosine similarities (App. A: InfoNCE and XLCO).

XLCO is this same loss on cross-lingual pairs (q_XX, p_YY); which pairs a batch holds is the
data's business (pipeline.stage2_data compositions), not the loss's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_logits(queries: torch.Tensor, passages: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """scale * cos(q_i, p_j): (n_queries, n_passages). scale = 1/tau = 20 (Table 6)."""
    q = F.normalize(queries.float(), dim=-1)
    p = F.normalize(passages.float(), dim=-1)
    return scale * q @ p.T


def info_nce(queries: torch.Tensor, passages: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """-log softmax_j(scale * cos(q_i, p_j))[i], averaged over the queries.

    queries: (batch, dim); passages: (n, dim) with n >= batch: passage i is the positive of query i
    and every other passage an in-batch negative (extra rows, e.g. passages gathered from other
    devices, are negatives only).
    """
    logits = similarity_logits(queries, passages, scale)
    targets = torch.arange(queries.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets)
