"""Native model file (``.eom``) export: the float graph lowered to the C++ runtime's operators.

:func:`export_native` traces the model (``torch.fx`` with shapes), folds every BatchNorm into the
conv or linear that feeds it (a BatchNorm after anything else becomes a depthwise 1x1 conv),
strips block-pruning masks and hooks (the zeros they imply are kept), maps every module and
function to a runtime operator, checks the whole graph BEFORE anything is written, and writes
the file atomically (temporary file, then rename). The format is documented in
``kernels/runtime/FORMAT.md``; :class:`EomWriter` is its writer.

Layout: the runtime keeps image activations NHWC. Graph inputs and outputs keep PyTorch's NCHW
(the file's first operators transpose the inputs, the last ones the outputs), so callers pass what
they pass to the module. Convolution weights are stored OHWI, K ordered (kh, kw, c), the order the
block pruner and the int8 module use; a Linear that follows ``flatten`` of an NHWC activation
gets its weight columns permuted from (C, H, W) to (H, W, C) once, here.

Weights are stored dense, block-sparse (BSR, for layers in ``get_record(model)["block_sparsity"]``
or with live block masks, whose zeros are whole blocks) or as a codebook (layers in
``get_record(model)["weight_sharing"]``), so a pruned or shared model's file is smaller.

int8 (format 1.1): the ``torch.fx`` GraphModule that :func:`optimizer.quantize_` returns is
written as int8 operators bit-exact to it (QuantStub / DeQuantStub as QUANTIZE / DEQUANTIZE,
QConv2d / QLinear with per-channel multipliers and fused clamps, QAdd / QMul, QLookupTable and
QClamp as LUT, int8 pooling, cat / split / flatten / reshape / upsample on int8 bytes; float islands
between DeQuantStub and QuantStub as float operators). Int8 weights are stored dense, as BSR when
whole blocks are zero (the block-pruning record's block, or the target's ``bsr_block``) or as a
codebook when a layer's int8 weights take at most 16 values (per layer or per row: weight
sharing), or both at once (format 1.3: BSR whose stored block values are codebook indices, decoded
at load), whichever is smallest. Files name only the graph's inputs and outputs among the
tensors (operators keep their module paths) and keep ``edgeopt.passes`` compact (the settings
that define the weights); 1.3 files also 16-byte align constants under 64 bytes and write
all-zero per-channel zero points once.

Float operators: Conv2d (groups, depthwise, stride,
padding incl. ``"same"``, dilation), Linear, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (global or
dividing the input), add / sub / mul / div with broadcasting (squeeze-excitation), cat, chunk /
split, flatten / view / reshape, ReLU / ReLU6 / Hardswish / Hardsigmoid / SiLU / GELU / Sigmoid /
Tanh (fused into the conv, linear or add before them where possible), softmax, LayerNorm,
GroupNorm, nearest upsampling by integer factors, mean, matmul / bmm, Dropout / Identity (dropped).

Transformers (format 1.2): int64 / int32 token ids become an int32 graph input read by GATHER
(``nn.Embedding``, ``F.embedding``); ``nn.MultiheadAttention`` (self-attention, batch-first or not,
no masks) and ``MultiheadSelfAttention`` (left by ``prune_channels_`` after removing heads) are
lowered to LINEAR (q/k/v fused), RESHAPE / TRANSPOSE / SPLIT, BATCH_MATMUL (``transpose_b``,
``alpha = 1/sqrt(head_dim)``), SOFTMAX and the out-projection. A module called twice on the same
input (``ln1(x)`` for query, key and value) is computed once.

Example::

    report = optimizer.export_native(model, (torch.randn(1, 3, 32, 32),), "model.eom")
    rt = optimizer.runtime.load("model.eom")
    y = rt.run(x.numpy())
"""

from __future__ import annotations

import copy
import json
import operator
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from optimizer._util import atomic_write
from optimizer.export import eom_fbs as fb
from optimizer.graph.attention import MultiheadSelfAttention
from optimizer.graph.record import get_record
from optimizer.quantize import modules as qm

__all__ = [
    "FORMAT_VERSION",
    "FORMAT_VERSION_INT8",
    "FORMAT_VERSION_GATHER",
    "FORMAT_VERSION_FP32_REQUANT",
    "FORMAT_VERSION_INLINE",
    "EomWriter",
    "NativeExportReport",
    "export_native",
    "is_int8_model",
    "pack_file",
]

_API = "export_native"
#: (major, minor) of the files this module writes; the runtime refuses another major. Float
#: models are written as 1.0 (readable by every 1.x runtime), int8 models as 1.1.
FORMAT_VERSION = (1, 0)
FORMAT_VERSION_INT8 = (1, 1)
#: Files with a GATHER operator (nn.Embedding on int32 token ids) are written as 1.2; files
#: without one keep 1.0 / 1.1, so older runtimes still read them.
FORMAT_VERSION_GATHER = (1, 2)
#: Files with a packed weight (BSR whose stored values are codebook indices, decoded at load)
#: are written as 1.3; the others keep their older version.
FORMAT_VERSION_PACKED = (1, 3)
#: Files with an int8 stage in XNNPACK's fp32 requantization (``Int8Stage.requantization`` FP32)
#: are written as 1.4; their stages carry no multiplier / shift, so older readers refuse them.
FORMAT_VERSION_FP32_REQUANT = (1, 4)
#: Files with an inline int8 weight (its packed bytes in vectors of the Weight table, no tensors)
#: are written as 1.5; older readers find no tensor behind the weight and refuse the operator.
#: The exporter uses the form in every compact (1.3 or newer) file.
FORMAT_VERSION_INLINE = (1, 5)
#: Whether compact files store their int8 packed, block-sparse and codebook weights inline
#: (format 1.5); False keeps the 1.3 tensors (tests of the older form switch it off).
INLINE_WEIGHTS = True
MAGIC = b"\x89EOM\r\n\x1a\n"
ENDIAN_MARKER = 0x0A0B0C0D
HEADER_SIZE = 64
ALIGN = 64
# magic, major, minor, byte-order marker, header size, CRC-32 of bytes [24, end), file size,
# model offset, model size, data offset, data size: 64 bytes, little-endian.
_HEADER = struct.Struct("<8sHHIIIQQQQQ")
_CRC_START = 24
_DTYPES = {
    np.dtype(np.float32): 0,
    np.dtype(np.int8): 1,
    np.dtype(np.int32): 2,
    np.dtype(np.uint8): 3,
}
_SUPPORTED = (
    "Conv2d, Linear, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm (folded), GroupNorm, "
    "LayerNorm, ReLU, ReLU6, Hardswish, Hardsigmoid, SiLU, GELU, Sigmoid, Tanh, Softmax, Upsample "
    "(nearest, integer scale), Dropout, Identity, Flatten, and add/sub/mul/div, cat, chunk/split, "
    "flatten/view/reshape, mean, matmul/bmm, softmax, relu/sigmoid/... functions, Embedding "
    "(integer token ids), MultiheadAttention (self-attention without masks) and "
    "MultiheadSelfAttention"
)


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def pack_file(model_bytes: bytes, data: bytes, version: tuple[int, int] = FORMAT_VERSION) -> bytes:
    """Assembles a .eom file: the 64-byte header, the Model FlatBuffer, and the data section
    (starting on a 64-byte boundary), with the CRC-32 of bytes [24, end) in the header."""
    data_offset = _align(HEADER_SIZE + len(model_bytes))
    size = data_offset + len(data)
    body = bytearray(size)
    body[HEADER_SIZE : HEADER_SIZE + len(model_bytes)] = model_bytes
    body[data_offset:] = data
    fields = (MAGIC, version[0], version[1], ENDIAN_MARKER, HEADER_SIZE, 0, size, HEADER_SIZE)
    body[:HEADER_SIZE] = _HEADER.pack(*fields, len(model_bytes), data_offset, len(data))
    crc = zlib.crc32(memoryview(body)[_CRC_START:]) & 0xFFFFFFFF
    struct.pack_into("<I", body, 20, crc)
    return bytes(body)


# --------------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------------


#: The fields of a Weight table that name tensors.
_WEIGHT_TENSORS = ("values", "row_ptr", "col_idx", "indices", "table", "block_mask")


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


class EomWriter:
    """Builds a .eom file: tensors (activations and constants), operators, graph inputs/outputs.

    Operators are kept as dicts until :meth:`finish`, so a later step may still fuse an
    activation into them. Example::

        w = EomWriter()
        x = w.add_tensor("x", (1, 4))
        y = w.add_tensor("y", (1, 2))
        values = w.add_constant("fc.w", np.ones((2, 4), np.float32))
        weight = {"format": 0, "n": 2, "k": 4, "values": values}
        w.add_operator(fb.OpType.LINEAR, "fc", [x], [y], weight=weight)
        blob = w.finish([x], [y])
    """

    def __init__(self, tensor_names: bool = True) -> None:
        #: False: only graph inputs and outputs are named; the runtime calls the other tensors
        #: ``t<i>`` (its errors also name the operator, whose name is the module path).
        self.tensor_names = tensor_names
        self.tensors: list[dict[str, Any]] = []
        self.operators: list[dict[str, Any]] = []
        self._chunks: list[bytes] = []  # constant bytes, laid out by finish()
        self._shared: dict[tuple, int] = {}  # finish(): objects already in the FlatBuffer

    def add_tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: Any = np.float32,
        quantization: dict[str, Any] | None = None,
    ) -> int:
        """An activation tensor (written by one operator, or a graph input); returns its index."""
        self.tensors.append(
            {
                "name": name,
                "shape": tuple(int(s) for s in shape),
                "dtype": _DTYPES[np.dtype(dtype)],
                "quantization": quantization,
                "buffer": -1,
            }
        )
        return len(self.tensors) - 1

    def add_constant(
        self, name: str, array: np.ndarray, quantization: dict[str, Any] | None = None
    ) -> int:
        """A constant tensor; its bytes go to the data section, 64-byte aligned (16-byte aligned
        when under 64 bytes in a 1.3 file)."""
        a = np.ascontiguousarray(array)
        if a.dtype not in _DTYPES:
            raise TypeError(
                f"EomWriter: constant `{name}` has dtype {a.dtype}; expected one of "
                f"{[str(d) for d in _DTYPES]}"
            )
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        self._chunks.append(a.tobytes())
        t = self.add_tensor(name, a.shape if a.ndim else (1,), a.dtype, quantization)
        self.tensors[t]["buffer"] = len(self._chunks) - 1
        return t

    def add_decoded(self, name: str, shape: tuple[int, ...], dtype: Any = np.int8) -> int:
        """A constant without a buffer that the loader decodes from the packed weight naming it
        (format 1.3: int8 ``values``, int32 ``row_ptr`` / ``col_idx``); returns its index."""
        t = self.add_tensor(name, shape, dtype)
        self.tensors[t]["decoded"] = True
        return t

    def drop_tensor(self, t: int) -> None:
        """Leaves constant ``t`` (and its bytes) out of the file :meth:`finish` writes; the other
        tensors are renumbered there. For a constant whose bytes moved inline into an operator
        (format 1.5); nothing may still name it. Example: ``w.drop_tensor(bias)``."""
        if not 0 <= t < len(self.tensors):
            raise ValueError(f"EomWriter.drop_tensor: tensor {t} out of range")
        if self.tensors[t]["buffer"] < 0 and not self.tensors[t].get("decoded"):
            raise ValueError(f"EomWriter.drop_tensor: tensor {t} is not a constant")
        self.tensors[t]["dropped"] = True

    def _kept(self, inputs: list[int], outputs: list[int]):
        """(tensors, chunks, operators, inputs, outputs) without the dropped tensors, every
        tensor index and buffer renumbered; the writer's own lists when nothing was dropped."""
        if not any(t.get("dropped") for t in self.tensors):
            return self.tensors, self._chunks, self.operators, inputs, outputs
        remap: dict[int, int] = {}
        chunk_map: dict[int, int] = {}
        tensors: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for i, t in enumerate(self.tensors):
            if t.get("dropped"):
                continue
            remap[i] = len(tensors)
            t = dict(t)
            if t["buffer"] >= 0:
                if t["buffer"] not in chunk_map:
                    chunk_map[t["buffer"]] = len(chunks)
                    chunks.append(self._chunks[t["buffer"]])
                t["buffer"] = chunk_map[t["buffer"]]
            tensors.append(t)

        def idx(t: int, where: str) -> int:
            if t < 0:
                return t
            if t not in remap:
                raise ValueError(f"EomWriter: {where} names tensor {t}, which was dropped")
            return remap[t]

        operators = []
        for op in self.operators:
            op = dict(op)
            where = f"operator `{op['name']}`"
            op["inputs"] = [idx(t, where) for t in op["inputs"]]
            op["outputs"] = [idx(t, where) for t in op["outputs"]]
            op["bias"] = idx(op["bias"], where)
            if op["weight"]:
                op["weight"] = dict(op["weight"])
                for key in _WEIGHT_TENSORS:
                    if key in op["weight"]:
                        op["weight"][key] = idx(op["weight"][key], where)
            operators.append(op)
        ins = [idx(t, "the graph inputs") for t in inputs]
        outs = [idx(t, "the graph outputs") for t in outputs]
        return tensors, chunks, operators, ins, outs

    def add_operator(
        self,
        op_type: int,
        name: str,
        inputs: list[int],
        outputs: list[int],
        *,
        weight: dict[str, Any] | None = None,
        bias: int = -1,
        activation: int = 0,
        options: tuple[str, dict[str, Any]] | None = None,
        int8: dict[str, Any] | None = None,
    ) -> int:
        """Appends an operator (topological order); ``options`` is ``(table name, fields)``."""
        self.operators.append(
            {
                "type": int(op_type),
                "name": name,
                "inputs": list(inputs),
                "outputs": list(outputs),
                "weight": weight,
                "bias": bias,
                "activation": activation,
                "options": options,
                "int8": int8,
            }
        )
        return len(self.operators) - 1

    # -- serialization ---------------------------------------------------------------------------

    def _vector(self, b: flatbuffers.Builder, values: Any, dtype: Any = np.int32) -> int:
        """A vector, shared with every earlier one of the same dtype and contents (FlatBuffers
        offsets may point at one object from several tables)."""
        arr = np.asarray(values, dtype=dtype).reshape(-1)
        key = ("v", arr.dtype.str, arr.tobytes())
        if key not in self._shared:
            self._shared[key] = b.CreateNumpyVector(arr)
        return self._shared[key]

    def _string(self, b: flatbuffers.Builder, text: str) -> int:
        key = ("s", text)
        if key not in self._shared:
            self._shared[key] = b.CreateString(text)
        return self._shared[key]

    def _table(self, b: flatbuffers.Builder, kind: str, fields: dict[str, Any]) -> int:
        """A table of the schema from a dict: lists become int32 (float32 for scales) vectors;
        a Weight's ``inline_*`` arrays (format 1.5) keep their dtype (uint8, int8, int32)."""
        prepared = {}
        for key, value in fields.items():
            if isinstance(value, (list, tuple, np.ndarray)):
                arr = np.asarray(value)
                dt = np.float32 if arr.dtype.kind == "f" else np.int32
                if kind == "LutOptions":
                    dt = np.int8
                if kind == "Weight" and key.startswith("inline_"):
                    dt = arr.dtype  # format 1.5: [ubyte] / [byte] / [int] as given
                prepared[key] = self._vector(b, arr, dt)
            else:
                prepared[key] = value
        shared_key = ("t", kind, tuple(prepared.items()))  # equal option tables are shared
        if shared_key not in self._shared:
            getattr(fb, f"{kind}Start")(b)
            for key, value in prepared.items():
                getattr(fb, f"{kind}Add{_camel(key)}")(b, value)
            self._shared[shared_key] = getattr(fb, f"{kind}End")(b)
        return self._shared[shared_key]

    def _quantization(self, b: flatbuffers.Builder, q: dict[str, Any], compact: bool) -> int:
        zero_points = np.atleast_1d(q["zero_point"])
        if compact and not zero_points.any():
            zero_points = zero_points[:1]  # 1.3: one zero point stands for every channel
        scale = self._vector(b, np.atleast_1d(q["scale"]), np.float32)
        zp = self._vector(b, zero_points, np.int32)
        axis = int(q.get("axis", -1))
        key = ("q", scale, zp, axis)  # equal tables (an activation and its reshape) are shared
        if key not in self._shared:
            fb.QuantizationStart(b)
            fb.QuantizationAddScale(b, scale)
            fb.QuantizationAddZeroPoint(b, zp)
            fb.QuantizationAddAxis(b, axis)
            self._shared[key] = fb.QuantizationEnd(b)
        return self._shared[key]

    def _offsets_vector(self, b: flatbuffers.Builder, start: Any, offsets: list[int]) -> int:
        start(b, len(offsets))
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def finish(
        self,
        inputs: list[int],
        outputs: list[int],
        metadata: dict[str, str] | None = None,
        producer: str = "edge-optimizer",
        version: tuple[int, int] = FORMAT_VERSION,
    ) -> bytes:
        """The whole file (header, FlatBuffer, data section) as bytes."""
        b = flatbuffers.Builder(1 << 16)
        self._shared = {}
        tensors, chunks, operators, inputs, outputs = self._kept(inputs, outputs)
        # Format 1.3 files take its rules: buffers under 64 bytes 16-byte aligned, and an
        compact = tuple(version) >= FORMAT_VERSION_PACKED
        # all-zero per-channel zero-point vector written as one entry; the small buffers go into
        # the padding before a 64-byte boundary, or after the others.
        data = bytearray()
        buffers: list[tuple[int, int]] = [(0, 0)] * len(chunks)
        small = [compact and len(raw) < ALIGN for raw in chunks]
        holes: list[tuple[int, int]] = []  # [start, end) of the padding after a large buffer
        for i in sorted(range(len(chunks)), key=lambda i: small[i]):
            raw = chunks[i]
            if small[i]:  # the first padding hole it fits (16-byte aligned), else the end
                for h, (start, end) in enumerate(holes):
                    at = _align(start, 16)
                    if at + len(raw) <= end:
                        data[at : at + len(raw)] = raw
                        buffers[i] = (at, len(raw))
                        holes[h] = (at + len(raw), end)
                        break
                else:
                    offset = _align(len(data), 16)
                    data.extend(b"\0" * (offset - len(data)))
                    data.extend(raw)
                    buffers[i] = (offset, len(raw))
                continue
            offset = _align(len(data), ALIGN)
            if compact and offset > len(data):
                holes.append((len(data), offset))
            data.extend(b"\0" * (offset - len(data)))
            data.extend(raw)
            buffers[i] = (offset, len(raw))
        tensor_offsets = []
        graph_io = set(inputs) | set(outputs)
        for i, t in enumerate(tensors):
            name = None
            if self.tensor_names or i in graph_io:
                name = self._string(b, t["name"])
            shape = self._vector(b, t["shape"])
            quant = None
            if t["quantization"]:
                quant = self._quantization(b, t["quantization"], compact)
            decoded = bool(t.get("decoded"))
            # Unnamed tensors with equal fields (decoded row pointers of equal height, activations
            # of one shape and scale) share one table.
            key = ("T", name, shape, t["dtype"], quant, t["buffer"], decoded)
            if key not in self._shared:
                fb.TensorStart(b)
                if name is not None:
                    fb.TensorAddName(b, name)
                fb.TensorAddShape(b, shape)
                fb.TensorAddDtype(b, t["dtype"])
                if quant is not None:
                    fb.TensorAddQuantization(b, quant)
                fb.TensorAddBuffer(b, t["buffer"])
                if decoded:
                    fb.TensorAddDecoded(b, True)
                self._shared[key] = fb.TensorEnd(b)
            tensor_offsets.append(self._shared[key])
        op_offsets = []
        for op in operators:
            name = self._string(b, op["name"])
            ins = self._vector(b, op["inputs"])
            outs = self._vector(b, op["outputs"])
            weight = self._table(b, "Weight", op["weight"]) if op["weight"] else None
            options = None
            if op["options"]:
                kind, fields = op["options"]
                options = (getattr(fb.OpOptions, kind), self._table(b, kind, fields))
            int8 = self._table(b, "Int8Stage", op["int8"]) if op["int8"] else None
            fb.OperatorStart(b)
            fb.OperatorAddType(b, op["type"])
            fb.OperatorAddName(b, name)
            fb.OperatorAddInputs(b, ins)
            fb.OperatorAddOutputs(b, outs)
            if weight is not None:
                fb.OperatorAddWeight(b, weight)
            fb.OperatorAddBias(b, op["bias"])
            fb.OperatorAddActivation(b, op["activation"])
            if options is not None:
                fb.OperatorAddOptionsType(b, options[0])
                fb.OperatorAddOptions(b, options[1])
            if int8 is not None:
                fb.OperatorAddInt8(b, int8)
            op_offsets.append(fb.OperatorEnd(b))
        meta_offsets = []
        for key, value in (metadata or {}).items():
            k, v = b.CreateString(key), b.CreateString(value)
            fb.MetadataStart(b)
            fb.MetadataAddKey(b, k)
            fb.MetadataAddValue(b, v)
            meta_offsets.append(fb.MetadataEnd(b))
        producer_off = b.CreateString(producer)
        tensors_vec = self._offsets_vector(b, fb.ModelStartTensorsVector, tensor_offsets)
        ops_vec = self._offsets_vector(b, fb.ModelStartOperatorsVector, op_offsets)
        meta_vec = self._offsets_vector(b, fb.ModelStartMetadataVector, meta_offsets)
        fb.ModelStartBuffersVector(b, len(buffers))
        for offset, size in reversed(buffers):
            fb.CreateBufferRef(b, offset, size)
        buffers_vec = b.EndVector()
        in_vec = self._vector(b, inputs)
        out_vec = self._vector(b, outputs)
        fb.ModelStart(b)
        fb.ModelAddProducer(b, producer_off)
        fb.ModelAddTensors(b, tensors_vec)
        fb.ModelAddOperators(b, ops_vec)
        fb.ModelAddInputs(b, in_vec)
        fb.ModelAddOutputs(b, out_vec)
        fb.ModelAddBuffers(b, buffers_vec)
        fb.ModelAddMetadata(b, meta_vec)
        b.Finish(fb.ModelEnd(b), file_identifier=b"EOM1")
        return pack_file(bytes(b.Output()), bytes(data), version)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class NativeExportReport:
    """What :func:`export_native` wrote.

    Attributes:
        path: the file.
        size_bytes: its size.
        ops: runtime operator name -> count.
        layers: per conv / linear: ``{"name", "op", "format" ("dense" | "bsr" | "codebook" |
            "bsr_codebook": int8 packed BSR, format 1.3), "shape" [n, k], "stored_bytes",
            "dense_bytes"}`` (plus ``"block"`` and / or ``"bits"``);
            bytes of float32 or int8 values as the model is.
        fused: module paths whose activation was fused into the operator before them.
        inputs, outputs: ``{"name", "shape", "dtype"}`` as the runtime takes and returns them.
        notes: remarks (a block-pruned layer kept dense, ...).
    """

    path: Path
    size_bytes: int
    ops: dict[str, int]
    layers: list[dict[str, Any]] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per layer: path, format, stored bytes."""
        lines = [
            f"{self.path} ({self.size_bytes} bytes): "
            + ", ".join(f"{k} x{v}" for k, v in sorted(self.ops.items()))
        ]
        for row in self.layers:
            lines.append(
                f"  {row['name']:<32} {row['op']:<7} {row['format']:<9} "
                f"{row['stored_bytes']:>9} / {row['dense_bytes']} bytes"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Lowering
# --------------------------------------------------------------------------------------------


class _Unsupported(Exception):
    """One node the runtime cannot run (collected, then raised as ValueError before writing)."""


class _Upstream(Exception):
    """A node fed by a node already reported as unsupported (not reported again)."""


@dataclass
class _V:
    """A lowered tensor: its file tensor, PyTorch (logical) shape, and physical layout."""

    tid: int
    shape: tuple[int, ...]
    nhwc: bool = False
    #: set on [N, C*H*W] features flattened from NHWC memory (order H, W, C): (C, H, W).
    chw: tuple[int, int, int] | None = None
    #: int8 tensors: (scale, zero point); None for float32.
    q: tuple[float, int] | None = None
    #: integer token ids (an S32 graph input): only an embedding may read them.
    index: bool = False

    @property
    def physical(self) -> tuple[int, ...]:
        if self.nhwc:
            n, c, h, w = self.shape
            return (n, h, w, c)
        return self.shape


_ACT_MODULES: dict[type, int] = {
    nn.ReLU: fb.Activation.RELU,
    nn.ReLU6: fb.Activation.RELU6,
    nn.Hardswish: fb.Activation.HARDSWISH,
    nn.Hardsigmoid: fb.Activation.HARDSIGMOID,
    nn.SiLU: fb.Activation.SILU,
    nn.Sigmoid: fb.Activation.SIGMOID,
    nn.Tanh: fb.Activation.TANH,
}
_ACT_FUNCTIONS: dict[Any, int] = {
    F.relu: fb.Activation.RELU,
    torch.relu: fb.Activation.RELU,
    F.relu6: fb.Activation.RELU6,
    F.hardswish: fb.Activation.HARDSWISH,
    F.hardsigmoid: fb.Activation.HARDSIGMOID,
    F.silu: fb.Activation.SILU,
    torch.sigmoid: fb.Activation.SIGMOID,
    F.sigmoid: fb.Activation.SIGMOID,
    torch.tanh: fb.Activation.TANH,
    F.tanh: fb.Activation.TANH,
}
_ACT_METHODS = {
    "relu": fb.Activation.RELU,
    "sigmoid": fb.Activation.SIGMOID,
    "tanh": fb.Activation.TANH,
}
_BINARY = {
    operator.add: fb.OpType.ADD,
    torch.add: fb.OpType.ADD,
    operator.sub: fb.OpType.SUB,
    torch.sub: fb.OpType.SUB,
    operator.mul: fb.OpType.MUL,
    torch.mul: fb.OpType.MUL,
    operator.truediv: fb.OpType.DIV,
    torch.div: fb.OpType.DIV,
}
_BINARY_METHODS = {
    "add": fb.OpType.ADD,
    "sub": fb.OpType.SUB,
    "mul": fb.OpType.MUL,
    "div": fb.OpType.DIV,
}
_FUSE_INTO = {
    fb.OpType.CONV2D,
    fb.OpType.LINEAR,
    fb.OpType.ADD,
    fb.OpType.SUB,
    fb.OpType.MUL,
    fb.OpType.CHANNEL_AFFINE,
}
_LINEAR_TYPES = (nn.Linear, qm.QLinear)
# Modules whose repeated call on the same arguments gives the same value (eval mode).
_DEDUP_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.Linear, nn.GELU, nn.Dropout, nn.Identity) + tuple(
    _ACT_MODULES
)
_OP_NAMES = {v: k.lower() for k, v in vars(fb.OpType).items() if not k.startswith("_")}
_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)
_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}
# Zero blocks must be at least this fraction of a block-pruned layer to store it as BSR.
_MIN_BSR_SPARSITY = 0.2
_BLOCK_CANDIDATES = [(r, c) for r in (32, 16, 8, 4, 2, 1) for c in (16, 8, 4, 2, 1)]


def _tensor_type(q: tuple[float, int] | None) -> tuple[Any, dict[str, Any] | None]:
    """(dtype, quantization) of an activation: int8 with (scale, zero point), or float32."""
    if q is None:
        return np.float32, None
    return np.int8, {"scale": [q[0]], "zero_point": [q[1]]}


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _meta_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(s) for s in meta.shape)


def _node_path(node: fx.Node) -> str:
    from optimizer.quantize.fold import node_path

    return node_path(node)


def _mask_block(mask: np.ndarray) -> tuple[int, int] | None:
    """The largest candidate block (R, C) whose tiles the [N, K] keep-mask is constant on."""
    n, k = mask.shape
    for r, c in sorted(_BLOCK_CANDIDATES, key=lambda rc: -rc[0] * rc[1]):
        if r > n or c > k:
            continue
        nbr, nbc = -(-n // r), -(-k // c)
        pad = np.zeros((nbr * r, nbc * c), bool)
        pad[:n, :k] = mask
        tiles = pad.reshape(nbr, r, nbc, c).any(axis=(1, 3))
        expanded = np.repeat(np.repeat(tiles, r, 0), c, 1)[:n, :k]
        if np.array_equal(expanded, mask) and not tiles.all():
            return (r, c)
    return None


class _Lowering:
    def __init__(self, model: nn.Module, example_inputs: tuple, target: Any) -> None:
        self.model = model
        self.example_inputs = example_inputs
        self.target = target
        self.w = EomWriter(tensor_names=False)
        self.vals: dict[fx.Node, Any] = {}
        self.op_node: dict[int, fx.Node] = {}  # tensor id -> the node whose operator wrote it
        self.writer_op: dict[int, int] = {}  # tensor id -> operator index
        self.errors: list[str] = []
        self.report_layers: list[dict[str, Any]] = []
        self.fused: list[str] = []
        self.notes: list[str] = []
        self.blocks: dict[str, tuple[int, int]] = {}
        self.sharing: dict[str, dict[str, Any]] = {}
        self.counter = 0
        self.input_tids: set[int] = set()
        self._gm_modules: dict[str, nn.Module] = {}
        #: duplicate node -> the first node computing the same module call on the same inputs
        #: (the zoo transformer calls ``ln1`` three times, for query, key and value).
        self.same: dict[fx.Node, fx.Node] = {}
        self.shared: set[fx.Node] = set()  # nodes with duplicates: nothing fuses into them
        self.uses_gather = False
        self.uses_packed = False
        #: (weight dict, its inline fields): int8 weights that can be stored inline (format 1.5)
        self.inline_forms: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.uses_fp32_requant = False

    # -- preparation -----------------------------------------------------------------------------

    def prepare(self) -> fx.GraphModule:
        from optimizer.prune.blocks import MASK_BUFFER
        from optimizer.quantize.fold import float_graph

        rec = get_record(self.model)
        work = copy.deepcopy(self.model)
        for path, entry in rec.get("block_sparsity", {}).items():
            self.blocks[path] = tuple(int(v) for v in entry["block"])
        self.sharing = dict(rec.get("weight_sharing", {}))
        # Live block masks (prune_blocks_ without remove()): apply them, drop masks and hooks.
        for path, m in work.named_modules():
            mask = getattr(m, MASK_BUFFER, None)
            if mask is None:
                continue
            with torch.no_grad():
                m.weight.masked_fill_(~mask, 0)
            del m._buffers[MASK_BUFFER]
            for hid, hook in list(m._forward_pre_hooks.items()):
                if type(hook).__name__ == "_ApplyMask":
                    del m._forward_pre_hooks[hid]
            if path not in self.blocks and m.weight.dim() in (2, 4):
                mat = self._matrix(m.weight.detach()) if m.weight.dim() == 4 else m.weight.detach()
                block = _mask_block((mat != 0).cpu().numpy())
                if block is not None:
                    self.blocks[path] = block
        return float_graph(work, self.example_inputs)

    @staticmethod
    def _matrix(weight: torch.Tensor) -> torch.Tensor:
        return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)

    # -- helpers ---------------------------------------------------------------------------------

    def _name(self, base: str) -> str:
        self.counter += 1
        return f"{base}#{self.counter}" if base else f"t{self.counter}"

    def _new(
        self,
        name: str,
        shape: tuple[int, ...],
        nhwc: bool = False,
        q: tuple[float, int] | None = None,
    ) -> _V:
        v = _V(0, tuple(shape), nhwc, q=q)
        v.tid = self.w.add_tensor(self._name(name), v.physical, *_tensor_type(q))
        return v

    def _emit(
        self,
        node: fx.Node | None,
        op_type: int,
        name: str,
        ins: list[int],
        outs: list[_V],
        **kw: Any,
    ) -> int:
        idx = self.w.add_operator(op_type, name, ins, [o.tid for o in outs], **kw)
        for o in outs:
            self.writer_op[o.tid] = idx
            if node is not None:
                self.op_node[o.tid] = node
        return idx

    def _value(self, arg: Any, node: fx.Node, index_ok: bool = False) -> _V:
        if isinstance(arg, fx.Node):
            v = self.vals.get(arg)
            if isinstance(v, _V):
                if v.index and not index_ok:
                    raise _Unsupported(
                        f"integer ids `{arg.name}` feed something other than nn.Embedding; the "
                        "runtime reads integer inputs only as embedding indices"
                    )
                return v
            if arg in self.vals and v is None:
                raise _Upstream()
        raise _Unsupported(f"argument {arg!r} is not a tensor the runtime computes")

    def _const(self, name: str, array: np.ndarray) -> int:
        return self.w.add_constant(self._name(name), np.ascontiguousarray(array, np.float32))

    def _transpose(self, v: _V, perm: tuple[int, ...], name: str, nhwc: bool) -> _V:
        out = _V(0, v.shape, nhwc, q=v.q)
        out.tid = self.w.add_tensor(
            self._name(name), tuple(v.physical[p] for p in perm), *_tensor_type(v.q)
        )
        self._emit(
            None,
            fb.OpType.TRANSPOSE,
            name,
            [v.tid],
            [out],
            options=("TransposeOptions", {"perm": list(perm)}),
        )
        return out

    def _reshape(self, v: _V, shape: tuple[int, ...], name: str, nhwc: bool = False) -> _V:
        out = self._new(name, shape, nhwc, q=v.q)
        self._emit(None, fb.OpType.RESHAPE, name, [v.tid], [out])
        return out

    def _plain(self, v: _V, name: str) -> _V:
        """``v`` in PyTorch's memory order (NCHW for images)."""
        if v.chw is not None:
            raise _Unsupported(
                "features flattened from an NHWC activation feed something other than Linear"
            )
        if not v.nhwc:
            return v
        n, c, h, w = v.shape
        if c == 1 or h * w == 1:  # the same bytes in either order
            return self._reshape(v, v.shape, name + ".nchw")
        return self._transpose(v, _TO_NCHW, name + ".nchw", nhwc=False)

    def _to_nhwc(self, v: _V, name: str) -> _V:
        if v.nhwc:
            return v
        if len(v.shape) != 4:
            raise _Unsupported(f"expected a 4-D image tensor, got shape {v.shape}")
        n, c, h, w = v.shape
        if c == 1 or h * w == 1:
            return self._reshape(v, v.shape, name + ".nhwc", nhwc=True)
        return self._transpose(v, _TO_NHWC, name + ".nhwc", nhwc=True)

    def _image(self, node: fx.Node, arg: Any) -> _V:
        v = self._value(arg, node)
        if len(v.shape) != 4:
            raise _Unsupported(f"expected a 4-D [N, C, H, W] input, got shape {v.shape}")
        return self._to_nhwc(v, _node_path(node))

    # -- weights ---------------------------------------------------------------------------------

    def _weight(self, path: str, op: str, mat: np.ndarray, groups: int) -> dict[str, Any]:
        """The Weight table of a [n, k] float matrix, in the format its layer earned."""
        n, k = mat.shape
        row = {
            "name": path,
            "op": op,
            "format": "dense",
            "shape": [n, k],
            "dense_bytes": mat.size * 4,
        }
        weight: dict[str, Any] | None = None
        block = self.blocks.get(path)
        if block is not None and groups == 1:
            weight = self._bsr(path, mat, block, row)
        if weight is None and path in self.sharing and groups == 1:
            weight = self._codebook(path, mat, self.sharing[path], row)
        if weight is None:
            values = self._const(f"{path}.weight", mat)
            weight = {"format": fb.WeightFormat.DENSE, "n": n, "k": k, "values": values}
            row["stored_bytes"] = mat.size * 4
        self.report_layers.append(row)
        return weight

    def _bsr(self, path: str, mat: np.ndarray, block: tuple[int, int], row: dict) -> dict | None:
        n, k = mat.shape
        r, c = block
        nbr, nbc = -(-n // r), -(-k // c)
        padded = np.zeros((nbr * r, nbc * c), np.float32)
        padded[:n, :k] = mat
        tiles = padded.reshape(nbr, r, nbc, c).transpose(0, 2, 1, 3)
        keep = np.any(tiles != 0, axis=(2, 3))
        sparsity = 1.0 - keep.mean()
        if sparsity < _MIN_BSR_SPARSITY:
            self.notes.append(
                f"`{path}`: block-pruned with block {r}x{c} but only {sparsity:.0%} of its blocks "
                "are zero in the runtime's (kh, kw, c) order; stored dense"
            )
            return None
        row_ptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
        col_idx = np.nonzero(keep)[1].astype(np.int32)
        values = np.ascontiguousarray(tiles[keep], np.float32)
        row.update(
            format="bsr",
            block=[r, c],
            sparsity=float(sparsity),
            stored_bytes=values.nbytes + row_ptr.nbytes + col_idx.nbytes,
        )
        return {
            "format": fb.WeightFormat.BSR,
            "n": n,
            "k": k,
            "values": self._const(f"{path}.weight.blocks", values),
            "block": [r, c],
            "row_ptr": self.w.add_constant(self._name(f"{path}.weight.row_ptr"), row_ptr),
            "col_idx": self.w.add_constant(self._name(f"{path}.weight.col_idx"), col_idx),
        }

    def _codebook(self, path: str, mat: np.ndarray, entry: dict, row: dict) -> dict | None:
        from optimizer.share.share import bits_for, codebook_of

        bits = int(entry.get("bits") or bits_for(int(entry["clusters"])))
        bits = next(b for b in (1, 2, 4, 8) if b >= bits)
        entries = 1 << bits
        n, k = mat.shape
        table = idx = None
        for per_channel in (False, True):
            try:
                idx, table = codebook_of(mat, per_channel=per_channel, entries=entries)
                break
            except ValueError:
                continue
        if table is None:
            self.notes.append(
                f"`{path}`: shared weights but more than {entries} distinct values "
                "per channel after BatchNorm folding; stored dense"
            )
            return None
        per_byte = 8 // bits
        kp = -(-k // per_byte) * per_byte
        padded = np.zeros((n, kp), np.uint8)
        padded[:, :k] = idx
        packed = np.zeros((n, kp // per_byte), np.uint8)
        for j in range(per_byte):
            packed |= (padded[:, j::per_byte] << (j * bits)).astype(np.uint8)
        table2 = table.reshape(-1, entries).astype(np.float32)
        row.update(
            format="codebook",
            bits=bits,
            per_channel=table2.shape[0] > 1,
            stored_bytes=packed.nbytes + table2.nbytes,
        )
        return {
            "format": fb.WeightFormat.CODEBOOK,
            "n": n,
            "k": k,
            "values": self._const(f"{path}.weight.table", table2),
            "indices": self.w.add_constant(self._name(f"{path}.weight.indices"), packed),
            "bits": bits,
            "per_channel_table": table2.shape[0] > 1,
        }

    # -- node handlers ---------------------------------------------------------------------------

    def lower(self, gm: fx.GraphModule) -> tuple[list[int], list[int]]:
        inputs, outputs = [], []
        modules = self._gm_modules = dict(gm.named_modules())
        self._find_duplicates(gm, modules)
        for node in gm.graph.nodes:
            try:
                if node in self.same:  # computed once: the first node's value
                    self.vals[node] = self.vals.get(self.same[node])
                    continue
                if node.op == "placeholder":
                    inputs.append(self._placeholder(node))
                elif node.op == "get_attr":
                    self.vals[node] = self._get_attr(gm, node)
                elif node.op == "call_module":
                    self._module(node, modules[node.target])
                elif node.op == "call_function":
                    self._function(node)
                elif node.op == "call_method":
                    self._method(node)
                elif node.op == "output":
                    outputs = self._output(node)
            except _Upstream:
                self.vals[node] = None
            except _Unsupported as e:
                what = (
                    node.target if node.op != "call_module" else type(modules[node.target]).__name__
                )
                self.errors.append(f"`{_node_path(node)}` ({getattr(what, '__name__', what)}): {e}")
                self.vals[node] = None
                if len(self.errors) >= 5:
                    break
        return inputs, outputs

    def _find_duplicates(self, gm: fx.GraphModule, modules: dict[str, nn.Module]) -> None:
        """Calls of the same stateless-in-eval module on the same arguments (``ln1(x)`` written
        three times for query, key and value): later ones reuse the first one's value."""
        seen: dict[tuple, fx.Node] = {}
        for node in gm.graph.nodes:
            if node.op != "call_module" or not isinstance(modules.get(node.target), _DEDUP_MODULES):
                continue
            try:
                key = (node.target, tuple(node.args), tuple(sorted(node.kwargs.items())))
                hash(key)
            except TypeError:
                continue
            first = seen.setdefault(key, node)
            if first is not node:
                self.same[node] = first
                self.shared.add(first)

    def _placeholder(self, node: fx.Node) -> int:
        shape = _meta_shape(node)
        meta = node.meta.get("tensor_meta")
        if shape is not None and meta is not None and meta.dtype in (torch.int64, torch.int32):
            # Token ids: an int32 graph input that only an embedding (GATHER) may read.
            v = _V(0, shape, False, index=True)
            v.tid = self.w.add_tensor(node.name, shape, np.int32)
            self.input_tids.add(v.tid)
            self.vals[node] = v
            return v.tid
        if shape is None or meta is None or meta.dtype != torch.float32:
            dtype = getattr(meta, "dtype", type(meta).__name__)
            raise _Unsupported(
                f"model inputs must be float32 tensors (or int64 / int32 token ids for "
                f"nn.Embedding), got {dtype}"
            )
        v = _V(0, shape, False)
        v.tid = self.w.add_tensor(node.name, shape)
        self.input_tids.add(v.tid)
        self.vals[node] = self._to_nhwc(v, node.name) if len(shape) == 4 else v
        return v.tid

    def _get_attr(self, gm: fx.GraphModule, node: fx.Node) -> np.ndarray:
        obj = gm
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, torch.Tensor):
            raise _Unsupported("only tensor attributes can be constants")
        return obj.detach().cpu().float().numpy()

    def _output(self, node: fx.Node) -> list[int]:
        args = node.args[0]
        items = list(args) if isinstance(args, (tuple, list)) else [args]
        outs = []
        for i, a in enumerate(items):
            v = self._value(a, node)
            name = f"output{i}" if len(items) > 1 else "output"
            p = self._plain(v, name)
            if p.tid in outs or p.tid in self.input_tids:
                p = self._reshape(p, p.shape, name)
            self.w.tensors[p.tid]["name"] = name
            outs.append(p.tid)
        return outs

    def _fuse(self, node: fx.Node, src: Any, act: int) -> bool:
        """Fuses activation ``act`` into the operator that wrote ``src`` when nothing else reads
        it; returns whether it did."""
        v = self.vals.get(src) if isinstance(src, fx.Node) else None
        if not isinstance(v, _V) or v.chw is not None or src in self.shared:
            return False
        idx = self.writer_op.get(v.tid)
        if idx is None or self.op_node.get(v.tid) is not src or len(src.users) != 1:
            return False
        op = self.w.operators[idx]
        if (
            op["type"] not in _FUSE_INTO
            or op["activation"] != fb.Activation.NONE
            or op["int8"] is not None
        ):
            return False
        op["activation"] = act
        self.vals[node] = v
        self.op_node[v.tid] = node
        self.fused.append(_node_path(node))
        return True

    def _activation(self, node: fx.Node, src: Any, act: int) -> None:
        if self._fuse(node, src, act):
            return
        x = self._value(src, node)
        out = self._new(_node_path(node), x.shape, x.nhwc)
        out.chw = x.chw
        self._emit(node, fb.OpType.ACTIVATION, _node_path(node), [x.tid], [out], activation=act)
        self.vals[node] = out

    def _module(self, node: fx.Node, m: nn.Module) -> None:
        path = str(node.target)
        src = node.args[0] if node.args else None
        if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)):
            self.vals[node] = self._value(src, node)
        elif isinstance(m, nn.Conv2d):
            self._conv(node, m, path)
        elif isinstance(m, nn.Linear):
            self._linear(node, m, path)
        elif type(m) in _ACT_MODULES:
            self._activation(node, src, _ACT_MODULES[type(m)])
        elif isinstance(m, nn.GELU):
            act = fb.Activation.GELU_TANH if m.approximate == "tanh" else fb.Activation.GELU
            self._activation(node, src, act)
        elif isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0):
            self._activation(node, src, fb.Activation.RELU6)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            self._pool(
                node,
                src,
                isinstance(m, nn.MaxPool2d),
                m.kernel_size,
                m.stride,
                m.padding,
                getattr(m, "dilation", 1),
                m.ceil_mode,
                getattr(m, "count_include_pad", True),
                getattr(m, "divisor_override", None),
            )
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            self._adaptive_pool(node, src)
        elif isinstance(m, nn.Flatten):
            self._reshape_node(node, src)
        elif isinstance(m, (nn.Upsample, nn.UpsamplingNearest2d)):
            if m.mode != "nearest":
                raise _Unsupported(f"upsampling mode {m.mode!r}; expected 'nearest'")
            self._upsample(node, src)
        elif isinstance(m, nn.Softmax):
            self._softmax(node, src, m.dim)
        elif isinstance(m, nn.LayerNorm):
            self._layer_norm(node, src, m.normalized_shape, m.weight, m.bias, m.eps)
        elif isinstance(m, nn.GroupNorm):
            self._group_norm(node, src, m)
        elif isinstance(m, nn.BatchNorm1d):
            self._batch_norm1d(node, src, m)
        elif isinstance(m, nn.Embedding):
            if m.max_norm is not None:
                raise _Unsupported("max_norm (the table is renormalized during the forward)")
            self._embedding(node, src, m.weight, path)
        elif isinstance(m, nn.MultiheadAttention):
            self._mha(node, m, path)
        elif isinstance(m, MultiheadSelfAttention):
            self._self_attention(node, m, path)
        else:
            raise _Unsupported(f"module type {type(m).__name__} has no runtime operator")

    # -- embedding and attention -----------------------------------------------------------------

    def _embedding(self, node: fx.Node, src: Any, weight: Any, path: str) -> None:
        """GATHER: rows of the [V, D] table by the int32 ids of a graph input."""
        ids = self._value(src, node, index_ok=True)
        if not ids.index:
            raise _Unsupported(
                "embedding indices computed at run time; the runtime gathers by the integer ids "
                "of a model input only"
            )
        table = self._param(weight)
        if table is None or table.ndim != 2:
            raise _Unsupported("an embedding table that is not a [num_embeddings, dim] constant")
        t = self._const(f"{path}.weight", table)
        out = self._new(path, _meta_shape(node))
        self._emit(node, fb.OpType.GATHER, path, [t, ids.tid], [out])
        self.uses_gather = True
        self.vals[node] = out

    def _same_value(self, a: Any, b: Any) -> bool:
        if b is None or a is b:
            return True
        if isinstance(a, fx.Node) and isinstance(b, fx.Node):
            return self.same.get(a, a) is self.same.get(b, b)
        return False

    def _attention_args(self, node: fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
        a = dict(zip(names, node.args))
        a.update(node.kwargs)
        for mask in ("attn_mask", "key_padding_mask"):
            if a.get(mask) is not None:
                raise _Unsupported(
                    f"`{mask}`: attention masks have no runtime operator (export the model "
                    "without a mask, or keep this module outside the exported model)"
                )
        if a.get("is_causal"):
            raise _Unsupported("is_causal=True (a causal mask) has no runtime operator")
        if not self._same_value(a["query"], a.get("key")) or not self._same_value(
            a["query"], a.get("value")
        ):
            raise _Unsupported(
                "key / value differ from query: only self-attention (the same tensor, or the same "
                "module applied to the same input) has a runtime lowering"
            )
        return a

    def _mha(self, node: fx.Node, m: nn.MultiheadAttention, path: str) -> None:
        a = self._attention_args(
            node,
            ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask"),
        )
        if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
            raise _Unsupported(
                "only plain self-attention (kdim == vdim == embed_dim, no bias_k / bias_v, no "
                "add_zero_attn)"
            )
        e = m.embed_dim
        w = m.in_proj_weight.detach().float().numpy()
        b = m.in_proj_bias.detach().float().numpy() if m.in_proj_bias is not None else None
        projs = [
            (f"{path}.in_proj", w, b),
        ]
        out_w = m.out_proj.weight.detach().float().numpy()
        out_b = m.out_proj.bias.detach().float().numpy() if m.out_proj.bias is not None else None
        self._attention(
            node,
            path,
            a["query"],
            projs,
            (out_w, out_b),
            m.num_heads,
            e // m.num_heads,
            m.batch_first,
        )

    def _self_attention(self, node: fx.Node, m: MultiheadSelfAttention, path: str) -> None:
        a = self._attention_args(node, ("query", "key", "value", "need_weights", "attn_mask"))

        def wb(lin: nn.Linear) -> tuple[np.ndarray, np.ndarray | None]:
            bias = lin.bias.detach().float().numpy() if lin.bias is not None else None
            return lin.weight.detach().float().numpy(), bias

        names = ("q_proj", "k_proj", "v_proj")
        paths = [f"{path}.{n}" for n in names]
        mats = [wb(getattr(m, n)) for n in names]
        if any(p in self.blocks or p in self.sharing for p in paths):
            projs = [(p, w, b) for p, (w, b) in zip(paths, mats)]  # each in its own format
        else:
            w = np.concatenate([w for w, _ in mats])
            bs = [b for _, b in mats]
            b = None if bs[0] is None else np.concatenate(bs)
            projs = [(f"{path}.qkv_proj", w, b)]
        self._attention(
            node, path, a["query"], projs, wb(m.out_proj), m.num_heads, m.head_dim, m.batch_first
        )

    def _attention(
        self,
        node: fx.Node,
        path: str,
        query: Any,
        projs: list[tuple[str, np.ndarray, np.ndarray | None]],
        out_proj: tuple[np.ndarray, np.ndarray | None],
        heads: int,
        head_dim: int,
        batch_first: bool,
    ) -> None:
        """softmax(q k^T / sqrt(d)) v over ``heads`` heads, then the out-projection: LINEAR
        (q/k/v, one fused GEMM where their weights share a format), RESHAPE, TRANSPOSE, SPLIT,
        BATCH_MATMUL, SOFTMAX. ``vals[node]`` is ``(output, None)`` like ``need_weights=False``."""
        x = self._plain(self._value(query, node), path)
        if len(x.shape) != 3:
            raise _Unsupported(f"attention input of shape {x.shape}; expected 3-D")
        if not batch_first:  # [T, B, E] -> [B, T, E]
            t0, b0, e0 = x.shape
            y = _V(0, (b0, t0, e0))
            y.tid = self.w.add_tensor(self._name(f"{path}.batch_first"), y.shape)
            self._emit(
                None,
                fb.OpType.TRANSPOSE,
                f"{path}.batch_first",
                [x.tid],
                [y],
                options=("TransposeOptions", {"perm": [1, 0, 2]}),
            )
            x = y
        bsz, t, _ = x.shape
        h, d = heads, head_dim
        inner = h * d

        def linear(name: str, v: _V, w: np.ndarray, b: np.ndarray | None) -> _V:
            wdef = self._weight(name, "linear", np.ascontiguousarray(w, np.float32), 1)
            bias = self._const(f"{name}.bias", b) if b is not None else -1
            out = self._new(name, v.shape[:-1] + (w.shape[0],))
            self._emit(None, fb.OpType.LINEAR, name, [v.tid], [out], weight=wdef, bias=bias)
            return out

        def op(kind: int, name: str, ins: list[_V], shape: tuple[int, ...], **kw: Any) -> _V:
            out = self._new(name, shape)
            self._emit(None, kind, name, [i.tid for i in ins], [out], **kw)
            return out

        def transpose(v: _V, perm: tuple[int, ...], name: str) -> _V:
            shape = tuple(v.shape[p] for p in perm)
            opts = ("TransposeOptions", {"perm": list(perm)})
            return op(fb.OpType.TRANSPOSE, name, [v], shape, options=opts)

        heads_shape = (bsz * h, t, d)
        if len(projs) == 1:  # fused q/k/v: [B, T, 3hd] -> [3, B, h, T, d] -> q, k, v
            name, w, b = projs[0]
            qkv = linear(name, x, w, b)
            qkv = self._reshape(qkv, (bsz, t, 3, h, d), f"{path}.qkv")
            qkv = transpose(qkv, (2, 0, 3, 1, 4), f"{path}.heads")
            parts = [self._new(f"{path}.{c}", (1, bsz, h, t, d)) for c in "qkv"]
            opts = ("SplitOptions", {"axis": 0, "sizes": [1, 1, 1]})
            self._emit(None, fb.OpType.SPLIT, f"{path}.split", [qkv.tid], parts, options=opts)
            q, k, v = (self._reshape(p, heads_shape, f"{path}.{c}") for p, c in zip(parts, "qkv"))
        else:
            q, k, v = (
                self._reshape(
                    transpose(
                        self._reshape(linear(name, x, w, b), (bsz, t, h, d), name),
                        (0, 2, 1, 3),
                        f"{name}.heads",
                    ),
                    heads_shape,
                    f"{name}.heads",
                )
                for name, w, b in projs
            )
        alpha = float(1.0 / np.sqrt(d))
        scores = op(
            fb.OpType.BATCH_MATMUL,
            f"{path}.scores",
            [q, k],
            (bsz * h, t, t),
            options=("BatchMatMulOptions", {"transpose_b": True, "alpha": alpha}),
        )
        probs = op(
            fb.OpType.SOFTMAX,
            f"{path}.softmax",
            [scores],
            scores.shape,
            options=("SoftmaxOptions", {"axis": 2}),
        )
        ctx = op(
            fb.OpType.BATCH_MATMUL,
            f"{path}.context",
            [probs, v],
            heads_shape,
            options=("BatchMatMulOptions", {}),
        )
        ctx = self._reshape(ctx, (bsz, h, t, d), f"{path}.context")
        ctx = transpose(ctx, (0, 2, 1, 3), f"{path}.merge")
        ctx = self._reshape(ctx, (bsz, t, inner), f"{path}.merge")
        y = linear(f"{path}.out_proj", ctx, *out_proj)
        if not batch_first:
            y = transpose(y, (1, 0, 2), f"{path}.seq_first")
        self.vals[node] = (y, None)

    def _conv(self, node: fx.Node, m: nn.Conv2d, path: str) -> None:
        if m.padding_mode != "zeros":
            raise _Unsupported(f"padding_mode={m.padding_mode!r}; expected 'zeros'")
        x = self._image(node, node.args[0])
        n, c, h, w = x.shape
        kh, kw = m.kernel_size
        (sh, sw), (dh, dw) = _pair(m.stride), _pair(m.dilation)
        if isinstance(m.padding, str):
            if m.padding == "valid":
                pad = [0, 0, 0, 0]
            else:
                th, tw = dh * (kh - 1), dw * (kw - 1)
                pad = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
        else:
            ph, pw = _pair(m.padding)
            pad = [ph, pw, ph, pw]
        out_shape = _meta_shape(node)
        weight = m.weight.detach().float()
        mat = self._matrix(weight).numpy()
        wdef = self._weight(path, "conv2d", mat, m.groups)
        bias = -1
        if m.bias is not None:
            bias = self._const(f"{path}.bias", m.bias.detach().float().numpy())
        out = self._new(path, out_shape, nhwc=True)
        options = {
            "kernel": [kh, kw],
            "stride": [sh, sw],
            "dilation": [dh, dw],
            "pad": pad,
            "groups": m.groups,
        }
        self._emit(
            node,
            fb.OpType.CONV2D,
            path,
            [x.tid],
            [out],
            weight=wdef,
            bias=bias,
            options=("Conv2DOptions", options),
        )
        self.vals[node] = out

    def _linear(self, node: fx.Node, m: nn.Linear, path: str) -> None:
        x = self._value(node.args[0], node)
        mat = m.weight.detach().float().numpy()
        if x.chw is not None:
            c, h, w = x.chw
            mat = mat.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(mat.shape[0], -1)
        elif x.nhwc:
            x = self._plain(x, path)
        wdef = self._weight(path, "linear", np.ascontiguousarray(mat), 1)
        bias = (
            self._const(f"{path}.bias", m.bias.detach().float().numpy())
            if m.bias is not None
            else -1
        )
        out = self._new(path, _meta_shape(node))
        self._emit(node, fb.OpType.LINEAR, path, [x.tid], [out], weight=wdef, bias=bias)
        self.vals[node] = out

    def _pool(
        self,
        node,
        src,
        is_max,
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
    ) -> None:
        x = self._image(node, src)
        n, c, h, w = x.shape
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride if stride else kernel)
        ph, pw = _pair(padding)
        if _pair(dilation) != (1, 1):
            raise _Unsupported("dilated pooling")
        if divisor_override:
            raise _Unsupported("divisor_override")
        out_shape = _meta_shape(node)
        pb, pr = ph, pw
        if ceil_mode:
            if not is_max:
                raise _Unsupported("ceil_mode average pooling; pad the input or use floor mode")
            pb = max(ph, (out_shape[2] - 1) * sh + kh - h - ph)
            pr = max(pw, (out_shape[3] - 1) * sw + kw - w - pw)
        out = self._new(_node_path(node), out_shape, nhwc=True, q=x.q)
        opts = {
            "kernel": [kh, kw],
            "stride": [sh, sw],
            "pad": [ph, pw, pb, pr],
            "count_include_pad": bool(count_include_pad),
        }
        op = fb.OpType.MAX_POOL2D if is_max else fb.OpType.AVG_POOL2D
        self._emit(node, op, _node_path(node), [x.tid], [out], options=("Pool2DOptions", opts))
        self.vals[node] = out

    def _adaptive_pool(self, node: fx.Node, src: Any) -> None:
        x = self._image(node, src)
        n, c, h, w = x.shape
        out_shape = _meta_shape(node)
        oh, ow = out_shape[2], out_shape[3]
        if (oh, ow) == (1, 1):
            out = self._new(_node_path(node), out_shape, nhwc=True)
            self._emit(node, fb.OpType.GLOBAL_AVG_POOL, _node_path(node), [x.tid], [out])
            self.vals[node] = out
            return
        if h % oh or w % ow:
            raise _Unsupported(f"adaptive average pooling {h}x{w} -> {oh}x{ow} (not a divisor)")
        k = (h // oh, w // ow)
        self._pool(node, src, False, k, k, 0, 1, False, True, None)

    def _upsample(self, node: fx.Node, src: Any) -> None:
        x = self._image(node, src)
        out_shape = _meta_shape(node)
        if out_shape[2] % x.shape[2] or out_shape[3] % x.shape[3]:
            raise _Unsupported("nearest upsampling by a non-integer factor")
        scale = [out_shape[2] // x.shape[2], out_shape[3] // x.shape[3]]
        out = self._new(_node_path(node), out_shape, nhwc=True, q=x.q)
        self._emit(
            node,
            fb.OpType.UPSAMPLE_NEAREST,
            _node_path(node),
            [x.tid],
            [out],
            options=("UpsampleOptions", {"scale": scale}),
        )
        self.vals[node] = out

    def _softmax(self, node: fx.Node, src: Any, dim: int | None) -> None:
        x = self._value(src, node)
        if dim is None:
            raise _Unsupported("softmax without dim")
        dim = dim % len(x.shape)
        axis = _NHWC_AXIS[dim] if x.nhwc else dim
        if x.chw is not None:
            x = self._plain(x, _node_path(node))
        out = self._new(_node_path(node), x.shape, x.nhwc)
        self._emit(
            node,
            fb.OpType.SOFTMAX,
            _node_path(node),
            [x.tid],
            [out],
            options=("SoftmaxOptions", {"axis": axis}),
        )
        self.vals[node] = out

    def _param(self, p: Any) -> np.ndarray | None:
        if p is None:
            return None
        if isinstance(p, fx.Node):
            p = self.vals.get(p)
            if not isinstance(p, np.ndarray):
                raise _Unsupported("a normalization weight computed at run time")
            return p
        return p.detach().cpu().float().numpy()

    def _layer_norm(self, node, src, normalized_shape, weight, bias, eps) -> None:
        path = _node_path(node)
        x = self._plain(self._value(src, node), path)
        k = len(tuple(normalized_shape)) if not isinstance(normalized_shape, int) else 1
        inner = int(np.prod(x.shape[-k:]))
        w, b = self._param(weight), self._param(bias)
        ins = [x.tid]
        if w is not None or b is not None:
            w = np.ones(inner, np.float32) if w is None else w
            b = np.zeros(inner, np.float32) if b is None else b
            ins += [
                self._const(f"{path}.weight", w.reshape(inner)),
                self._const(f"{path}.bias", b.reshape(inner)),
            ]
        out = self._new(_node_path(node), x.shape)
        self._emit(
            node,
            fb.OpType.LAYER_NORM,
            _node_path(node),
            ins,
            [out],
            options=("NormOptions", {"axis": len(x.shape) - k, "eps": float(eps)}),
        )
        self.vals[node] = out

    def _group_norm(self, node: fx.Node, src: Any, m: nn.GroupNorm) -> None:
        x = self._image(node, src)
        c = x.shape[1]
        wt = m.weight.detach().float().numpy() if m.weight is not None else np.ones(c, np.float32)
        bs = m.bias.detach().float().numpy() if m.bias is not None else np.zeros(c, np.float32)
        path = _node_path(node)
        ins = [x.tid, self._const(f"{path}.weight", wt), self._const(f"{path}.bias", bs)]
        out = self._new(path, x.shape, nhwc=True)
        self._emit(
            node,
            fb.OpType.GROUP_NORM,
            path,
            ins,
            [out],
            options=("NormOptions", {"groups": m.num_groups, "eps": float(m.eps)}),
        )
        self.vals[node] = out

    def _batch_norm1d(self, node: fx.Node, src: Any, m: nn.BatchNorm1d) -> None:
        from optimizer.quantize.fold import _bn_affine

        x = self._value(src, node)
        if len(x.shape) != 2:
            raise _Unsupported("BatchNorm1d on a 3-D input; expected [N, C]")
        scale, shift = _bn_affine(m)
        path = _node_path(node)
        ins = [
            x.tid,
            self._const(f"{path}.scale", scale.float().numpy()),
            self._const(f"{path}.shift", shift.float().numpy()),
        ]
        out = self._new(path, x.shape)
        self._emit(node, fb.OpType.CHANNEL_AFFINE, path, ins, [out])
        self.vals[node] = out

    def _reshape_node(self, node: fx.Node, src: Any) -> None:
        x = self._value(src, node)
        out_shape = _meta_shape(node)
        path = _node_path(node)
        if x.nhwc:
            n, c, h, w = x.shape
            same_bytes = c == 1 or h * w == 1
            users = list(node.users)
            to_linear = (
                not same_bytes
                and len(out_shape) == 2
                and out_shape[0] == n
                and users
                and all(
                    u.op == "call_module"
                    and isinstance(self._gm_modules.get(u.target), _LINEAR_TYPES)
                    for u in users
                )
            )
            if to_linear:
                out = self._reshape(x, out_shape, path)
                out.chw = (c, h, w)
                self.vals[node] = out
                return
            if not same_bytes:
                x = self._plain(x, path)
        elif x.chw is not None:
            x = self._plain(x, path)
        nhwc = len(out_shape) == 4
        if nhwc:
            plain = self._reshape(x, out_shape, path)
            self.vals[node] = self._to_nhwc(plain, path)
        else:
            self.vals[node] = self._reshape(x, out_shape, path)

    def _binary(self, node: fx.Node, op_type: int, a: Any, b: Any) -> None:
        path = _node_path(node)
        for arg in (a, b):
            if isinstance(arg, fx.Node) and arg in self.vals and self.vals[arg] is None:
                raise _Upstream()
        va = self.vals.get(a) if isinstance(a, fx.Node) else None
        vb = self.vals.get(b) if isinstance(b, fx.Node) else None
        ca = None if isinstance(va, _V) else va if isinstance(a, fx.Node) else a
        cb = None if isinstance(vb, _V) else vb if isinstance(b, fx.Node) else b
        if not isinstance(va, _V) and isinstance(vb, _V):
            if op_type not in (fb.OpType.ADD, fb.OpType.MUL):
                raise _Unsupported("a constant on the left of sub/div")
            va, vb, ca, cb = vb, None, None, ca
        if not isinstance(va, _V):
            raise _Unsupported("an operation on constants only")
        out_shape = _meta_shape(node)
        if isinstance(vb, _V):
            if va.chw is not None or vb.chw is not None:
                va, vb = self._plain(va, path), self._plain(vb, path)
            if va.nhwc != vb.nhwc:
                if len(va.shape) == 4 and len(vb.shape) == 4:
                    va, vb = self._to_nhwc(va, path), self._to_nhwc(vb, path)
                else:
                    va, vb = self._plain(va, path), self._plain(vb, path)
            nhwc = va.nhwc
            other = vb.tid
        else:
            if not isinstance(cb, (int, float, np.ndarray)) or isinstance(cb, bool):
                raise _Unsupported(f"operand {cb!r} is neither a tensor nor a number")
            const = np.asarray(cb, np.float32)
            if va.chw is not None:
                va = self._plain(va, path)
            nhwc = va.nhwc
            if nhwc and const.ndim > 0 and const.size > 1:
                const = const.reshape((1,) * (4 - const.ndim) + const.shape).transpose(_TO_NHWC)
            other = self._const(f"{path}.operand", const.reshape(const.shape or (1,)))
        out = self._new(path, out_shape, nhwc)
        self._emit(node, op_type, path, [va.tid, other], [out])
        self.vals[node] = out

    def _cat(self, node: fx.Node, tensors: Any, dim: int) -> None:
        path = _node_path(node)
        vs = [self._value(t, node) for t in tensors]
        rank = len(vs[0].shape)
        dim = dim % rank
        if all(v.nhwc for v in vs):
            axis = _NHWC_AXIS[dim]
        else:
            vs = [self._plain(v, path) for v in vs]
            axis = dim
        if len({v.q for v in vs}) > 1:
            raise _Unsupported(
                f"concatenates tensors of different quantization {sorted({v.q for v in vs})}"
            )
        out = self._new(path, _meta_shape(node), all(v.nhwc for v in vs), q=vs[0].q)
        self._emit(
            node,
            fb.OpType.CONCAT,
            path,
            [v.tid for v in vs],
            [out],
            options=("ConcatOptions", {"axis": axis}),
        )
        self.vals[node] = out

    def _split(self, node: fx.Node, src: Any, dim: int) -> None:
        path = _node_path(node)
        x = self._value(src, node)
        if x.chw is not None:
            x = self._plain(x, path)
        metas = node.meta.get("tensor_meta")
        shapes = [tuple(int(s) for s in m.shape) for m in metas]
        dim = dim % len(x.shape)
        axis = _NHWC_AXIS[dim] if x.nhwc else dim
        outs = [self._new(f"{path}.{i}", s, x.nhwc, q=x.q) for i, s in enumerate(shapes)]
        self._emit(
            node,
            fb.OpType.SPLIT,
            path,
            [x.tid],
            outs,
            options=("SplitOptions", {"axis": axis, "sizes": [s[dim] for s in shapes]}),
        )
        self.vals[node] = outs

    def _mean(self, node: fx.Node, src: Any, dims: Any, keepdim: bool) -> None:
        path = _node_path(node)
        x = self._value(src, node)
        if x.chw is not None:
            x = self._plain(x, path)
        rank = len(x.shape)
        dims = (
            list(range(rank)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
        )
        dims = sorted(d % rank for d in dims)
        nhwc_out = x.nhwc and keepdim
        if x.nhwc and not keepdim and not (1 in dims or {2, 3} <= set(dims)):
            x = self._plain(x, path)
        axes = [_NHWC_AXIS[d] for d in dims] if x.nhwc else dims
        out = self._new(path, _meta_shape(node), nhwc_out and x.nhwc)
        self._emit(
            node,
            fb.OpType.MEAN,
            path,
            [x.tid],
            [out],
            options=("MeanOptions", {"axes": axes, "keep_dims": bool(keepdim)}),
        )
        self.vals[node] = out

    def _matmul(self, node: fx.Node, a: Any, b: Any) -> None:
        path = _node_path(node)
        va, vb = self._value(a, node), self._value(b, node)
        va, vb = self._plain(va, path), self._plain(vb, path)
        if len(va.shape) < 2 or va.shape[:-2] != vb.shape[:-2]:
            raise _Unsupported(f"matmul of {va.shape} and {vb.shape}; expected equal batch dims")
        out = self._new(path, _meta_shape(node))
        self._emit(
            node,
            fb.OpType.BATCH_MATMUL,
            path,
            [va.tid, vb.tid],
            [out],
            options=("BatchMatMulOptions", {}),
        )
        self.vals[node] = out

    def _shape_value(self, node: fx.Node, src: Any, args: tuple) -> None:
        v = self.vals.get(src)
        if not isinstance(v, _V):
            raise _Unsupported("size() of a non-tensor")
        self.vals[node] = v.shape[args[0]] if args else torch.Size(v.shape)

    def _function(self, node: fx.Node) -> None:
        t = node.target
        args, kwargs = node.args, node.kwargs
        if t in _BINARY:
            if kwargs.get("alpha", 1) != 1 or kwargs.get("rounding_mode"):
                raise _Unsupported("add/sub with alpha or div with rounding_mode")
            self._binary(node, _BINARY[t], args[0], args[1] if len(args) > 1 else kwargs["other"])
        elif t in _ACT_FUNCTIONS:
            self._activation(node, args[0], _ACT_FUNCTIONS[t])
        elif t is F.gelu:
            approx = kwargs.get("approximate", "none")
            self._activation(
                node, args[0], fb.Activation.GELU_TANH if approx == "tanh" else fb.Activation.GELU
            )
        elif t in (torch.cat, torch.concat):
            self._cat(node, args[0], args[1] if len(args) > 1 else kwargs.get("dim", 0))
        elif t in (torch.flatten, torch.reshape):
            self._reshape_node(node, args[0])
        elif t is F.adaptive_avg_pool2d:
            self._adaptive_pool(node, args[0])
        elif t in (F.max_pool2d, F.avg_pool2d):
            names = (
                ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
                if t is F.max_pool2d
                else (
                    "kernel_size",
                    "stride",
                    "padding",
                    "ceil_mode",
                    "count_include_pad",
                    "divisor_override",
                )
            )
            p = dict(zip(names, args[1:]))
            p.update(kwargs)
            self._pool(
                node,
                args[0],
                t is F.max_pool2d,
                p["kernel_size"],
                p.get("stride"),
                p.get("padding", 0),
                p.get("dilation", 1),
                p.get("ceil_mode", False),
                p.get("count_include_pad", True),
                p.get("divisor_override"),
            )
        elif t in (F.softmax, torch.softmax):
            self._softmax(node, args[0], args[1] if len(args) > 1 else kwargs.get("dim"))
        elif t in (F.dropout, F.dropout1d, F.dropout2d):
            self.vals[node] = self._value(args[0], node)
        elif t is F.interpolate:
            if kwargs.get("mode", args[3] if len(args) > 3 else "nearest") != "nearest":
                raise _Unsupported("interpolate mode other than 'nearest'")
            self._upsample(node, args[0])
        elif t in (torch.chunk, torch.split):
            self._split(node, args[0], args[2] if len(args) > 2 else kwargs.get("dim", 0))
        elif t is operator.getitem:
            if args[0] in self.vals and self.vals[args[0]] is None:
                raise _Upstream()
            src = self.vals.get(args[0])
            if isinstance(src, (list, tuple, torch.Size)):
                item = src[args[1]]
                if item is None:
                    raise _Unsupported(
                        "the attention weights (need_weights) are not computed by the runtime; "
                        "use only the attention output"
                    )
                self.vals[node] = item
            else:
                raise _Unsupported("indexing or slicing a tensor")
        elif t in (torch.matmul, torch.bmm):
            self._matmul(node, args[0], args[1])
        elif t is torch.mean:
            self._mean(
                node,
                args[0],
                args[1] if len(args) > 1 else kwargs.get("dim"),
                kwargs.get("keepdim", args[2] if len(args) > 2 else False),
            )
        elif t is F.embedding:
            if kwargs.get("max_norm", args[3] if len(args) > 3 else None) is not None:
                raise _Unsupported("max_norm (the table is renormalized during the forward)")
            self._embedding(
                node, args[0], args[1] if len(args) > 1 else kwargs["weight"], _node_path(node)
            )
        elif t is F.layer_norm:
            rest = list(args[2:5]) + [None] * 3
            weight = kwargs.get("weight", rest[0])
            bias = kwargs.get("bias", rest[1])
            eps = kwargs.get("eps", rest[2] if rest[2] is not None else 1e-5)
            self._layer_norm(node, args[0], args[1], weight, bias, eps)
        elif t is getattr and args[1] == "shape":
            self._shape_value(node, args[0], ())
        else:
            name = getattr(t, "__name__", str(t))
            raise _Unsupported(f"function `{name}` has no runtime operator")

    def _method(self, node: fx.Node) -> None:
        t, args, kwargs = node.target, node.args, node.kwargs
        if t in ("view", "reshape", "flatten"):
            self._reshape_node(node, args[0])
        elif t in ("contiguous", "clone", "detach"):
            self.vals[node] = self._value(args[0], node)
        elif t == "size":
            self._shape_value(node, args[0], args[1:])
        elif t in _BINARY_METHODS:
            self._binary(node, _BINARY_METHODS[t], args[0], args[1])
        elif t in _ACT_METHODS:
            self._activation(node, args[0], _ACT_METHODS[t])
        elif t in ("chunk", "split"):
            self._split(node, args[0], args[2] if len(args) > 2 else kwargs.get("dim", 0))
        elif t == "softmax":
            self._softmax(node, args[0], args[1] if len(args) > 1 else kwargs.get("dim"))
        elif t == "mean":
            self._mean(
                node,
                args[0],
                args[1] if len(args) > 1 else kwargs.get("dim"),
                kwargs.get("keepdim", args[2] if len(args) > 2 else False),
            )
        elif t == "matmul":
            self._matmul(node, args[0], args[1])
        else:
            raise _Unsupported(f"tensor method `.{t}()` has no runtime operator")


# --------------------------------------------------------------------------------------------
# int8 lowering (the GraphModule of optimizer.quantize_)
# --------------------------------------------------------------------------------------------

#: Zero blocks must be at least this fraction of an int8 layer for BSR (and BSR smaller).
_MIN_BSR_SPARSITY_S8 = 0.3
#: A codebook must store at most this fraction of the dense int8 bytes to be chosen.
_MAX_CODEBOOK_RATIO = 0.75


def is_int8_model(model: nn.Module) -> bool:
    """Whether ``model`` holds int8 modules of :mod:`optimizer.quantize.modules` (the GraphModule
    :func:`optimizer.quantize_` returns). Example: ``is_int8_model(quantize_(m, ...)) -> True``."""
    return any(isinstance(m, qm.QModule) for m in model.modules())


#: The settings each pass keeps in the file's ``edgeopt.passes``: what defines the stored
#: weights (structure, sparsity, sharing, quantization). Training passes (``_TRAINING_PASSES``)
#: change weight values, not their form, and are left out; losses, steps, seeds, learning
#: rates, module lists and the training history stay in the pipeline's report
#: (``summary.json``), not in the file (on a 7 kB model they were a twentieth of it).
_TRAINING_PASSES = ("distill", "fine_tune", "distill_blocks")
_PASS_KEYS: dict[str, tuple[str, ...]] = {
    "prune_channels": ("ratio", "macs_reduction", "round_to"),
    "prune_layers": ("removed",),
    "prune_blocks": ("block", "sparsity"),
    "share_weights": ("clusters", "bits", "per_channel"),
    "factorize": ("method", "rule", "value"),
    "quantize_int8": ("per_channel", "requantization"),
    "convert_qat": ("per_channel", "requantization"),
}


def _compact_passes(passes: list[Any]) -> str:
    """The ``edgeopt.passes`` metadata: each pass's name with the settings that define the
    stored weights (``_PASS_KEYS``; passes it does not know keep their name) as compact JSON;
    training passes, and null or empty settings, are left out.

    Example: ``_compact_passes([{"pass": "distill", "epochs": 3}, {"pass": "prune_blocks",
    "block": [16, 4], "sparsity": 0.5, "importance": "l1"}])``
    -> ``'[{"pass":"prune_blocks","block":[16,4],"sparsity":0.5}]'``.
    """
    out = []
    for p in passes:
        if not isinstance(p, dict):
            out.append(p)
            continue
        if p.get("pass") in _TRAINING_PASSES:
            continue
        keys = _PASS_KEYS.get(str(p.get("pass")), ())
        out.append(
            {"pass": p.get("pass")}
            | {k: p[k] for k in keys if p.get(k) is not None and p[k] != [] and p[k] != {}}
        )
    return json.dumps(out, default=str, separators=(",", ":"))


def _pack_flat(idx: np.ndarray, bits: int) -> np.ndarray:
    """Indices < 2^bits (bits 1..8), any shape -> ceil(size * bits / 8) bytes: a little-endian
    bit stream (index i in bits [i * bits, (i + 1) * bits), low bits first; an index may span
    two bytes), without row padding. Example: ``_pack_flat(np.array([1, 2, 3]), 4)``
    -> ``[0x21, 0x03]``."""
    flat = np.asarray(idx, np.uint8).reshape(-1)
    stream = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(stream.reshape(-1), bitorder="little")


def _codebook_tables(mat: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(table [1 or n, 2^bits] int8, indices [n, k] uint8, per_channel) of an int8 [n, k] matrix
    whose values fit 2^bits entries per layer (else per row); None when they do not fit.
    Example: ``_codebook_tables(np.array([[1, 2], [2, 1]], np.int8), 1)`` -> a [1, 2] table."""
    n, k = mat.shape
    entries = 1 << bits
    layer_vals = np.unique(mat)
    if len(layer_vals) <= entries:
        table = np.zeros((1, entries), np.int8)
        table[0, : len(layer_vals)] = layer_vals
        return table, np.searchsorted(layer_vals, mat).astype(np.uint8), False
    table = np.zeros((n, entries), np.int8)
    idx = np.zeros((n, k), np.uint8)
    for i in range(n):
        vals, inv = np.unique(mat[i], return_inverse=True)
        if len(vals) > entries:
            return None
        table[i, : len(vals)] = vals
        idx[i] = inv.reshape(-1)
    return table, idx, True


def _pack_indices(idx: np.ndarray, bits: int) -> np.ndarray:
    """[n, k] indices < 2^bits -> [n, ceil(k * bits / 8)] bytes (low bits first, rows on bytes)."""
    n, k = idx.shape
    per_byte = 8 // bits
    kp = -(-k // per_byte) * per_byte
    padded = np.zeros((n, kp), np.uint8)
    padded[:, :k] = idx
    packed = np.zeros((n, kp // per_byte), np.uint8)
    for j in range(per_byte):
        packed |= (padded[:, j::per_byte] << (j * bits)).astype(np.uint8)
    return packed


class _QLowering(_Lowering):
    """Lowers the int8 GraphModule: QModules to S8 operators with their Int8Stage, float
    modules (float islands between DeQuantStub and QuantStub) as in the float path."""

    def prepare(self) -> fx.GraphModule:
        from torch.fx.passes.shape_prop import ShapeProp

        if not isinstance(self.model, fx.GraphModule):
            raise TypeError(
                f"`{_API}`: an int8 model must be the torch.fx GraphModule that "
                f"optimizer.quantize_ returns, got {type(self.model).__name__}"
            )
        rec = get_record(self.model)
        for path, entry in rec.get("block_sparsity", {}).items():
            self.blocks[path] = tuple(int(v) for v in entry["block"])
        gm = copy.deepcopy(self.model)
        with torch.no_grad():
            ShapeProp(gm).propagate(*self.example_inputs)
        return gm

    # -- helpers ---------------------------------------------------------------------------------

    def _qin(self, node: fx.Node, arg: Any, scale: float, zero_point: int, what: str) -> _V:
        """An int8 input whose quantization must be the module's ``(scale, zero_point)``."""
        v = self._value(arg, node)
        if v.q is None:
            raise _Unsupported(f"{what} is float32; an int8 module needs an int8 input")
        if v.q[1] != int(zero_point) or np.float32(v.q[0]) != np.float32(scale):
            raise _Unsupported(
                f"{what} has quantization {v.q}, the module expects ({scale}, {zero_point})"
            )
        return v

    @staticmethod
    def _out_q(mod: qm.QModule) -> tuple[float, int]:
        return (float(np.float32(mod.output_scale)), int(mod.output_zero_point))

    def _module(self, node: fx.Node, m: nn.Module) -> None:
        if not isinstance(m, qm.QModule):
            super()._module(node, m)  # a float island's module
            return
        handler = {
            "quantize": self._quantize,
            "dequantize": self._dequantize,
            "conv2d": self._qconv,
            "linear": self._qlinear,
            "add": self._qbinary,
            "mul": self._qbinary,
            "lut": self._qlut,
            "clamp": self._qlut,
            "max_pool2d": self._qpool,
            "avg_pool2d": self._qpool,
            "upsample_nearest": self._qupsample,
        }.get(m.op)
        if handler is None:
            raise _Unsupported(f"int8 module op {m.op!r} has no runtime operator")
        handler(node, m)

    def _quantize(self, node: fx.Node, mod: qm.QuantStub) -> None:
        x = self._value(node.args[0], node)
        if x.q is not None:
            raise _Unsupported("quantizes a tensor that is int8 already")
        path = mod.path or _node_path(node)
        out = self._new(path, x.shape, x.nhwc, q=self._out_q(mod))
        out.chw = x.chw
        self._emit(node, fb.OpType.QUANTIZE, path, [x.tid], [out])
        self.vals[node] = out

    def _dequantize(self, node: fx.Node, mod: qm.DeQuantStub) -> None:
        x = self._qin(node, node.args[0], mod.input_scale, mod.input_zero_point, "the input")
        shape_only = all(
            (u.op == "call_method" and u.target in ("size", "dim"))
            or (u.op == "call_function" and u.target is getattr)
            for u in node.users
        )
        if shape_only:  # only its shape is read (x.size(0) before a view): no operator
            self.vals[node] = x
            return
        path = mod.path or _node_path(node)
        out = self._new(path, x.shape, x.nhwc)
        out.chw = x.chw
        self._emit(node, fb.OpType.DEQUANTIZE, path, [x.tid], [out])
        self.vals[node] = out

    def _requant(self, mod: qm.QModule, stage: dict[str, Any]) -> dict[str, Any]:
        """``stage`` with the module's fp32 requantization fields (format 1.4) when it uses
        XNNPACK's arithmetic (``mod.requantization == "fp32"``): ``requant_scale`` (float32, one
        per output channel or one) and, for ADD / MUL, ``requant_input_scale`` (one per input)
        replace the multipliers and shifts. Stages in gemmlowp arithmetic are returned as is."""
        if getattr(mod, "requantization", "gemmlowp") != "fp32":
            return stage
        self.uses_fp32_requant = True
        for key in ("multiplier", "shift", "input_multiplier", "input_shift", "left_shift"):
            stage.pop(key, None)
        stage["requantization"] = fb.Requantization.FP32
        for key, buf in (("scale", "requant_scale"), ("input_scale", "requant_input_scale")):
            value = getattr(mod, buf, None)  # ADD has only input factors
            if value is not None:
                stage[key] = value.numpy().astype(np.float32).reshape(-1)
        return stage

    def _stage(self, mod: qm.QModule, in_zp: int) -> dict[str, Any]:
        lo, hi = (int(v) for v in mod.clamp)
        stage: dict[str, Any] = {"input_zero_point": int(in_zp)}
        if getattr(mod, "requantization", "gemmlowp") != "fp32":
            stage["multiplier"] = mod.multiplier.numpy().astype(np.int32)
            stage["shift"] = mod.shift.numpy().astype(np.int32)
        stage.update(output_zero_point=int(mod.output_zero_point), qmin=lo, qmax=hi)
        return self._requant(mod, stage)

    def _qweight(
        self, path: str, op: str, mat: np.ndarray, mod: qm.QConv2d | qm.QLinear
    ) -> dict[str, Any]:
        """The Weight table of an int8 [n, k] matrix: dense, BSR or codebook, whichever the
        weight's zeros / distinct values make smallest."""
        n, k = mat.shape
        scales = mod.weight_scale.numpy().astype(np.float32).reshape(-1)
        row: dict[str, Any] = {
            "name": path,
            "op": op,
            "format": "dense",
            "shape": [n, k],
            "dense_bytes": mat.size,
            "stored_bytes": mat.size,
        }
        options: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
        bsr = self._qbsr_candidate(path, mat)
        if bsr is not None:
            options.append(bsr)
        cb = self._qcodebook_candidate(mat)
        if cb is not None:
            options.append(cb)
        # Packed blocks pay off at any block sparsity: decoded at load, they only save bytes. A
        # block mask costs one bit per block, so one-column blocks (R, 1) are tried too: they
        # find the pruned blocks of a Linear whose columns the exporter permuted (after an NHWC
        # flatten), where the pruning's (R, C) blocks no longer lie side by side.
        blocks = self._qblocks(path)
        for block in dict.fromkeys(blocks + [(r, 1) for r, _ in blocks]):
            bsr_any = self._qbsr_candidate(path, mat, min_sparsity=0.0, blocks=[block])
            packed = self._qpacked_candidate(mat, bsr_any)
            if packed is not None:
                options.append(packed)
        options = [o for o in options if o[0] < mat.size]
        if options:
            _, info, arrays = min(options, key=lambda o: o[0])
        else:
            info, arrays = {"format": "dense"}, {}
        row.update(info)
        self.report_layers.append(row)
        fmt = info["format"]
        wdef = self._qweight_tensors(path, fmt, info, arrays, mat, scales)
        if fmt != "dense":
            self.inline_forms.append((wdef, self._qweight_inline(fmt, info, arrays, n, k)))
        return wdef

    @staticmethod
    def _qweight_inline(
        fmt: str, info: dict[str, Any], arrays: dict[str, np.ndarray], n: int, k: int
    ) -> dict[str, Any]:
        """The Weight fields of an int8 BSR / packed BSR / codebook weight stored inline (format
        1.5): the block mask, indices and table (its unused last entries dropped), or the int8
        blocks, as vectors of the table. Example: a packed weight gives ``inline_block_mask``,
        ``inline_indices`` and ``inline_table``."""
        out: dict[str, Any] = {"format": fb.WeightFormat.BSR, "n": n, "k": k}
        if fmt in ("bsr", "bsr_codebook"):
            r, c = info["block"]
            keep = np.zeros((-(-n // r), -(-k // c)), np.uint8)
            rows = np.repeat(np.arange(keep.shape[0]), np.diff(arrays["row_ptr"]))
            keep[rows, arrays["col_idx"]] = 1
            out["block"] = [r, c]
            out["inline_block_mask"] = _pack_flat(keep, 1)
        if fmt == "bsr":
            out["inline_values"] = arrays["values"].astype(np.int8).reshape(-1)
            return out
        if fmt == "codebook":
            out["format"] = fb.WeightFormat.CODEBOOK
        table = arrays["table"][:, : arrays["entries"]]
        out["bits"] = info["bits"]
        out["per_channel_table"] = bool(info["per_channel"])
        out["inline_indices"] = arrays["packed"].astype(np.uint8).reshape(-1)
        out["inline_table"] = np.ascontiguousarray(table, np.int8).reshape(-1)
        return out

    def _qweight_tensors(
        self,
        path: str,
        fmt: str,
        info: dict[str, Any],
        arrays: dict[str, np.ndarray],
        mat: np.ndarray,
        scales: np.ndarray,
    ) -> dict[str, Any]:
        """The Weight table of the chosen format with its bytes in constant tensors."""
        n, k = mat.shape
        if fmt == "dense":
            values = self.w.add_constant(
                self._name(f"{path}.weight"), mat, self._wquant(scales, n, n)
            )
            return {"format": fb.WeightFormat.DENSE, "n": n, "k": k, "values": values}
        if fmt == "bsr":
            return {
                "format": fb.WeightFormat.BSR,
                "n": n,
                "k": k,
                "values": self.w.add_constant(
                    self._name(f"{path}.weight.blocks"), arrays["values"], None
                ),
                "block": list(info["block"]),
                "row_ptr": self.w.add_constant(
                    self._name(f"{path}.weight.row_ptr"), arrays["row_ptr"]
                ),
                "col_idx": self.w.add_constant(
                    self._name(f"{path}.weight.col_idx"), arrays["col_idx"]
                ),
            }
        table = arrays["table"]
        if fmt == "bsr_codebook":
            self.uses_packed = True
            return {
                "format": fb.WeightFormat.BSR,
                "n": n,
                "k": k,
                "values": self.w.add_decoded(
                    self._name(f"{path}.weight.blocks"), arrays["values"].shape
                ),
                "block": list(info["block"]),
                "row_ptr": self.w.add_decoded(
                    self._name(f"{path}.weight.row_ptr"), arrays["row_ptr"].shape, np.int32
                ),
                "col_idx": self.w.add_decoded(
                    self._name(f"{path}.weight.col_idx"), arrays["col_idx"].shape, np.int32
                ),
                "block_mask": self.w.add_constant(
                    self._name(f"{path}.weight.block_mask"), arrays["mask"]
                ),
                "indices": self.w.add_constant(
                    self._name(f"{path}.weight.indices"), arrays["packed"]
                ),
                "bits": info["bits"],
                "per_channel_table": bool(info["per_channel"]),
                "table": self.w.add_constant(
                    self._name(f"{path}.weight.table"),
                    table,
                    self._wquant(scales, n, table.shape[0]),
                ),
            }
        return {
            "format": fb.WeightFormat.CODEBOOK,
            "n": n,
            "k": k,
            "values": self.w.add_constant(
                self._name(f"{path}.weight.table"),
                table,
                self._wquant(scales, n, table.shape[0]),
            ),
            "indices": self.w.add_constant(self._name(f"{path}.weight.indices"), arrays["packed"]),
            "bits": info["bits"],
            "per_channel_table": bool(info["per_channel"]),
        }

    def use_inline_weights(self) -> None:
        """Stores every int8 BSR, packed BSR and codebook weight inline (format 1.5): the
        operator's Weight takes the inline fields and its int32 bias as ``inline_bias``, and the
        constants they replace are dropped from the file. Example: called by ``export_native``
        for compact files."""
        forms = {id(wdef): inline for wdef, inline in self.inline_forms}
        for op in self.w.operators:
            wdef = op["weight"]
            if not wdef or id(wdef) not in forms:
                continue
            for key in _WEIGHT_TENSORS:
                if wdef.get(key, -1) >= 0:
                    self.w.drop_tensor(wdef[key])
            inline = dict(forms[id(wdef)])
            bias = self.w.tensors[op["bias"]] if op["bias"] >= 0 else None
            if bias is not None and bias["dtype"] == _DTYPES[np.dtype(np.int32)]:
                raw = self.w._chunks[bias["buffer"]]
                inline["inline_bias"] = np.frombuffer(raw, "<i4").astype(np.int32)
                self.w.drop_tensor(op["bias"])
                op["bias"] = -1
            op["weight"] = inline

    @staticmethod
    def _wquant(scales: np.ndarray, n: int, rows: int) -> dict[str, Any] | None:
        """Weight scales on a values tensor whose axis 0 has ``rows`` entries (per channel when
        rows == n, per tensor when one scale); None where they do not index axis 0."""
        if scales.size == 1:
            return {"scale": scales, "zero_point": np.zeros(1, np.int32), "axis": -1}
        if rows == n and scales.size == n:
            return {"scale": scales, "zero_point": np.zeros(n, np.int32), "axis": 0}
        return None

    def _qblocks(self, path: str) -> list[tuple[int, int]]:
        """The BSR blocks tried for an int8 layer: its block-pruning block, then the target's."""
        blocks = []
        if path in self.blocks:
            blocks.append(tuple(self.blocks[path]))
        target = self.target
        if target is None:
            from optimizer import targets as _targets

            target = _targets.host()
        blocks.append(tuple(int(v) for v in target.bsr_block))
        return blocks

    def _qbsr_candidate(
        self,
        path: str,
        mat: np.ndarray,
        min_sparsity: float = _MIN_BSR_SPARSITY_S8,
        blocks: list[tuple[int, int]] | None = None,
    ):
        n, k = mat.shape
        blocks = blocks if blocks is not None else self._qblocks(path)
        best = None
        for r, c in dict.fromkeys(blocks):
            if r > n or c > k:
                continue
            nbr, nbc = -(-n // r), -(-k // c)
            padded = np.zeros((nbr * r, nbc * c), np.int8)
            padded[:n, :k] = mat
            tiles = padded.reshape(nbr, r, nbc, c).transpose(0, 2, 1, 3)
            keep = np.any(tiles != 0, axis=(2, 3))
            sparsity = 1.0 - float(keep.mean())
            if sparsity < min_sparsity or sparsity == 0.0:
                continue
            row_ptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
            col_idx = np.nonzero(keep)[1].astype(np.int32)
            values = np.ascontiguousarray(tiles[keep], np.int8)
            if values.size == 0:  # an all-zero layer still needs one block
                keep[0, 0] = True
                row_ptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
                col_idx = np.nonzero(keep)[1].astype(np.int32)
                values = np.ascontiguousarray(tiles[keep], np.int8)
            nbytes = values.nbytes + row_ptr.nbytes + col_idx.nbytes
            cand = (
                nbytes,
                {"format": "bsr", "block": [r, c], "sparsity": sparsity, "stored_bytes": nbytes},
                {"values": values, "row_ptr": row_ptr, "col_idx": col_idx},
            )
            if best is None or nbytes < best[0]:
                best = cand
        return best

    @staticmethod
    def _qpacked_candidate(mat: np.ndarray, bsr: tuple | None):
        """BSR whose stored block values are 1/2/4-bit codebook indices (format 1.3): the BSR
        candidate's blocks with the codebook's table; None without both."""
        if bsr is None:
            return None
        n, k = mat.shape
        _, binfo, barr = bsr
        r, c = binfo["block"]
        row_ptr, col_idx, values = barr["row_ptr"], barr["col_idx"], barr["values"]
        nbr, nbc = -(-n // r), -(-k // c)
        block_row = np.repeat(np.arange(nbr), np.diff(row_ptr))
        # The table needs only the values of the stored blocks: the zeros of the pruned blocks
        # take no entry (8 shared values and the pruned zeros are 3-bit indices, not 4).
        stored = np.zeros((nbr, nbc), bool)
        stored[block_row, col_idx] = True
        in_block = np.kron(stored, np.ones((r, c), bool))[:n, :k]
        src = mat
        if in_block.any() and not in_block.all():
            src = np.where(in_block, mat, mat[in_block][0])
        best = None
        for bits in range(1, 8):  # decoded at load: any width, not only the kernels' 1/2/4
            tables = _codebook_tables(src, bits)
            if tables is None:
                continue
            table, idx, per_channel = tables
            padded = np.zeros((nbr * r, nbc * c), np.uint8)
            padded[:n, :k] = idx
            tiles = padded.reshape(nbr, r, nbc, c).transpose(0, 2, 1, 3)
            bidx = tiles[block_row, col_idx]  # [nnz, r, c]
            rows = np.minimum(block_row[:, None] * r + np.arange(r)[None, :], n - 1)
            trow = rows if per_channel else np.zeros_like(rows)
            decoded = table[trow[:, :, None], bidx]
            inside = (block_row[:, None, None] * r + np.arange(r)[None, :, None] < n) & (
                col_idx[:, None, None] * c + np.arange(c)[None, None, :] < k
            )
            if not np.array_equal(np.where(inside, decoded, 0), values):
                continue  # never expected: the table holds every value of its rows
            packed = _pack_flat(bidx, bits)
            entries = int(bidx.max()) + 1  # the table entries the stored values use
            keep = np.zeros((nbr, nbc), np.uint8)
            keep[block_row, col_idx] = 1
            mask = _pack_flat(keep, 1)
            nbytes = packed.nbytes + table.nbytes + mask.nbytes
            cand = (
                nbytes,
                {
                    "format": "bsr_codebook",
                    "block": [r, c],
                    "sparsity": binfo["sparsity"],
                    "bits": bits,
                    "per_channel": per_channel,
                    "stored_bytes": nbytes,
                },
                {**barr, "table": table, "packed": packed, "mask": mask, "entries": entries},
            )
            if best is None or nbytes < best[0]:
                best = cand
        return best

    @staticmethod
    def _qcodebook_candidate(mat: np.ndarray):
        best = None
        for bits in (1, 2, 4):
            tables = _codebook_tables(mat, bits)
            if tables is None:
                continue
            table, idx, per_channel = tables
            packed = _pack_indices(idx, bits)
            nbytes = packed.nbytes + table.nbytes
            if nbytes > _MAX_CODEBOOK_RATIO * mat.size:
                continue
            cand = (
                nbytes,
                {
                    "format": "codebook",
                    "bits": bits,
                    "per_channel": per_channel,
                    "stored_bytes": nbytes,
                },
                {"table": table, "packed": packed, "entries": int(idx.max()) + 1},
            )
            if best is None or nbytes < best[0]:
                best = cand
        return best

    # -- int8 modules ----------------------------------------------------------------------------

    def _qconv(self, node: fx.Node, mod: qm.QConv2d) -> None:
        path = mod.path or str(node.target)
        x = self._qin(node, node.args[0], mod.input_scale, mod.input_zero_point, "the input")
        if len(x.shape) != 4:
            raise _Unsupported(f"expected a 4-D [N, C, H, W] input, got shape {x.shape}")
        x = self._to_nhwc(x, path)
        kh, kw = mod.kernel_size
        (sh, sw), (dh, dw), (ph, pw) = (_pair(mod.stride), _pair(mod.dilation), _pair(mod.padding))
        mat = np.ascontiguousarray(mod.weight_ohwi().reshape(mod.out_channels, -1))
        wdef = self._qweight(path, "conv2d", mat, mod)
        bias = self.w.add_constant(self._name(f"{path}.bias"), mod.bias_int32.numpy())
        out = self._new(path, _meta_shape(node), nhwc=True, q=self._out_q(mod))
        options = {
            "kernel": [kh, kw],
            "stride": [sh, sw],
            "dilation": [dh, dw],
            "pad": [ph, pw, ph, pw],
            "groups": mod.groups,
        }
        self._emit(
            node,
            fb.OpType.CONV2D,
            path,
            [x.tid],
            [out],
            weight=wdef,
            bias=bias,
            options=("Conv2DOptions", options),
            int8=self._stage(mod, mod.input_zero_point),
        )
        self.vals[node] = out

    def _qlinear(self, node: fx.Node, mod: qm.QLinear) -> None:
        path = mod.path or str(node.target)
        x = self._qin(node, node.args[0], mod.input_scale, mod.input_zero_point, "the input")
        mat = mod.weight_int8.numpy()
        if x.chw is not None:
            c, h, w = x.chw
            mat = mat.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(mat.shape[0], -1)
        elif x.nhwc:
            x = self._plain(x, path)
        wdef = self._qweight(path, "linear", np.ascontiguousarray(mat), mod)
        bias = self.w.add_constant(self._name(f"{path}.bias"), mod.bias_int32.numpy())
        out = self._new(path, _meta_shape(node), q=self._out_q(mod))
        self._emit(
            node,
            fb.OpType.LINEAR,
            path,
            [x.tid],
            [out],
            weight=wdef,
            bias=bias,
            int8=self._stage(mod, mod.input_zero_point),
        )
        self.vals[node] = out

    def _qbinary(self, node: fx.Node, mod: qm.QAdd | qm.QMul) -> None:
        path = mod.path or str(node.target)
        if len(node.args) != 2 or node.kwargs:
            raise _Unsupported("expected two tensor arguments")
        (s1, s2), (z1, z2) = mod.input_scales, mod.input_zero_points
        va = self._qin(node, node.args[0], s1, z1, "input 0")
        vb = self._qin(node, node.args[1], s2, z2, "input 1")
        if va.chw is not None or vb.chw is not None:
            va, vb = self._plain(va, path), self._plain(vb, path)
        if va.nhwc != vb.nhwc:
            if len(va.shape) == 4 and len(vb.shape) == 4:
                va, vb = self._to_nhwc(va, path), self._to_nhwc(vb, path)
            else:
                va, vb = self._plain(va, path), self._plain(vb, path)
        lo, hi = (int(v) for v in mod.clamp)
        stage: dict[str, Any] = {
            "input_zero_points": [int(z1), int(z2)],
            "output_zero_point": int(mod.output_zero_point),
            "qmin": lo,
            "qmax": hi,
        }
        if mod.op == "add":
            m1, sh1, m2, sh2, mo, so = (int(v) for v in mod.multipliers)
            stage.update(
                input_multiplier=[m1, m2],
                input_shift=[sh1, sh2],
                multiplier=[mo],
                shift=[so],
                left_shift=int(mod.left_shift),
            )
            op_type = fb.OpType.ADD
        else:
            stage.update(multiplier=[int(mod.multiplier)], shift=[int(mod.shift)])
            op_type = fb.OpType.MUL
        out = self._new(path, _meta_shape(node), va.nhwc, q=self._out_q(mod))
        self._emit(node, op_type, path, [va.tid, vb.tid], [out], int8=self._requant(mod, stage))
        self.vals[node] = out

    def _qlut(self, node: fx.Node, mod: qm.QLookupTable | qm.QClamp) -> None:
        path = mod.path or str(node.target)
        x = self._qin(node, node.args[0], mod.input_scale, mod.input_zero_point, "the input")
        if mod.op == "lut":
            table = mod.table.numpy().astype(np.int8)
        else:  # a ReLU / ReLU6 left unfused: a clamp is a table too
            lo, hi = (int(v) for v in mod.clamp)
            table = np.clip(np.arange(-128, 128), lo, hi).astype(np.int8)
        out = self._new(path, x.shape, x.nhwc, q=self._out_q(mod))
        out.chw = x.chw
        self._emit(
            node,
            fb.OpType.LUT,
            path,
            [x.tid],
            [out],
            options=("LutOptions", {"table": table}),
        )
        self.vals[node] = out

    def _qpool(self, node: fx.Node, mod: qm.QMaxPool2d | qm.QAvgPool2d) -> None:
        self._qin(node, node.args[0], mod.input_scale, mod.input_zero_point, "the input")
        is_max = mod.op == "max_pool2d"
        x = self._image(node, node.args[0])
        kh, kw = _pair(mod.kernel_size)
        ph, pw = _pair(mod.padding)
        if not is_max and (kh, kw) == tuple(x.shape[2:]) and (ph, pw) == (0, 0):
            out = self._new(_node_path(node), _meta_shape(node), nhwc=True, q=x.q)
            stage = self._requant(mod, {"output_zero_point": int(x.q[1])})
            self._emit(
                node,
                fb.OpType.GLOBAL_AVG_POOL,
                _node_path(node),
                [x.tid],
                [out],
                int8=stage if "scale" in stage else None,
            )
            self.vals[node] = out
            return
        self._pool(
            node,
            node.args[0],
            is_max,
            mod.kernel_size,
            mod.stride,
            mod.padding,
            getattr(mod, "dilation", 1),
            getattr(mod, "ceil_mode", False),
            False,  # TFLite's int8 average counts the valid cells only
            None,
        )

    def _qupsample(self, node: fx.Node, mod: qm.QUpsampleNearest) -> None:
        self._qin(node, node.args[0], mod.input_scale, mod.input_zero_point, "the input")
        self._upsample(node, node.args[0])


def _check_inputs(example_inputs: Any) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError(
            f"`{_API}`: example_inputs must be a tuple of tensors; expected "
            f"(x,), got {type(example_inputs).__name__}"
        )
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"`{_API}`: example_inputs[{i}] must be a tensor, got {type(x).__name__}"
            )
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(f"`{_API}`: example_inputs[{i}] has NaN or inf values")
    return tuple(x.detach().cpu() for x in example_inputs)


def _check_finite(model: nn.Module) -> None:
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.dtype.is_floating_point and not torch.isfinite(t).all():
            raise ValueError(f"`{_API}`: `{name}` has NaN or inf values; expected finite weights")


def export_native(
    model: nn.Module,
    example_inputs: Any,
    path: str | Path,
    target: Any = None,
) -> NativeExportReport:
    """Writes ``model`` as a native ``.eom`` file for the C++ runtime (``optimizer.runtime``).

    Shapes are fixed by ``example_inputs`` (batch included): export with the batch size the
    device runs. The model is not changed. Every node is checked before anything is written;
    the file is written atomically.

    Args:
        model: a float ``nn.Module`` (plain, channel-pruned, block-pruned with or without its
            sparsifier removed, weight-shared, factorized), or the int8 GraphModule of
            :func:`optimizer.quantize_` (of any of those), written as int8 operators.
        example_inputs: tuple of float32 tensors (images NCHW, as the model takes them), or
            int64 / int32 token ids for an embedding (the file takes int32 ids).
        path: the file to write (``.eom`` by convention).
        target: optional target profile (``optimizer.targets.get("rpi5")``) or its name; it is
            recorded in the file's metadata, and its ``bsr_block`` is the block tried for int8
            BSR weights (default: the host's profile).

    Returns:
        A :class:`NativeExportReport` (size, operators, weight format per layer, fused
        activations, notes).

    Raises:
        ValueError: a module or function the runtime has no operator for (its path and type are
            named; up to five are listed), non-finite weights or inputs.
        TypeError: ``model`` is not an ``nn.Module``, ``example_inputs`` not tensors, or int8
            modules outside the GraphModule of ``quantize_``.

    Example::

        report = export_native(model, (torch.randn(1, 3, 32, 32),), "model.eom")
        print(report.summary())
        q = optimizer.quantize_(model, Int8Config(), calibration=batches)
        export_native(q, (torch.randn(1, 3, 32, 32),), "model_int8.eom")  # bit-exact to q
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`{_API}`: model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = _check_inputs(example_inputs)
    _check_finite(model)
    if isinstance(target, str):
        from optimizer import targets as _targets

        target = _targets.get(target)
    int8 = is_int8_model(model)
    low = (_QLowering if int8 else _Lowering)(model, inputs, target)
    gm = low.prepare()
    graph_in, graph_out = low.lower(gm)
    if low.errors:
        raise ValueError(
            f"`{_API}`: the runtime cannot run {len(low.errors)} node(s); nothing was written:\n  "
            + "\n  ".join(low.errors)
            + f"\nThe runtime supports: {_SUPPORTED}. Replace these modules, or keep them "
            "outside the exported model"
        )
    version = FORMAT_VERSION_INT8 if int8 else FORMAT_VERSION
    if low.uses_gather:
        version = FORMAT_VERSION_GATHER
    if low.uses_packed:
        version = FORMAT_VERSION_PACKED
    if low.uses_fp32_requant:
        version = FORMAT_VERSION_FP32_REQUANT
    if version >= FORMAT_VERSION_PACKED and INLINE_WEIGHTS and low.inline_forms:
        low.use_inline_weights()  # compact files: int8 weights inline (format 1.5)
        version = FORMAT_VERSION_INLINE
    meta = {
        "edgeopt.format": ".".join(map(str, version)),
        "edgeopt.inputs_layout": "NCHW",
    }
    if target is not None:
        meta["edgeopt.target"] = getattr(target, "name", str(target))
    passes = get_record(model).get("passes", [])
    if passes:
        meta["edgeopt.passes"] = _compact_passes(passes)
    from optimizer import __version__

    blob = low.w.finish(
        graph_in, graph_out, meta, producer=f"edge-optimizer {__version__}", version=version
    )
    out = atomic_write(path, lambda f: f.write(blob))
    ops = Counter(_OP_NAMES.get(op["type"], "?") for op in low.w.operators)
    names = {0: "float32", 1: "int8", 2: "int32", 3: "uint8"}

    def io(t: int) -> dict[str, Any]:
        tensor = low.w.tensors[t]
        return {"name": tensor["name"], "shape": tensor["shape"], "dtype": names[tensor["dtype"]]}

    spec = [io(t) for t in graph_in]
    spec_out = [io(t) for t in graph_out]
    return NativeExportReport(
        path=out,
        size_bytes=len(blob),
        ops=dict(ops),
        layers=low.report_layers,
        fused=low.fused,
        inputs=spec,
        outputs=spec_out,
        notes=low.notes,
    )
