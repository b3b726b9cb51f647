"""Latency and accuracy measurement shared by the CLI's ``bench``, the demo and the report.

Every runtime is timed the same way: batch 1, ``warmup`` untimed calls, then ``runs`` timed
calls, each with its own clock reads; the median and the 90th percentile are reported.

Example::

    from optimizer.measure import time_us, litert_predictor
    median, p90 = time_us(lambda: rt.run(x), runs=300, warmup=30)
    predict = litert_predictor("model.tflite", threads=1)
    logits = predict(x)            # NCHW float in, float out, whatever the file's I/O dtype
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["accuracy", "litert_predictor", "time_interleaved", "time_us"]


def time_us(fn: Callable[[], Any], runs: int, warmup: int) -> tuple[float, float]:
    """Median and 90th-percentile latency of ``fn()`` in µs over ``runs`` calls after
    ``warmup`` untimed calls.

    Example:
        >>> time_us(lambda: sum(range(100)), runs=50, warmup=5)[0] > 0
        True
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"time_us: runs must be >= 1 and warmup >= 0; got {runs}, {warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
    return statistics.median(times) * 1e6, p90 * 1e6


def time_interleaved(
    fns: dict[str, Callable[[], Any]], runs: int, warmup: int, rounds: int = 10
) -> dict[str, tuple[float, float]]:
    """Median and 90th-percentile µs of each callable, timed in ``rounds`` alternating blocks of
    ``runs // rounds`` calls (each block after ``warmup // rounds`` untimed calls), so a machine
    whose speed drifts over seconds treats every contestant alike.

    Example:
        >>> t = time_interleaved({"a": lambda: None, "b": lambda: sum(range(9))}, 100, 10)
        >>> sorted(t)
        ['a', 'b']
    """
    if runs < 1 or warmup < 0 or rounds < 1:
        raise ValueError(
            f"time_interleaved: runs >= 1, warmup >= 0, rounds >= 1; got {runs}, {warmup}, {rounds}"
        )
    rounds = min(rounds, runs)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(max(1, warmup // rounds)):
                fn()
            for _ in range(runs // rounds):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in samples.items():
        ts.sort()
        out[name] = (statistics.median(ts) * 1e6, ts[min(len(ts) - 1, int(0.9 * len(ts)))] * 1e6)
    return out


def accuracy(predict: Callable[[np.ndarray], Any], x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in % of ``predict`` over the samples of ``x`` one at a time (batch 1).

    Example:
        >>> accuracy(rt.run, x_test, y_test)
        98.9
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"accuracy: need as many labels as samples (> 0); got {len(x)}, {len(y)}")
    hits = sum(int(np.argmax(predict(x[i : i + 1])) == y[i]) for i in range(len(x)))
    return 100.0 * hits / len(x)


def litert_predictor(path: str | Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A predictor on LiteRT's default interpreter (XNNPACK delegate) for a ``.tflite`` file.

    It takes what the PyTorch model takes (float32, images NCHW) and returns float32 outputs,
    whatever the file's I/O: NHWC image inputs are transposed, int8 inputs and outputs are
    (de)quantized with the file's own scale and zero point.

    Example:
        >>> predict = litert_predictor("model.tflite", threads=2)
        >>> predict(np.zeros((1, 1, 8, 8), np.float32)).shape
        (1, 10)
    """
    from optimizer.export.tflite import litert_interpreter_cls

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"litert_predictor: `{p}` does not exist or is not a file")
    cls, _ = litert_interpreter_cls()
    interp = cls(model_path=str(p), num_threads=int(threads))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    shape = tuple(int(d) for d in inp["shape"])

    def predict(x: np.ndarray) -> np.ndarray:
        v = np.asarray(x, dtype=np.float32)
        if v.ndim == 4 and v.shape != shape and v.transpose(0, 2, 3, 1).shape == shape:
            v = v.transpose(0, 2, 3, 1)  # NCHW -> the file's NHWC
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            v = np.clip(np.round(v / s) + z, -128, 127)
        interp.set_tensor(inp["index"], np.ascontiguousarray(v, dtype=inp["dtype"]))
        interp.invoke()
        o = interp.get_tensor(out["index"])
        if out["dtype"] == np.int8:
            s, z = out["quantization"]
            o = (o.astype(np.float32) - z) * s
        return o

    return predict
