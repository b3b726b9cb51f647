"""``.tflite`` export: our own scales, builtin ops only, NHWC without TRANSPOSE, checked in LiteRT.

:func:`export_tflite` writes, without TensorFlow:

* the integer-exact module that :func:`optimizer.quantize_` (or ``convert_``) returns as a
  full-integer TFLite model: the scales, zero points, int8 weights and int32 biases are written as
  they are (nothing is recomputed by a converter), so LiteRT's reference kernels compute what the
  PyTorch module computes, bit for bit;
* a float model (as trained, pruned or weight-shared) as a float32 model, BatchNorm folded into
  the conv before it;
* a mixed model (``Int8Config(keep_float=[...])``): the float layers in float32 with DEQUANTIZE
  before and QUANTIZE after them.

Layout is NHWC throughout with no TRANSPOSE op: conv weights are written OHWI, depthwise weights
[1, KH, KW, C * multiplier] (per-channel scales on dimension 3), and a FULLY_CONNECTED after
``flatten`` of a conv output gets its weight columns permuted from (C, H, W) to (H, W, C) once at
export. The model's image inputs are therefore NHWC (``x.permute(0, 2, 3, 1)``).

Op mapping (builtin ops only, checked for every node before anything is written):

============================  ==============================================================
module (``op``)                TFLite
============================  ==============================================================
QConv2d / Conv2d               CONV_2D; DEPTHWISE_CONV_2D when groups == in_channels; padding
                               SAME / VALID when they give PyTorch's windows, else PAD (which
                               pads int8 with the zero point, float with 0) + VALID; ReLU/ReLU6
                               fused
QLinear / Linear               FULLY_CONNECTED; with per-channel int8 weights in the gemmlowp
                               arithmetic a 1x1 CONV_2D between RESHAPEs ([N, K] <-> [N, 1, 1,
                               K]): LiteRT's per-channel FULLY_CONNECTED rounds once where
                               CONV_2D and our arithmetic round twice (its reference kernel
                               differed on ~0.1 % of values); in ``requantization="fp32"``
                               FULLY_CONNECTED (XNNPACK requantizes it as it does CONV_2D), so
                               no RESHAPE surrounds it
QAdd / QMul, add / mul         ADD / MUL (fused ReLU/ReLU6)
QMaxPool2d / QAvgPool2d,       MAX_POOL_2D / AVERAGE_POOL_2D (a global average pool is one
MaxPool2d / AvgPool2d /        full-window average pool; in ``requantization="fp32"`` it is
AdaptiveAvgPool2d              MEAN over axes [1, 2], keep_dims, which XNNPACK delegates and
                               whose arithmetic the module computes); max pool padding that
                               SAME does not reproduce is PADV2 with -128 (int8) or -inf (float)
QClamp, ReLU / ReLU6           RELU / RELU6 (fused into the conv, linear or add before them)
Sigmoid / Tanh / Hardswish     LOGISTIC / TANH / HARD_SWISH; SiLU: LOGISTIC + MUL (float)
QLookupTable (``lut``)         CAST (int8 -> int32) + ADD (+128) + GATHER on our 256-entry
                               table: bit for bit, for every function (see ``lut``)
QuantStub / DeQuantStub        the int8 input / output (``io="int8"``) or QUANTIZE /
                               DEQUANTIZE at the boundaries (``io="float"``) and around the
                               layers of a mixed model kept float
flatten / view / reshape       RESHAPE; torch.cat: CONCATENATION
============================  ==============================================================

With ``lut="builtin"``, a table whose function has a builtin (Sigmoid: LOGISTIC, Tanh: TANH,
Hardswish: HARD_SWISH) is written as that builtin when LiteRT's kernel reproduces our table on
all 256 inputs (probed in LiteRT at export time); otherwise the exact GATHER form is written and
the report's ``notes`` say by how many units and on how many inputs the builtin differs.

After writing (``verify=True``), the file runs in the LiteRT interpreter (default kernels: the
XNNPACK delegate) on sample inputs and its outputs are compared with the PyTorch module: int8
outputs in units of the output scale, float outputs within ``tolerance``; the intermediate
tensors (interpreter run with ``experimental_preserve_all_tensors``, reference kernels) are
compared with the module's own intermediate values, layer by layer, so a disagreement names the
first diverging layer.

XNNPACK and int8: LiteRT's reference kernels requantize with TFLite's default fixed-point
arithmetic (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT: two roundings), which
is what :mod:`optimizer.quantize.arithmetic` and the int8 modules compute. The XNNPACK delegate
(LiteRT's default) requantizes in fp32 with one rounding, as do LiteRT's ruy-based optimized
conv kernels, so wherever ``acc * multiplier`` falls within ``2^-(shift+1)`` below a half its
result is one unit away from the reference. Nothing in the file changes this (the rounding is the
kernel's, not a parameter), so deep int8 models whose layers amplify one-unit differences (the
MobileNetV2-style digits CNN: ~0.1-0.2 % of each layer's values, ~98 % of outputs within a unit)
agree with the module only under the reference kernels; see the report of issue 8.

Example::

    qmodel = optimizer.quantize_(model, optimizer.Int8Config(), calibration=data)
    report = export_tflite(qmodel, x[:1], "model.tflite", io="int8", labels=classes)
    report.within_one, report.top1_agreement, report.first_diverging_layer
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from optimizer._util import atomic_write
from optimizer.export.tflite_schema import TfliteModelBuilder
from optimizer.quantize import modules as qm

__all__ = ["TfliteReport", "export_tflite", "litert_interpreter_cls", "read_tflite_metadata"]

_API = "export_tflite"
_SUPPORTED = (
    "int8 modules from optimizer.quantize_ / convert_ (QConv2d dense or depthwise, QLinear, "
    "QAdd, QMul, QMaxPool2d, QAvgPool2d, QClamp, QLookupTable, QuantStub/DeQuantStub) or float "
    "Conv2d (dense or depthwise), Linear, BatchNorm (folded), ReLU/ReLU6/Sigmoid/Tanh/Hardswish/"
    "SiLU, MaxPool2d/AvgPool2d/AdaptiveAvgPool2d, add/mul, and flatten/view/reshape/cat"
)
#: Metadata names written into Model.metadata.
METADATA_QUANTIZATION = "edgeopt_quantization"
METADATA_LABELS = "labels"
SIGNATURE_KEY = "serving_default"
#: A mixed model's float outputs agree within this fraction of their range (see ``tolerance``).
MIXED_FLOAT_TOLERANCE = 0.05
_BUILTIN_LUTS = {
    "sigmoid": "LOGISTIC",
    "Sigmoid": "LOGISTIC",
    "tanh": "TANH",
    "Tanh": "TANH",
    "Hardswish": "HARD_SWISH",
    "hardswish": "HARD_SWISH",
}
_ACT = {
    None: TfliteModelBuilder.ACT_NONE,
    "relu": TfliteModelBuilder.ACT_RELU,
    "relu6": TfliteModelBuilder.ACT_RELU6,
}
_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}
#: Float activation -> its builtin op (SiLU: LOGISTIC + MUL).
_FLOAT_ACT_OPS = {
    "relu": "RELU",
    "relu6": "RELU6",
    "sigmoid": "LOGISTIC",
    "tanh": "TANH",
    "hardswish": "HARD_SWISH",
}
_FLOAT_ACT_FUNCS = {"relu", "relu6", "sigmoid", "tanh", "hardswish", "silu"}


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _target_name(n: fx.Node) -> str:
    t = n.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _float_act(gm: fx.GraphModule, n: fx.Node) -> str | None:
    """ "relu", "relu6", "sigmoid", "tanh", "hardswish" or "silu" for a float activation node."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        if isinstance(m, qm.QModule):
            return None
        if isinstance(m, nn.ReLU):
            return "relu"
        if isinstance(m, nn.ReLU6) or (
            isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0)
        ):
            return "relu6"
        for cls, name in ((nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"), (nn.Hardswish, "hardswish")):
            if isinstance(m, cls):
                return name
        return "silu" if isinstance(m, nn.SiLU) else None
    if n.op in ("call_function", "call_method") and len(n.args) == 1:
        name = _target_name(n)
        return name if name in _FLOAT_ACT_FUNCS else None
    return None


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class TfliteReport:
    """What :func:`export_tflite` wrote and how LiteRT's outputs compare with the module's.

    Attributes:
        path: the written file.
        size_bytes: its size.
        io: ``"int8"`` or ``"float"`` (the dtype of the model's inputs and outputs).
        ops: TFLite op name -> count.
        inputs, outputs: per signature tensor: ``name``, ``shape`` (NHWC for images),
            ``layout``, ``dtype`` ("int8" / "float"), ``scale`` and ``zero_point`` of the int8
            tensor (for ``io="float"``: the QUANTIZE / DEQUANTIZE parameters inside the file).
        signature_key: the SignatureDef's key.
        notes: remarks (LUT builtins that would differ from our tables, ...).
        verified: True when the file was run in LiteRT.
        interpreter: which LiteRT package ran it.
        samples: number of sample inputs compared.
        max_abs_diff: largest |LiteRT - module| over all outputs, in units of the output scale.
        within_one: fraction of output values within 1 unit.
        top1_agreement: fraction of samples whose arg-max agrees (2-D outputs), else None.
        layer_max_diff: per layer path (in op order): max |diff| on the first batch, LiteRT's
            reference kernels (no delegate) vs the module's intermediate values; int8 layers in
            units of their scale, float layers relative to max(1, max |value|).
        first_diverging_layer: the first layer whose intermediate output differs in LiteRT's
            reference kernels (which compute our int8 arithmetic bit for bit): an int8 layer by
            any unit (by more than one in a mixed model), a float layer by more than
            ``tolerance``; None when none does.
        kind: ``"int8"``, ``"float"`` or ``"mixed"`` (int8 with layers kept float).
    """

    path: str
    size_bytes: int
    io: str
    ops: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    signature_key: str = SIGNATURE_KEY
    notes: list[str] = field(default_factory=list)
    kind: str = "int8"
    verified: bool = False
    interpreter: str = ""
    samples: int = 0
    max_abs_diff: float | None = None
    within_one: float | None = None
    top1_agreement: float | None = None
    layer_max_diff: dict[str, float] = field(default_factory=dict)
    first_diverging_layer: str | None = None

    @property
    def agrees(self) -> bool:
        """True when verified with >= 99.9 % of values within 1 unit and >= 99.5 % top-1."""
        if not self.verified or self.within_one is None:
            return False
        top1_ok = self.top1_agreement is None or self.top1_agreement >= 0.995
        return self.within_one >= 0.999 and top1_ok


# --------------------------------------------------------------------------------------------
# LiteRT
# --------------------------------------------------------------------------------------------


def litert_interpreter_cls() -> tuple[Any, str]:
    """LiteRT's ``Interpreter`` class and its package: ``ai_edge_litert``, else ``tflite_runtime``,
    else ``tensorflow.lite``. Raises ImportError naming them when none is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        pass
    try:
        from tensorflow.lite import Interpreter

        return Interpreter, "tensorflow.lite"
    except ImportError as e:
        raise ImportError(
            f"{_API}: verify=True needs a LiteRT interpreter; install `ai-edge-litert` (or "
            "tflite-runtime / tensorflow), or pass verify=False"
        ) from e


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silences the C++ runtime's log lines on file descriptor 2 (errors still raise)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _interpreter(blob: bytes, reference: bool = False, preserve: bool = False) -> Any:
    cls, _ = litert_interpreter_cls()
    kwargs: dict[str, Any] = {"model_content": blob, "num_threads": 1}
    if reference or preserve:
        try:
            from ai_edge_litert.interpreter import OpResolverType
        except ImportError:  # older packages: no resolver choice
            OpResolverType = None  # noqa: N806
        if OpResolverType is not None:
            kwargs["experimental_op_resolver_type"] = (
                OpResolverType.BUILTIN_REF
                if reference
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        if preserve:
            kwargs["experimental_preserve_all_tensors"] = True
    with _quiet_stderr():
        interp = cls(**kwargs)
        interp.allocate_tensors()
    return interp


def read_tflite_metadata(path_or_bytes: str | os.PathLike | bytes) -> dict[str, bytes]:
    """The Model.metadata entries of a ``.tflite`` file as ``{name: bytes}`` (needs LiteRT's
    generated schema, ``ai_edge_litert.schema_py_generated``).

    Example:
        >>> json.loads(read_tflite_metadata("model.tflite")["edgeopt_quantization"])["io"]
        'int8'
    """
    from ai_edge_litert import schema_py_generated as s

    blob = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    m = s.Model.GetRootAsModel(blob, 0)
    out = {}
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        buf = m.Buffers(md.Buffer())
        out[md.Name().decode()] = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
    return out


# --------------------------------------------------------------------------------------------
# Values of the module
# --------------------------------------------------------------------------------------------


class _Capture(fx.Interpreter):
    """Runs the GraphModule and keeps every node's output (what hooks would capture)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def _capture(gm: fx.GraphModule, inputs: tuple) -> dict[str, Any]:
    cap = _Capture(gm)
    with torch.no_grad():
        cap.run(*inputs)
    return cap.values


@dataclass
class _Val:
    """A TFLite tensor standing for an fx value. ``layout``: "nhwc" (a 4-D NCHW value stored
    NHWC), "plain" (same order as PyTorch), "hwc" (a flattened conv output in (H, W, C) order;
    ``chw`` is PyTorch's (C, H, W)), "hwc4" (a [N, C*H*W] value kept as the 4-D NHWC tensor
    [N, H, W, C]: the flatten before a linear layer, which reads it without a RESHAPE)."""

    index: int
    layout: str
    pt_shape: tuple[int, ...]
    scale: float | None
    zero_point: int | None
    chw: tuple[int, int, int] | None = None


def _tf_shape(
    pt_shape: tuple[int, ...], layout: str, chw: tuple[int, int, int] | None = None
) -> tuple[int, ...]:
    if layout == "nhwc":
        n, c, h, w = pt_shape
        return (n, h, w, c)
    if layout == "hwc4":
        c, h, w = chw
        return (pt_shape[0], h, w, c)
    return tuple(pt_shape)


def _to_layout(v: np.ndarray, layout: str, chw: tuple[int, int, int] | None = None) -> np.ndarray:
    """A PyTorch-ordered array in the order the TFLite tensor holds it."""
    if layout == "nhwc":
        return np.ascontiguousarray(v.transpose(0, 2, 3, 1))
    if layout == "hwc":
        c, h, w = chw
        b = v.shape[0]
        return np.ascontiguousarray(v.reshape(b, c, h, w).transpose(0, 2, 3, 1).reshape(b, -1))
    if layout == "hwc4":
        c, h, w = chw
        return np.ascontiguousarray(v.reshape(v.shape[0], c, h, w).transpose(0, 2, 3, 1))
    return v


def _same_padding(size: int, k: int, s: int, d: int, p: int) -> str | None:
    """ "VALID" / "SAME" when TFLite's padding gives PyTorch's windows (symmetric ``p``), else
    None (an explicit PAD is needed)."""
    k_eff = d * (k - 1) + 1
    out_pt = (size + 2 * p - k_eff) // s + 1
    if p == 0:
        return "VALID"
    out_same = -(-size // s)
    total = max((out_same - 1) * s + k_eff - size, 0)
    if out_same == out_pt and total // 2 == p:
        return "SAME"
    return None


# --------------------------------------------------------------------------------------------
# The exporter
# --------------------------------------------------------------------------------------------


class _Exporter:
    def __init__(
        self,
        gm: fx.GraphModule,
        values: dict[str, Any],
        io: str,
        lut: str,
        description: str,
        kind: str = "int8",
        layout: str = "nhwc",
    ) -> None:
        self.gm = gm
        self.values = values
        self.io = io
        self.kind = kind
        self.layout = layout
        self.lut = lut
        self.tb = TfliteModelBuilder(description)
        self.vals: dict[str, _Val] = {}
        self.layer_of: dict[int, str] = {}  # tensor index -> layer path (per-layer compare)
        self.node_of: dict[int, str] = {}  # tensor index -> fx node name
        self.ops: dict[str, int] = {}
        self.notes: list[str] = []
        self.inputs: list[tuple[str, int]] = []
        self.outputs: list[tuple[str, int]] = []
        self.io_info: tuple[list[dict], list[dict]] = ([], [])
        self.lut_cache: dict[tuple, str | None] = {}
        self.fused: set[str] = set()  # activation nodes fused into the operator before them

    # -- helpers -------------------------------------------------------------------------------
    def _mod(self, n: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(n.target) if n.op == "call_module" else None

    def _path(self, n: fx.Node) -> str:
        mod = self._mod(n)
        return getattr(mod, "path", None) or str(n.target if n.op == "call_module" else n.name)

    def _shape(self, n: fx.Node) -> tuple[int, ...]:
        return tuple(self.values[n.name].shape)

    def _op(self, code: int, ins: list[int], outs: list[int], opt_type=0, opt=0, version=1):
        name = TfliteModelBuilder.OP_NAMES[code]
        self.ops[name] = self.ops.get(name, 0) + 1
        self.tb.add_operator(code, ins, outs, opt_type, opt, version)

    def _act_tensor(
        self,
        n: fx.Node | None,
        name: str,
        pt_shape: tuple[int, ...],
        layout: str,
        scale: float | None,
        zp: int | None,
        chw: tuple[int, int, int] | None = None,
    ) -> _Val:
        dtype = TfliteModelBuilder.INT8 if scale is not None else TfliteModelBuilder.FLOAT32
        idx = self.tb.add_tensor(name, _tf_shape(pt_shape, layout, chw), dtype, 0, scale, zp)
        v = _Val(idx, layout, pt_shape, scale, zp, chw)
        if n is not None:
            self.vals[n.name] = v
            self.layer_of[idx] = name
            self.node_of[idx] = n.name
        return v

    # -- checks (before any conversion work) ---------------------------------------------------
    def unsupported(self, n: fx.Node) -> str | None:
        """Why ``n`` has no mapping, or None."""
        if n.op in ("placeholder", "output", "get_attr"):
            if n.op == "get_attr":
                return "a constant tensor in the graph"
            return None
        tensor = isinstance(self.values.get(n.name), torch.Tensor)
        mod = self._mod(n)
        if isinstance(mod, qm.QModule):
            if isinstance(mod, qm.QConv2d):
                if mod.groups != 1 and not (
                    mod.groups == mod.in_channels and mod.out_channels % mod.groups == 0
                ):
                    return (
                        f"conv2d with groups={mod.groups} (grouped, not depthwise): no int8 "
                        "TFLite builtin"
                    )
                if len(self._shape(n.args[0])) != 4:
                    return "conv2d on a non-4-D input"
                return None
            if isinstance(mod, qm.QLinear):
                src = self.values[n.args[0].name]
                if src.dim() != 2:
                    return f"linear on a {src.dim()}-D input (only [batch, features])"
                return None
            if isinstance(mod, qm.QMaxPool2d):
                if mod.dilation != (1, 1):
                    return "max_pool2d with dilation"
                return None
            if isinstance(mod, qm.QAvgPool2d):
                h, w = self._shape(n.args[0])[2:]
                for size, k, s, p in zip((h, w), mod.kernel_size, mod.stride, mod.padding):
                    if _same_padding(size, k, s, 1, p) is None:
                        return "avg_pool2d with padding that TFLite's SAME does not reproduce"
                return None
            if isinstance(mod, (qm.QAdd, qm.QMul, qm.QClamp, qm.QLookupTable)):
                return None
            if isinstance(mod, (qm.QuantStub, qm.DeQuantStub)):
                return None  # at the boundaries, or QUANTIZE / DEQUANTIZE around float layers
            return f"{mod.op} ({type(mod).__name__}): no TFLite mapping yet"
        if mod is not None:
            return self._unsupported_float_module(n, mod)
        name = _target_name(n)
        if not tensor:
            if n.op == "call_method" and name in ("size", "dim"):
                return None
            if n.op == "call_function" and name == "getattr":
                return None
            if n.op == "call_function" and name == "getitem" and not tensor:
                return None
            return f"{name} returning {type(self.values.get(n.name)).__name__}"
        if name in ("flatten", "view", "reshape"):
            return None
        if name in ("cat", "concat"):
            return None
        if name in ("contiguous",):
            return None
        if _float_act(self.gm, n) is not None:
            return None
        if name in ("add", "mul"):
            if len(n.args) != 2 or not all(
                isinstance(self.values.get(getattr(a, "name", "")), torch.Tensor) for a in n.args
            ):
                return f"{name} with a constant operand (only tensor {name} tensor)"
            return None
        if name == "adaptive_avg_pool2d":
            return self._adaptive_unsupported(n, n.args[1] if len(n.args) > 1 else None)
        return f"{n.op} {name}"

    def _unsupported_float_module(self, n: fx.Node, mod: nn.Module) -> str | None:
        """Why the float module ``mod`` (float model or a layer kept float) has no mapping."""
        if isinstance(mod, nn.Flatten):
            return None if mod.start_dim == 1 and mod.end_dim == -1 else "Flatten dims"
        if isinstance(mod, (nn.Identity, nn.Dropout)):
            return None
        if _float_act(self.gm, n) is not None:
            return None
        kind = type(mod).__name__
        if isinstance(mod, nn.Conv2d):
            if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                return f"{kind} with padding={mod.padding!r}, padding_mode={mod.padding_mode!r}"
            if mod.groups != 1 and mod.groups != mod.in_channels:
                return f"{kind} with groups={mod.groups} (grouped, not depthwise): no builtin"
            if len(self._shape(n.args[0])) != 4:
                return f"{kind} on a non-4-D input"
            return None
        if isinstance(mod, nn.Linear):
            if len(self._shape(n.args[0])) != 2:
                return f"{kind} on a {len(self._shape(n.args[0]))}-D input (only [batch, features])"
            return None
        if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            if mod.ceil_mode:
                return f"{kind} with ceil_mode=True"
            if isinstance(mod, nn.MaxPool2d) and _pair(mod.dilation) != (1, 1):
                return f"{kind} with dilation"
            if isinstance(mod, nn.AvgPool2d) and (
                _pair(mod.padding) != (0, 0) or mod.divisor_override is not None
            ):
                return f"{kind} with padding / divisor_override (TFLite excludes padded cells)"
            return None
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return self._adaptive_unsupported(n, mod.output_size)
        return f"float {kind}: no TFLite builtin mapping"

    def _adaptive_unsupported(self, n: fx.Node, size: Any) -> str | None:
        h, w = self._shape(n.args[0])[2:]
        oh, ow = _pair(size) if size is not None else (1, 1)
        oh, ow = oh or h, ow or w
        if h % oh or w % ow:
            return f"adaptive_avg_pool2d from {h}x{w} to {oh}x{ow} (windows of unequal size)"
        return None

    # -- conversion ----------------------------------------------------------------------------
    def _emit(self, n: fx.Node) -> None:
        if n.op == "placeholder":
            self._emit_placeholder(n)
            return
        if n.name in self.fused:
            return  # an activation fused into the operator before it
        if n.op == "output":
            self._emit_output(n)
            return
        mod = self._mod(n)
        if isinstance(mod, qm.QuantStub):
            self._emit_input(n, mod)
        elif isinstance(mod, qm.DeQuantStub):
            self._emit_dequantize(n, mod)
        elif isinstance(mod, qm.QConv2d):
            self._emit_conv(n, mod)
        elif isinstance(mod, qm.QLinear):
            self._emit_linear(n, mod)
        elif isinstance(mod, (qm.QAdd, qm.QMul)):
            self._emit_binary(n, mod)
        elif isinstance(mod, (qm.QMaxPool2d, qm.QAvgPool2d)):
            self._emit_pool(n, mod)
        elif isinstance(mod, qm.QClamp):
            x = self.vals[n.args[0].name]
            code = TfliteModelBuilder.RELU if mod.activation == "relu" else TfliteModelBuilder.RELU6
            y = self._same_q(n, x, mod.path)
            self._op(code, [x.index], [y.index], version=2)
        elif isinstance(mod, qm.QLookupTable):
            self._emit_lut(n, mod)
        elif isinstance(mod, (nn.Identity, nn.Dropout)):
            self.vals[n.name] = self.vals[n.args[0].name]
        elif not isinstance(self.values.get(n.name), torch.Tensor):
            return  # sizes, ints
        elif isinstance(mod, nn.Conv2d):
            self._emit_fconv(n, mod)
        elif isinstance(mod, nn.Linear):
            self._emit_flinear(n, mod)
        elif (act := _float_act(self.gm, n)) is not None:
            self._emit_fact(n, act)
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            self._emit_fpool(n, mod)
        else:
            name = _target_name(n)
            if name in ("add", "mul") and mod is None:
                self._emit_fbinary(n, name)
            elif name == "adaptive_avg_pool2d":
                self._emit_fpool(n, None)
            elif isinstance(mod, nn.Flatten) or name in ("flatten", "view", "reshape"):
                self._emit_reshape(n)
            elif name in ("cat", "concat"):
                self._emit_cat(n)
            elif name == "contiguous":
                self.vals[n.name] = self.vals[n.args[0].name]
            else:  # pragma: no cover - rejected by unsupported()
                raise AssertionError(n)

    def _same_q(self, n: fx.Node, x: _Val, name: str, pt_shape=None) -> _Val:
        shape = pt_shape or self._shape(n)
        return self._act_tensor(n, name, shape, x.layout, x.scale, x.zero_point, x.chw)

    def _emit_placeholder(self, n: fx.Node) -> None:
        """A float graph input, unless every reader is a QuantStub (which makes the input)."""
        if n.users and all(isinstance(self._mod(u), qm.QuantStub) for u in n.users):
            return
        shape = self._shape(n)
        layout = "nhwc" if len(shape) == 4 else "plain"
        info = {"name": n.name, "dtype": "float", "scale": None, "zero_point": None}
        if layout == "nhwc" and self.layout == "nchw":  # NCHW input, one TRANSPOSE
            f = self._act_tensor(None, n.name, shape, "plain", None, None)
            v = self._act_tensor(n, f"{n.name}/nhwc", shape, "nhwc", None, None)
            self._transpose(f, v, (0, 2, 3, 1), n.name)
            in_idx, info["shape"], info["layout"] = f.index, list(shape), "NCHW"
        else:
            v = self._act_tensor(n, n.name, shape, layout, None, None)
            in_idx, info["shape"] = v.index, list(_tf_shape(shape, layout))
            info["layout"] = "NHWC" if layout == "nhwc" else "as PyTorch"
        info["feed"] = n.name
        self.inputs.append((n.name, in_idx))
        self.io_info[0].append(info)

    def _transpose(self, x: _Val, y: _Val, perm: tuple[int, ...], name: str) -> None:
        """TRANSPOSE at a graph input or output (only with ``layout="nchw"``)."""
        tb = self.tb
        p_t = tb.add_constant(f"{name}/perm", np.asarray(perm, np.int32), tb.INT32)
        self._op(tb.TRANSPOSE, [x.index, p_t], [y.index], version=2 if x.scale is not None else 1)

    def _emit_dequantize(self, n: fx.Node, mod: qm.DeQuantStub) -> None:
        """DEQUANTIZE before a layer kept float; at the output, the int8 value itself (the
        output's dtype is chosen by ``io``)."""
        x = self.vals[n.args[0].name]
        # Users that only read its size (x.view(x.size(0), -1)) need no tensor.
        if not any(
            u.op != "output" and isinstance(self.values.get(u.name), torch.Tensor) for u in n.users
        ):
            self.vals[n.name] = x
            return
        y = self._act_tensor(n, mod.path, self._shape(n), x.layout, None, None, x.chw)
        self._op(TfliteModelBuilder.DEQUANTIZE, [x.index], [y.index], version=2)

    def _emit_input(self, n: fx.Node, mod: qm.QuantStub) -> None:
        ph = n.args[0]
        shape = self._shape(n)
        layout = "nhwc" if len(shape) == 4 else "plain"
        q = (mod.output_scale, mod.output_zero_point)
        if ph.name in self.vals:  # after a float layer (or a float input read elsewhere)
            x = self.vals[ph.name]
            y = self._act_tensor(n, mod.path, shape, x.layout, *q, x.chw)
            self._op(TfliteModelBuilder.QUANTIZE, [x.index], [y.index], version=2)
            return
        info = {"name": ph.name, "dtype": self.io, "scale": q[0], "zero_point": q[1]}
        nchw = layout == "nhwc" and self.layout == "nchw"
        # The file's input: int8 or float, NCHW (then QUANTIZE, TRANSPOSE) or NHWC.
        io_layout = "plain" if nchw else layout
        if self.io == "int8":
            v_in = self._act_tensor(None if nchw else n, ph.name, shape, io_layout, *q)
            v_q = v_in
        else:
            v_in = self._act_tensor(None, ph.name, shape, io_layout, None, None)
            v_q = self._act_tensor(None if nchw else n, mod.path, shape, io_layout, *q)
            self._op(TfliteModelBuilder.QUANTIZE, [v_in.index], [v_q.index], version=2)
        if nchw:
            v = self._act_tensor(n, f"{mod.path}/nhwc", shape, "nhwc", *q)
            self._transpose(v_q, v, (0, 2, 3, 1), mod.path)
        info["shape"] = list(_tf_shape(shape, io_layout))
        info["layout"] = "NCHW" if nchw else ("NHWC" if layout == "nhwc" else "as PyTorch")
        info["feed"] = n.name if self.io == "int8" else ph.name
        self.inputs.append((ph.name, v_in.index))
        self.io_info[0].append(info)

    def _emit_output(self, n: fx.Node) -> None:
        outs = n.args[0]
        flat: list[fx.Node] = []
        fx.map_arg(outs, flat.append)
        for i, o in enumerate(flat):
            name = "output" if len(flat) == 1 else f"output_{i}"
            src = o.args[0] if isinstance(self._mod(o), qm.DeQuantStub) else o
            v = self.vals[src.name]
            info = {"name": name, "dtype": self.io, "scale": v.scale, "zero_point": v.zero_point}
            if v.layout == "nhwc" and self.layout == "nchw":  # one TRANSPOSE back to NCHW
                t = self._act_tensor(
                    None, f"{name}/nchw", v.pt_shape, "plain", v.scale, v.zero_point
                )
                self._transpose(v, t, (0, 3, 1, 2), name)
                v = t
            if self.io == "int8" or v.scale is None:
                idx = v.index
                if v.scale is None:
                    info["dtype"] = "float"
            else:
                f = self._act_tensor(None, name, v.pt_shape, v.layout, None, None, v.chw)
                self._op(TfliteModelBuilder.DEQUANTIZE, [v.index], [f.index], version=2)
                idx = f.index
            info["shape"] = list(_tf_shape(v.pt_shape, v.layout))
            info["layout"] = {"nhwc": "NHWC", "hwc": "(H, W, C) flattened"}.get(
                v.layout, "NCHW" if len(v.pt_shape) == 4 else "as PyTorch"
            )
            info["value"] = src.name
            self.outputs.append((name, idx))
            self.io_info[1].append(info)

    def _pad(self, x: _Val, pads: tuple[int, int], value: float | None, name: str) -> _Val:
        """PAD (int8: pads with the zero point) or PADV2 with ``value``; H and W by pads."""
        tb = self.tb
        ph, pw = pads
        paddings = np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], dtype=np.int32)
        p_t = tb.add_constant(f"{name}/paddings", paddings, tb.INT32)
        n_, c, h, w = x.pt_shape
        shape = (n_, c, h + 2 * ph, w + 2 * pw)
        y = self._act_tensor(None, f"{name}/pad", shape, "nhwc", x.scale, x.zero_point)
        if value is None:
            self._op(tb.PAD, [x.index, p_t], [y.index], version=2)
        elif x.scale is None:
            v_t = tb.add_constant(f"{name}/pad_value", np.array([value], np.float32), tb.FLOAT32)
            self._op(tb.PADV2, [x.index, p_t, v_t], [y.index], version=1)
        else:
            v_t = tb.add_constant(
                f"{name}/pad_value",
                np.array([value], dtype=np.int8),
                tb.INT8,
                scale=x.scale,
                zero_point=x.zero_point,
            )
            self._op(tb.PADV2, [x.index, p_t, v_t], [y.index], version=2)
        return y

    def _padding(self, x: _Val, k, s, d, p, name: str, pad_value: int | None) -> tuple[_Val, int]:
        h, w = x.pt_shape[2:]
        modes = [
            _same_padding(size, kk, ss, dd, pp) for size, kk, ss, dd, pp in zip((h, w), k, s, d, p)
        ]
        tb = self.tb
        if modes[0] == modes[1] and modes[0] is not None:
            return x, tb.SAME if modes[0] == "SAME" else tb.VALID
        return self._pad(x, tuple(p), pad_value, name), tb.VALID

    def _emit_conv(self, n: fx.Node, mod: qm.QConv2d) -> None:
        tb = self.tb
        x = self.vals[n.args[0].name]
        x, padding = self._padding(
            x, mod.kernel_size, mod.stride, mod.dilation, mod.padding, mod.path, None
        )
        s_w = mod.weight_scale.numpy().astype(np.float32)
        depthwise = mod.groups != 1
        w = mod.weight_int8.numpy()
        if depthwise:  # [O, 1, KH, KW] -> [1, KH, KW, O]
            w_t = np.ascontiguousarray(w.transpose(1, 2, 3, 0))
            qdim = 3
        else:  # OIHW -> OHWI
            w_t = mod.weight_ohwi()
            qdim = 0
        w_idx = tb.add_constant(
            f"{mod.path}/weight", w_t, tb.INT8, s_w, 0, qdim if s_w.size > 1 else 0
        )
        b_scale = (np.float64(mod.input_scale) * s_w.astype(np.float64)).astype(np.float32)
        b_idx = tb.add_constant(
            f"{mod.path}/bias", mod.bias_int32.numpy().astype(np.int32), tb.INT32, b_scale, 0
        )
        y = self._act_tensor(
            n, mod.path, self._shape(n), "nhwc", mod.output_scale, mod.output_zero_point
        )
        act = _ACT[mod.activation]
        if depthwise:
            opts = tb.depthwise_conv_2d_options(
                padding, mod.stride, mod.dilation, mod.out_channels // mod.in_channels, act
            )
            self._op(
                tb.DEPTHWISE_CONV_2D,
                [x.index, w_idx, b_idx],
                [y.index],
                tb.DEPTHWISE_CONV_2D_OPTIONS,
                opts,
                version=3,
            )
        else:
            opts = tb.conv_2d_options(padding, mod.stride, mod.dilation, act)
            self._op(tb.CONV_2D, [x.index, w_idx, b_idx], [y.index], tb.CONV_2D_OPTIONS, opts, 3)

    def _emit_linear(self, n: fx.Node, mod: qm.QLinear) -> None:
        tb = self.tb
        x = self.vals[n.args[0].name]
        w = mod.weight_int8.numpy()
        if x.layout in ("hwc", "hwc4"):  # columns (C, H, W) -> (H, W, C): NHWC-flattened input
            c, h, ww = x.chw
            w = w.reshape(w.shape[0], c, h, ww).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        s_w = mod.weight_scale.numpy().astype(np.float32)
        b_scale = (np.float64(mod.input_scale) * s_w.astype(np.float64)).astype(np.float32)
        b_idx = tb.add_constant(
            f"{mod.path}/bias", mod.bias_int32.numpy().astype(np.int32), tb.INT32, b_scale, 0
        )
        shape = self._shape(n)
        q = (mod.output_scale, mod.output_zero_point)
        act = _ACT[mod.activation]
        # FULLY_CONNECTED reads a 4-D "hwc4" input as [N, H*W*C]. Per-tensor weights, or XNNPACK's
        # arithmetic (fp32 mode: XNNPACK requantizes FULLY_CONNECTED as it does CONV_2D).
        if s_w.size == 1 or mod.requantization == "fp32":
            w_idx = tb.add_constant(f"{mod.path}/weight", np.ascontiguousarray(w), tb.INT8, s_w, 0)
            y = self._act_tensor(n, mod.path, shape, "plain", *q)
            opts = tb.fully_connected_options(act)
            self._op(
                tb.FULLY_CONNECTED,
                [x.index, w_idx, b_idx],
                [y.index],
                tb.FULLY_CONNECTED_OPTIONS,
                opts,
                version=4,
            )
            return
        # Per-channel weights: LiteRT's per-channel FULLY_CONNECTED reference kernel requantizes
        # with one rounding, CONV_2D with TFLite's two (our arithmetic), so the layer is a
        # CONV_2D whose window is the whole input: [N, H, W, C] (a flattened conv output, read
        # as it is) or [N, 1, 1, K] (RESHAPE, which copies bytes). Bit for bit.
        nb, k = x.pt_shape
        c_out = shape[1]
        i32 = tb.INT32
        if x.layout == "hwc4":
            _, kh, kw = x.chw
            x4 = x.index
        else:
            kh = kw = 1
            x4 = tb.add_tensor(
                f"{mod.path}/in_1x1", (nb, 1, 1, k), tb.INT8, 0, x.scale, x.zero_point
            )
            shp = tb.add_constant(f"{mod.path}/shape_1x1", np.array([nb, 1, 1, k], np.int32), i32)
            self._op(tb.RESHAPE, [x.index, shp], [x4])
        w4 = np.ascontiguousarray(w.reshape(w.shape[0], kh, kw, -1))
        w_idx = tb.add_constant(f"{mod.path}/weight", w4, tb.INT8, s_w, 0)
        if self._linear_users_only(n):  # the next linear layer reads [N, 1, 1, O] as it is
            y4 = self._act_tensor(n, mod.path, shape, "hwc4", *q, (c_out, 1, 1)).index
        else:
            y4 = tb.add_tensor(f"{mod.path}/out_1x1", (nb, 1, 1, c_out), tb.INT8, 0, *q)
        opts = tb.conv_2d_options(tb.VALID, (1, 1), (1, 1), act)
        self._op(tb.CONV_2D, [x4, w_idx, b_idx], [y4], tb.CONV_2D_OPTIONS, opts, 3)
        if not self._linear_users_only(n):
            y = self._act_tensor(n, mod.path, shape, "plain", *q)
            shp = tb.add_constant(f"{mod.path}/shape", np.array([nb, c_out], np.int32), i32)
            self._op(tb.RESHAPE, [y4, shp], [y.index])

    def _emit_binary(self, n: fx.Node, mod: qm.QAdd | qm.QMul) -> None:
        tb = self.tb
        a, b = (self.vals[a.name] for a in n.args[:2])
        layouts = {a.layout, b.layout}
        if len(layouts) != 1:
            raise ValueError(
                f"{_API}: cannot export `{mod.path}` ({mod.op}): its inputs have different "
                f"layouts {sorted(layouts)}; expected both NHWC or both flat"
            )
        y = self._act_tensor(
            n, mod.path, self._shape(n), a.layout, mod.output_scale, mod.output_zero_point, a.chw
        )
        act = _ACT[mod.activation]
        if isinstance(mod, qm.QAdd):
            self._op(tb.ADD, [a.index, b.index], [y.index], tb.ADD_OPTIONS, tb.add_options(act), 2)
        else:
            self._op(tb.MUL, [a.index, b.index], [y.index], tb.MUL_OPTIONS, tb.mul_options(act), 2)

    def _emit_pool(self, n: fx.Node, mod: qm.QMaxPool2d | qm.QAvgPool2d) -> None:
        tb = self.tb
        x = self.vals[n.args[0].name]
        is_max = isinstance(mod, qm.QMaxPool2d)
        x, padding = self._padding(
            x, mod.kernel_size, mod.stride, (1, 1), mod.padding, mod.path, -128 if is_max else 0
        )
        y = self._same_q(n, x, mod.path)
        y.layout = "nhwc"
        if not is_max and mod.requantization == "fp32":
            # A global pool in XNNPACK's arithmetic: MEAN over H and W, as TFLiteConverter writes
            # a global average pool. XNNPACK runs an int8 MEAN (one delegate partition for the
            # whole network) but no int8 AVERAGE_POOL_2D; the module computes its arithmetic.
            axes = tb.add_constant(f"{mod.path}/axes", np.array([1, 2], np.int32), tb.INT32)
            opts = tb.reducer_options(keep_dims=True)
            self._op(tb.MEAN, [x.index, axes], [y.index], tb.REDUCER_OPTIONS, opts, 2)
            return
        opts = tb.pool_2d_options(padding, mod.stride, mod.kernel_size)
        code = tb.MAX_POOL_2D if is_max else tb.AVERAGE_POOL_2D
        self._op(code, [x.index], [y.index], tb.POOL_2D_OPTIONS, opts, 2)

    # -- float layers (float models; layers kept float in a mixed model) ----------------------
    def _fusable(self, n: fx.Node) -> tuple[int, fx.Node]:
        """(fused activation, the node whose value the output tensor holds): a ReLU / ReLU6 that
        is the only reader of ``n`` is fused into ``n``'s operator."""
        if len(n.users) == 1:
            u = next(iter(n.users))
            act = _float_act(self.gm, u)
            if act in ("relu", "relu6") and u.args[0] is n:
                self.fused.add(u.name)
                return _ACT[act], u
        return TfliteModelBuilder.ACT_NONE, n

    def _emit_fconv(self, n: fx.Node, m: nn.Conv2d) -> None:
        tb = self.tb
        path = self._path(n)
        x = self.vals[n.args[0].name]
        k, st, d, p = (_pair(v) for v in (m.kernel_size, m.stride, m.dilation, m.padding))
        x, padding = self._padding(x, k, st, d, p, path, None)  # float PAD pads with 0.0
        w = m.weight.detach().float().numpy()
        depthwise = m.groups != 1
        w_t = w.transpose(1, 2, 3, 0) if depthwise else w.transpose(0, 2, 3, 1)
        w_idx = tb.add_constant(f"{path}/weight", np.ascontiguousarray(w_t), tb.FLOAT32)
        bias = m.bias.detach().float().numpy() if m.bias is not None else np.zeros(w.shape[0])
        b_idx = tb.add_constant(f"{path}/bias", bias.astype(np.float32), tb.FLOAT32)
        act, out = self._fusable(n)
        y = self._act_tensor(out, path, self._shape(out), "nhwc", None, None)
        self.vals[n.name] = y
        version = 2 if d != (1, 1) else 1
        if depthwise:
            opts = tb.depthwise_conv_2d_options(
                padding, st, d, m.out_channels // m.in_channels, act
            )
            code, otype = tb.DEPTHWISE_CONV_2D, tb.DEPTHWISE_CONV_2D_OPTIONS
        else:
            opts = tb.conv_2d_options(padding, st, d, act)
            code, otype = tb.CONV_2D, tb.CONV_2D_OPTIONS
        self._op(code, [x.index, w_idx, b_idx], [y.index], otype, opts, version)

    def _emit_flinear(self, n: fx.Node, m: nn.Linear) -> None:
        tb = self.tb
        path = self._path(n)
        x = self.vals[n.args[0].name]
        w = m.weight.detach().float().numpy()
        if x.layout in ("hwc", "hwc4"):  # columns (C, H, W) -> (H, W, C): NHWC-flattened input
            c, h, ww = x.chw
            w = w.reshape(w.shape[0], c, h, ww).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        w_idx = tb.add_constant(f"{path}/weight", np.ascontiguousarray(w), tb.FLOAT32)
        bias = m.bias.detach().float().numpy() if m.bias is not None else np.zeros(w.shape[0])
        b_idx = tb.add_constant(f"{path}/bias", bias.astype(np.float32), tb.FLOAT32)
        act, out = self._fusable(n)
        y = self._act_tensor(out, path, self._shape(out), "plain", None, None)
        self.vals[n.name] = y
        opts = tb.fully_connected_options(act)
        self._op(
            tb.FULLY_CONNECTED, [x.index, w_idx, b_idx], [y.index], tb.FULLY_CONNECTED_OPTIONS, opts
        )

    def _emit_fact(self, n: fx.Node, act: str) -> None:
        tb = self.tb
        path = self._path(n)
        x = self.vals[n.args[0].name]
        if act == "silu":  # x * sigmoid(x)
            sig = self._act_tensor(None, f"{path}/sigmoid", self._shape(n), x.layout, None, None)
            sig.chw = x.chw
            self._op(tb.LOGISTIC, [x.index], [sig.index])
            y = self._same_q(n, x, path)
            self._op(tb.MUL, [x.index, sig.index], [y.index], tb.MUL_OPTIONS, tb.mul_options(0))
            return
        y = self._same_q(n, x, path)
        self._op(getattr(tb, _FLOAT_ACT_OPS[act]), [x.index], [y.index])

    def _emit_fbinary(self, n: fx.Node, name: str) -> None:
        tb = self.tb
        path = self._path(n)
        a, b = (self.vals[v.name] for v in n.args[:2])
        if a.layout != b.layout:
            raise ValueError(
                f"{_API}: cannot export `{path}` ({name}): its inputs have different layouts "
                f"{sorted({a.layout, b.layout})}; expected both NHWC or both flat"
            )
        act, out = self._fusable(n)
        chw = a.chw if len(a.pt_shape) >= len(b.pt_shape) else b.chw
        y = self._act_tensor(out, path, self._shape(out), a.layout, None, None, chw)
        self.vals[n.name] = y
        if name == "add":
            self._op(tb.ADD, [a.index, b.index], [y.index], tb.ADD_OPTIONS, tb.add_options(act))
        else:
            self._op(tb.MUL, [a.index, b.index], [y.index], tb.MUL_OPTIONS, tb.mul_options(act))

    def _emit_fpool(self, n: fx.Node, m: nn.Module | None) -> None:
        tb = self.tb
        path = self._path(n)
        x = self.vals[n.args[0].name]
        h, w = x.pt_shape[2:]
        is_max = isinstance(m, nn.MaxPool2d)
        if m is None or isinstance(m, nn.AdaptiveAvgPool2d):
            size = m.output_size if m is not None else (n.args[1] if len(n.args) > 1 else 1)
            oh, ow = _pair(size) if size is not None else (1, 1)
            oh, ow = oh or h, ow or w
            k = st = (h // oh, w // ow)
            p = (0, 0)
        else:
            k = _pair(m.kernel_size)
            st = _pair(m.stride) if m.stride is not None else k
            p = _pair(m.padding)
        x, padding = self._padding(x, k, st, (1, 1), p, path, -np.inf if is_max else None)
        y = self._same_q(n, x, path)
        y.layout = "nhwc"
        opts = tb.pool_2d_options(padding, st, k)
        self._op(
            tb.MAX_POOL_2D if is_max else tb.AVERAGE_POOL_2D,
            [x.index],
            [y.index],
            tb.POOL_2D_OPTIONS,
            opts,
        )

    def _lut_builtin(self, mod: qm.QLookupTable) -> str | None:
        """The builtin that reproduces ``mod``'s table bit for bit in LiteRT, else None (with a
        note saying how far the builtin is)."""
        op = _BUILTIN_LUTS.get(mod.function)
        if self.lut != "builtin" or op is None:
            return None
        key = (op, mod.input_scale, mod.input_zero_point, mod.output_scale, mod.output_zero_point)
        if key in self.lut_cache:
            return self.lut_cache[key]
        ours = mod.table.numpy().astype(np.int64)
        try:
            diffs = [_probe_builtin(op, mod, reference=r) - ours for r in (False, True)]
        except Exception as e:  # noqa: BLE001 - no LiteRT: exact form
            self.notes.append(f"`{mod.path}`: {op} not probed ({e}); written as GATHER")
            self.lut_cache[key] = None
            return None
        bad = max(int(np.count_nonzero(d)) for d in diffs)
        worst = max(int(np.abs(d).max()) for d in diffs)
        if bad:
            self.notes.append(
                f"`{mod.path}` ({mod.function}): LiteRT's {op} differs from our table on {bad} "
                f"of 256 inputs (max {worst} unit(s)); written as CAST+ADD+GATHER (exact)"
            )
            self.lut_cache[key] = None
            return None
        self.lut_cache[key] = op
        return op

    def _emit_lut(self, n: fx.Node, mod: qm.QLookupTable) -> None:
        tb = self.tb
        x = self.vals[n.args[0].name]
        shape = self._shape(n)
        builtin = self._lut_builtin(mod)
        y = self._act_tensor(
            n, mod.path, shape, x.layout, mod.output_scale, mod.output_zero_point, x.chw
        )
        if builtin is not None:
            code = getattr(tb, builtin)
            self._op(code, [x.index], [y.index], version=1 if builtin == "HARD_SWISH" else 2)
            return
        # Exact: index = int32(x) + 128, output = table[index] (GATHER copies int8 values).
        cast = tb.add_tensor(f"{mod.path}/cast", _tf_shape(shape, x.layout), tb.INT32)
        idx = tb.add_tensor(f"{mod.path}/index32", _tf_shape(shape, x.layout), tb.INT32)
        c128 = tb.add_constant(f"{mod.path}/offset", np.array([128], np.int32), tb.INT32)
        table = tb.add_constant(
            f"{mod.path}/table",
            mod.table.numpy().astype(np.int8),
            tb.INT8,
            mod.output_scale,
            mod.output_zero_point,
        )
        self._op(tb.CAST, [x.index], [cast])
        self._op(tb.ADD, [cast, c128], [idx], tb.ADD_OPTIONS, tb.add_options(0), 1)
        self._op(tb.GATHER, [table, idx], [y.index], tb.GATHER_OPTIONS, tb.gather_options(0), 2)

    def _emit_reshape(self, n: fx.Node) -> None:
        tb = self.tb
        src = n.args[0]
        x = self.vals[src.name]
        out_shape = self._shape(n)
        path = self._path(n)
        if x.layout == "nhwc":
            b, c, h, w = x.pt_shape
            if len(out_shape) != 2 or out_shape[0] != b:
                raise ValueError(
                    f"{_API}: cannot export `{path}`: reshape of an NHWC conv output "
                    f"{list(x.pt_shape)} to {list(out_shape)} would need a TRANSPOSE; expected a "
                    "flatten to [batch, C*H*W]"
                )
            if self._linear_users_only(n):  # the linear layers read the NHWC tensor itself
                self.vals[n.name] = _Val(
                    x.index, "hwc4", out_shape, x.scale, x.zero_point, (c, h, w)
                )
                return
            layout, chw = ("plain", None) if h * w == 1 else ("hwc", (c, h, w))
        elif x.layout == "hwc":
            if tuple(out_shape) != tuple(x.pt_shape):
                raise ValueError(
                    f"{_API}: cannot export `{path}`: reshape of a flattened NHWC value "
                    f"{list(x.pt_shape)} to {list(out_shape)} would need a TRANSPOSE"
                )
            layout, chw = "hwc", x.chw
        else:
            if len(out_shape) == 4:
                raise ValueError(
                    f"{_API}: cannot export `{path}`: reshape to 4-D {list(out_shape)} would "
                    "need a TRANSPOSE to NHWC"
                )
            layout, chw = "plain", None
        y = self._act_tensor(n, path, out_shape, layout, x.scale, x.zero_point, chw)
        shp = tb.add_constant(
            f"{path}/shape", np.asarray(_tf_shape(out_shape, layout), np.int32), tb.INT32
        )
        self._op(tb.RESHAPE, [x.index, shp], [y.index])

    def _linear_users_only(self, n: fx.Node) -> bool:
        """True when every reader of ``n`` is a linear layer (through Identity / Dropout)."""
        if not n.users:
            return False
        for u in n.users:
            m = self._mod(u)
            if isinstance(m, (nn.Identity, nn.Dropout)):
                if not self._linear_users_only(u):
                    return False
            elif not isinstance(m, (qm.QLinear, nn.Linear)):
                return False
        return True

    def _emit_cat(self, n: fx.Node) -> None:
        tb = self.tb
        tensors = n.args[0]
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        xs = [self.vals[t.name] for t in tensors]
        path = self._path(n)
        layouts = {x.layout for x in xs}
        qs = {(x.scale, x.zero_point) for x in xs}
        if len(layouts) != 1 or "hwc" in layouts or len(qs) != 1:
            raise ValueError(
                f"{_API}: cannot export `{path}` (cat): inputs must share layout and "
                f"quantization; got layouts {sorted(layouts)}, quantization {sorted(qs)}"
            )
        nd = len(xs[0].pt_shape)
        dim = dim % nd
        axis = _NHWC_AXIS[dim] if xs[0].layout == "nhwc" else dim
        y = self._same_q(n, xs[0], path)
        self._op(
            tb.CONCATENATION,
            [x.index for x in xs],
            [y.index],
            tb.CONCATENATION_OPTIONS,
            tb.concatenation_options(axis),
            2,
        )


def _probe_builtin(op: str, mod: qm.QLookupTable, reference: bool) -> np.ndarray:
    """LiteRT's ``op`` on all 256 int8 inputs with ``mod``'s quantization (int64 [256])."""
    tb = TfliteModelBuilder("probe")
    x = tb.add_tensor("x", (256,), tb.INT8, 0, mod.input_scale, mod.input_zero_point)
    y = tb.add_tensor("y", (256,), tb.INT8, 0, mod.output_scale, mod.output_zero_point)
    tb.add_operator(getattr(tb, op), [x], [y], version=1 if op == "HARD_SWISH" else 2)
    interp = _interpreter(tb.finish([x], [y]), reference=reference)
    interp.set_tensor(interp.get_input_details()[0]["index"], np.arange(-128, 128, dtype=np.int8))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


def _run_chunks(interp: Any, feed: list[np.ndarray], batch: int, n_total: int, idxs: list[int]):
    """Runs ``interp`` on ``feed`` in chunks of ``batch`` (the last one padded); returns the
    tensors ``idxs`` concatenated over all samples."""
    in_det = interp.get_input_details()
    got: list[list[np.ndarray]] = [[] for _ in idxs]
    for start in range(0, n_total, batch):
        stop = min(start + batch, n_total)
        for d, arr in zip(in_det, feed):
            chunk = arr[start:stop]
            if chunk.shape[0] < batch:  # pad the last chunk
                pad = np.repeat(chunk[-1:], batch - chunk.shape[0], axis=0)
                chunk = np.concatenate([chunk, pad])
            interp.set_tensor(d["index"], chunk.astype(d["dtype"]))
        interp.invoke()
        for k, idx in enumerate(idxs):
            got[k].append(interp.get_tensor(idx)[: stop - start].copy())
    return [np.concatenate(g) for g in got]


def _float_close(theirs: np.ndarray, ours: np.ndarray, tolerance: float) -> np.ndarray:
    """Elementwise: |theirs - ours| <= tolerance * max(1, max |ours|)."""
    bound = tolerance * max(1.0, float(np.abs(ours).max()) if ours.size else 1.0)
    return np.abs(theirs.astype(np.float64) - ours.astype(np.float64)) <= bound


def _verify(
    blob: bytes,
    gm: fx.GraphModule,
    ex: _Exporter,
    samples: tuple,
    batch: int,
    report: TfliteReport,
    tolerance: float,
) -> None:
    _, report.interpreter = litert_interpreter_cls()
    values = _capture(gm, samples)
    n_total = int(samples[0].shape[0])
    # The module's values, in the TFLite tensors' order.
    feed: list[np.ndarray] = []
    for info in ex.io_info[0]:
        v = values[info["feed"]]
        feed.append(_to_layout(v.numpy(), "nhwc" if info["layout"] == "NHWC" else "plain"))
    interp = _interpreter(blob)
    out_det = {d["index"]: d for d in interp.get_output_details()}
    outs = _run_chunks(interp, feed, batch, n_total, [out_det[i]["index"] for _, i in ex.outputs])
    ok, top1, maxd = [], [], []
    for info, out in zip(ex.io_info[1], outs):
        v = ex.vals[info["value"]]
        lay = "plain" if info["layout"] == "NCHW" else v.layout
        ref = _to_layout(values[info["value"]].numpy(), lay, v.chw)
        if v.scale is None:  # a float output: float tolerance
            # In a mixed model, int8 layers before it may move by a unit (XNNPACK rounds in
            # fp32): a float output computed from them agrees within 5 % of its range.
            tol = max(tolerance, MIXED_FLOAT_TOLERANCE) if ex.kind == "mixed" else tolerance
            ok.append(_float_close(out, ref, tol).ravel())
            out_u = out.astype(np.float64)
        else:
            if ex.io == "float":
                out_u = np.round(out.astype(np.float64) / v.scale) + v.zero_point
            else:
                out_u = out.astype(np.float64)
            ok.append((np.abs(out_u - ref.astype(np.float64)) <= 1.0 + 1e-6).ravel())
        d = np.abs(out_u - ref.astype(np.float64))
        maxd.append(float(d.max()) if d.size else 0.0)
        if ref.ndim == 2 and ref.shape[1] > 1:
            top1.append(np.argmax(out_u, axis=1) == np.argmax(ref, axis=1))
    ok_all = np.concatenate(ok) if ok else np.ones(0, bool)
    report.samples = n_total
    report.max_abs_diff = max(maxd) if maxd else 0.0
    report.within_one = float(np.mean(ok_all)) if ok_all.size else 1.0
    report.top1_agreement = float(np.mean(np.concatenate(top1))) if top1 else None
    report.verified = True
    # Layer by layer on the first batch: reference kernels, every tensor kept. They compute
    # TFLite's fixed-point stage, so for layers in XNNPACK's fp32 arithmetic the view applies
    # only as a pointer when the outputs disagree (then a unit of slack per layer).
    fp32 = any(getattr(m, "requantization", "gemmlowp") == "fp32" for m in gm.modules())
    if fp32 and report.max_abs_diff == 0.0:
        report.notes.append(
            "fp32 requantization: LiteRT (XNNPACK) equals the module bit for bit; no per-layer "
            "view (LiteRT's reference kernels compute TFLite's fixed-point stage instead)"
        )
        return
    if fp32:
        report.notes.append(
            "fp32 requantization: the per-layer view runs LiteRT's reference kernels (TFLite's "
            "fixed-point stage), one unit of slack per layer: the first diverging layer is a hint"
        )
    try:
        ref_interp = _interpreter(blob, reference=True, preserve=True)
    except Exception as e:  # noqa: BLE001 - older interpreters: no per-layer view
        report.notes.append(f"per-layer comparison unavailable: {e}")
        return
    m = min(batch, n_total)
    _run_chunks(ref_interp, [f[:batch] for f in feed], batch, m, [])
    # A mixed model's float layers may move an int8 value by one unit (float32 rounding at the
    # QUANTIZE after them): there, int8 layers diverge beyond one unit.
    int8_slack = 1.0 if ex.kind == "mixed" or fp32 else 0.0
    diverged = []
    for idx, node_name in ex.node_of.items():
        v = ex.vals.get(node_name)
        ours_t = values.get(node_name)
        if v is None or v.index != idx or not isinstance(ours_t, torch.Tensor):
            continue
        ours = _to_layout(ours_t[:m].numpy(), v.layout, v.chw)
        theirs = ref_interp.get_tensor(idx)[:m]
        if theirs.shape != ours.shape:
            continue
        layer = ex.layer_of[idx]
        if v.scale is None:
            scale = max(1.0, float(np.abs(ours).max()) if ours.size else 1.0)
            d = float(np.abs(theirs.astype(np.float64) - ours).max()) / scale if ours.size else 0
            report.layer_max_diff[layer] = d
            bad = d > tolerance
        else:
            d = float(np.abs(theirs.astype(np.int64) - ours.astype(np.int64)).max())
            report.layer_max_diff[layer] = d
            bad = d > int8_slack
        if bad:
            diverged.append(layer)
    report.first_diverging_layer = diverged[0] if diverged else None


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _float_graph(model: nn.Module, example: tuple) -> fx.GraphModule:
    """The float GraphModule of a copy of ``model`` with BatchNorm folded (live weight-sharing
    hooks applied and dropped first, see ``fold.float_graph``)."""
    from optimizer.quantize.fold import float_graph

    return float_graph(model, example)


def _kind(model: nn.Module) -> str:
    """ "int8" (quantize_'s GraphModule), "mixed" (one with layers kept float) or "float"."""
    if not isinstance(model, fx.GraphModule) or not any(
        isinstance(m, qm.QModule) for m in model.modules()
    ):
        return "float"
    for n in model.graph.nodes:
        if n.op == "call_module":
            m = model.get_submodule(n.target)
            if not isinstance(m, (qm.QModule, nn.Identity, nn.Dropout, nn.Flatten)):
                return "mixed"
        elif n.op == "placeholder" and any(
            u.op == "call_module" and not isinstance(model.get_submodule(u.target), qm.QuantStub)
            for u in n.users
        ):
            return "mixed"
    return "int8"


def export_tflite(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    io: str | None = None,
    labels: Sequence[str] | None = None,
    verify: bool = True,
    sample_inputs: Any = None,
    lut: str = "exact",
    tolerance: float = 1e-4,
    layout: str = "nhwc",
) -> TfliteReport:
    """Writes ``model`` as a ``.tflite`` file (builtin ops, NHWC, no TRANSPOSE) and checks it in
    LiteRT.

    Args:
        model: a float ``nn.Module`` (as trained, pruned or weight-shared; BatchNorm is folded
            into the conv before it), the integer-exact ``GraphModule`` returned by
            :func:`optimizer.quantize_` / ``convert_`` (full-integer), or one with layers kept
            float (``Int8Config(keep_float=...)``: DEQUANTIZE / QUANTIZE around them). The
            model is not modified.
        example_inputs: float inputs (NCHW, as the model takes them); their batch size is the
            file's batch size.
        path: where to write the file (atomically: nothing half-written is left).
        io: dtype of an int8 model's inputs/outputs: ``"int8"`` (default; quantize the NHWC
            input with ``report.inputs[0]["scale"/"zero_point"]``) or ``"float"`` (float32,
            QUANTIZE / DEQUANTIZE inside the file). A float model's are float (``"float"``).
        labels: class names, written as the ``"labels"`` metadata entry (one per line).
        verify: run the file in LiteRT on ``sample_inputs`` and compare with ``model``.
        sample_inputs: float inputs for ``verify`` (any number of samples; run in chunks of the
            file's batch size); default ``example_inputs``.
        lut: ``"exact"`` (every lookup table as CAST+ADD+GATHER, bit for bit) or ``"builtin"``
            (LOGISTIC / TANH / HARD_SWISH where LiteRT reproduces our table exactly).
        layout: ``"nhwc"`` (default): image inputs and outputs are NHWC and the file has no
            TRANSPOSE; ``"nchw"``: they are NCHW, as PyTorch's, with one TRANSPOSE after each
            image input and before each image output (the graph stays NHWC).
        tolerance: float values agree when ``|LiteRT - module| <= tolerance * max(1, max
            |module|)`` (per output, and per layer for ``first_diverging_layer``). A mixed
            model's float outputs, computed from int8 layers that LiteRT's XNNPACK kernels may
            move by a unit, use at least ``MIXED_FLOAT_TOLERANCE`` (5 %).

    Returns:
        A :class:`TfliteReport`; ``report.agrees`` is the acceptance check (>= 99.9 % of output
        values within 1 unit / within ``tolerance``, >= 99.5 % top-1 agreement).

    Raises:
        ValueError: a node with no TFLite builtin mapping (naming its module path and op; raised
            before anything is written), a bad ``io`` / ``lut``, or ``io="int8"`` for a float
            model.
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> q = optimizer.quantize_(model, optimizer.Int8Config(), calibration=data)
        >>> r = export_tflite(q, x[:1], "model.tflite", sample_inputs=x_test)
        >>> r.agrees, r.ops.get("TRANSPOSE", 0)
        (True, 0)
        >>> export_tflite(model, x[:1], "model_f32.tflite", labels=classes).kind
        'float'
    """
    if io not in (None, "int8", "float"):
        raise ValueError(f"{_API}: io must be 'int8' or 'float'; got {io!r}")
    if lut not in ("exact", "builtin"):
        raise ValueError(f"{_API}: lut must be 'exact' or 'builtin'; got {lut!r}")
    if layout not in ("nhwc", "nchw"):
        raise ValueError(f"{_API}: layout must be 'nhwc' or 'nchw'; got {layout!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_API}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise ValueError(f"{_API}: tolerance must be a number > 0; got {tolerance!r}")
    example = _as_tuple(example_inputs)
    kind = _kind(model)
    if kind == "float":
        if io == "int8":
            raise ValueError(
                f"{_API}: io='int8' needs an int8 model; {type(model).__name__} is float. "
                "Quantize it first (optimizer.quantize_) or pass io='float'"
            )
        io = "float"
        gm = _float_graph(model, example)  # a folded copy: the user's model is not touched
    else:
        io = io or "int8"
        gm = model
    values = _capture(gm, example)
    desc = f"edge-optimizer {kind} export of {type(model).__name__}"
    ex = _Exporter(gm, values, io, lut, desc, kind, layout)
    bad = [(ex._path(n), why) for n in gm.graph.nodes if (why := ex.unsupported(n))]
    if bad:
        first, what = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(p for p, _ in bad[1:4])})" if bad[1:] else ""
        raise ValueError(
            f"{_API}: no TFLite builtin mapping for `{first}` ({what}){more}; expected "
            f"{_SUPPORTED}. Nothing was written"
        )
    rec = getattr(model, "_edgeopt_record", None)
    if rec is None:
        from optimizer.graph.record import get_record

        with contextlib.suppress(Exception):
            rec = get_record(model)
    # The graph first (it fills the io descriptions), then metadata, then the model table.
    for n in gm.graph.nodes:
        ex._emit(n)
    public_in = [{k: v for k, v in d.items() if k != "feed"} for d in ex.io_info[0]]
    public_out = [{k: v for k, v in d.items() if k != "value"} for d in ex.io_info[1]]
    meta = {
        "producer": "edge-optimizer",
        "kind": kind,
        "io": io,
        "layout": layout.upper(),
        "inputs": public_in,
        "outputs": public_out,
        "quantization": _compact((rec or {}).get("quantization")),
    }
    ex.tb.add_metadata(METADATA_QUANTIZATION, json.dumps(meta, default=_json_default).encode())
    if labels is not None:
        labels = [str(s) for s in labels]
        if any("\n" in s for s in labels):
            raise ValueError(f"{_API}: labels must not contain newlines; got {labels!r}")
        ex.tb.add_metadata(METADATA_LABELS, ("\n".join(labels) + "\n").encode())
    blob = ex.tb.finish(
        [i for _, i in ex.inputs],
        [i for _, i in ex.outputs],
        signature=(SIGNATURE_KEY, dict(ex.inputs), dict(ex.outputs)),
    )
    if layout == "nhwc" and ex.ops.get("TRANSPOSE"):  # pragma: no cover - never emitted
        raise AssertionError("TRANSPOSE emitted")
    out_path = atomic_write(path, lambda f: f.write(blob))
    report = TfliteReport(
        path=str(out_path),
        size_bytes=len(blob),
        io=io,
        ops=dict(sorted(ex.ops.items())),
        inputs=public_in,
        outputs=public_out,
        notes=list(ex.notes),
        kind=kind,
    )
    if verify:
        samples = _as_tuple(sample_inputs) if sample_inputs is not None else example
        batch = int(example[0].shape[0])
        _verify(blob, gm, ex, samples, batch, report, float(tolerance))
        if not report.agrees:
            warnings.warn(
                f"{_API}: LiteRT disagrees with the module: {report.within_one:.4%} of values "
                f"within 1 unit (max {report.max_abs_diff:g}), top-1 agreement "
                f"{report.top1_agreement}; first diverging layer: "
                f"{report.first_diverging_layer!r}",
                RuntimeWarning,
                stacklevel=2,
            )
    return report


def _compact(quant: dict | None) -> dict | None:
    """The quantization record without its per-layer entries (every tensor of the file carries
    its own scale and zero point), so the metadata stays small: settings, model inputs and
    outputs, kept-float layers, and the number of layers."""
    if not isinstance(quant, dict):
        return quant
    out = {k: v for k, v in quant.items() if k != "layers"}
    if isinstance(quant.get("layers"), dict):
        out["layers"] = len(quant["layers"])
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        f = float(o)
        return f if math.isfinite(f) else str(f)
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)
