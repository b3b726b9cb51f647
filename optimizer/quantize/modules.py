"""Integer-exact int8 modules: what a quantized model runs, and what the exporters read.

Every module takes and returns ordinary ``torch.int8`` tensors (NCHW, as PyTorch) and computes
exactly what :mod:`optimizer.quantize.arithmetic` and the native kernels compute on the same
values (see :mod:`optimizer.quantize.qops`). Attributes, the contract with the exporters:

- every module: ``op`` (``"conv2d"``, ``"linear"``, ``"add"``, ``"mul"``, ``"lut"``,
  ``"avg_pool2d"``, ``"max_pool2d"``, ``"clamp"``, ``"upsample_nearest"``, ``"quantize"``,
  ``"dequantize"``), ``path`` (the PyTorch module path of the layer), ``output_scale`` (float) and
  ``output_zero_point`` (int);
- single-input ops: ``input_scale``, ``input_zero_point``; ``add``/``mul``: ``input_scales``,
  ``input_zero_points`` (tuples of two);
- :class:`QConv2d` / :class:`QLinear`: buffers ``weight_int8`` (int8, PyTorch layout: OIHW /
  [N, K]; :meth:`QConv2d.weight_ohwi` gives the device's OHWI), ``bias_int32`` (int32 [N], scale
  ``input_scale * weight_scale``), ``weight_scale`` (float32 [N], or [1] per tensor),
  ``multiplier`` and ``shift`` (int32 [N], always per channel, as the kernels take them);
  attributes ``per_channel``, ``activation`` (``None``, ``"relu"``, ``"relu6"``), ``clamp``
  (int8 bounds of the output stage), conv geometry ``stride``, ``padding``, ``dilation``,
  ``groups``, ``kernel_size``;
- every module: ``requantization``, ``"gemmlowp"`` (the TFLite spec's double rounding, the
  default) or ``"fp32"`` (XNNPACK's arithmetic, what LiteRT runs on phones; set by
  ``Int8Config(requantization="fp32")``). A :class:`QConv2d` / :class:`QLinear` in ``"fp32"``
  also has the float32 buffer ``requant_scale`` ([N] per output channel, or [1]):
  ``float32(float32(input_scale * weight_scale[c]) / output_scale)``, and its output is
  ``clamp(rint(float32(acc) * requant_scale[c]) + output_zero_point)`` in float32, rounding half
  to even (:func:`optimizer.quantize.arithmetic.requantize_fp32`); ``multiplier`` / ``shift``
  are kept but unused; a :class:`QAdd` in ``"fp32"`` has ``requant_input_scale`` (float32 [2],
  ``s_in[i] / s_out``), ``requant_scale`` = [1.0], and computes XNNPACK's ADD
  (:func:`optimizer.quantize.arithmetic.add_s8_fp32`); a :class:`QMul` in ``"fp32"`` has
  ``requant_scale`` = [``float32(s1 * s2) / s_out``] and requantizes the int32 product with it;
  a global :class:`QAvgPool2d` in ``"fp32"`` has ``requant_scale`` = [``float32(float32(s_in /
  s_out) * float32(1 / (H * W)))``] and computes XNNPACK's MEAN
  (:func:`optimizer.quantize.arithmetic.global_avg_pool_s8_fp32`); modules without an output
  stage, non-global pools, and ADD / MUL whose scales XNNPACK does not take, keep
  ``"gemmlowp"``;
- :class:`QAdd`: ``multipliers`` = (m1, shift1, m2, shift2, m_out, shift_out) and
  ``left_shift`` (20), TFLite ADD; :class:`QMul`: ``multiplier``, ``shift``; both ``clamp``;
- :class:`QLookupTable`: buffer ``table`` (int8 [256], ``table[q + 128]``), ``function``;
- pools: ``kernel_size``, ``stride``, ``padding`` (average pooling counts valid positions and
  rounds half away from zero, TFLite AVERAGE_POOL_2D; a global average pool is one window over
  the whole image); output scale and zero point equal the input's.

Layout note for NHWC runtimes: a ``QLinear`` that follows ``flatten`` of a conv output takes
PyTorch's (C, H, W) feature order; a runtime that keeps activations NHWC permutes the weight's
columns to (H, W, C) once at export (exact, no arithmetic changes).

Example::

    q = QuantStub(0.02, -3, path="x")(torch.randn(1, 8))
    y = QLinear.from_float(nn.Linear(8, 4), 0.02, -3, 0.05, 1, path="fc")(q)
    DeQuantStub(0.05, 1, path="out")(y)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from optimizer.quantize import arithmetic as ar
from optimizer.quantize import qops
from optimizer.quantize.observers import weight_scales

__all__ = [
    "DeQuantStub",
    "QAdd",
    "QAvgPool2d",
    "QClamp",
    "QConv2d",
    "QLinear",
    "QLookupTable",
    "QMaxPool2d",
    "QModule",
    "QMul",
    "QUpsampleNearest",
    "QuantStub",
    "quantize_bias",
]


def _check_int8(mod: QModule, *xs: torch.Tensor) -> None:
    for x in xs:
        if not isinstance(x, torch.Tensor) or x.dtype != torch.int8:
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(
                f"{type(mod).__name__} `{mod.path}`: expected an int8 tensor, got {got}. The "
                "quantized model quantizes its float inputs itself; call it on float tensors"
            )


class QModule(nn.Module):
    """Base of the int8 modules: path, op name, output quantization, and a JSON-like summary."""

    op = "?"
    #: The arithmetic of the output stage: ``"gemmlowp"`` or ``"fp32"`` (see the module doc).
    requantization = "gemmlowp"

    def __init__(self, output_scale: float, output_zero_point: int, path: str = "") -> None:
        super().__init__()
        self.path = path
        self.output_scale = float(np.float32(output_scale))
        self.output_zero_point = int(output_zero_point)

    def _reset_requantization(self, mode: str) -> None:
        """Checks ``mode`` for ``set_requantization`` and returns the module to ``"gemmlowp"``
        (no fp32 buffers); the caller then applies ``"fp32"`` where it can."""
        if mode not in ("gemmlowp", "fp32"):
            raise ValueError(
                f"{type(self).__name__} `{self.path}`: requantization must be 'gemmlowp' or "
                f"'fp32', got {mode!r}"
            )
        for name in ("requant_scale", "requant_input_scale"):
            self._buffers.pop(name, None)
        self.requantization = "gemmlowp"

    def summary(self) -> dict[str, Any]:
        """JSON-like quantization parameters (what ``get_record(model)["quantization"]`` lists)."""
        out: dict[str, Any] = {
            "op": self.op,
            "output_scale": self.output_scale,
            "output_zero_point": self.output_zero_point,
        }
        for k in ("input_scale", "input_zero_point", "input_scales", "input_zero_points"):
            if hasattr(self, k):
                v = getattr(self, k)
                out[k] = list(v) if isinstance(v, tuple) else v
        if self.requantization != "gemmlowp":
            out["requantization"] = self.requantization
        return out

    def extra_repr(self) -> str:
        return f"path={self.path!r}, out=({self.output_scale:.4g}, {self.output_zero_point})"


class QuantStub(QModule):
    """float -> int8 with the tensor's scale and zero point (round half to even, saturate)."""

    op = "quantize"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(x):
            raise TypeError(
                f"QuantStub `{self.path}`: expected a float tensor, got {x.dtype}; the quantized "
                "model takes the same float inputs as the original"
            )
        return qops.quantize(x, self.output_scale, self.output_zero_point)


class DeQuantStub(QModule):
    """int8 -> float32: ``(q - zero_point) * scale``; scale/zero point are the input's."""

    op = "dequantize"

    def __init__(self, scale: float, zero_point: int, path: str = "") -> None:
        super().__init__(scale, zero_point, path)
        self.input_scale = self.output_scale
        self.input_zero_point = self.output_zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_int8(self, x)
        return qops.dequantize(x, self.input_scale, self.input_zero_point)


def quantize_bias(
    bias: torch.Tensor | None, input_scale: float, w_scale: torch.Tensor, n: int
) -> torch.Tensor:
    """int32 bias ``round(b / (s_in * s_w))`` (float64, half to even, saturated to int32)."""
    if bias is None:
        return torch.zeros(n, dtype=torch.int32)
    s = float(np.float32(input_scale)) * w_scale.to(torch.float64)
    q = torch.round(bias.detach().to(torch.float64) / s)
    return torch.clamp(q, qops.INT32_MIN, qops.INT32_MAX).to(torch.int32)


class _QWeighted(QModule):
    """Shared part of QConv2d/QLinear: int8 weights, int32 bias, per-channel requantization."""

    def _init_weights(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        input_scale: float,
        input_zero_point: int,
        per_channel: bool,
        activation: str | None,
        weight_amax: torch.Tensor | None = None,
    ) -> None:
        self.input_scale = float(np.float32(input_scale))
        self.input_zero_point = int(input_zero_point)
        self.per_channel = bool(per_channel)
        self.activation = activation
        n = weight.shape[0]
        k = int(np.prod(weight.shape[1:]))
        if k >= qops.MAX_EXACT_K:
            raise ValueError(
                f"{type(self).__name__} `{self.path}`: K = {k} is too large for exact float64 "
                f"accumulation; expected K < {qops.MAX_EXACT_K}"
            )
        w = weight.detach().to(torch.float32)
        s_w = weight_scales(w, per_channel, weight_amax)
        # A channel whose bias would not fit int32 at scale s_in * s_w gets a coarser weight
        # scale (tiny channels left by BN folding); its weights still fit [-127, 127].
        if bias is not None:
            need = bias.detach().abs().to(torch.float64) / (self.input_scale * 2.0**30)
            need = need.to(torch.float32)
            s_w = torch.maximum(s_w, need.amax().reshape(1) if not per_channel else need)
        s_w_c = s_w.expand(n) if s_w.numel() == 1 else s_w
        view = (-1,) + (1,) * (w.dim() - 1)
        q = torch.round(w.to(torch.float64) / s_w_c.to(torch.float64).reshape(view))
        self.register_buffer("weight_int8", torch.clamp(q, -127, 127).to(torch.int8))
        self.register_buffer("weight_scale", s_w.to(torch.float32))
        self.register_buffer("bias_int32", quantize_bias(bias, self.input_scale, s_w_c, n))
        m, s = ar.conv_multiplier(self.input_scale, s_w_c.numpy(), self.output_scale)
        self.register_buffer("multiplier", torch.from_numpy(m.astype(np.int32)))
        self.register_buffer("shift", torch.from_numpy(s.astype(np.int32)))
        self.clamp = ar.activation_range(activation, self.output_scale, self.output_zero_point)

    def set_requantization(self, mode: str) -> None:
        """Selects the output stage's arithmetic: ``"gemmlowp"`` (the TFLite spec's
        MultiplyByQuantizedMultiplier) or ``"fp32"`` (XNNPACK's: the accumulator times the
        float32 ``requant_scale``, rounded half to even). Integer weights and bias do not change.

        Example::

            m = QLinear(torch.randn(4, 8), None, 0.02, 0, 0.05, 0)
            m.set_requantization("fp32")
            m.requant_scale.dtype  # torch.float32, one per output channel
        """
        self._reset_requantization(mode)
        if mode == "fp32":
            scale = ar.fp32_requant_scale(
                self.input_scale, self.weight_scale.numpy(), self.output_scale
            )
            self.register_buffer("requant_scale", torch.from_numpy(scale))
            self.requantization = mode

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(
            per_channel=self.per_channel,
            activation=self.activation,
            clamp=list(self.clamp),
            weight_scales=[float(v) for v in self.weight_scale],
        )
        return out

    def dequantized_weight(self) -> torch.Tensor:
        """``weight_int8 * weight_scale`` as float32 (what the int8 model effectively uses)."""
        s = self.weight_scale.to(torch.float64)
        s = s.reshape((-1,) + (1,) * (self.weight_int8.dim() - 1)) if s.numel() > 1 else s
        return (self.weight_int8.to(torch.float64) * s).to(torch.float32)


class QLinear(_QWeighted):
    """int8 Linear over the last dim; equals ``kernels.linear_s8`` bit for bit."""

    op = "linear"

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        input_scale: float,
        input_zero_point: int,
        output_scale: float,
        output_zero_point: int,
        per_channel: bool = True,
        activation: str | None = None,
        path: str = "",
        weight_amax: torch.Tensor | None = None,
    ) -> None:
        super().__init__(output_scale, output_zero_point, path)
        self._init_weights(
            weight, bias, input_scale, input_zero_point, per_channel, activation, weight_amax
        )
        self.in_features = int(weight.shape[1])
        self.out_features = int(weight.shape[0])

    @classmethod
    def from_float(
        cls,
        mod: nn.Linear,
        input_scale: float,
        input_zero_point: int,
        output_scale: float,
        output_zero_point: int,
        per_channel: bool = True,
        activation: str | None = None,
        path: str = "",
        weight_amax: torch.Tensor | None = None,
    ) -> QLinear:
        """Quantizes a float ``nn.Linear`` (weights symmetric, bias int32)."""
        return cls(
            mod.weight,
            mod.bias,
            input_scale,
            input_zero_point,
            output_scale,
            output_zero_point,
            per_channel,
            activation,
            path,
            weight_amax,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_int8(self, x)
        if self.requantization == "fp32":
            return qops.linear_s8_fp32(
                x,
                self.weight_int8,
                self.bias_int32,
                self.input_zero_point,
                self.requant_scale,
                self.output_zero_point,
                self.clamp,
            )
        return qops.linear_s8(
            x,
            self.weight_int8,
            self.bias_int32,
            self.input_zero_point,
            self.multiplier,
            self.shift,
            self.output_zero_point,
            self.clamp,
        )


class QConv2d(_QWeighted):
    """int8 Conv2d (any groups: dense, grouped, depthwise); equals im2col (K ordered kh, kw, c,
    padded with the input zero point) + ``kernels.linear_s8`` per group, bit for bit."""

    op = "conv2d"

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        input_scale: float,
        input_zero_point: int,
        output_scale: float,
        output_zero_point: int,
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        per_channel: bool = True,
        activation: str | None = None,
        path: str = "",
        weight_amax: torch.Tensor | None = None,
    ) -> None:
        super().__init__(output_scale, output_zero_point, path)
        self._init_weights(
            weight, bias, input_scale, input_zero_point, per_channel, activation, weight_amax
        )
        self.stride = tuple(int(v) for v in stride)
        self.padding = tuple(int(v) for v in padding)
        self.dilation = tuple(int(v) for v in dilation)
        self.groups = int(groups)
        self.kernel_size = tuple(int(v) for v in weight.shape[2:])
        self.in_channels = int(weight.shape[1]) * self.groups
        self.out_channels = int(weight.shape[0])

    @classmethod
    def from_float(
        cls,
        mod: nn.Conv2d,
        input_scale: float,
        input_zero_point: int,
        output_scale: float,
        output_zero_point: int,
        per_channel: bool = True,
        activation: str | None = None,
        path: str = "",
    ) -> QConv2d:
        """Quantizes a float ``nn.Conv2d`` (zero padding, numeric padding)."""
        return cls(
            mod.weight,
            mod.bias,
            input_scale,
            input_zero_point,
            output_scale,
            output_zero_point,
            mod.stride,
            mod.padding,
            mod.dilation,
            mod.groups,
            per_channel,
            activation,
            path,
        )

    def weight_ohwi(self) -> np.ndarray:
        """int8 weights in the device's OHWI layout ([O, KH, KW, C / groups])."""
        return self.weight_int8.permute(0, 2, 3, 1).contiguous().numpy()

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(
            stride=list(self.stride),
            padding=list(self.padding),
            dilation=list(self.dilation),
            groups=self.groups,
            kernel_size=list(self.kernel_size),
        )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_int8(self, x)
        if self.requantization == "fp32":
            return qops.conv2d_s8_fp32(
                x,
                self.weight_int8,
                self.bias_int32,
                self.input_zero_point,
                self.requant_scale,
                self.output_zero_point,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
                self.clamp,
            )
        return qops.conv2d_s8(
            x,
            self.weight_int8,
            self.bias_int32,
            self.input_zero_point,
            self.multiplier,
            self.shift,
            self.output_zero_point,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.clamp,
        )


class QAdd(QModule):
    """TFLite int8 ADD of two tensors (broadcasting), with an optional fused ReLU/ReLU6 clamp."""

    op = "add"

    def __init__(
        self,
        input_scales: tuple[float, float],
        input_zero_points: tuple[int, int],
        output_scale: float,
        output_zero_point: int,
        activation: str | None = None,
        path: str = "",
    ) -> None:
        super().__init__(output_scale, output_zero_point, path)
        self.input_scales = tuple(float(np.float32(s)) for s in input_scales)
        self.input_zero_points = tuple(int(z) for z in input_zero_points)
        self.left_shift = 20
        self.multipliers = ar.add_multipliers(*self.input_scales, self.output_scale)
        self.activation = activation
        self.clamp = ar.activation_range(activation, self.output_scale, self.output_zero_point)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(activation=self.activation, clamp=list(self.clamp), left_shift=self.left_shift)
        return out

    def set_requantization(self, mode: str) -> bool:
        """Selects ``"gemmlowp"`` (TFLite's ADD) or ``"fp32"`` (XNNPACK's: inputs scaled by
        integer multipliers derived from the float32 ratios ``s_in[i] / s_out``, one rounding
        shift). XNNPACK only runs ADDs whose ratios lie in [2^-10, 2^8), leaving the others to
        TFLite's reference kernel: for those the module stays ``"gemmlowp"``. Returns whether
        ``mode`` was applied.

        Example::

            m = QAdd((0.1, 0.05), (0, 3), 0.2, -1)
            m.set_requantization("fp32")  # True
        """
        self._reset_requantization(mode)
        if mode == "gemmlowp":
            return True
        ratios = ar.add_fp32_ratios(*self.input_scales, self.output_scale)
        if ratios is None:
            return False
        self.requantization = "fp32"
        self.register_buffer("requant_input_scale", torch.from_numpy(ratios))
        self.fp32_multipliers = ar.add_fp32_multipliers(ratios)
        return True

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_int8(self, a, b)
        if self.requantization == "fp32":
            return qops.add_s8_fp32(
                a,
                b,
                *self.input_zero_points,
                self.output_zero_point,
                self.fp32_multipliers,
                self.clamp,
            )
        return qops.add_s8(
            a,
            b,
            *self.input_zero_points,
            self.output_zero_point,
            self.multipliers,
            self.left_shift,
            self.clamp,
        )


class QMul(QModule):
    """TFLite int8 MUL of two tensors (broadcasting: squeeze-excitation gates)."""

    op = "mul"

    def __init__(
        self,
        input_scales: tuple[float, float],
        input_zero_points: tuple[int, int],
        output_scale: float,
        output_zero_point: int,
        activation: str | None = None,
        path: str = "",
    ) -> None:
        super().__init__(output_scale, output_zero_point, path)
        self.input_scales = tuple(float(np.float32(s)) for s in input_scales)
        self.input_zero_points = tuple(int(z) for z in input_zero_points)
        self.multiplier, self.shift = ar.mul_multiplier(*self.input_scales, self.output_scale)
        self.activation = activation
        self.clamp = ar.activation_range(activation, self.output_scale, self.output_zero_point)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(activation=self.activation, clamp=list(self.clamp))
        return out

    def set_requantization(self, mode: str) -> bool:
        """Selects ``"gemmlowp"`` (TFLite's MUL) or ``"fp32"`` (XNNPACK's: the int32 product times
        the float32 ``requant_scale``, rounded half to even). XNNPACK only runs MULs whose scale
        lies in [2^-16, 2^8); for the others the module stays ``"gemmlowp"``. Returns whether
        ``mode`` was applied.

        Example::

            m = QMul((0.1, 0.05), (0, 3), 0.02, -1)
            m.set_requantization("fp32")  # True
        """
        self._reset_requantization(mode)
        if mode == "gemmlowp":
            return True
        scale = ar.mul_fp32_scale(*self.input_scales, self.output_scale)
        if scale is None:
            return False
        self.requantization = "fp32"
        self.register_buffer("requant_scale", torch.tensor([scale], dtype=torch.float32))
        return True

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_int8(self, a, b)
        if self.requantization == "fp32":
            return qops.mul_s8_fp32(
                a,
                b,
                *self.input_zero_points,
                self.output_zero_point,
                self.requant_scale,
                self.clamp,
            )
        return qops.mul_s8(
            a,
            b,
            *self.input_zero_points,
            self.output_zero_point,
            self.multiplier,
            self.shift,
            self.clamp,
        )


class _QSameScale(QModule):
    """An op whose output shares the input's scale and zero point."""

    def __init__(self, scale: float, zero_point: int, path: str = "") -> None:
        super().__init__(scale, zero_point, path)
        self.input_scale = self.output_scale
        self.input_zero_point = self.output_zero_point


class QMaxPool2d(_QSameScale):
    """int8 max pooling (exact)."""

    op = "max_pool2d"

    def __init__(
        self,
        scale: float,
        zero_point: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        ceil_mode: bool = False,
        path: str = "",
    ) -> None:
        super().__init__(scale, zero_point, path)
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        self.ceil_mode = bool(ceil_mode)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(
            kernel_size=list(self.kernel_size),
            stride=list(self.stride),
            padding=list(self.padding),
            dilation=list(self.dilation),
        )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_int8(self, x)
        return qops.max_pool2d_s8(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )


class QAvgPool2d(_QSameScale):
    """TFLite int8 AVERAGE_POOL_2D (valid positions counted, rounding half away from zero); a
    global pool in ``"fp32"`` requantization computes XNNPACK's MEAN instead."""

    op = "avg_pool2d"

    def __init__(
        self,
        scale: float,
        zero_point: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int] = (0, 0),
        path: str = "",
    ) -> None:
        super().__init__(scale, zero_point, path)
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = tuple(padding)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(
            kernel_size=list(self.kernel_size), stride=list(self.stride), padding=list(self.padding)
        )
        return out

    def set_requantization(self, mode: str, input_size: tuple[int, int] | None = None) -> bool:
        """Selects ``"gemmlowp"`` (TFLite's AVERAGE_POOL_2D) or ``"fp32"`` (XNNPACK's MEAN over H
        and W, :func:`optimizer.quantize.arithmetic.global_avg_pool_s8_fp32`, with the float32
        buffer ``requant_scale`` = [``mean_fp32_scale(s, s, KH * KW)``]). Only a global pool
        (the window covers ``input_size`` (H, W), no padding) has an XNNPACK MEAN; any other
        pool stays ``"gemmlowp"`` (XNNPACK leaves int8 average pools to TFLite's kernel).
        Returns whether ``mode`` was applied.

        Example::

            m = QAvgPool2d(0.05, 3, (4, 4), (4, 4))
            m.set_requantization("fp32", input_size=(4, 4))  # True
        """
        self._reset_requantization(mode)
        if mode == "gemmlowp":
            return True
        kh, kw = self.kernel_size
        if input_size is None or tuple(input_size) != (kh, kw) or self.padding != (0, 0):
            return False
        self.requantization = "fp32"
        scale = ar.mean_fp32_scale(self.input_scale, self.output_scale, kh * kw)
        self.register_buffer("requant_scale", torch.tensor([scale], dtype=torch.float32))
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_int8(self, x)
        if self.requantization == "fp32":
            return self._mean_fp32(x)
        return qops.avg_pool2d_s8(x, self.kernel_size, self.stride, self.padding)

    def _mean_fp32(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[2:]) != tuple(self.kernel_size):
            raise ValueError(
                f"QAvgPool2d `{self.path}`: in fp32 requantization this is a global pool over "
                f"{tuple(self.kernel_size)} images; got input of shape {tuple(x.shape)}"
            )
        count = x.shape[2] * x.shape[3]
        scale = self.requant_scale.to(torch.float32)
        bias = float(
            ar.mean_fp32_bias(scale.item(), self.input_zero_point, self.output_zero_point, count)
        )
        acc = x.to(torch.int32).sum(dim=(2, 3), keepdim=True, dtype=torch.int32)
        v = acc.to(torch.float32) * scale  # float32 product, then a separate float32 add
        v = v + torch.tensor(bias, dtype=torch.float32)
        return torch.clamp(torch.round(v), -128, 127).to(torch.int8)


class QClamp(_QSameScale):
    """A ReLU / ReLU6 that could not be fused: a clamp in the input's scale."""

    op = "clamp"

    def __init__(self, scale: float, zero_point: int, activation: str, path: str = "") -> None:
        super().__init__(scale, zero_point, path)
        self.activation = activation
        self.clamp = ar.activation_range(activation, self.output_scale, self.output_zero_point)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(activation=self.activation, clamp=list(self.clamp))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_int8(self, x)
        return torch.clamp(x, self.clamp[0], self.clamp[1])


class QUpsampleNearest(_QSameScale):
    """Nearest-neighbour upsampling of int8 values (a copy)."""

    op = "upsample_nearest"

    def __init__(
        self,
        scale: float,
        zero_point: int,
        size: Any = None,
        scale_factor: Any = None,
        path: str = "",
    ) -> None:
        super().__init__(scale, zero_point, path)
        self.size, self.scale_factor = size, scale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_int8(self, x)
        y = nn.functional.interpolate(
            x.to(torch.float32), size=self.size, scale_factor=self.scale_factor, mode="nearest"
        )
        return y.to(torch.int8)


class QLookupTable(QModule):
    """An elementwise activation as a 256-entry int8 table built from the float function."""

    op = "lut"

    def __init__(
        self,
        table: torch.Tensor,
        input_scale: float,
        input_zero_point: int,
        output_scale: float,
        output_zero_point: int,
        function: str = "",
        path: str = "",
    ) -> None:
        super().__init__(output_scale, output_zero_point, path)
        self.input_scale = float(np.float32(input_scale))
        self.input_zero_point = int(input_zero_point)
        self.function = function
        self.register_buffer("table", table.to(torch.int8).reshape(256).clone())

    @classmethod
    def from_function(
        cls,
        fn,
        input_scale: float,
        input_zero_point: int,
        output_scale: float,
        output_zero_point: int,
        function: str = "",
        path: str = "",
    ) -> QLookupTable:
        """Builds the table by evaluating ``fn`` (torch float64 tensor -> tensor) on the 256
        dequantized int8 values (``arithmetic.lookup_table``)."""

        def np_fn(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return fn(torch.from_numpy(x)).to(torch.float64).numpy()

        table = ar.lookup_table(
            np_fn, input_scale, input_zero_point, output_scale, output_zero_point
        )
        return cls(
            torch.from_numpy(table),
            input_scale,
            input_zero_point,
            output_scale,
            output_zero_point,
            function,
            path,
        )

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(function=self.function)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_int8(self, x)
        return qops.lookup_s8(x, self.table)
