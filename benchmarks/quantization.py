"""int8 quantization on sklearn digits: ours (PTQ per tensor / per channel, QAT) vs PyTorch and
ONNX Runtime.

For the VGG-, ResNet- and MobileNetV2-style CNNs of ``optimizer.examples.digits`` (trained once on
the seed-0 split and cached by ``digits.pretrained``), one run measures test accuracy (450 images)
of:

* ``fp32``: the trained float model;
* ``ours PTQ/tensor`` and ``ours PTQ/channel``: ``optimizer.quantize_`` with one weight scale per
  layer or per output channel, calibrated on the first ``--calib`` training images (the same
  images for every contestant), integer-exact int8 inside;
* ``ours QAT``: ``prepare_qat_`` (ranges initialized on the calibration images), then
  ``distill_`` from the float model for ``--qat-epochs`` epochs, then ``convert_``;
* ``PyTorch x86``: ``torch.ao.quantization`` FX graph mode (``prepare_fx`` / ``convert_fx`` with
  the x86 qconfig mapping), calibrated on the same images (PyTorch warns that this API is
  deprecated: it is still what PyTorch ships);
* ``ORT int8``: ``torch.onnx.export`` then ``onnxruntime.quantization.quantize_static`` (QDQ,
  per-channel int8 weights, int8 activations, MinMax calibration on the same images).

It prints the accuracy table, the SQNR of each int8 model's logits against the float model's
(digits is an easy task where most int8 models tie on accuracy; the SQNR still separates them), a
table of our per-channel PTQ with each observer, and PASS/FAIL
lines for the issue's targets: ours per-channel within 0.5 point of fp32 and >= PyTorch's and
ONNX Runtime's; ours QAT within 0.2 point of fp32. A benchmark prints; it never fails a build.

    python benchmarks/quantization.py            # full run (a few minutes on 2 cores)
    python benchmarks/quantization.py --quick    # smoke run: fewer images, 1 QAT epoch
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.distill.core import DistillConfig, distill_  # noqa: E402
from optimizer.examples import digits  # noqa: E402
from optimizer.quantize.ptq import Int8Config, quantize_  # noqa: E402
from optimizer.quantize.qat import convert_, prepare_qat_  # noqa: E402
from optimizer.share.share import WeightShareConfig, share_weights_  # noqa: E402

COLUMNS = [
    "fp32",
    "ours PTQ/tensor",
    "ours PTQ/channel",
    "ours QAT",
    "PyTorch x86",
    "ORT int8",
    "ours share16+int8",
]
OBSERVERS = ["minmax", "moving_average", "percentile", "mse"]


@contextlib.contextmanager
def _quiet():
    """Silences the peers' deprecation warnings and log lines (they go to stderr)."""
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.getLogger().setLevel(level)


def _accuracy(predict: Callable[[torch.Tensor], torch.Tensor], x, y) -> float:
    with torch.no_grad():
        return float((predict(x).argmax(1) == y).float().mean()) * 100.0


def _sqnr_db(ref: torch.Tensor, got: torch.Tensor) -> float:
    err = float(((got.double() - ref.double()) ** 2).sum())
    return float("inf") if err == 0 else 10 * math.log10(float((ref.double() ** 2).sum()) / err)


def torch_x86_ptq(model: nn.Module, calib: list[torch.Tensor]) -> nn.Module:
    """PyTorch's own int8 PTQ: FX graph mode with the x86 qconfig mapping."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    m = copy.deepcopy(model).eval()
    with _quiet():
        prepared = prepare_fx(m, get_default_qconfig_mapping("x86"), (calib[0],))
        with torch.no_grad():
            for c in calib:
                prepared(c)
        return convert_fx(prepared)


def ort_static_int8(model: nn.Module, calib: list[torch.Tensor], threads: int) -> Callable:
    """ONNX Runtime static int8: QDQ, per-channel int8 weights, MinMax calibration
    (``_peers.ort_quantize_static_qdq``)."""
    import onnxruntime as ort
    from _peers import ort_quantize_static_qdq

    with tempfile.TemporaryDirectory() as d:
        with _quiet():
            i8 = ort_quantize_static_qdq(model, calib, os.path.join(d, "model_int8.onnx"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(i8), opts, providers=["CPUExecutionProvider"])

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])

    return predict


def ours_qat(model: nn.Module, calib, train_loader, args) -> nn.Module:
    qat = prepare_qat_(model, Int8Config(), (calib[0],), calibration=calib)
    cfg = DistillConfig(
        epochs=args.qat_epochs,
        lr=args.qat_lr,
        temperature=args.temperature,
        alpha=args.alpha,
        progress=False,
        seed=0,
    )
    distill_(qat, model, train_loader, cfg)
    return convert_(qat.eval())


def shared_int8(model: nn.Module, calib: list, train_loader, args) -> nn.Module:
    """16 shared values per layer (exact optimal 1-D clustering, zeros kept), a short distillation
    from the float model with gradients pooled per cluster (the weights stay shared), then int8
    PTQ per channel: each channel keeps at most 16 distinct int8 values (4-bit codebooks)."""
    shared = copy.deepcopy(model)
    share = share_weights_(shared, WeightShareConfig(clusters=16, method="optimal"))
    if args.share_epochs:
        cfg = DistillConfig(epochs=args.share_epochs, lr=5e-4, alpha=0.5, progress=False, seed=0)
        distill_(shared, model, train_loader, cfg)
    share.remove()
    return quantize_(shared.eval(), Int8Config(per_channel=True, observer=args.observer), calib)


def lowrank_mlp(args, train_loader, data) -> dict[str, Any]:
    """The digits MLP factorized by SVD to half its MACs, then distilled from the original."""
    from optimizer.graph.profile import count_macs
    from optimizer.lowrank import LowRankConfig, factorize_

    _, _, x_test, y_test = data
    base = digits.pretrained("mlp").eval()
    x = torch.zeros(1, 1, 8, 8)
    small = copy.deepcopy(base)
    factorize_(small, LowRankConfig(macs_reduction=2.0), x)
    before = _accuracy(small.eval(), x_test, y_test)
    cfg = DistillConfig(epochs=args.lowrank_epochs, lr=5e-4, progress=False, seed=0)
    distill_(small, base, train_loader, cfg)
    return {
        "fp32": _accuracy(base, x_test, y_test),
        "svd": before,
        "svd+KD": _accuracy(small.eval(), x_test, y_test),
        "macs_ratio": count_macs(base, x) / count_macs(small, x),
        "epochs": args.lowrank_epochs,
    }


def bench_model(name: str, args, train_loader, data) -> dict[str, Any]:
    x_train, _, x_test, y_test = data
    calib = [x_train[i : i + 64] for i in range(0, args.calib, 64)]
    base = digits.pretrained(name).eval()
    row: dict[str, Any] = {
        "model": name,
        "acc": {},
        "sqnr_db": {},
        "seconds": {},
        "observers": {},
        "errors": {},
    }
    with torch.no_grad():
        ref = base(x_test)

    def run(col: str, make: Callable[[], Callable]) -> None:
        t0 = time.perf_counter()
        try:
            predict = make()
            with torch.no_grad():
                logits = predict(x_test)
            row["acc"][col] = float((logits.argmax(1) == y_test).float().mean()) * 100.0
            row["sqnr_db"][col] = _sqnr_db(ref, logits)
        except Exception as e:  # a peer that cannot run is reported, not fatal
            row["acc"][col] = None
            row["sqnr_db"][col] = None
            row["errors"][col] = f"{type(e).__name__}: {e}"[:200]
        row["seconds"][col] = time.perf_counter() - t0

    run("fp32", lambda: base)
    run(
        "ours PTQ/tensor",
        lambda: quantize_(base, Int8Config(per_channel=False, observer=args.observer), calib),
    )
    run(
        "ours PTQ/channel",
        lambda: quantize_(base, Int8Config(per_channel=True, observer=args.observer), calib),
    )
    run("ours QAT", lambda: ours_qat(base, calib, train_loader, args))
    run("PyTorch x86", lambda: torch_x86_ptq(base, calib))
    run("ORT int8", lambda: ort_static_int8(base, calib, args.threads))
    run("ours share16+int8", lambda: shared_int8(base, calib, train_loader, args))
    for obs in OBSERVERS:
        q = quantize_(base, Int8Config(per_channel=True, observer=obs), calib)
        row["observers"][obs] = _accuracy(q, x_test, y_test)
    return row


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _table(rows: list[dict]) -> str:
    out = ["| model | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        fp = r["acc"]["fp32"]
        cells = []
        for c in COLUMNS:
            v = r["acc"].get(c)
            delta = "" if c == "fp32" or v is None or fp is None else f" ({v - fp:+.2f})"
            cells.append(_fmt(v) + delta)
        out.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _sqnr_table(rows: list[dict]) -> str:
    cols = COLUMNS[1:]
    out = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        cells = [_fmt(r["sqnr_db"].get(c)) for c in cols]
        out.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _observer_table(rows: list[dict]) -> str:
    out = ["| model | " + " | ".join(OBSERVERS) + " |", "|---|" + "---:|" * len(OBSERVERS)]
    for r in rows:
        out.append(
            f"| {r['model']} | " + " | ".join(_fmt(r["observers"][o]) for o in OBSERVERS) + " |"
        )
    return "\n".join(out)


def _verdicts(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        a = r["acc"]
        fp, pc, qat = a["fp32"], a["ours PTQ/channel"], a["ours QAT"]
        checks = [
            (f"ours PTQ/channel {_fmt(pc)} within 0.5 pt of fp32 {_fmt(fp)}",
             pc is not None and pc >= fp - 0.5),
            (f"ours PTQ/channel {_fmt(pc)} >= PyTorch x86 {_fmt(a['PyTorch x86'])}",
             pc is not None and (a["PyTorch x86"] is None or pc >= a["PyTorch x86"])),
            (f"ours PTQ/channel {_fmt(pc)} >= ORT int8 {_fmt(a['ORT int8'])}",
             pc is not None and (a["ORT int8"] is None or pc >= a["ORT int8"])),
            (f"ours QAT {_fmt(qat)} within 0.2 pt of fp32 {_fmt(fp)}",
             qat is not None and qat >= fp - 0.2),
            (f"ours share16+int8 {_fmt(a['ours share16+int8'])} within 1 pt of fp32 {_fmt(fp)}",
             a["ours share16+int8"] is not None and a["ours share16+int8"] >= fp - 1.0),
        ]  # fmt: skip
        for text, ok in checks:
            lines.append(f"{'PASS' if ok else 'FAIL'}  {r['model']}: {text}")
        for col, err in r["errors"].items():
            lines.append(f"NOTE  {r['model']}: {col} did not run: {err}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["vgg", "resnet", "mobilenetv2"])
    ap.add_argument("--calib", type=int, default=512, help="calibration images (train split)")
    ap.add_argument("--observer", default="minmax", help="our observer for the PTQ columns")
    ap.add_argument("--qat-epochs", type=int, default=3)
    ap.add_argument("--qat-lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lowrank-epochs", type=int, default=5, help="distillation after SVD")
    ap.add_argument("--share-epochs", type=int, default=2, help="distillation while shared")
    ap.add_argument("--quick", action="store_true", help="128 calibration images, 1 QAT epoch")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.calib, args.qat_epochs, args.lowrank_epochs, args.share_epochs = 128, 1, 1, 1
    torch.set_num_threads(args.threads)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # the quantizer's graph clean-up warnings are noise

    data = digits.load_digits_split(seed=0)
    train_loader, _ = digits.loaders(batch_size=64, seed=0)
    print(
        f"# int8 quantization on sklearn digits (seed-0 split, {len(data[3])} test images), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, {args.threads} thread(s); calibration: first "
        f"{args.calib} training images; our PTQ observer {args.observer!r}; QAT: "
        f"{args.qat_epochs} epoch(s) of distillation at lr {args.qat_lr}"
    )
    rows = []
    t0 = time.time()
    for name in args.models:
        rows.append(bench_model(name, args, train_loader, data))
    print("\nTop-1 accuracy % (change vs fp32):\n")
    print(_table(rows))
    print("\nLogits SQNR vs fp32 on the test images, dB (higher = closer to the float model):\n")
    print(_sqnr_table(rows))
    print("\nOurs PTQ per channel, by observer (accuracy %):\n")
    print(_observer_table(rows))
    lr = lowrank_mlp(args, train_loader, data)
    print(
        f"\nLow rank: digits MLP, SVD to {lr['macs_ratio']:.2f}x fewer MACs: "
        f"fp32 {lr['fp32']:.2f}, after SVD {lr['svd']:.2f}, after {lr['epochs']} epochs of "
        f"distillation {lr['svd+KD']:.2f}"
    )
    print()
    for line in _verdicts(rows):
        print(line)
    ok = lr["svd+KD"] >= lr["fp32"] - 1.0 and lr["macs_ratio"] >= 2.0
    print(
        f"{'PASS' if ok else 'FAIL'}  mlp: SVD at {lr['macs_ratio']:.2f}x fewer MACs + "
        f"distillation {lr['svd+KD']:.2f} within 1 pt of fp32 {lr['fp32']:.2f}"
    )
    print(f"\n(total {time.time() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
        args.json.with_suffix(".lowrank.json").write_text(json.dumps(lr, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
