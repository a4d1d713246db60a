"""Pooling token states into one vector, correct under left or right padding.

Shared by the teacher encoder and the student. `mask` is the attention mask (1 = real token);
the formulas never assume which side the padding is on: indexing `mask.sum() - 1` for the last
token is only right under right padding and silently gives a pad token's state under left padding.
"""

from __future__ import annotations

import torch

POOLINGS = ("mean", "cls", "last")


def positions_from_mask(mask: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Position ids start..start+n-1 over the real tokens of each row, whatever side the padding is on.

    `start` is 0 for most models; RoBERTa-family models (XLM-R) number positions from their
    padding index + 1 (see `first_position`)."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0) + start


def first_position(model) -> int:
    """The position id of a model's first token: padding index + 1 where the position table has a
    padding row (RoBERTa, XLM-R, CamemBERT: positions 2, 3, ...), else 0."""
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    padding_idx = getattr(table, "padding_idx", None)
    return 0 if padding_idx is None else int(padding_idx) + 1


def first_token_index(mask: torch.Tensor) -> torch.Tensor:
    return mask.long().argmax(dim=1)  # argmax returns the first maximal position


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    width = mask.shape[1]
    return width - 1 - mask.long().flip(dims=[1]).argmax(dim=1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """hidden: (batch, seq, dim); mask: (batch, seq). Returns (batch, dim) in hidden's dtype."""
    if mode == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "cls":
        return hidden[rows, first_token_index(mask)]
    if mode == "last":
        return hidden[rows, last_token_index(mask)]
    raise ValueError(f"unknown pooling {mode!r} (expected one of {', '.join(POOLINGS)})")
