"""Embedding distillation (section 3.1, Stage 1; the Distill terms of Stage 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cos(psi(E_s(t_XX)), E_t(t_en)).

    student: (batch, d_teacher), the student's pooled embeddings after the projection psi.
    teacher: (batch, d_teacher), the cached teacher vectors of the English sides (float32).
    Cosine is scale-free, so teacher vectors need not be normalized. Returns a scalar.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ")
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()
