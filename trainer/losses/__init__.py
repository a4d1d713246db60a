"""The paper's losses as pure functions of tensors (they never call a model)."""

from trainer.losses.contrastive import info_nce, similarity_logits
from trainer.losses.distill import distill_loss
from trainer.losses.lakda import lakda_loss, symmetric_kl
from trainer.losses.mimo import stage2_loss

__all__ = ["distill_loss", "info_nce", "lakda_loss", "similarity_logits", "stage2_loss", "symmetric_kl"]
