"""edge-optimizer: make a PyTorch model as small and fast as an edge device allows.

Public names live here (as tfmot keeps its public API in one place). Subpackages:
``optimizer.kernels`` (native int8/fp32 GEMM), ``optimizer.quantize.arithmetic`` (the reference
int8 maths the kernels are bit-exact to).
"""

from optimizer import kernels
from optimizer.quantize import arithmetic

__all__ = ["arithmetic", "kernels"]
__version__ = "0.1.0"
