"""int8 quantization. ``arithmetic`` is the reference int8 maths (numpy) the kernels match."""

from optimizer.quantize import arithmetic

__all__ = ["arithmetic"]
