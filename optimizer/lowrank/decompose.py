"""The factorizations: truncated SVD of Linear/Conv2d weights, Tucker-2 (HOSVD) of convolutions.

Each factorization returns an ``nn.Sequential`` of ordinary ``nn.Linear`` / ``nn.Conv2d`` layers,
so everything downstream (the pruning graph, quantization, the exporters) sees plain layers. The
maths runs in float64 (``torch.linalg.svd``) and the factors are cast back to the layer's dtype.

- ``Linear(in, out)`` -> ``Linear(in, r, bias=False)``, ``Linear(r, out)``: ``W = U S V^T``
  truncated to ``r``, the singular values split as ``sqrt(S)`` on both sides so the two factors
  have the same scale (better conditioned for int8 and for fine-tuning).
- Conv2d, channel SVD: the kernel as an ``[out, in * kh * kw]`` matrix, the same split;
  ``Conv(in, r, k, stride, padding, dilation, bias=False)`` then ``Conv(r, out, 1)``.
- Conv2d, Tucker-2: HOSVD of the two channel modes, ``W ~= C x_out U_out x_in U_in``;
  ``Conv1x1(in, r_in)`` (weights ``U_in^T``) -> ``Conv(r_in, r_out, k, stride, ...)`` (the core
  ``C``) -> ``Conv1x1(r_out, out)`` (``U_out``, with the bias). A mode kept at its full width
  has no 1x1 (it would be an invertible rotation): its ``U`` is folded into the core conv, so
  ``r_in == in`` gives the channel-SVD structure. The spatial dims are not factorized, and the
  HOSVD is the starting point that distillation then refines.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["svd_conv2d", "svd_linear", "tucker2_conv2d"]


# --------------------------------------------------------------------------- structure


def _like(layer: nn.Module) -> dict[str, Any]:
    return {"device": layer.weight.device, "dtype": layer.weight.dtype}


def linear_pair(layer: nn.Linear, rank: int) -> nn.Sequential:
    """``Linear(in, rank, bias=False), Linear(rank, out)`` shaped after ``layer`` (untrained)."""
    out_f, in_f = layer.weight.shape
    kw = _like(layer)
    return nn.Sequential(
        nn.Linear(in_f, rank, bias=False, **kw),
        nn.Linear(rank, out_f, bias=layer.bias is not None, **kw),
    )


def conv_pair(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    """``Conv(in, rank, k, stride, ...)`` then ``Conv1x1(rank, out)`` shaped after ``layer``."""
    out_c, in_c = layer.weight.shape[:2]
    kw = _like(layer)
    return nn.Sequential(
        nn.Conv2d(
            in_c,
            rank,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=False,
            padding_mode=layer.padding_mode,
            **kw,
        ),
        nn.Conv2d(rank, out_c, 1, bias=layer.bias is not None, **kw),
    )


def tucker2_triple(layer: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """``[Conv1x1(in, r_in)], Conv(r_in, r_out, k, stride, ...), [Conv1x1(r_out, out)]``.

    The 1x1 of a mode kept at full width (``r_in == in``, ``r_out == out``) is left out.
    """
    out_c, in_c = layer.weight.shape[:2]
    r_in, r_out = ranks
    kw = _like(layer)
    bias = layer.bias is not None
    layers: list[nn.Module] = []
    if r_in < in_c:
        layers.append(nn.Conv2d(in_c, r_in, 1, bias=False, **kw))
    # Channel mixing commutes with any spatial padding, so the padding mode moves as is.
    layers.append(
        nn.Conv2d(
            r_in,
            r_out,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=bias and r_out == out_c,
            padding_mode=layer.padding_mode,
            **kw,
        )
    )
    if r_out < out_c:
        layers.append(nn.Conv2d(r_out, out_c, 1, bias=bias, **kw))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- decompositions


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float64: ``(U, S, Vh)`` with ``S`` descending."""
    return torch.linalg.svd(matrix.detach().to(torch.float64), full_matrices=False)


def tucker2_hosvd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HOSVD of a conv kernel's two channel modes: ``(U_out, U_in, core)`` in float64.

    ``U_out`` is ``[out, min(out, in*k)]``, ``U_in`` is ``[in, min(in, out*k)]`` (the leading
    left singular vectors of the mode unfoldings) and ``core = W x_out U_out^T x_in U_in^T`` is
    ``[r_out_max, r_in_max, kh, kw]``; truncating ``U``'s columns and the core keeps the best
    subspaces of each mode.
    """
    u_out, _, u_in, _, core = tucker2_modes(weight)
    return u_out, u_in, core


def tucker2_modes(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """HOSVD with the modes' singular values: ``(U_out, S_out, U_in, S_in, core)``."""
    w = weight.detach().to(torch.float64)
    o, i = w.shape[:2]
    u_out, s_out, _ = svd(w.reshape(o, -1))
    u_in, s_in, _ = svd(w.transpose(0, 1).reshape(i, -1))
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
    return u_out, s_out, u_in, s_in, core


def _set(param: nn.Parameter, value: torch.Tensor, like: nn.Parameter) -> None:
    with torch.no_grad():
        param.copy_(value.reshape(param.shape).to(param.dtype))
    param.requires_grad_(like.requires_grad)


def _copy_bias(new: nn.Module, old: nn.Module) -> None:
    if old.bias is not None:
        _set(new.bias, old.bias.detach(), old.bias)


def linear_from_svd(layer: nn.Linear, factors: tuple, rank: int) -> nn.Sequential:
    """The two-layer factorization of ``layer`` at ``rank`` from its precomputed SVD."""
    u, s, vh = factors
    root = s[:rank].sqrt()
    seq = linear_pair(layer, rank)
    _set(seq[0].weight, root[:, None] * vh[:rank], layer.weight)
    _set(seq[1].weight, u[:, :rank] * root[None, :], layer.weight)
    _copy_bias(seq[1], layer)
    return seq.train(layer.training)


def conv_from_svd(layer: nn.Conv2d, factors: tuple, rank: int) -> nn.Sequential:
    """Channel-SVD factorization of ``layer`` at ``rank`` from the SVD of its flattened kernel."""
    u, s, vh = factors
    root = s[:rank].sqrt()
    seq = conv_pair(layer, rank)
    _set(seq[0].weight, root[:, None] * vh[:rank], layer.weight)
    _set(seq[1].weight, u[:, :rank] * root[None, :], layer.weight)
    _copy_bias(seq[1], layer)
    return seq.train(layer.training)


def conv_from_tucker2(layer: nn.Conv2d, factors: tuple, ranks: tuple[int, int]) -> nn.Sequential:
    """Tucker-2 factorization of ``layer`` at ``(r_in, r_out)`` from its HOSVD."""
    u_out, u_in, core = factors
    out_c, in_c = layer.weight.shape[:2]
    r_in, r_out = ranks
    seq = tucker2_triple(layer, (r_in, r_out))
    mid = core[:r_out, :r_in]
    if r_out == out_c:  # fold the output rotation into the core
        mid = torch.einsum("or,rskl->oskl", u_out[:, :r_out], mid)
    if r_in == in_c:
        mid = torch.einsum("rskl,is->rikl", mid, u_in[:, :r_in])
    convs = list(seq)
    if r_in < in_c:
        _set(convs.pop(0).weight, u_in[:, :r_in].T, layer.weight)
    _set(convs.pop(0).weight, mid, layer.weight)
    if r_out < out_c:
        _set(convs.pop(0).weight, u_out[:, :r_out], layer.weight)
    _copy_bias(seq[-1], layer)
    return seq.train(layer.training)


# --------------------------------------------------------------------------- public helpers


def _check_layer(api: str, layer: Any, kind: type) -> None:
    if not isinstance(layer, kind):
        raise TypeError(f"{api}: expected an nn.{kind.__name__}, got {type(layer).__name__}")
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise ValueError(
            f"{api}: grouped convolution (groups={layer.groups}) cannot be factorized across "
            "channels; expected groups == 1"
        )
    if not torch.isfinite(layer.weight).all():
        raise ValueError(f"{api}: weight has NaN or Inf values; expected finite weights")


def _check_rank(api: str, rank: Any, full: int, what: str = "rank") -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
        raise ValueError(
            f"{api}: {what} out of range; expected 1 <= {what} <= {full}, got {rank!r}"
        )
    return rank


def svd_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Factorizes a Linear layer into two by truncated SVD (the best rank-``rank`` approximation).

    Args:
        layer: ``nn.Linear(in, out)``; left unchanged.
        rank: kept singular values, ``1 <= rank <= min(in, out)``.

    Returns:
        ``nn.Sequential(Linear(in, rank, bias=False), Linear(rank, out))``; at full rank it
        computes the same function as ``layer`` (up to rounding).

    Example:
        >>> seq = svd_linear(nn.Linear(64, 32), 8)
        >>> seq[0].weight.shape, seq[1].weight.shape
        (torch.Size([8, 64]), torch.Size([32, 8]))
    """
    _check_layer("svd_linear", layer, nn.Linear)
    _check_rank("svd_linear", rank, min(layer.weight.shape))
    return linear_from_svd(layer, svd(layer.weight), rank)


def svd_conv2d(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    """Factorizes a Conv2d by the SVD of its kernel as an ``[out, in * kh * kw]`` matrix.

    Args:
        layer: ``nn.Conv2d`` with ``groups == 1``; left unchanged.
        rank: ``1 <= rank <= min(out, in * kh * kw)``.

    Returns:
        ``nn.Sequential(Conv2d(in, rank, k, stride, padding, dilation, bias=False),
        Conv2d(rank, out, 1))``.

    Example:
        >>> seq = svd_conv2d(nn.Conv2d(16, 32, 3, padding=1), 8)
        >>> seq(torch.zeros(1, 16, 8, 8)).shape
        torch.Size([1, 32, 8, 8])
    """
    _check_layer("svd_conv2d", layer, nn.Conv2d)
    w = layer.weight
    _check_rank("svd_conv2d", rank, min(w.shape[0], w[0].numel()))
    return conv_from_svd(layer, svd(w.reshape(w.shape[0], -1)), rank)


def tucker2_conv2d(layer: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """Factorizes a Conv2d by Tucker-2 (HOSVD over the input- and output-channel modes).

    Args:
        layer: ``nn.Conv2d`` with ``groups == 1``; left unchanged.
        ranks: ``(r_in, r_out)``, ``r_in <= min(in, out * kh * kw)`` and
            ``r_out <= min(out, in * kh * kw)``; at those maxima (or at the weight's own
            multilinear ranks) the result is exact.

    Returns:
        ``nn.Sequential(Conv2d(in, r_in, 1, bias=False), Conv2d(r_in, r_out, k, stride, padding,
        dilation, bias=False), Conv2d(r_out, out, 1))``, without the first (last) 1x1 when
        ``r_in == in`` (``r_out == out``).

    Example:
        >>> seq = tucker2_conv2d(nn.Conv2d(16, 32, 3, padding=1), (8, 12))
        >>> [tuple(m.weight.shape) for m in seq]
        [(8, 16, 1, 1), (12, 8, 3, 3), (32, 12, 1, 1)]
    """
    _check_layer("tucker2_conv2d", layer, nn.Conv2d)
    if not isinstance(ranks, (tuple, list)) or len(ranks) != 2:
        raise ValueError(f"tucker2_conv2d: expected ranks as (r_in, r_out), got {ranks!r}")
    w = layer.weight
    o, i = w.shape[:2]
    k = w[0, 0].numel()
    r_in = _check_rank("tucker2_conv2d", ranks[0], min(i, o * k), "r_in")
    r_out = _check_rank("tucker2_conv2d", ranks[1], min(o, i * k), "r_out")
    return conv_from_tucker2(layer, tucker2_hosvd(w), (r_in, r_out))
