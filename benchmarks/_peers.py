"""Peers of benchmarks/gemm.py: one int8 Linear problem, run by PyTorch, ONNX Runtime, LiteRT.

Every peer gets the same quantized problem (`LinearProblem`: int8 activations with a zero point,
symmetric per-channel int8 weights, int32 bias, an int8 output scale and zero point) and returns a
`Runner`: a zero-argument callable that performs one inference on pre-bound inputs, plus a
`result()` that returns the output as numpy so the benchmark can check it before timing it.

Peers are timed on their lowest-overhead call: inputs are quantized and bound once, outputs land in
pre-allocated buffers where the runtime allows it (ONNX Runtime IOBinding, LiteRT's own output
tensor). That favours the peers, so the ratios the benchmark prints are conservative for us.

The LiteRT model is written here without TensorFlow: `TfliteModelBuilder` emits the TFLite
flatbuffer (schema.fbs, file identifier "TFL3") with the `flatbuffers` package, and
`build_fully_connected_int8` uses it for one int8 FULLY_CONNECTED.

Example:
    >>> p = make_problem(4, 64, 32, seed=0)
    >>> r = litert_fully_connected(p, threads=1)
    >>> r.run()  # one timed call
    >>> bool(np.abs(r.result().astype(int) - reference_linear_s8(p)).max() <= 1)
    True
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from optimizer.quantize import arithmetic

# --------------------------------------------------------------------------------------------
# The problem and its references
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearProblem:
    """One quantized Linear: y = requant((x - input_zero_point) @ w.T + bias).

    Attributes:
        x: int8 [M, K] activations; real value = input_scale * (x - input_zero_point).
        w: int8 [N, K] weights in [-127, 127]; real value = weight_scales[n] * w[n, k].
        bias: int32 [N], scale input_scale * weight_scales[n].
        multiplier, shift: int32 [N], TFLite fixed-point form of
            input_scale * weight_scales[n] / output_scale.
        x_f32, w_f32, bias_f32: the dequantized tensors, for the fp32 runs.
    """

    m: int
    k: int
    n: int
    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray
    input_zero_point: int
    input_scale: float
    weight_scales: np.ndarray
    output_zero_point: int
    output_scale: float
    multiplier: np.ndarray
    shift: np.ndarray
    x_f32: np.ndarray = field(repr=False)
    w_f32: np.ndarray = field(repr=False)
    bias_f32: np.ndarray = field(repr=False)

    @property
    def ops(self) -> int:
        """Operations of one call (a multiply-add counts as two)."""
        return 2 * self.m * self.n * self.k

    @property
    def effective_scales(self) -> np.ndarray:
        """float64 [N]: input_scale * weight_scales / output_scale."""
        return self.input_scale * self.weight_scales / self.output_scale


def make_problem(m: int, k: int, n: int, seed: int = 0) -> LinearProblem:
    """A random problem whose outputs spread over the int8 range (few clamp to -128/127)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    w = rng.integers(-127, 128, size=(n, k), dtype=np.int8)
    input_zero_point, output_zero_point = 3, -5
    input_scale = 0.02
    weight_scales = rng.uniform(0.5, 1.5, size=n) * 0.01
    acc_std = math.sqrt(k) * 74.0 * 73.5  # std of (x - zp) . w for uniform int8 entries
    bias = rng.integers(-int(acc_std), int(acc_std) + 1, size=n).astype(np.int32)
    output_scale = 3.0 * acc_std * input_scale * float(weight_scales.mean()) / 127.0
    multiplier, shift = arithmetic.quantize_multiplier(input_scale * weight_scales / output_scale)
    x_f32 = (input_scale * (x.astype(np.float32) - input_zero_point)).astype(np.float32)
    w_f32 = (weight_scales[:, None] * w.astype(np.float64)).astype(np.float32)
    bias_f32 = (bias * input_scale * weight_scales).astype(np.float32)
    return LinearProblem(
        m,
        k,
        n,
        x,
        w,
        bias,
        input_zero_point,
        input_scale,
        weight_scales,
        output_zero_point,
        output_scale,
        multiplier,
        shift,
        np.ascontiguousarray(x_f32),
        np.ascontiguousarray(w_f32),
        bias_f32,
    )


def reference_acc(p: LinearProblem, with_bias: bool = True) -> np.ndarray:
    """int64 [M, N]: sum_k (x - input_zero_point) * w (+ bias), exact."""
    acc = (p.x.astype(np.int64) - p.input_zero_point) @ p.w.astype(np.int64).T
    return acc + p.bias.astype(np.int64) if with_bias else acc


def reference_linear_s8(p: LinearProblem, with_bias: bool = True) -> np.ndarray:
    """int8 [M, N] with real-valued requantization (round half away from zero).

    Runtimes that requantize in float or fixed point land within one unit of this.
    """
    y = reference_acc(p, with_bias) * p.effective_scales[None, :]
    y = np.sign(y) * np.floor(np.abs(y) + 0.5) + p.output_zero_point
    return np.clip(y, -128, 127).astype(np.int8)


def reference_linear_f32(p: LinearProblem) -> np.ndarray:
    """float64 [M, N] = x_f32 @ w_f32.T + bias_f32."""
    return p.x_f32.astype(np.float64) @ p.w_f32.astype(np.float64).T + p.bias_f32


# --------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------


@dataclass
class Runner:
    """A prepared peer call.

    Attributes:
        name: short label ("torch", "ort:qgemm-u8", "litert", ...).
        run: performs one inference on the pre-bound inputs (the timed call).
        result: runs once and returns the output as numpy; int8 [M, N] for `kind` "s8",
            int32 [M, N] without bias for "s32", float32 [M, N] for "f32".
        kind: "s8", "s32" or "f32".
        detail: what exactly runs (engine, op), for the report.
        with_bias: False where the op has no bias input (MatMulInteger, QLinearMatMul).
        keep: objects that must outlive the runner (sessions, interpreters, buffers).
    """

    name: str
    run: Callable[[], Any]
    result: Callable[[], np.ndarray]
    kind: str
    detail: str = ""
    with_bias: bool = True
    keep: list[Any] = field(default_factory=list, repr=False)


def check_runner(r: Runner, p: LinearProblem) -> float:
    """Max deviation of the runner's output from the reference (LSB for int, relative for f32)."""
    out = np.asarray(r.result())
    if r.kind == "s8":
        ref = reference_linear_s8(p, with_bias=r.with_bias)
        return float(np.abs(out.astype(np.int64) - ref).max())
    if r.kind == "s32":
        return float(np.abs(out.astype(np.int64) - reference_acc(p, with_bias=False)).max())
    ref = reference_linear_f32(p)
    return float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def silence_quantization_warnings() -> None:
    """Hide PyTorch's deprecation warnings for quantized tensors and torch.ao (benchmark only)."""
    for pattern in (".*quantiz.*", ".*torch\\.ao.*", ".*deprecat.*"):
        warnings.filterwarnings("ignore", message=pattern, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
        warnings.filterwarnings("ignore", message=pattern, category=UserWarning)


# ---- PyTorch -------------------------------------------------------------------------------


def torch_int8_linear(p: LinearProblem, engine: str = "x86") -> Runner:
    """torch.ops.quantized.linear with a prepacked per-channel qint8 weight.

    PyTorch wants quint8 activations: x + 128 with zero point + 128 is the same real tensor, and the
    quint8 output minus 128 is the int8 output. Threads follow torch.set_num_threads (the caller's).
    """
    import torch

    silence_quantization_warnings()
    torch.backends.quantized.engine = engine
    qw = torch._make_per_channel_quantized_tensor(
        torch.from_numpy(p.w.copy()),
        torch.from_numpy(p.weight_scales.astype(np.float64)),
        torch.zeros(p.n, dtype=torch.int64),
        0,
    )
    packed = torch.ops.quantized.linear_prepack(qw, torch.from_numpy(p.bias_f32.copy()))
    x_u8 = (p.x.astype(np.int16) + 128).astype(np.uint8)
    qx = torch._make_per_tensor_quantized_tensor(
        torch.from_numpy(x_u8), p.input_scale, p.input_zero_point + 128
    )
    # functools.partial: a call costs no Python frame beyond the op's own.
    run = functools.partial(
        torch.ops.quantized.linear, qx, packed, float(p.output_scale), p.output_zero_point + 128
    )

    def result() -> np.ndarray:
        return (run().int_repr().numpy().astype(np.int16) - 128).astype(np.int8)

    return Runner(
        "torch", run, result, "s8", f"torch.ops.quantized.linear ({engine})", [packed, qx]
    )


def torch_f32_linear(p: LinearProblem) -> Runner:
    """torch.nn.functional.linear in fp32 (tensors without requires_grad: no autograd work)."""
    import torch

    x, w, b = (torch.from_numpy(a.copy()) for a in (p.x_f32, p.w_f32, p.bias_f32))
    run = functools.partial(torch.nn.functional.linear, x, w, b)

    def result() -> np.ndarray:
        return run().numpy()

    return Runner("torch-f32", run, result, "f32", "torch.nn.functional.linear (fp32)", [x, w, b])


# ---- ONNX Runtime --------------------------------------------------------------------------

#: ORT int8 variants: (op, activations unsigned). The fastest one counts as "ORT int8".
ORT_VARIANTS: tuple[tuple[str, bool], ...] = (
    ("matmulinteger", False),
    ("matmulinteger", True),
    ("qlinearmatmul", False),
    ("qlinearmatmul", True),
    ("qgemm", False),
    ("qgemm", True),
)


def _ort_model(p: LinearProblem, op: str, unsigned: bool) -> tuple[bytes, str]:
    """An in-memory ONNX model with one quantized matmul; weights are initializers."""
    from onnx import TensorProto, helper, numpy_helper

    shift = 128 if unsigned else 0
    act_type = TensorProto.UINT8 if unsigned else TensorProto.INT8
    act_np = np.uint8 if unsigned else np.int8
    zp_in = np.array(p.input_zero_point + shift, dtype=act_np)
    zp_out = np.array(p.output_zero_point + shift, dtype=act_np)
    w_kn = np.ascontiguousarray(p.w.T)  # ONNX MatMul wants B as [K, N]
    init = []
    opsets = [helper.make_opsetid("", 17)]
    if op == "matmulinteger":
        init += [numpy_helper.from_array(w_kn, "w"), numpy_helper.from_array(zp_in, "x_zp")]
        node = helper.make_node("MatMulInteger", ["x", "w", "x_zp"], ["y"])
        out_type = TensorProto.INT32
    elif op == "qlinearmatmul":
        init += [
            numpy_helper.from_array(np.array(p.input_scale, np.float32), "x_scale"),
            numpy_helper.from_array(zp_in, "x_zp"),
            numpy_helper.from_array(w_kn, "w"),
            numpy_helper.from_array(p.weight_scales.astype(np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros(p.n, np.int8), "w_zp"),
            numpy_helper.from_array(np.array(p.output_scale, np.float32), "y_scale"),
            numpy_helper.from_array(zp_out, "y_zp"),
        ]
        node = helper.make_node(
            "QLinearMatMul",
            ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"],
            ["y"],
        )
        out_type = act_type
    elif op == "qgemm":
        init += [
            numpy_helper.from_array(np.array(p.input_scale, np.float32), "x_scale"),
            numpy_helper.from_array(zp_in, "x_zp"),
            numpy_helper.from_array(np.ascontiguousarray(p.w), "w"),
            numpy_helper.from_array(p.weight_scales.astype(np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros(p.n, np.int8), "w_zp"),
            numpy_helper.from_array(p.bias.astype(np.int32), "bias"),
            numpy_helper.from_array(np.array(p.output_scale, np.float32), "y_scale"),
            numpy_helper.from_array(zp_out, "y_zp"),
        ]
        node = helper.make_node(
            "QGemm",
            ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "bias", "y_scale", "y_zp"],
            ["y"],
            domain="com.microsoft",
            transB=1,
        )
        opsets.append(helper.make_opsetid("com.microsoft", 1))
        out_type = act_type
    else:
        raise ValueError(
            f"_ort_model: unknown op; expected one of matmulinteger, "
            f"qlinearmatmul, qgemm, got {op!r}"
        )
    graph = helper.make_graph(
        [node],
        f"{op}_{p.m}x{p.k}x{p.n}",
        [helper.make_tensor_value_info("x", act_type, [p.m, p.k])],
        [helper.make_tensor_value_info("y", out_type, [p.m, p.n])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=opsets, producer_name="edge-optimizer-bench")
    model.ir_version = 8
    return model.SerializeToString(), node.op_type


def ort_int8(p: LinearProblem, threads: int, op: str, unsigned: bool) -> Runner:
    """One ORT int8 variant, run through IOBinding on pre-allocated input and output buffers."""
    import onnxruntime as ort

    blob, op_type = _ort_model(p, op, unsigned)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    x = (p.x.astype(np.int16) + 128).astype(np.uint8) if unsigned else p.x.copy()
    out_np = np.int32 if op == "matmulinteger" else (np.uint8 if unsigned else np.int8)
    x_val = ort.OrtValue.ortvalue_from_numpy(x)
    y_val = ort.OrtValue.ortvalue_from_shape_and_type([p.m, p.n], out_np)
    binding = sess.io_binding()
    binding.bind_ortvalue_input("x", x_val)
    binding.bind_ortvalue_output("y", y_val)
    run = functools.partial(sess.run_with_iobinding, binding)

    def result() -> np.ndarray:
        run()
        y = y_val.numpy()
        if unsigned and op != "matmulinteger":
            y = (y.astype(np.int16) - 128).astype(np.int8)
        return y

    tag = f"{op}-{'u8' if unsigned else 's8'}"
    kind = "s32" if op == "matmulinteger" else "s8"
    return Runner(
        f"ort:{tag}",
        run,
        result,
        kind,
        f"onnxruntime {op_type} ({'u8' if unsigned else 's8'} x s8)",
        with_bias=op == "qgemm",
        keep=[sess, x_val, y_val, binding, x],
    )


# ---- LiteRT --------------------------------------------------------------------------------


# The TFLite flatbuffer writer lives in the package (the exporter uses it too).
from optimizer.export.tflite_schema import TfliteModelBuilder  # noqa: E402


def build_fully_connected_int8(p: LinearProblem, per_channel: bool = True) -> bytes:
    """A .tflite with one int8 FULLY_CONNECTED: x int8 [M, K] -> y int8 [M, N].

    Weights int8 [N, K] (zero point 0, per-channel scales on dimension 0, or their mean per
    tensor), bias int32 [N] with scale input_scale * weight_scale, per the TFLite int8 spec.
    """
    tb = TfliteModelBuilder(description=f"edge-optimizer bench FC {p.m}x{p.k}x{p.n}")
    w_scales = p.weight_scales if per_channel else np.array([p.weight_scales.mean()])
    w_buf = tb.add_buffer(np.ascontiguousarray(p.w, dtype=np.int8))
    if per_channel:
        bias_q = p.bias.astype(np.int32)
    else:  # re-express the bias at the one scale
        bias_q = np.round(p.bias * p.weight_scales / w_scales[0]).astype(np.int32)
    b_buf = tb.add_buffer(bias_q)
    t_x = tb.add_tensor(
        "x", (p.m, p.k), tb.INT8, scale=p.input_scale, zero_point=p.input_zero_point
    )
    t_w = tb.add_tensor("w", (p.n, p.k), tb.INT8, w_buf, scale=w_scales, zero_point=0)
    t_b = tb.add_tensor(
        "bias", (p.n,), tb.INT32, b_buf, scale=p.input_scale * w_scales, zero_point=0
    )
    t_y = tb.add_tensor(
        "y", (p.m, p.n), tb.INT8, scale=p.output_scale, zero_point=p.output_zero_point
    )
    # Op version: 4 = int8 FC, 12 = per-channel int8 weights (lite/tools/versioning/op_version.cc).
    tb.add_operator(
        tb.FULLY_CONNECTED,
        [t_x, t_w, t_b],
        [t_y],
        tb.FULLY_CONNECTED_OPTIONS,
        tb.fully_connected_options(),
        version=12 if per_channel else 4,
    )
    return tb.finish([t_x], [t_y])


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


def _litert_interpreter_cls() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            from tensorflow.lite import Interpreter
    return Interpreter


def litert_delegated_ops(interpreter: Any) -> list[str]:
    """Op names of the interpreter's nodes.

    The original FULLY_CONNECTED stays listed; when the XNNPACK delegate claims it, a 'DELEGATE'
    node is added, which replaces it in the execution plan.
    """
    try:
        return [str(d.get("op_name", "")) for d in interpreter._get_ops_details()]
    except Exception:  # private API; only used to report
        return []


def litert_fully_connected(p: LinearProblem, threads: int, model: bytes | None = None) -> Runner:
    """LiteRT with its default XNNPACK delegate, num_threads=threads."""
    interpreter_cls = _litert_interpreter_cls()
    blob = model if model is not None else build_fully_connected_int8(p)
    with _quiet_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" on every creation
        interp = interpreter_cls(model_content=blob, num_threads=threads)
        interp.allocate_tensors()
    ops = litert_delegated_ops(interp)
    if ops and "DELEGATE" not in ops:
        raise RuntimeError(
            f"litert_fully_connected: FULLY_CONNECTED was not delegated to XNNPACK; nodes {ops}"
        )
    in_idx = interp.get_input_details()[0]["index"]
    out_idx = interp.get_output_details()[0]["index"]
    x = p.x.copy()
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def run() -> Any:
        set_tensor(in_idx, x)
        invoke()

    def result() -> np.ndarray:
        run()
        return get_tensor(out_idx)

    how = "XNNPACK delegate" if "DELEGATE" in ops else "delegation unknown"
    return Runner(
        "litert", run, result, "s8", f"LiteRT FULLY_CONNECTED int8 ({how})", [interp, x, blob]
    )


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


def peer_versions() -> dict[str, str]:
    """Installed versions of the peers ("missing" when not importable)."""
    out: dict[str, str] = {}
    for label, mod in (
        ("torch", "torch"),
        ("onnxruntime", "onnxruntime"),
        ("onnx", "onnx"),
        ("ai-edge-litert", "ai_edge_litert"),
        ("numpy", "numpy"),
        ("flatbuffers", "flatbuffers"),
    ):
        try:
            m = __import__(mod)
            out[label] = str(getattr(m, "__version__", None) or _dist_version(label))
        except ImportError:
            out[label] = "missing"
    return out


def _dist_version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "?"


# --------------------------------------------------------------------------------------------
# Whole models (benchmarks/e2e.py): float in, float out, batch fixed by the caller's input
# --------------------------------------------------------------------------------------------


def torch_model_runner(model: Any, x: Any, name: str = "torch", detail: str = "") -> Runner:
    """``model(x)`` under ``torch.inference_mode`` (threads: ``torch.set_num_threads``).

    Example:
        >>> r = torch_model_runner(torch.nn.Linear(4, 2).eval(), torch.zeros(1, 4))
        >>> r.result().shape
        (1, 2)
    """
    import torch

    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    def result() -> np.ndarray:
        return run().float().numpy()

    return Runner(name, run, result, "f32", detail or "PyTorch eager", [model, x])


def ort_quantize_static_qdq(
    model: Any,
    calibration: list[Any],
    path: str | os.PathLike,
    activation_type: str = "int8",
) -> os.PathLike:
    """ONNX Runtime's own static int8: ``torch.onnx.export`` (dynamic batch) then
    ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights, MinMax over the
    ``calibration`` batches). ``activation_type``: ``"int8"`` (ORT's recommended S8S8) or
    ``"uint8"`` (U8S8). Writes the int8 model to ``path`` and returns it.

    Example:
        >>> ort_quantize_static_qdq(model, [x_train[:64]], "model_int8.onnx")
        PosixPath('model_int8.onnx')
    """
    import copy
    import tempfile

    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if activation_type not in ("int8", "uint8"):
        raise ValueError(
            f"ort_quantize_static_qdq: activation_type must be 'int8' or 'uint8', "
            f"got {activation_type!r}"
        )
    if not calibration:
        raise ValueError("ort_quantize_static_qdq: calibration is empty; pass >= 1 input batch")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": c.numpy()} for c in calibration])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    from pathlib import Path

    from optimizer._util import atomic_write

    out = Path(path)
    act = QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings(), _quiet_stderr():
        warnings.simplefilter("ignore")
        f32 = os.path.join(d, "model.onnx")
        torch.onnx.export(
            copy.deepcopy(model).eval(),
            (calibration[0][:1],),
            f32,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )
        tmp = os.path.join(d, "model_int8.onnx")
        quantize_static(
            f32,
            tmp,
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=act,
            weight_type=QuantType.QInt8,
        )
        blob = Path(tmp).read_bytes()
    return atomic_write(out, lambda f: f.write(blob))


def ort_session(path: str | os.PathLike, threads: int) -> Any:
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads (the caller's thread counts
    as one, as in LiteRT and ours), one inter-op thread, sequential execution, every graph
    optimization (QDQ pairs fused into QLinearConv / QGemm ...), ORT's default spinning."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_model_runner(sess: Any, x: np.ndarray, name: str = "ort", detail: str = "") -> Runner:
    """One ``run_with_iobinding`` on pre-bound input ``x`` (float32) and a pre-allocated output.

    Example:
        >>> r = ort_model_runner(ort_session("model_int8.onnx", 1), x)
        >>> r.result().shape
        (1, 10)
    """
    import onnxruntime as ort

    x = np.ascontiguousarray(x, dtype=np.float32)
    out = sess.get_outputs()[0]
    y_shape = [x.shape[0] if not isinstance(d, int) else d for d in out.shape]
    x_val = ort.OrtValue.ortvalue_from_numpy(x)
    y_val = ort.OrtValue.ortvalue_from_shape_and_type(y_shape, np.float32)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(sess.get_inputs()[0].name, x_val)
    binding.bind_ortvalue_output(out.name, y_val)
    run = functools.partial(sess.run_with_iobinding, binding)

    def result() -> np.ndarray:
        run()
        return y_val.numpy().copy()

    return Runner(
        name, run, result, "f32", detail or "onnxruntime", keep=[sess, x, x_val, y_val, binding]
    )


def litert_model_runner(blob: bytes, x: np.ndarray, threads: int, name: str = "litert") -> Runner:
    """LiteRT on a whole ``.tflite`` model with its default XNNPACK delegate and
    ``num_threads=threads``; one call is ``set_tensor`` + ``invoke`` (the output stays in
    LiteRT's buffer). ``x`` must match the file's input (dtype and shape).

    Example:
        >>> r = litert_model_runner(Path("model.tflite").read_bytes(), x, threads=1)
        >>> r.result().shape
        (1, 10)
    """
    interpreter_cls = _litert_interpreter_cls()
    with _quiet_stderr():
        interp = interpreter_cls(model_content=blob, num_threads=threads)
        interp.allocate_tensors()
    ops = litert_delegated_ops(interp)
    d_in = interp.get_input_details()[0]
    in_idx = d_in["index"]
    out_idx = interp.get_output_details()[0]["index"]
    x = np.ascontiguousarray(x).astype(d_in["dtype"], copy=False).reshape(d_in["shape"])
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def run() -> Any:
        set_tensor(in_idx, x)
        invoke()

    def result() -> np.ndarray:
        run()
        return get_tensor(out_idx).copy()

    kept = [o for o in ops if o != "DELEGATE"]
    if "DELEGATE" in ops:
        how = f"XNNPACK delegate, {len(kept)} nodes before delegation"
    else:
        how = "NOT delegated: built-in kernels" if ops else "delegation unknown"
    return Runner(name, run, result, "f32", f"LiteRT ({how})", keep=[interp, x, blob])


def litert_delegation(r: Runner) -> str:
    """``"xnnpack"`` when the runner's interpreter has a DELEGATE node, ``"none"`` when it has
    nodes but no delegate, ``"unknown"`` when LiteRT does not say."""
    interp = r.keep[0] if r.keep else None
    ops = litert_delegated_ops(interp) if interp is not None else []
    if not ops:
        return "unknown"
    return "xnnpack" if "DELEGATE" in ops else "none"
