"""A TFLite flatbuffer writer (schema.fbs v3) on the plain ``flatbuffers`` package, no TensorFlow.

:class:`TfliteModelBuilder` emits exactly the tables a single-subgraph builtin-op model needs:
Model, OperatorCode, SubGraph, Tensor, QuantizationParameters, Operator, Buffer, SignatureDef /
TensorMap, Metadata, and the builtin-options tables of the ops the exporter uses. Field slots are
the fields' declaration order in tensorflow/compiler/mlir/lite/schema/schema.fbs; they are checked
by reading the output back with LiteRT's generated schema (``ai_edge_litert.schema_py_generated``)
and by running it in the LiteRT interpreter (tests/test_export_tflite.py). Buffer 0 is the empty
sentinel buffer the format reserves; tensors without data point to it.

Example::

    tb = TfliteModelBuilder("one FC")
    x = tb.add_tensor("x", (1, 4), tb.INT8, scale=0.1, zero_point=0)
    ...
    blob = tb.finish([x], [y], signature=("serving_default", {"x": x}, {"y": y}))
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TfliteModelBuilder"]


class TfliteModelBuilder:
    """Writes a TFLite flatbuffer with the plain ``flatbuffers`` builder.

    Usage: :meth:`add_buffer`, :meth:`add_tensor`, :meth:`add_operator` (indices are returned;
    option tables are built with the ``*_options`` helpers before the operator that uses them),
    optionally :meth:`add_metadata`, then :meth:`finish` returns the file's bytes.
    """

    # TensorType
    FLOAT32, INT32, INT8 = 0, 2, 9
    # BuiltinOperator
    ADD = 0
    AVERAGE_POOL_2D = 1
    CONCATENATION = 2
    CONV_2D = 3
    DEPTHWISE_CONV_2D = 4
    DEQUANTIZE = 6
    FULLY_CONNECTED = 9
    LOGISTIC = 14
    MAX_POOL_2D = 17
    MUL = 18
    RELU = 19
    RELU6 = 21
    RESHAPE = 22
    TANH = 28
    PAD = 34
    GATHER = 36
    TRANSPOSE = 39
    MEAN = 40
    CAST = 53
    PADV2 = 60
    QUANTIZE = 114
    HARD_SWISH = 117
    #: BuiltinOperator value -> name, for reports and errors.
    OP_NAMES = {
        0: "ADD",
        1: "AVERAGE_POOL_2D",
        2: "CONCATENATION",
        3: "CONV_2D",
        4: "DEPTHWISE_CONV_2D",
        6: "DEQUANTIZE",
        9: "FULLY_CONNECTED",
        14: "LOGISTIC",
        17: "MAX_POOL_2D",
        18: "MUL",
        19: "RELU",
        21: "RELU6",
        22: "RESHAPE",
        28: "TANH",
        34: "PAD",
        36: "GATHER",
        39: "TRANSPOSE",
        40: "MEAN",
        53: "CAST",
        60: "PADV2",
        114: "QUANTIZE",
        117: "HARD_SWISH",
    }
    # BuiltinOptions (union type ids)
    CONV_2D_OPTIONS = 1
    DEPTHWISE_CONV_2D_OPTIONS = 2
    POOL_2D_OPTIONS = 5
    FULLY_CONNECTED_OPTIONS = 8
    CONCATENATION_OPTIONS = 10
    ADD_OPTIONS = 11
    GATHER_OPTIONS = 23
    REDUCER_OPTIONS = 27
    MUL_OPTIONS = 21
    # Padding / ActivationFunctionType
    SAME, VALID = 0, 1
    ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 3
    # Table field slots.
    _MODEL = {
        "version": 0,
        "operator_codes": 1,
        "subgraphs": 2,
        "description": 3,
        "buffers": 4,
        "metadata": 6,
        "signature_defs": 7,
    }
    _OPCODE = {"deprecated_builtin_code": 0, "version": 2, "builtin_code": 3}
    _SUBGRAPH = {"tensors": 0, "inputs": 1, "outputs": 2, "operators": 3, "name": 4}
    _TENSOR = {"shape": 0, "type": 1, "buffer": 2, "name": 3, "quantization": 4}
    _QUANT = {"scale": 2, "zero_point": 3, "quantized_dimension": 6}
    _OPERATOR = {
        "opcode_index": 0,
        "inputs": 1,
        "outputs": 2,
        "builtin_options_type": 3,
        "builtin_options": 4,
    }
    _BUFFER = {"data": 0}

    def __init__(self, description: str = "edge-optimizer") -> None:
        import flatbuffers

        self.builder = flatbuffers.Builder(1024)
        self._description = description
        self._buffers: list[int | None] = [None]  # buffer 0: the empty sentinel
        self._tensors: list[int] = []
        self._opcodes: list[tuple[int, int]] = []  # (builtin code, version)
        self._operators: list[int] = []
        self._metadata: list[tuple[str, int]] = []

    # -- low-level helpers
    def _vector(self, values: np.ndarray) -> int:
        return self.builder.CreateNumpyVector(np.ascontiguousarray(values).ravel())

    def _offset_vector(self, offsets: list[int]) -> int:
        b = self.builder
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def _aligned_bytes(self, data: bytes, alignment: int = 16) -> int:
        """A [ubyte] vector whose payload starts on ``alignment`` (schema: force_align: 16)."""
        b = self.builder
        b.StartVector(1, len(data), alignment)
        b.head = b.head - len(data)
        b.Bytes[b.head : b.head + len(data)] = data
        return b.EndVector()

    def table(self, n_slots: int, fields: list[tuple[str, int, Any, Any]]) -> int:
        """A table of scalars: ``fields`` = [(kind, slot, value, default)], kind "i8" / "i32" /
        "bool" / "u32". Returns its offset (for ``add_operator(options=...)``)."""
        b = self.builder
        b.StartObject(n_slots)
        for kind, slot, value, default in fields:
            if kind == "i8":
                b.PrependInt8Slot(slot, int(value), default)
            elif kind == "i32":
                b.PrependInt32Slot(slot, int(value), default)
            elif kind == "u32":
                b.PrependUint32Slot(slot, int(value), default)
            elif kind == "bool":
                b.PrependBoolSlot(slot, bool(value), default)
            else:  # pragma: no cover - programming error
                raise ValueError(f"TfliteModelBuilder.table: unknown field kind {kind!r}")
        return b.EndObject()

    # -- model pieces
    def add_buffer(self, data: np.ndarray | bytes) -> int:
        """A constant buffer (little-endian bytes); returns its index."""
        if isinstance(data, bytes):
            raw = data
        else:
            arr = np.asarray(data)
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        data_off = self._aligned_bytes(raw)
        b = self.builder
        b.StartObject(3)
        b.PrependUOffsetTRelativeSlot(self._BUFFER["data"], data_off, 0)
        self._buffers.append(b.EndObject())
        return len(self._buffers) - 1

    def add_tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: int,
        buffer: int = 0,
        scale: np.ndarray | float | None = None,
        zero_point: np.ndarray | int | None = None,
        quantized_dimension: int = 0,
    ) -> int:
        """A tensor; ``scale``/``zero_point`` scalar (per tensor) or [C] (per channel on
        ``quantized_dimension``). Returns its index."""
        b = self.builder
        quant = 0
        if scale is not None:
            s = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            z = np.atleast_1d(np.asarray(0 if zero_point is None else zero_point, np.int64))
            if z.size == 1 and s.size > 1:
                z = np.full(s.size, int(z[0]), np.int64)
            s_off, z_off = self._vector(s), self._vector(z)
            b.StartObject(7)
            b.PrependUOffsetTRelativeSlot(self._QUANT["scale"], s_off, 0)
            b.PrependUOffsetTRelativeSlot(self._QUANT["zero_point"], z_off, 0)
            b.PrependInt32Slot(self._QUANT["quantized_dimension"], quantized_dimension, 0)
            quant = b.EndObject()
        name_off = b.CreateString(name)
        shape_off = self._vector(np.asarray(shape, dtype=np.int32))
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(self._TENSOR["shape"], shape_off, 0)
        b.PrependInt8Slot(self._TENSOR["type"], dtype, 0)
        b.PrependUint32Slot(self._TENSOR["buffer"], buffer, 0)
        b.PrependUOffsetTRelativeSlot(self._TENSOR["name"], name_off, 0)
        if quant:
            b.PrependUOffsetTRelativeSlot(self._TENSOR["quantization"], quant, 0)
        self._tensors.append(b.EndObject())
        return len(self._tensors) - 1

    def add_constant(
        self,
        name: str,
        data: np.ndarray,
        dtype: int,
        scale: np.ndarray | float | None = None,
        zero_point: np.ndarray | int | None = None,
        quantized_dimension: int = 0,
    ) -> int:
        """A tensor holding ``data`` (a buffer of its own); returns the tensor index."""
        buf = self.add_buffer(np.ascontiguousarray(data))
        return self.add_tensor(
            name, tuple(data.shape), dtype, buf, scale, zero_point, quantized_dimension
        )

    def add_metadata(self, name: str, data: bytes) -> None:
        """A Model.metadata entry ``name`` -> a buffer holding ``data``."""
        self._metadata.append((name, self.add_buffer(data)))

    # -- options tables
    def conv_2d_options(
        self, padding: int, stride: tuple[int, int], dilation: tuple[int, int], act: int
    ) -> int:
        """Conv2DOptions (stride/dilation as (h, w))."""
        return self.table(
            7,
            [
                ("i8", 0, padding, 0),
                ("i32", 1, stride[1], 0),
                ("i32", 2, stride[0], 0),
                ("i8", 3, act, 0),
                ("i32", 4, dilation[1], 1),
                ("i32", 5, dilation[0], 1),
            ],
        )

    def depthwise_conv_2d_options(
        self,
        padding: int,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        multiplier: int,
        act: int,
    ) -> int:
        """DepthwiseConv2DOptions."""
        return self.table(
            7,
            [
                ("i8", 0, padding, 0),
                ("i32", 1, stride[1], 0),
                ("i32", 2, stride[0], 0),
                ("i32", 3, multiplier, 0),
                ("i8", 4, act, 0),
                ("i32", 5, dilation[1], 1),
                ("i32", 6, dilation[0], 1),
            ],
        )

    def pool_2d_options(
        self, padding: int, stride: tuple[int, int], kernel: tuple[int, int], act: int = 0
    ) -> int:
        """Pool2DOptions."""
        return self.table(
            6,
            [
                ("i8", 0, padding, 0),
                ("i32", 1, stride[1], 0),
                ("i32", 2, stride[0], 0),
                ("i32", 3, kernel[1], 0),
                ("i32", 4, kernel[0], 0),
                ("i8", 5, act, 0),
            ],
        )

    def fully_connected_options(self, act: int = 0) -> int:
        """FullyConnectedOptions {fused activation, DEFAULT weights format, keep_num_dims false}."""
        return self.table(7, [("i8", 0, act, 0)])

    def add_options(self, act: int = 0) -> int:
        """AddOptions."""
        return self.table(2, [("i8", 0, act, 0)])

    def mul_options(self, act: int = 0) -> int:
        """MulOptions."""
        return self.table(1, [("i8", 0, act, 0)])

    def concatenation_options(self, axis: int, act: int = 0) -> int:
        """ConcatenationOptions."""
        return self.table(2, [("i32", 0, axis, 0), ("i8", 1, act, 0)])

    def gather_options(self, axis: int = 0) -> int:
        """GatherOptions."""
        return self.table(2, [("i32", 0, axis, 0)])

    def reducer_options(self, keep_dims: bool) -> int:
        """ReducerOptions (MEAN, SUM, ...): {keep_dims}."""
        return self.table(1, [("bool", 0, keep_dims, False)])

    def add_operator(
        self,
        builtin_code: int,
        inputs: list[int],
        outputs: list[int],
        options_type: int = 0,
        options: int = 0,
        version: int = 1,
    ) -> int:
        """An operator of a builtin op (its OperatorCode is shared per (code, version))."""
        key = (builtin_code, version)
        if key not in self._opcodes:
            self._opcodes.append(key)
        b = self.builder
        in_off = self._vector(np.asarray(inputs, dtype=np.int32))
        out_off = self._vector(np.asarray(outputs, dtype=np.int32))
        b.StartObject(5)
        b.PrependUint32Slot(self._OPERATOR["opcode_index"], self._opcodes.index(key), 0)
        b.PrependUOffsetTRelativeSlot(self._OPERATOR["inputs"], in_off, 0)
        b.PrependUOffsetTRelativeSlot(self._OPERATOR["outputs"], out_off, 0)
        if options:
            b.PrependUint8Slot(self._OPERATOR["builtin_options_type"], options_type, 0)
            b.PrependUOffsetTRelativeSlot(self._OPERATOR["builtin_options"], options, 0)
        self._operators.append(b.EndObject())
        return len(self._operators) - 1

    def _tensor_maps(self, names: dict[str, int]) -> int:
        b = self.builder
        maps = []
        for name, index in names.items():
            n_off = b.CreateString(name)
            b.StartObject(2)
            b.PrependUOffsetTRelativeSlot(0, n_off, 0)
            b.PrependUint32Slot(1, index, 0)
            maps.append(b.EndObject())
        return self._offset_vector(maps)

    def finish(
        self,
        inputs: list[int],
        outputs: list[int],
        name: str = "main",
        signature: tuple[str, dict[str, int], dict[str, int]] | None = None,
    ) -> bytes:
        """Writes SubGraph and Model; returns the .tflite bytes.

        Args:
            inputs, outputs: tensor indices of the subgraph's inputs and outputs.
            name: the subgraph's name.
            signature: ``(signature_key, {input name: tensor}, {output name: tensor})`` for a
                SignatureDef (what ``interpreter.get_signature_runner()`` uses).
        """
        b = self.builder
        opcodes = []
        for code, version in self._opcodes:
            b.StartObject(4)
            b.PrependInt8Slot(self._OPCODE["deprecated_builtin_code"], min(code, 127), 0)
            b.PrependInt32Slot(self._OPCODE["version"], version, 1)
            b.PrependInt32Slot(self._OPCODE["builtin_code"], code, 0)
            opcodes.append(b.EndObject())
        meta = []
        for m_name, buf in self._metadata:
            n_off = b.CreateString(m_name)
            b.StartObject(2)
            b.PrependUOffsetTRelativeSlot(0, n_off, 0)
            b.PrependUint32Slot(1, buf, 0)
            meta.append(b.EndObject())
        sig = 0
        if signature is not None:
            key, ins, outs = signature
            ins_v, outs_v = self._tensor_maps(ins), self._tensor_maps(outs)
            key_off = b.CreateString(key)
            b.StartObject(5)
            b.PrependUOffsetTRelativeSlot(0, ins_v, 0)
            b.PrependUOffsetTRelativeSlot(1, outs_v, 0)
            b.PrependUOffsetTRelativeSlot(2, key_off, 0)
            b.PrependUint32Slot(4, 0, 0)
            sig = b.EndObject()
        buffers = []
        for off in self._buffers:
            if off is None:
                b.StartObject(3)
                off = b.EndObject()
            buffers.append(off)
        tensors_v = self._offset_vector(self._tensors)
        inputs_v = self._vector(np.asarray(inputs, dtype=np.int32))
        outputs_v = self._vector(np.asarray(outputs, dtype=np.int32))
        operators_v = self._offset_vector(self._operators)
        name_off = b.CreateString(name)
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(self._SUBGRAPH["tensors"], tensors_v, 0)
        b.PrependUOffsetTRelativeSlot(self._SUBGRAPH["inputs"], inputs_v, 0)
        b.PrependUOffsetTRelativeSlot(self._SUBGRAPH["outputs"], outputs_v, 0)
        b.PrependUOffsetTRelativeSlot(self._SUBGRAPH["operators"], operators_v, 0)
        b.PrependUOffsetTRelativeSlot(self._SUBGRAPH["name"], name_off, 0)
        subgraph = b.EndObject()
        opcodes_v = self._offset_vector(opcodes)
        subgraphs_v = self._offset_vector([subgraph])
        buffers_v = self._offset_vector(buffers)
        meta_v = self._offset_vector(meta) if meta else 0
        sigs_v = self._offset_vector([sig]) if sig else 0
        desc = b.CreateString(self._description)
        b.StartObject(10)
        b.PrependUint32Slot(self._MODEL["version"], 3, 0)
        b.PrependUOffsetTRelativeSlot(self._MODEL["operator_codes"], opcodes_v, 0)
        b.PrependUOffsetTRelativeSlot(self._MODEL["subgraphs"], subgraphs_v, 0)
        b.PrependUOffsetTRelativeSlot(self._MODEL["description"], desc, 0)
        b.PrependUOffsetTRelativeSlot(self._MODEL["buffers"], buffers_v, 0)
        if meta_v:
            b.PrependUOffsetTRelativeSlot(self._MODEL["metadata"], meta_v, 0)
        if sigs_v:
            b.PrependUOffsetTRelativeSlot(self._MODEL["signature_defs"], sigs_v, 0)
        model = b.EndObject()
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())
