"""Worked examples with real data: the digits task and its reference models (used by the demo).

Example:
    >>> from optimizer.examples import digits
    >>> sorted(digits.MODELS)
    ['mlp', 'mobilenetv2', 'resnet', 'vgg']
"""

from optimizer.examples import digits

__all__ = ["digits"]
