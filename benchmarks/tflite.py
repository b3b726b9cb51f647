"""TFLite export on digits: LiteRT vs our int8 module, and our file vs TFLiteConverter's.

For the VGG-, ResNet- and MobileNetV2-style CNNs (``digits.pretrained``, seed-0 split), one run
quantizes each with ``optimizer.quantize_`` (per channel, calibrated on 256 training images),
exports it with ``optimizer.export.tflite.export_tflite`` (int8 in/out, batch 1) and prints:

* agreement with the integer-exact PyTorch module on the 450 test images under LiteRT's default
  kernels (XNNPACK delegate): max |diff| in units, % of output values within 1 unit, top-1
  agreement; and whether LiteRT's reference kernels reproduce every layer bit for bit;
* the peer: TFLiteConverter's own full-integer int8 export of the same float model, by the route a
  user without a PyTorch converter takes: the same architecture rebuilt in Keras (NHWC) with the
  same weights (BatchNorm folded, as in our file), checked against PyTorch, converted with a
  representative dataset of the same 256 training images, int8 input and output;
* for both files, in the same run and the same interpreter: LiteRT int8 latency (1 thread, median
  of ``--repeats`` invokes, the two files' invokes interleaved; XNNPACK and LiteRT's built-in
  kernels), file size, TRANSPOSE count, op list, and top-1 accuracy on the test images.

TFLiteConverter needs TensorFlow, which the project does not require: ``pip install -r
requirements-tflite.txt``. Without it each model prints ``peer n/a: <reason>`` and the peer
columns say ``n/a``; everything else still runs. A benchmark prints; it never fails a build.

``--requantization fp32`` quantizes with XNNPACK's arithmetic (``Int8Config(requantization=
"fp32")``): LiteRT's default kernels then agree with the module bit for bit where XNNPACK runs the
layer, and its reference kernels (gemmlowp arithmetic) no longer do.

    python benchmarks/tflite.py [--repeats 300] [--models vgg,resnet,mobilenetv2] [--no-peer]
        [--requantization gemmlowp|fp32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optimizer  # noqa: E402
from optimizer.examples import digits  # noqa: E402
from optimizer.export.tflite import (  # noqa: E402
    _float_graph,
    _interpreter,
    _quiet_stderr,
    _same_padding,
    export_tflite,
)

NAMES = ("vgg", "resnet", "mobilenetv2")
TF_HINT = "TensorFlow is not installed (pip install -r requirements-tflite.txt)"


# ---- the peer: Keras twin + TFLiteConverter ---------------------------------------------------


def _import_tf() -> tuple[Any, str]:
    """(tensorflow, "") or (None, why not)."""
    try:
        with _quiet_stderr():
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import tensorflow as tf
    except ImportError as e:
        return None, f"{TF_HINT}: {e}"
    return tf, ""


def keras_twin(tf: Any, model: nn.Module, example: torch.Tensor) -> Any:
    """The same architecture in Keras (NHWC, batch 1) with ``model``'s weights, BatchNorm folded
    into the convs (what TFLiteConverter would fold too). Raises ValueError on a layer it does
    not rebuild."""
    layers = tf.keras.layers
    gm = _float_graph(model, (example[:1],))
    vals: dict[str, tuple[Any, str, tuple[int, int, int] | None]] = {}
    out = None
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            _, c, h, w = example.shape
            vals[n.name] = (tf.keras.Input(shape=(h, w, c), batch_size=1, name="x"), "nhwc", None)
            continue
        if n.op == "output":
            out = vals[n.args[0].name][0]
            continue
        src = n.args[0] if n.args else None
        x, lay, chw = vals[src.name] if src is not None and src.name in vals else (None, "", None)
        target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
        mod = gm.get_submodule(n.target) if n.op == "call_module" else None
        if isinstance(mod, nn.Conv2d):
            h, w = x.shape[1], x.shape[2]
            modes = {
                _same_padding(size, k, s, d, p)
                for size, k, s, d, p in zip(
                    (h, w), mod.kernel_size, mod.stride, mod.dilation, mod.padding
                )
            }
            pad = "same" if modes == {"SAME"} else "valid"
            if pad == "valid" and modes != {"VALID"}:
                ph, pw = mod.padding
                x = layers.ZeroPadding2D(((ph, ph), (pw, pw)))(x)
            wt = mod.weight.detach().numpy()
            b = mod.bias.detach().numpy() if mod.bias is not None else np.zeros(wt.shape[0])
            if mod.groups == 1:
                layer = layers.Conv2D(
                    wt.shape[0], mod.kernel_size, mod.stride, pad, dilation_rate=mod.dilation
                )
                y = layer(x)
                layer.set_weights([wt.transpose(2, 3, 1, 0), b])
            elif mod.groups == mod.in_channels:
                mult = mod.out_channels // mod.in_channels
                layer = layers.DepthwiseConv2D(
                    mod.kernel_size,
                    mod.stride,
                    pad,
                    depth_multiplier=mult,
                    dilation_rate=mod.dilation,
                )
                y = layer(x)
                kh, kw = mod.kernel_size
                dw = wt.reshape(mod.in_channels, mult, kh, kw).transpose(2, 3, 0, 1)
                layer.set_weights([dw, b])
            else:
                raise ValueError(f"keras_twin: grouped conv `{n.target}`")
            vals[n.name] = (y, "nhwc", None)
        elif isinstance(mod, nn.Linear):
            wt = mod.weight.detach().numpy()
            if lay == "hwc":  # Keras flattens NHWC in (H, W, C) order
                c, h, w = chw
                wt = wt.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(wt.shape[0], -1)
            layer = layers.Dense(wt.shape[0])
            y = layer(x)
            b = mod.bias.detach().numpy() if mod.bias is not None else np.zeros(wt.shape[0])
            layer.set_weights([wt.T, b])
            vals[n.name] = (y, "plain", None)
        elif isinstance(mod, nn.ReLU6) or target == "relu6":
            vals[n.name] = (layers.ReLU(max_value=6.0)(x), lay, chw)
        elif isinstance(mod, nn.ReLU) or target == "relu":
            vals[n.name] = (layers.ReLU()(x), lay, chw)
        elif isinstance(mod, nn.MaxPool2d) and mod.padding in (0, (0, 0)):
            vals[n.name] = (layers.MaxPool2D(mod.kernel_size, mod.stride)(x), "nhwc", None)
        elif isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1)):
            vals[n.name] = (layers.GlobalAveragePooling2D(keepdims=True)(x), "nhwc", None)
        elif isinstance(mod, (nn.Dropout, nn.Identity)):
            vals[n.name] = (x, lay, chw)
        elif target == "add":
            b_, _, _ = vals[n.args[1].name]
            vals[n.name] = (layers.Add()([x, b_]), lay, chw)
        elif target in ("flatten", "view", "reshape") or isinstance(mod, nn.Flatten):
            _, h, w, c = x.shape
            lay2, chw2 = ("plain", None) if h * w == 1 else ("hwc", (c, h, w))
            vals[n.name] = (layers.Flatten()(x), lay2, chw2)
        elif n.op == "call_method" and target == "size":
            continue
        else:
            raise ValueError(f"keras_twin: no Keras layer for `{n.name}` ({n.op} {target})")
    return tf.keras.Model(vals[next(iter(gm.graph.nodes)).name][0], out)


def tf_converter_int8(
    model: nn.Module, calib: torch.Tensor, x_check: torch.Tensor
) -> tuple[bytes | None, str]:
    """TFLiteConverter's full-integer export (int8 in/out) of ``model`` rebuilt in Keras, or
    (None, why it was not run). The Keras twin is checked against PyTorch first."""
    tf, why = _import_tf()
    if tf is None:
        return None, why
    try:
        km = keras_twin(tf, model, calib)
    except ValueError as e:
        return None, str(e)
    with torch.no_grad():
        ref = model(x_check[:1]).numpy()
    got = km(x_check[:1].permute(0, 2, 3, 1).numpy()).numpy()
    if np.abs(got - ref).max() > 1e-4 * max(1.0, float(np.abs(ref).max())):
        return None, f"the Keras twin differs from PyTorch by {np.abs(got - ref).max():.3g}"
    calib_nhwc = calib.permute(0, 2, 3, 1).numpy().astype(np.float32)

    def representative():
        for i in range(len(calib_nhwc)):
            yield [calib_nhwc[i : i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(km)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with _quiet_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blob = conv.convert()
    return bytes(blob), ""


# ---- measurements ------------------------------------------------------------------------------


def _make(blob: bytes, builtin: bool) -> Any:
    if not builtin:
        return _interpreter(blob)  # LiteRT's default: XNNPACK delegate
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with _quiet_stderr():
        interp = Interpreter(
            model_content=blob,
            num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
    return interp


def _quantized_input(interp: Any, x_nhwc: np.ndarray) -> np.ndarray:
    d = interp.get_input_details()[0]
    scale, zp = d["quantization"]
    if d["dtype"] == np.int8 and scale:
        return np.clip(np.round(x_nhwc / scale) + zp, -128, 127).astype(np.int8)
    return x_nhwc.astype(d["dtype"])


def interleaved_latency_us(
    blobs: list[bytes], x_nhwc: np.ndarray, repeats: int, builtin: bool
) -> list[float]:
    """Median wall time of one ``invoke`` per file (1 thread), the files' invokes interleaved so
    that both see the same machine state."""
    interps = [_make(b, builtin) for b in blobs]
    for it in interps:
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], _quantized_input(it, x_nhwc))
        for _ in range(20):
            it.invoke()
    times: list[list[float]] = [[] for _ in interps]
    for _ in range(repeats):
        for k, it in enumerate(interps):
            t = time.perf_counter()
            it.invoke()
            times[k].append(time.perf_counter() - t)
    return [statistics.median(t) * 1e6 for t in times]


def top1_accuracy(blob: bytes, x_nhwc: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the file (XNNPACK) on ``x_nhwc`` one image at a time."""
    it = _make(blob, builtin=False)
    d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
    xq = _quantized_input(it, x_nhwc)
    hits = 0
    for i in range(len(xq)):
        it.set_tensor(d_in["index"], xq[i : i + 1])
        it.invoke()
        hits += int(np.argmax(it.get_tensor(d_out["index"])[0]) == int(y[i]))
    return hits / len(xq)


def op_counts(blob: bytes) -> Counter:
    """Op name -> count, read with LiteRT's generated schema."""
    from ai_edge_litert import schema_py_generated as s

    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    m = s.Model.GetRootAsModel(blob, 0)
    codes = [m.OperatorCodes(i) for i in range(m.OperatorCodesLength())]
    out: Counter = Counter()
    for g in range(m.SubgraphsLength()):
        sg = m.Subgraphs(g)
        for i in range(sg.OperatorsLength()):
            c = codes[sg.Operators(i).OpcodeIndex()]
            out[names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "CUSTOM")] += 1
    return out


def _fmt_ops(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--models", default=",".join(NAMES), help="comma-separated digits models")
    ap.add_argument("--no-peer", action="store_true", help="skip TFLiteConverter")
    ap.add_argument(
        "--requantization",
        choices=["gemmlowp", "fp32"],
        default="gemmlowp",
        help="Int8Config.requantization of our module: TFLite's reference arithmetic or XNNPACK's",
    )
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    for n in names:
        if n not in digits.MODELS:
            ap.error(f"--models: unknown model {n!r}; expected some of {sorted(digits.MODELS)}")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)
    x_train, _, x_test, y_test = digits.load_digits_split(seed=0)
    x_test_nhwc = x_test.permute(0, 2, 3, 1).numpy()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, threads: 1")
    print(f"requantization: {args.requantization}")
    config = optimizer.Int8Config(requantization=args.requantization)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            model = digits.pretrained(name)
            calib = x_train[:256]
            q = optimizer.quantize_(model, config, calibration=[calib])
            r = export_tflite(q, x_test[:1], Path(tmp) / f"{name}.tflite", sample_inputs=x_test)
            ours = Path(r.path).read_bytes()
            if args.no_peer:
                theirs, why = None, "--no-peer"
            else:
                with contextlib.redirect_stdout(sys.stderr):
                    theirs, why = tf_converter_int8(model, calib, x_test)
            if theirs is None:
                print(f"{name}: peer n/a: {why}")
            blobs = [ours] + ([theirs] if theirs is not None else [])
            lat_x = interleaved_latency_us(blobs, x_test_nhwc[:1], args.repeats, builtin=False)
            lat_b = interleaved_latency_us(blobs, x_test_nhwc[:1], args.repeats, builtin=True)
            row: dict[str, Any] = dict(
                name=name,
                within=r.within_one,
                top1=r.top1_agreement,
                maxd=r.max_abs_diff,
                exact=r.first_diverging_layer is None,
                ours_x=lat_x[0],
                ours_b=lat_b[0],
                ours_kb=len(ours) / 1024,
                ours_ops=op_counts(ours),
                ours_acc=top1_accuracy(ours, x_test_nhwc, y_test.numpy()),
                peer=theirs is not None,
            )
            if theirs is not None:
                row.update(
                    tf_x=lat_x[1],
                    tf_b=lat_b[1],
                    tf_kb=len(theirs) / 1024,
                    tf_ops=op_counts(theirs),
                    tf_acc=top1_accuracy(theirs, x_test_nhwc, y_test.numpy()),
                )
            rows.append(row)
    print()
    print(
        "| model | within 1 unit (XNNPACK) | top-1 agree | max diff | ref. kernels bit-exact "
        "| ours XNNPACK us | TFLiteConverter XNNPACK us | ours/theirs | ours built-in us "
        "| theirs built-in us | size KiB ours / theirs | TRANSPOSE ours / theirs "
        "| top-1 acc ours / theirs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for w in rows:
        p = w["peer"]

        def peer(key: str, spec: str, w: dict = w, p: bool = p) -> str:
            return format(w[key], spec) if p else "n/a"

        ratio = format(w["ours_x"] / w["tf_x"], ".2f") if p else "n/a"
        tr_theirs = str(w["tf_ops"].get("TRANSPOSE", 0)) if p else "n/a"
        print(
            f"| {w['name']} | {w['within']:.2%} | {w['top1']:.2%} | {w['maxd']:g} | "
            f"{'yes' if w['exact'] else 'NO'} | {w['ours_x']:.1f} | {peer('tf_x', '.1f')} | "
            f"{ratio} | {w['ours_b']:.1f} | {peer('tf_b', '.1f')} | "
            f"{w['ours_kb']:.1f} / {peer('tf_kb', '.1f')} | "
            f"{w['ours_ops'].get('TRANSPOSE', 0)} / {tr_theirs} | "
            f"{w['ours_acc']:.2%} / {peer('tf_acc', '.2%')} |"
        )
    print()
    for w in rows:
        print(f"{w['name']} ops, ours: {_fmt_ops(w['ours_ops'])}")
        if w["peer"]:
            print(f"{w['name']} ops, TFLiteConverter: {_fmt_ops(w['tf_ops'])}")
    return rows


if __name__ == "__main__":
    main()
