"""The paper's losses as pure functions of tensors (they never call a model)."""

from trainer.losses.contrastive import info_nce, similarity_logits
from trainer.losses.distill import distill_loss
from trainer.losses.lakda import LAKDA_FORMS, kl_divergence, lakda_loss, symmetric_kl
from trainer.losses.mimo import DISTILL_REDUCTIONS, stage2_loss

__all__ = ["DISTILL_REDUCTIONS", "LAKDA_FORMS", "distill_loss", "info_nce", "kl_divergence", "lakda_loss",
           "similarity_logits", "stage2_loss", "symmetric_kl"]
