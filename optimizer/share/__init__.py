"""Weight sharing: 1-D clustering (``cluster``) and the pass that shares layer weights through
codebooks (``share``); see :func:`share_weights_`."""

from optimizer.share.share import (
    RECORD_KEY,
    ShareReport,
    ShareRow,
    WeightShareConfig,
    bits_for,
    codebook,
    codebook_of,
    codebook_s8,
    codebooks,
    kernel_matrix,
    share_weights_,
)

__all__ = [
    "RECORD_KEY",
    "ShareReport",
    "ShareRow",
    "WeightShareConfig",
    "bits_for",
    "codebook",
    "codebook_of",
    "codebook_s8",
    "codebooks",
    "kernel_matrix",
    "share_weights_",
]
