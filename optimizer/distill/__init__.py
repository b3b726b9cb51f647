"""Knowledge distillation: recover a pruned model's accuracy from the original (the teacher)."""

from optimizer.distill.core import (
    DistillConfig,
    DistillResult,
    distill_,
    distill_blocks_,
    fine_tune_,
    soft_kl_loss,
)

__all__ = [
    "DistillConfig",
    "DistillResult",
    "distill_",
    "distill_blocks_",
    "fine_tune_",
    "soft_kl_loss",
]
