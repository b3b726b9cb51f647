"""int8 post-training quantization: ``quantize_(model, Int8Config(...), calibration=data)``.

The model is traced with torch.fx (:func:`optimizer.quantize.fold.float_graph`: BatchNorm folded
into the conv/linear before it), every intermediate float value is observed on the calibration
data, and a new ``torch.fx.GraphModule`` is built whose layers are the integer-exact modules of
:mod:`optimizer.quantize.modules`, following the TFLite int8 spec: weights symmetric int8 in
[-127, 127] per output channel (or per tensor), activations asymmetric int8 per tensor, int32
bias at scale ``s_in * s_w``, conv/linear/add/mul followed by ReLU/ReLU6 fused (the clamp is in the
output stage). Between layers the ops get TFLite's integer semantics: residual ADD, MUL (for
squeeze-excitation), max and average pooling, concatenation (all inputs share the output's scale
and zero point, so it is a copy), reshapes (no-ops), unfused ReLU/ReLU6 (a clamp), and every other
elementwise activation (Sigmoid, Tanh, SiLU, Hardswish, GELU, ...) as a 256-entry int8 table.

**What is returned.** The user's module is Python code that cannot run on int8 tensors, so it is
left unchanged and ``quantize_`` returns the quantized ``GraphModule``; run that one. It takes the
same float inputs (quantized with the input's scale/zero point by a ``QuantStub``) and returns
float outputs (dequantized). The int8 tensors it computes equal, bit for bit, what
``optimizer.kernels.linear_s8`` (conv = im2col with K ordered (kh, kw, c), padded with the input
zero point) and :mod:`optimizer.quantize.arithmetic` compute on the same values.

**Layer paths.** Each quantized layer sits at the PyTorch path of the module it replaces
(``features.0``; a folded BatchNorm and a fused ReLU disappear into it); ops written as functions
sit at ``<enclosing module path>.<op>`` (``layer1.0.add``, ``blocks.0.se.mul``, ``flatten``); a
module called twice gets ``path@1`` for its second call. ``QuantStub`` / ``DeQuantStub`` modules
are named ``quantize_<value>`` / ``dequantize_<value>``. The attributes the exporters read are
listed in :mod:`optimizer.quantize.modules`.

**Mixed graphs.** Layers named in ``keep_float`` (a path or any enclosing module's path), refused
by ``filter_fn``, or chosen by ``auto_keep_float`` run as the original float modules, with
``DeQuantStub`` before and ``QuantStub`` after them; pooling and reshapes that follow a float
layer stay in float.

**Record.** ``get_record(qmodel)["quantization"]`` holds JSON-like values only:

- ``scheme`` ("int8"), ``per_channel``, ``observer``, ``percentile``, ``bias_correction``;
- ``inputs``: ``{placeholder name: {"scale", "zero_point"}}``; ``outputs``: one
  ``{"scale", "zero_point"}`` per model output (None for an output computed in float);
- ``layers``: ``{path: {...}}`` with the module's attributes (``op``, ``input_scale`` /
  ``input_scales``, ``input_zero_point`` / ``input_zero_points``, ``output_scale``,
  ``output_zero_point``; per op ``weight_scales``, ``per_channel``, ``activation``, ``clamp``,
  ``stride``, ``padding``, ``dilation``, ``groups``, ``kernel_size``, ``function``,
  ``left_shift``), ``fused`` (paths of the absorbed BatchNorm / ReLU), ``from: "BatchNorm2d"``
  (a BatchNorm run as a depthwise 1x1 conv), ``float_nodes`` and ``inputs`` (fx node names of
  the float graph); stubs at float boundaries have ``op`` "quantize" / "dequantize" and ``value``;
- ``kept_float`` (paths run in float) and ``auto_kept_float`` (those chosen by
  ``auto_keep_float``).

The original model's record (pruning plan, block sparsity) is copied over, and
``{"pass": "quantize_int8", ...}`` (``"convert_qat"`` from QAT) is appended to ``"passes"``.

Example::

    qmodel = quantize_(model, Int8Config(observer="percentile"), calibration=calib_loader)
    logits = qmodel(x)                       # float in, float out, int8 inside
    conv = qmodel.get_submodule("features.0")
    conv.weight_int8, conv.bias_int32, conv.multiplier, conv.shift, conv.output_zero_point
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from optimizer._util import module_under
from optimizer.graph.record import ATTR, set_record
from optimizer.quantize import modules as qm
from optimizer.quantize.fold import float_graph, node_path
from optimizer.quantize.observers import (
    OBSERVERS,
    activation_qparams,
    make_observer,
    shared_weight_amax,
    weight_scales,
)

__all__ = ["Int8Config", "calibrate", "input_batches", "quantize_"]


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass
class Int8Config:
    """Settings of :func:`quantize_` (and of :func:`optimizer.quantize.qat.prepare_qat_`).

    Args:
        per_channel: one weight scale per output channel (TFLite's int8 spec); False: one scale
            per layer (what per-tensor-only runtimes need; collapses depthwise networks).
        observer: activation range estimator: ``"minmax"``, ``"moving_average"`` (EMA of batch
            min/max), ``"percentile"`` (clip to the ``percentile`` quantiles), ``"mse"`` (range
            minimizing the expected squared error). See :mod:`optimizer.quantize.observers`.
        percentile: for ``observer="percentile"``, in (50, 100].
        averaging_constant: EMA constant of ``"moving_average"`` (and of QAT's observers).
        bias_correction: subtract from each conv/linear bias the mean shift that weight
            quantization causes on the calibration data (empirical bias correction).
        keep_float: module paths (or enclosing module paths) left in float.
        auto_keep_float: leave the ``k`` layers with the worst SQNR (see
            :func:`optimizer.quantize.diagnose.quant_report`) in float as well.
        filter_fn: ``filter_fn(module, path) -> bool``; modules for which it returns False stay
            float (as torchao's ``filter_fn``).
        max_calibration_batches: use at most this many calibration batches.
        requantization: the arithmetic of the conv / linear output stages. ``"gemmlowp"`` (the
            default) is the TFLite int8 spec's fixed-point MultiplyByQuantizedMultiplier, which
            LiteRT's reference kernels compute bit for bit. ``"fp32"`` is XNNPACK's (LiteRT's
            default CPU delegate, what phones run): the int32 accumulator times a float32 scale
            ``s_in * s_w[c] / s_out``, rounded half to even, and ADDs in XNNPACK's own integer
            arithmetic (multipliers from float32 scale ratios), MULs in float32 like the
            convolutions (XNNPACK's ranges permitting); choose it when the deployment runs
            LiteRT with XNNPACK and its outputs must match the native runtime's. The native
            model file then needs format 1.4 (see :mod:`optimizer.quantize.arithmetic`).

    Example:
        >>> Int8Config(observer="percentile", percentile=99.9).per_channel
        True
        >>> Int8Config(requantization="fp32").requantization
        'fp32'
    """

    per_channel: bool = True
    observer: str = "minmax"
    percentile: float = 99.99
    averaging_constant: float = 0.01
    bias_correction: bool = False
    keep_float: Sequence[str] = ()
    auto_keep_float: int = 0
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    max_calibration_batches: int | None = None
    requantization: str = "gemmlowp"
    _extra_keep: tuple[str, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.per_channel, bool):
            raise TypeError(f"Int8Config: per_channel must be a bool, got {self.per_channel!r}")
        if self.observer not in OBSERVERS:
            raise ValueError(
                f"Int8Config: unknown observer; expected one of {sorted(OBSERVERS)}, got "
                f"{self.observer!r}"
            )
        if not (isinstance(self.percentile, (int, float)) and 50.0 < self.percentile <= 100.0):
            raise ValueError(
                f"Int8Config: percentile must be in (50, 100]; got {self.percentile!r}"
            )
        if not 0.0 < self.averaging_constant <= 1.0:
            raise ValueError(
                f"Int8Config: averaging_constant must be in (0, 1]; got {self.averaging_constant!r}"
            )
        if isinstance(self.keep_float, str):
            self.keep_float = (self.keep_float,)
        self.keep_float = tuple(self.keep_float)
        for p in self.keep_float:
            if not isinstance(p, str) or not p:
                raise TypeError(f"Int8Config: keep_float must hold module paths (str), got {p!r}")
        if (
            isinstance(self.auto_keep_float, bool)
            or not isinstance(self.auto_keep_float, int)
            or self.auto_keep_float < 0
        ):
            raise ValueError(
                f"Int8Config: auto_keep_float must be an int >= 0; got {self.auto_keep_float!r}"
            )
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise TypeError(f"Int8Config: filter_fn must be callable, got {self.filter_fn!r}")
        if self.requantization not in ("gemmlowp", "fp32"):
            raise ValueError(
                "Int8Config: requantization must be 'gemmlowp' (TFLite's reference arithmetic) "
                f"or 'fp32' (XNNPACK's); got {self.requantization!r}"
            )
        if self.max_calibration_batches is not None and self.max_calibration_batches < 1:
            raise ValueError(
                "Int8Config: max_calibration_batches must be >= 1 or None; got "
                f"{self.max_calibration_batches!r}"
            )


# --------------------------------------------------------------------------------------------
# Op tables
# --------------------------------------------------------------------------------------------

_SIGMOID_Q = (1.0 / 256.0, -128)  # TFLite LOGISTIC's fixed output quantization
_TANH_Q = (1.0 / 128.0, 0)  # TFLite TANH's

_LUT_MODULES = (
    nn.Sigmoid,
    nn.Tanh,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Softplus,
    nn.SELU,
    nn.CELU,
    nn.LogSigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Hardtanh,
)
_LUT_FUNCTIONS = {
    torch.sigmoid,
    F.sigmoid,
    torch.tanh,
    F.tanh,
    F.silu,
    F.hardswish,
    F.hardsigmoid,
    F.gelu,
    F.leaky_relu,
    F.elu,
    F.mish,
    F.softplus,
    F.selu,
    F.celu,
    F.hardtanh,
    torch.clamp,
    torch.clip,
    torch.exp,
    torch.abs,
    torch.neg,
    torch.square,
    torch.erf,
}
_LUT_METHODS = {"sigmoid", "tanh", "clamp", "clip", "abs", "neg", "exp", "square", "erf"}
_SCALAR_OPS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul}
_ADD = {operator.add, torch.add}
_MUL = {operator.mul, torch.mul}
_RELU_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6"}
_STRUCT_MODULES = (nn.Flatten, nn.Unflatten)
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_STRUCT_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    torch.permute,
    torch.transpose,
    torch.cat,
    torch.concat,
    torch.chunk,
    torch.split,
    operator.getitem,
    getattr,
}
_STRUCT_METHODS = {
    "view",
    "reshape",
    "flatten",
    "size",
    "dim",
    "contiguous",
    "chunk",
    "split",
    "squeeze",
    "unsqueeze",
    "permute",
    "transpose",
}
_SUPPORTED = (
    "Conv2d, Linear, BatchNorm (folded, or as a depthwise 1x1 conv), ReLU/ReLU6 (fused or a "
    "clamp), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Upsample (nearest), Flatten, Dropout, "
    "Identity, elementwise activations (Sigmoid, Tanh, SiLU, Hardswish, GELU, ...), add, mul, "
    "cat, chunk/split, view/reshape/flatten, mean over H and W"
)


@dataclass
class _Info:
    kind: str
    path: str
    act: str | None = None  # relu kind: "relu" | "relu6"
    params: dict = field(default_factory=dict)
    lut: Callable | None = None
    lut_name: str = ""
    fixed: tuple[float, int] | None = None
    fused_act: str | None = None  # name of the relu node fused into this op
    fused_into: str | None = None  # for a fused relu: the producer's name
    unsupported: str | None = None


def _is_tensor(node: Any) -> bool:
    return isinstance(node, fx.Node) and isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def _is_value(node: Any) -> bool:
    """A tensor or a tuple of tensors (chunk/split)."""
    return _is_tensor(node) or (
        isinstance(node, fx.Node) and isinstance(node.meta.get("tensor_meta"), (tuple, list))
    )


def _is_float_tensor(node: Any) -> bool:
    return _is_tensor(node) and node.meta["tensor_meta"].dtype.is_floating_point


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return (int(v), int(v))


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.map_arg((node.args, node.kwargs), lambda a: out.append(a) if _is_tensor(a) else None)
    return out


# --------------------------------------------------------------------------------------------
# Analysis: what each node becomes
# --------------------------------------------------------------------------------------------


class _Analysis:
    """Classifies the nodes of a folded float graph, decides fusion, float islands, domains
    (``"q"`` int8, ``"f"`` float, ``"o"`` not a tensor) and groups of values that share
    quantization parameters."""

    def __init__(self, fg: fx.GraphModule, config: Int8Config, api: str) -> None:
        self.fg = fg
        self.config = config
        self.api = api
        self.nodes = list(fg.graph.nodes)
        self.by_name = {n.name: n for n in self.nodes}
        self.infos: dict[str, _Info] = {}
        self._paths()
        for n in self.nodes:
            self.infos[n.name] = self._classify(n)
        self._mark_float()
        self._check_unsupported()
        self._fuse()
        self._domains()
        self._groups()

    # -- paths ---------------------------------------------------------------------------------
    def _paths(self) -> None:
        self.paths: dict[str, str] = {}
        used: dict[str, int] = {}
        taken = {name for name, _ in self.fg.named_modules()}
        for n in self.nodes:
            if n.op not in ("call_module", "call_function", "call_method"):
                self.paths[n.name] = n.name
                continue
            base = node_path(n)
            k = used.get(base, 0)
            used[base] = k + 1
            if n.op == "call_module":
                path = base if k == 0 else f"{base}@{k}"
            else:
                path = base if k == 0 else f"{base}_{k}"
                while path in taken:
                    k += 1
                    path = f"{base}_{k}"
            taken.add(path)
            self.paths[n.name] = path

    def scopes(self, n: fx.Node) -> list[str]:
        stack = n.meta.get("nn_module_stack") or {}
        out = []
        for v in stack.values():
            if isinstance(v, tuple) and isinstance(v[0], str):
                out.append(v[0].split("@")[0])
        return out

    # -- classification ------------------------------------------------------------------------
    def _classify(self, n: fx.Node) -> _Info:
        path = self.paths[n.name]
        if n.op == "placeholder":
            return _Info("input", path)
        if n.op == "get_attr":
            return _Info("const", path)
        if n.op == "output":
            return _Info("output", path)
        if not _is_value(n):
            return _Info("struct", path)  # ints, sizes, ...
        if n.op == "call_module":
            return self._classify_module(n, self.fg.get_submodule(n.target), path)
        if n.op == "call_function":
            return self._classify_function(n, path)
        return self._classify_method(n, path)

    def _lut_info(self, n: fx.Node, path: str, fn: Callable, name: str) -> _Info:
        fixed = None
        if name in ("sigmoid", "Sigmoid"):
            fixed = _SIGMOID_Q
        elif name in ("tanh", "Tanh"):
            fixed = _TANH_Q
        return _Info("lut", path, lut=fn, lut_name=name, fixed=fixed)

    def _classify_module(self, n: fx.Node, mod: nn.Module, path: str) -> _Info:
        name = type(mod).__name__
        if isinstance(mod, _OTHER_CONVS):
            return _Info("float", path, unsupported=name)
        if isinstance(mod, nn.Conv2d):
            why = _conv_unsupported(mod)
            if why:
                return _Info("conv", path, unsupported=why)
            return _Info("conv", path, params={"padding": _conv_padding(mod)})
        if isinstance(mod, nn.Linear):
            return _Info("linear", path)
        if isinstance(mod, nn.ReLU6):
            return _Info("relu", path, act="relu6")
        if isinstance(mod, nn.ReLU):
            return _Info("relu", path, act="relu")
        if isinstance(mod, nn.Hardtanh) and mod.min_val == 0.0 and mod.max_val == 6.0:
            return _Info("relu", path, act="relu6")
        if isinstance(mod, _LUT_MODULES):
            fn_mod = copy.deepcopy(mod).double()
            return self._lut_info(n, path, fn_mod, name)
        if isinstance(mod, nn.MaxPool2d):
            if mod.return_indices:
                return _Info("maxpool", path, unsupported="MaxPool2d with return_indices")
            k = _pair(mod.kernel_size)
            s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
            return _Info(
                "maxpool",
                path,
                params=dict(
                    kernel_size=k,
                    stride=s,
                    padding=_pair(mod.padding),
                    dilation=_pair(mod.dilation),
                    ceil_mode=mod.ceil_mode,
                ),
            )
        if isinstance(mod, nn.AvgPool2d):
            return self._avgpool(
                path,
                mod.kernel_size,
                mod.stride,
                mod.padding,
                mod.ceil_mode,
                mod.count_include_pad,
                mod.divisor_override,
            )
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return self._adaptive(n, path, mod.output_size)
        if isinstance(mod, (nn.Upsample, nn.UpsamplingNearest2d)):
            if mod.mode != "nearest":
                return _Info("upsample", path, unsupported=f"Upsample(mode={mod.mode!r})")
            return _Info(
                "upsample", path, params=dict(size=mod.size, scale_factor=mod.scale_factor)
            )
        if isinstance(mod, _STRUCT_MODULES):
            return _Info("struct", path)
        if isinstance(mod, _IDENTITY_MODULES):
            return _Info("identity", path)
        return _Info("float", path, unsupported=name)

    def _classify_function(self, n: fx.Node, path: str) -> _Info:
        t = n.target
        name = getattr(t, "__name__", str(t))
        tensors = _tensor_args(n)
        if t in _ADD or t in _MUL:
            if len(tensors) == 2 and len(n.args) >= 2:
                if n.kwargs.get("alpha", 1) != 1:
                    return _Info("add", path, unsupported="torch.add with alpha")
                return _Info("add" if t in _ADD else "mul", path)
        if t in _SCALAR_OPS and len(tensors) == 1:
            other = [a for a in n.args if not isinstance(a, fx.Node)]
            if len(n.args) == 2 and len(other) == 1 and isinstance(other[0], (int, float)):
                c = float(other[0])
                first = isinstance(n.args[0], fx.Node)
                fns = {
                    operator.add: lambda x: x + c,
                    torch.add: lambda x: x + c,
                    operator.mul: lambda x: x * c,
                    torch.mul: lambda x: x * c,
                    operator.sub: (lambda x: x - c) if first else (lambda x: c - x),
                    operator.truediv: (lambda x: x / c) if first else (lambda x: c / x),
                }
                return _Info("lut", path, lut=fns[t], lut_name=f"{name} {c:g}")
        if t in _RELU_FUNCTIONS:
            return _Info("relu", path, act=_RELU_FUNCTIONS[t])
        if t is F.hardtanh and _arg(n, 1, "min_val", -1.0) == 0 and _arg(n, 2, "max_val", 1.0) == 6:
            return _Info("relu", path, act="relu6")
        if t in (torch.clamp, torch.clip) and len(tensors) == 1:
            lo, hi = _arg(n, 1, "min"), _arg(n, 2, "max")
            if lo == 0 and hi in (None, 6):
                return _Info("relu", path, act="relu" if hi is None else "relu6")
        if t in _LUT_FUNCTIONS and len(tensors) == 1 and isinstance(n.args[0], fx.Node):
            return self._lut_from_call(n, path, name)
        if t is F.dropout:
            return _Info("identity", path)
        if t is F.max_pool2d:
            if _arg(n, 6, "return_indices", False):
                return _Info("maxpool", path, unsupported="max_pool2d with return_indices")
            k = _pair(_arg(n, 1, "kernel_size"))
            s = _arg(n, 2, "stride")
            return _Info(
                "maxpool",
                path,
                params=dict(
                    kernel_size=k,
                    stride=_pair(s) if s not in (None, []) else k,
                    padding=_pair(_arg(n, 3, "padding", 0)),
                    dilation=_pair(_arg(n, 4, "dilation", 1)),
                    ceil_mode=bool(_arg(n, 5, "ceil_mode", False)),
                ),
            )
        if t is F.avg_pool2d:
            return self._avgpool(
                path,
                _arg(n, 1, "kernel_size"),
                _arg(n, 2, "stride"),
                _arg(n, 3, "padding", 0),
                _arg(n, 4, "ceil_mode", False),
                _arg(n, 5, "count_include_pad", True),
                _arg(n, 6, "divisor_override"),
            )
        if t is F.adaptive_avg_pool2d:
            return self._adaptive(n, path, _arg(n, 1, "output_size"))
        if t is torch.mean:
            return self._mean(n, path, _arg(n, 1, "dim"), _arg(n, 2, "keepdim", False))
        if t is F.interpolate:
            mode = _arg(n, 3, "mode", "nearest")
            if mode != "nearest":
                return _Info("upsample", path, unsupported=f"interpolate(mode={mode!r})")
            return _Info(
                "upsample",
                path,
                params=dict(size=_arg(n, 1, "size"), scale_factor=_arg(n, 2, "scale_factor")),
            )
        if t in _STRUCT_FUNCTIONS:
            return _Info("struct", path)
        return _Info("float", path, unsupported=f"function {name}")

    def _classify_method(self, n: fx.Node, path: str) -> _Info:
        t = n.target
        tensors = _tensor_args(n)
        if t in ("add", "mul") and len(tensors) == 2:
            return _Info("add" if t == "add" else "mul", path)
        if t == "relu":
            return _Info("relu", path, act="relu")
        if t in ("clamp", "clip"):
            lo, hi = _arg(n, 1, "min"), _arg(n, 2, "max")
            if lo == 0 and hi in (None, 6):
                return _Info("relu", path, act="relu" if hi is None else "relu6")
        if t in _LUT_METHODS and len(tensors) == 1:
            return self._lut_from_call(n, path, t)
        if t == "mean":
            return self._mean(n, path, _arg(n, 1, "dim"), _arg(n, 2, "keepdim", False))
        if t in _STRUCT_METHODS:
            return _Info("struct", path)
        return _Info("float", path, unsupported=f"method .{t}()")

    def _lut_from_call(self, n: fx.Node, path: str, name: str) -> _Info:
        rest = n.args[1:]
        if any(isinstance(a, fx.Node) for a in (*rest, *n.kwargs.values())):
            return _Info("lut", path, unsupported=f"{name} with tensor arguments")
        kwargs = {k: v for k, v in n.kwargs.items() if k != "inplace"}
        if n.op == "call_function":
            t = n.target

            def fn(x: torch.Tensor) -> torch.Tensor:
                return t(x, *rest, **kwargs)

        else:

            def fn(x: torch.Tensor) -> torch.Tensor:
                return getattr(x, n.target)(*rest, **kwargs)

        return self._lut_info(n, path, fn, name)

    def _avgpool(self, path, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
        k = _pair(kernel)
        s = _pair(stride) if stride not in (None, []) else k
        p = _pair(padding)
        if ceil_mode or divisor is not None:
            return _Info("avgpool", path, unsupported="AvgPool2d with ceil_mode/divisor_override")
        if p != (0, 0) and count_include_pad:
            return _Info(
                "avgpool",
                path,
                unsupported="AvgPool2d with padding and count_include_pad=True (TFLite counts "
                "only valid positions)",
            )
        return _Info("avgpool", path, params=dict(kernel_size=k, stride=s, padding=p))

    def _adaptive(self, n: fx.Node, path: str, output_size: Any) -> _Info:
        src = n.args[0]
        h, w = _shape(src)[-2:]
        oh, ow = _pair(output_size) if output_size is not None else (h, w)
        oh = h if oh is None else oh
        ow = w if ow is None else ow
        if h % oh or w % ow:
            return _Info(
                "avgpool", path, unsupported=f"AdaptiveAvgPool2d {h}x{w} -> {oh}x{ow} (uneven)"
            )
        k = (h // oh, w // ow)
        return _Info("avgpool", path, params=dict(kernel_size=k, stride=k, padding=(0, 0)))

    def _mean(self, n: fx.Node, path: str, dim: Any, keepdim: bool) -> _Info:
        src = n.args[0]
        nd = len(_shape(src)) if _is_tensor(src) else 0
        dims: tuple = ()
        if dim is not None and nd:
            dims = tuple(sorted(d % nd for d in (dim if isinstance(dim, (tuple, list)) else [dim])))
        if nd != 4 or dims != (2, 3):
            return _Info("avgpool", path, unsupported=f"mean over dims {dim} (only H and W)")
        h, w = _shape(src)[-2:]
        return _Info(
            "avgpool",
            path,
            params=dict(kernel_size=(h, w), stride=(h, w), padding=(0, 0), squeeze=not keepdim),
        )

    # -- float islands -------------------------------------------------------------------------
    def keep_list(self) -> tuple[str, ...]:
        return tuple(self.config.keep_float) + tuple(self.config._extra_keep)

    def _mark_float(self) -> None:
        keep = self.keep_list()
        known = set(self.paths.values()) | {p for p, _ in self.fg.named_modules()}
        for n in self.nodes:
            known.update(n.meta.get("edgeopt_folded", []))
            known.update(self.scopes(n))
        for p in keep:
            if p not in known:
                close = difflib.get_close_matches(p, sorted(known), n=3)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(
                    f"{self.api}: keep_float names `{p}`, which is no module or layer path of the "
                    f"model; expected a path from model.named_modules() or a layer path.{hint}"
                )
        self.kept: set[str] = set()
        for n in self.nodes:
            info = self.infos[n.name]
            if info.kind in ("input", "const", "output", "struct", "identity"):
                continue
            names = [info.path, *n.meta.get("edgeopt_folded", []), *self.scopes(n)]
            if n.op == "call_module":
                names.append(str(n.target))
            hit = any(module_under(q, p) for q in names for p in keep)
            if not hit and self.config.filter_fn is not None and n.op == "call_module":
                hit = not self.config.filter_fn(self.fg.get_submodule(n.target), info.path)
            if hit:
                info.kind = "float"
                info.unsupported = None
                self.kept.add(info.path)

    def _check_unsupported(self) -> None:
        bad = [(self.paths[n], i.unsupported) for n, i in self.infos.items() if i.unsupported]
        if bad:
            first, what = bad[0]
            more = (
                f" (and {len(bad) - 1} more: {', '.join(p for p, _ in bad[1:4])})"
                if len(bad) > 1
                else ""
            )
            raise ValueError(
                f"{self.api}: no int8 implementation for `{first}` ({what}){more}; expected "
                f"one of: {_SUPPORTED}. Pass keep_float=[{first!r}] to run it in float"
            )

    # -- fusion --------------------------------------------------------------------------------
    def _fuse(self) -> None:
        for n in self.nodes:
            info = self.infos[n.name]
            if info.kind not in ("conv", "linear", "add", "mul") or len(n.users) != 1:
                continue
            (user,) = n.users
            uinfo = self.infos[user.name]
            if uinfo.kind == "relu" and user.args and user.args[0] is n:
                info.fused_act = user.name
                uinfo.fused_into = n.name

    # -- domains -------------------------------------------------------------------------------
    def _domains(self) -> None:
        self.dom: dict[str, str] = {}
        for n in self.nodes:
            info = self.infos[n.name]
            k = info.kind
            if k in ("input", "const"):
                d = "f" if _is_float_tensor(n) else "o"
            elif k == "output":
                d = "o"
            elif k == "float":
                d = "f" if _is_tensor(n) else "o"
            elif k in ("conv", "linear", "add", "mul", "lut"):
                d = "q"
            elif info.fused_into is not None:
                d = "q"
            elif k in ("maxpool", "avgpool", "upsample", "relu", "identity"):
                src = n.args[0]
                d = self.dom.get(src.name, "f") if isinstance(src, fx.Node) else "f"
            elif not _is_value(n):  # struct ops returning sizes, ints, ...
                d = "o"
            else:  # struct: int8 when any input is
                d = "q" if any(self.dom.get(a.name) == "q" for a in n.all_input_nodes) else "f"
            self.dom[n.name] = d

    # -- groups of values sharing quantization parameters --------------------------------------
    def _groups(self) -> None:
        parent: dict[str, str] = {n.name: n.name for n in self.nodes}

        def find(a: str) -> str:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        def union(a: str, b: str) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[rb] = ra

        for n in self.nodes:
            info = self.infos[n.name]
            k = info.kind
            share = k in ("struct", "identity", "maxpool", "avgpool", "upsample")
            share = share or (k == "relu" and info.fused_into is None and self.dom[n.name] == "q")
            if not share:
                continue
            if not _is_value(n):
                continue
            for a in n.all_input_nodes:
                if self.dom.get(a.name) in ("q", "f") and _is_value(a):
                    union(n.name, a.name)
        self.group = {n.name: find(n.name) for n in self.nodes}
        # A group takes TFLite's fixed output quantization (sigmoid, tanh) only when every value
        # in it that is not a copy of another comes from such an op; concatenated with others, the
        # observed range wins (a lookup table can produce any output quantization).
        sources: dict[str, list[_Info]] = {}
        for n in self.nodes:
            info = self.infos[n.name]
            passthrough = info.kind in ("struct", "identity", "maxpool", "avgpool", "upsample") or (
                info.kind == "relu" and info.fused_into is None
            )
            if _is_value(n) and not passthrough:
                sources.setdefault(self.group[n.name], []).append(info)
        self.fixed: dict[str, tuple[float, int]] = {}
        for root, infos in sources.items():
            fixed = {i.fixed if i.kind == "lut" else None for i in infos}
            if len(fixed) == 1 and None not in fixed:
                self.fixed[root] = fixed.pop()

    # -- values --------------------------------------------------------------------------------
    def observed(self) -> list[str]:
        """Names of nodes whose float value is observed during calibration."""
        return [n.name for n in self.nodes if _is_float_tensor(n) and n.op != "output"]

    def value_qparams(self, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, int]]:
        """(scale, zero_point) of every value whose group has a range (or fixed parameters)."""
        members: dict[str, list[str]] = {}
        for name, root in self.group.items():
            members.setdefault(root, []).append(name)
        out: dict[str, tuple[float, int]] = {}
        for root, names in members.items():
            if root in self.fixed:
                qp = self.fixed[root]
                qp = (float(np.float32(qp[0])), int(qp[1]))
            else:
                rs = [ranges[m] for m in names if m in ranges]
                if not rs:
                    continue
                qp = activation_qparams(min(r[0] for r in rs), max(r[1] for r in rs))
            for m in names:
                out[m] = qp
        return out

    def quant_points(self) -> list[str]:
        """Values that get their own quantization (outputs of requantizing ops, and float values
        entering the int8 graph): where QAT inserts fake quantization."""
        pts: list[str] = []
        for n in self.nodes:
            info = self.infos[n.name]
            if not _is_float_tensor(n):
                continue
            if info.kind in ("conv", "linear", "add", "mul") and info.fused_act:
                continue  # quantized after the fused activation
            own = info.kind in ("conv", "linear", "add", "mul", "lut") or info.fused_into
            rounding = info.kind in ("avgpool", "relu") and self.dom[n.name] == "q"
            entering = self.dom[n.name] == "f" and any(self._consumes_q(u, n) for u in n.users)
            if own or rounding or entering:
                pts.append(n.name)
        return pts

    def _consumes_q(self, user: fx.Node, value: fx.Node) -> bool:
        info = self.infos[user.name]
        if info.kind in ("conv", "linear", "add", "mul", "lut"):
            return True
        if info.kind in ("maxpool", "avgpool", "upsample", "relu", "struct", "identity"):
            return self.dom[user.name] == "q"
        return False

    def quant_layers(self) -> list[str]:
        """Layer paths that run in int8 (the candidates of ``auto_keep_float``)."""
        return [
            self.infos[n.name].path
            for n in self.nodes
            if self.infos[n.name].kind in ("conv", "linear", "add", "mul", "lut")
        ]


_OTHER_CONVS = (
    nn.Conv1d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def _weight_amax(mod: nn.Module) -> torch.Tensor | None:
    """Per-channel int8 ranges for a shared (codebook) weight: set by BatchNorm folding
    (``fold_bn``), else the codebook's range for every channel; None for other weights."""
    amax = getattr(mod, "_edgeopt_weight_amax", None)
    return amax if amax is not None else shared_weight_amax(mod.weight)


def _conv_unsupported(mod: nn.Conv2d) -> str | None:
    if mod.padding_mode != "zeros":
        return f"Conv2d with padding_mode={mod.padding_mode!r}"
    if isinstance(mod.padding, str) and mod.padding == "same":
        k = [d * (s - 1) for d, s in zip(mod.dilation, mod.kernel_size)]
        if any(v % 2 for v in k):
            return "Conv2d with padding='same' and an even kernel (asymmetric padding)"
    return None


def _conv_padding(mod: nn.Conv2d) -> tuple[int, int]:
    if isinstance(mod.padding, str):
        if mod.padding == "valid":
            return (0, 0)
        return tuple(d * (s - 1) // 2 for d, s in zip(mod.dilation, mod.kernel_size))
    return _pair(mod.padding)


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def _inputs_of(api: str, batch: Any) -> tuple:
    if isinstance(batch, torch.Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and batch:
        first = batch[0]
        if isinstance(first, torch.Tensor):
            return (first,)
        if isinstance(first, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in first):
            return tuple(first)
    raise TypeError(
        f"{api}: a calibration batch must be a tensor or an (inputs, targets) pair whose inputs "
        f"are a tensor or a tuple of tensors; got {type(batch).__name__}"
    )


def input_batches(api: str, data: Any, limit: int | None = None) -> list[tuple]:
    """Normalizes calibration ``data`` to a list of input tuples (a tensor is one batch)."""
    if data is None:
        raise ValueError(
            f"{api}: calibration data is missing; expected a DataLoader, a list of batches or a "
            "tensor, got None"
        )
    if isinstance(data, torch.Tensor):
        data = [data]
    if not isinstance(data, Iterable):
        raise TypeError(f"{api}: calibration data must be iterable, got {type(data).__name__}")
    out = []
    for b in data:
        inputs = _inputs_of(api, b)
        if any(t.numel() == 0 for t in inputs):
            continue
        out.append(inputs)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ValueError(
            f"{api}: calibration data is empty; expected at least one non-empty batch of inputs, "
            "got 0. Pass a few hundred representative samples (e.g. a DataLoader over a subset "
            "of the training set)"
        )
    return out


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, hook: Callable, keep: bool = False) -> None:
        super().__init__(gm, garbage_collect_values=not keep)
        self.hook = hook

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.hook(self, n, out)
        return out


def _check_finite(api: str, what: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        bad = ~torch.isfinite(t)
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{api}: {what} has a non-finite value {float(t[idx])!r} at index {list(idx)}; "
            "expected finite values. Check the model's weights and the input data"
        )


def check_parameters(api: str, model: nn.Module) -> None:
    """Raises ValueError naming the first parameter or buffer holding NaN or Inf."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point():
            _check_finite(api, f"`{name}`", t.detach())


def calibrate(
    fg: fx.GraphModule,
    names: Sequence[str],
    batches: list[tuple],
    config: Int8Config,
    api: str = "quantize_",
    paths: dict[str, str] | None = None,
    bias_nodes: Sequence[str] = (),
) -> tuple[dict[str, tuple[float, float]], dict[str, torch.Tensor]]:
    """Runs ``batches`` through the float graph and returns the observed range of each named
    value, plus (for ``bias_nodes``) the mean output shift that weight quantization causes."""
    obs = {
        name: make_observer(config.observer, config.percentile, config.averaging_constant)
        for name in names
    }
    wanted = set(names)
    paths = paths or {}
    passes = max((o.passes for o in obs.values()), default=1)
    shifts: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    deltas = {}
    bias_set = set(bias_nodes)
    by_name = {n.name: n for n in fg.graph.nodes}
    for name in bias_set:
        mod = fg.get_submodule(by_name[name].target)
        w = mod.weight.detach()
        s = weight_scales(w, config.per_channel, _weight_amax(mod)).to(torch.float64)
        view = (-1,) + (1,) * (w.dim() - 1)
        s = s.reshape(view) if s.numel() > 1 else s
        wq = torch.clamp(torch.round(w.to(torch.float64) / s), -127, 127) * s
        deltas[name] = (wq - w.to(torch.float64)).to(w.dtype)

    state = {"batch": 0}

    def hook(interp: _Recorder, n: fx.Node, out: Any) -> None:
        if n.name in wanted and isinstance(out, torch.Tensor):
            what = "the model input" if n.op == "placeholder" else "the output of"
            _check_finite(
                api,
                f"{what} `{paths.get(n.name, n.name)}` on calibration batch {state['batch']}",
                out,
            )
            obs[n.name].update(out)

    class _BiasRecorder(_Recorder):
        def run_node(self, n: fx.Node) -> Any:
            if n.name in bias_set and state["pass"] == 0:
                args, _ = self.fetch_args_kwargs_from_env(n)
                x = args[0]
                mod = fg.get_submodule(n.target)
                if isinstance(mod, nn.Conv2d):
                    d = mod._conv_forward(x, deltas[n.name], None)
                    m = d.transpose(0, 1).reshape(d.shape[1], -1)
                else:
                    d = F.linear(x, deltas[n.name])
                    m = d.reshape(-1, d.shape[-1]).t()
                shifts[n.name] = shifts.get(n.name, 0) + m.sum(1).to(torch.float64)
                counts[n.name] = counts.get(n.name, 0) + m.shape[1]
            return super().run_node(n)

    with torch.no_grad():
        for p in range(passes):
            state["pass"] = p
            for o in obs.values():
                o.start_pass(p)
            interp = _BiasRecorder(fg, hook)
            for i, inputs in enumerate(batches):
                state["batch"] = i
                interp.run(*inputs)
    ranges = {name: o.range() for name, o in obs.items() if o.min is not None}
    means = {name: shifts[name] / counts[name] for name in shifts}
    return ranges, means


# --------------------------------------------------------------------------------------------
# Building the int8 GraphModule
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(
        self,
        an: _Analysis,
        qparams: dict[str, tuple[float, int]],
        class_name: str,
    ) -> None:
        self.an = an
        self.qp = qparams
        self.fg = an.fg
        self.g = fx.Graph()
        self.root: dict[str, Any] = {}
        self.env: dict[str, tuple[fx.Node, str]] = {}
        self.qcache: dict[str, fx.Node] = {}
        self.fcache: dict[str, fx.Node] = {}
        self.layers: dict[str, dict] = {}
        self.values: dict[str, str] = {}  # float value name -> int8 node name
        self.class_name = class_name

    def _qp(self, name: str) -> tuple[float, int]:
        if name not in self.qp:
            raise ValueError(
                f"{self.an.api}: no quantization range for `{self.an.paths.get(name, name)}`; "
                "it was never observed (is it reached by the calibration inputs?)"
            )
        return self.qp[name]

    def _module(self, target: str, mod: nn.Module, args: tuple) -> fx.Node:
        self.root[target] = mod
        return self.g.call_module(target, args)

    def as_q(self, a: fx.Node) -> fx.Node:
        new, dom = self.env[a.name]
        if dom == "q" or dom == "o":
            return new
        if a.name not in self.qcache:
            scale, zp = self._qp(a.name)
            target = f"quantize_{a.name}"
            stub = qm.QuantStub(scale, zp, path=target)
            node = self._module(target, stub, (new,))
            self.layers[target] = {**stub.summary(), "value": a.name}
            self.qcache[a.name] = node
            self.values[a.name] = node.name
        return self.qcache[a.name]

    def as_f(self, a: fx.Node) -> fx.Node:
        new, dom = self.env[a.name]
        if dom != "q":
            return new
        if a.name not in self.fcache:
            scale, zp = self._qp(a.name)
            target = f"dequantize_{a.name}"
            stub = qm.DeQuantStub(scale, zp, path=target)
            self.fcache[a.name] = self._module(target, stub, (new,))
            self.layers[target] = {**stub.summary(), "value": a.name}
        return self.fcache[a.name]

    def _map(self, n: fx.Node, want: str) -> tuple[tuple, dict]:
        fn = self.as_q if want == "q" else self.as_f
        args = fx.map_arg(n.args, fn)
        kwargs = fx.map_arg(n.kwargs, fn)
        return args, kwargs

    def _copy(self, n: fx.Node, want: str) -> fx.Node:
        args, kwargs = self._map(n, want)
        if n.op == "call_module":
            self.root[n.target] = self.fg.get_submodule(n.target)
            return self.g.call_module(n.target, args, kwargs)
        if n.op == "call_function":
            return self.g.call_function(n.target, args, kwargs)
        if n.op == "call_method":
            return self.g.call_method(n.target, args, kwargs)
        raise AssertionError(n.op)

    def _record(self, n: fx.Node, mod: qm.QModule, inputs: list[fx.Node]) -> None:
        info = self.an.infos[n.name]
        entry = mod.summary()
        fused = list(n.meta.get("edgeopt_folded", []))
        float_nodes = [n.name]
        if info.fused_act:
            fused.append(self.an.paths[info.fused_act])
            float_nodes.append(info.fused_act)
        if fused:
            entry["fused"] = fused
        if n.meta.get("edgeopt_bn_as_conv"):
            entry["from"] = "BatchNorm2d"
        entry["float_nodes"] = float_nodes
        entry["inputs"] = [a.name for a in inputs]
        self.layers[info.path] = entry

    def _output(self, n: fx.Node) -> list[Any]:
        out_vals: list[Any] = []

        def out_map(a: fx.Node) -> fx.Node:
            if self.env[a.name][1] == "q":
                s, z = self._qp(a.name)
                out_vals.append({"scale": s, "zero_point": z})
            else:
                out_vals.append(None)
            return self.as_f(a)

        self.g.output(fx.map_arg(n.args[0], out_map))
        return out_vals

    def build(self) -> fx.GraphModule:
        an, fg = self.an, self.fg
        inputs_rec: dict[str, Any] = {}
        outputs_rec: list[Any] = []
        for n in an.nodes:
            info = an.infos[n.name]
            k = info.kind
            dom = an.dom[n.name]
            if n.op == "placeholder":
                default = n.args[0] if n.args else inspect.Parameter.empty
                new = self.g.placeholder(n.name, default_value=default)
                new.meta = dict(n.meta)
                self.env[n.name] = (new, dom)
                if n.name in self.qp:
                    s, z = self.qp[n.name]
                    inputs_rec[n.name] = {"scale": s, "zero_point": z}
                continue
            if n.op == "get_attr":
                self.root[n.target] = _fetch_attr(fg, n.target)
                self.env[n.name] = (self.g.get_attr(n.target), dom)
                continue
            if n.op == "output":
                outputs_rec = self._output(n)
                continue
            if info.fused_into is not None:
                self.env[n.name] = self.env[info.fused_into]
                continue
            if k == "identity":
                self.env[n.name] = self.env[n.args[0].name]
                continue
            if k == "float":
                self.env[n.name] = (self._copy(n, "f"), dom)
                continue
            if k == "struct":
                self.env[n.name] = (self._copy(n, "q" if dom == "q" else "f"), dom)
                if dom == "q" and _is_tensor(n):
                    self.values[n.name] = self.env[n.name][0].name
                continue
            if dom == "f":  # same-scale op on a float value: stays float
                self.env[n.name] = (self._copy(n, "f"), "f")
                continue
            out_name = info.fused_act or n.name
            out_s, out_z = self._qp(out_name)
            act = an.infos[info.fused_act].act if info.fused_act else None
            src = n.args[0]
            if k in ("conv", "linear"):
                in_s, in_z = self._qp(src.name)
                fmod = fg.get_submodule(n.target)
                amax = _weight_amax(fmod)
                if k == "conv":
                    qmod = qm.QConv2d(
                        fmod.weight,
                        fmod.bias,
                        in_s,
                        in_z,
                        out_s,
                        out_z,
                        fmod.stride,
                        info.params["padding"],
                        fmod.dilation,
                        fmod.groups,
                        an.config.per_channel,
                        act,
                        info.path,
                        weight_amax=amax,
                    )
                else:
                    qmod = qm.QLinear.from_float(
                        fmod,
                        in_s,
                        in_z,
                        out_s,
                        out_z,
                        an.config.per_channel,
                        act,
                        info.path,
                        weight_amax=amax,
                    )
                if an.config.requantization != "gemmlowp":
                    qmod.set_requantization(an.config.requantization)
                ins = [src]
            elif k in ("add", "mul"):
                ins = [a for a in n.args[:2]]
                scales = tuple(self._qp(a.name)[0] for a in ins)
                zps = tuple(self._qp(a.name)[1] for a in ins)
                cls = qm.QAdd if k == "add" else qm.QMul
                qmod = cls(scales, zps, out_s, out_z, act, info.path)
                if an.config.requantization != "gemmlowp":
                    qmod.set_requantization(an.config.requantization)
            elif k == "lut":
                in_s, in_z = self._qp(src.name)
                qmod = qm.QLookupTable.from_function(
                    info.lut, in_s, in_z, out_s, out_z, info.lut_name, info.path
                )
                ins = [src]
            elif k == "maxpool":
                s, z = self._qp(src.name)
                qmod = qm.QMaxPool2d(s, z, path=info.path, **info.params)
                ins = [src]
            elif k == "avgpool":
                s, z = self._qp(src.name)
                params = dict(info.params)
                squeeze = params.pop("squeeze", False)
                qmod = qm.QAvgPool2d(s, z, path=info.path, **params)
                if an.config.requantization != "gemmlowp":  # a global pool becomes XNNPACK's MEAN
                    qmod.set_requantization(an.config.requantization, _shape(src)[-2:])
                ins = [src]
                node = self._module(info.path, qmod, (self.as_q(src),))
                if squeeze:
                    node = self.g.call_method("flatten", (node, 1))
                self.env[n.name] = (node, "q")
                self.values[n.name] = node.name
                self._record(n, qmod, ins)
                continue
            elif k == "upsample":
                s, z = self._qp(src.name)
                qmod = qm.QUpsampleNearest(s, z, path=info.path, **info.params)
                ins = [src]
            elif k == "relu":
                s, z = self._qp(src.name)
                qmod = qm.QClamp(s, z, info.act, path=info.path)
                ins = [src]
            else:  # pragma: no cover - every kind is handled above
                raise AssertionError(k)
            node = self._module(info.path, qmod, tuple(self.as_q(a) for a in ins))
            self.env[n.name] = (node, "q")
            self.values[out_name] = node.name
            self._record(n, qmod, ins)
        self.g.lint()
        gm = fx.GraphModule(self.root, self.g, self.class_name)
        gm.eval()
        self.inputs_rec, self.outputs_rec = inputs_rec, outputs_rec
        return gm


def _fetch_attr(gm: nn.Module, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def record_of(model: nn.Module) -> dict[str, Any]:
    """A copy of ``model``'s record (pruning plan, ...) without creating one on it."""
    rec = getattr(model, ATTR, None)
    return (
        copy.deepcopy(rec) if rec is not None else {"plan": [], "block_sparsity": {}, "passes": []}
    )


def build_quantized(
    an: _Analysis,
    ranges: dict[str, tuple[float, float]],
    record: dict[str, Any],
    class_name: str,
    extra: dict[str, Any] | None = None,
) -> fx.GraphModule:
    """Builds the int8 GraphModule from an analysis and observed ranges; records it on top of a
    copy of the original model's ``record``."""
    qparams = an.value_qparams(ranges)
    builder = _Builder(an, qparams, f"Quantized{class_name}")
    gm = builder.build()
    rec = copy.deepcopy(record)
    cfg = an.config
    summary = {
        "scheme": "int8",
        "per_channel": cfg.per_channel,
        "observer": cfg.observer,
        "percentile": cfg.percentile,
        "bias_correction": cfg.bias_correction,
        "requantization": cfg.requantization,
        "inputs": builder.inputs_rec,
        "outputs": builder.outputs_rec,
        "layers": builder.layers,
        "kept_float": sorted(an.kept),
        "auto_kept_float": list(cfg._extra_keep),
    }
    extra = dict(extra or {})
    pass_name = extra.pop("pass", "quantize_int8")
    summary.update(extra)
    rec["quantization"] = summary
    rec["passes"] = [
        *rec.get("passes", []),
        {
            "pass": pass_name,
            "per_channel": cfg.per_channel,
            "observer": cfg.observer,
            "requantization": cfg.requantization,
            "kept_float": sorted(an.kept),
        },
    ]
    set_record(gm, rec)
    object.__setattr__(gm, "_edgeopt_values", dict(builder.values))
    return gm


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _example(api: str, example_inputs: Any, batches: list[tuple]) -> tuple:
    if example_inputs is None:
        return batches[0]
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def quantize_(
    model: nn.Module,
    config: Int8Config | None = None,
    calibration: Any = None,
    example_inputs: Any = None,
) -> fx.GraphModule:
    """Quantizes ``model`` to int8 after training, calibrating activation ranges on ``calibration``.

    Returns the quantized ``torch.fx.GraphModule`` (float in, float out, integer-exact int8
    inside); ``model`` itself is not changed (see the module docstring: its Python ``forward``
    cannot run on int8 tensors). Layer attributes and ``get_record(q)["quantization"]`` are
    documented in :mod:`optimizer.quantize.modules` and above.

    Args:
        model: a float model (eval-mode BatchNorm statistics are folded in).
        config: :class:`Int8Config`.
        calibration: batches of representative inputs: a DataLoader or list yielding tensors or
            ``(inputs, targets)`` pairs (the targets are ignored), or one tensor (one batch).
        example_inputs: inputs for tracing; default the first calibration batch.

    Raises:
        ValueError: empty calibration data; a module or op with no int8 implementation (naming
            its path; ``keep_float`` runs it in float); NaN/Inf in a parameter or in an activation
            during calibration (naming the path and the value); an unknown ``keep_float`` path.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
        >>> data = [torch.rand(8, 1, 8, 8) for _ in range(4)]
        >>> q = quantize_(model.eval(), Int8Config(), calibration=data)
        >>> q.get_submodule("0").weight_int8.dtype
        torch.int8
    """
    api = "quantize_"
    config = Int8Config() if config is None else config
    if not isinstance(config, Int8Config):
        raise TypeError(f"{api}: config must be an Int8Config, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{api}: model must be a torch.nn.Module, got {type(model).__name__}")
    batches = input_batches(api, calibration, config.max_calibration_batches)
    example = _example(api, example_inputs, batches)
    check_parameters(api, model)
    fg = float_graph(model, example)
    an = _Analysis(fg, config, api)
    bias_nodes: list[str] = []
    if config.bias_correction:
        bias_nodes = [n.name for n in an.nodes if an.infos[n.name].kind in ("conv", "linear")]
    ranges, shifts = calibrate(fg, an.observed(), batches, config, api, an.paths, bias_nodes)
    for name, mean in shifts.items():
        mod = fg.get_submodule(an.by_name[name].target)
        with torch.no_grad():
            if mod.bias is None:
                mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype))
            mod.bias -= mean.to(mod.bias.dtype)
    qmodel = build_quantized(an, ranges, record_of(model), type(model).__name__)
    if config.auto_keep_float:
        from optimizer.quantize.diagnose import layer_errors

        rows = layer_errors(an, qmodel, batches)
        worst = [r.path for r in rows if r.path not in an.kept][: config.auto_keep_float]
        cfg2 = copy.copy(config)
        cfg2._extra_keep = tuple(worst)
        an2 = _Analysis(fg, cfg2, api)
        qmodel = build_quantized(an2, ranges, record_of(model), type(model).__name__)
    return qmodel


def _sqnr(ref: torch.Tensor, err: torch.Tensor) -> float:
    s = float((ref.to(torch.float64) ** 2).sum())
    e = float((err.to(torch.float64) ** 2).sum())
    if e == 0:
        return math.inf
    if s == 0:
        return -math.inf
    return 10.0 * math.log10(s / e)
