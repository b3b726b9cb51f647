"""Low-rank factorization: SVD of Linear layers, channel SVD and Tucker-2 of convolutions.

Importing this package registers the ``LowRankLinear``, ``LowRankConv2d`` and ``Tucker2Conv2d``
plan replacements, so :func:`optimizer.load` can rebuild factorized models.

Example:
    >>> from optimizer.lowrank import LowRankConfig, factorize_
    >>> report = factorize_(model, LowRankConfig(macs_reduction=2.0), example_inputs)
    >>> print(report.to_markdown())
"""

from __future__ import annotations

from optimizer.lowrank.decompose import svd_conv2d, svd_linear, tucker2_conv2d
from optimizer.lowrank.factorize import (
    KINDS,
    LowRankConfig,
    LowRankLayer,
    LowRankReport,
    factorize_,
)

__all__ = [
    "KINDS",
    "LowRankConfig",
    "LowRankLayer",
    "LowRankReport",
    "factorize_",
    "svd_conv2d",
    "svd_linear",
    "tucker2_conv2d",
]
