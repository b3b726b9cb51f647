"""End to end on sklearn digits (issue 7's acceptance benchmark): our native runtime vs PyTorch,
ONNX Runtime and LiteRT on whole models, batch 1, with 1 and 2 threads.

For the VGG-, ResNet- and MobileNetV2-style CNNs and the MLP of ``optimizer.examples.digits``
(``digits.pretrained``, seed-0 split, inputs ``[1, 1, 8, 8]``), one run builds and checks:

* ours: ``optimizer.export_native`` + ``optimizer.runtime`` (``Runtime.run``, ``num_threads``) on
  * ``fp32``: the trained model;
  * ``int8``: ``optimizer.quantize_`` (per channel, calibrated on the first ``--calib`` training
    images), exported;
  * ``pruned int8``: ``optimizer.prune_channels_`` (50 % of the channels, BatchNorm-scale
    importance; L1 for the MLP), ``recalibrate_bn_``, ``--prune-epochs`` of ``distill_`` from the
    trained model (at ``--prune-lr``, the models' training rate), then ``quantize_`` like
    ``int8``;
* peers on the same models:
  * ``PyTorch fp32``: eager, ``torch.inference_mode``;
  * ``PyTorch x86 int8``: ``torch.ao.quantization`` FX graph mode (``prepare_fx`` /
    ``convert_fx``, x86 qconfig mapping; deprecated in PyTorch 2.13, still shipped), same
    calibration images;
  * ``ORT int8``: ``torch.onnx.export`` + ``onnxruntime.quantization.quantize_static`` (QDQ,
    per-channel int8 weights, MinMax on the same images), S8S8 and U8S8 activations both built
    and timed; the faster one is the column (the peer gets its best);
  * ``LiteRT int8``: our ``optimizer.export_tflite`` file of the ``int8`` module (float in/out:
    QUANTIZE / DEQUANTIZE inside) run by LiteRT's interpreter with its XNNPACK delegate.

Every contestant takes the same float32 input and returns float32 logits. Threads: ours
``Runtime.num_threads``, ``torch.set_num_threads``, ORT ``intra_op_num_threads`` (one inter-op
thread, sequential), LiteRT ``num_threads``; in each the calling thread counts as one. Peers are
timed on their lowest-overhead call (ORT IOBinding with pre-bound buffers, LiteRT
``set_tensor`` + ``invoke`` without reading the output); ours through the public
``Runtime.run(x)``, which allocates and returns its output, so the ratios are conservative.

Latency: after ``--warmup`` calls each, ``--runs`` timed calls per contestant, in ``--rounds``
interleaved rounds (each round pauses 20 ms so the previous contestant's spinning thread pool
parks, then re-warms the contestant with a few calls), so a slow phase of the machine hits
everyone; median and p90. Accuracy: every runtime on the 450 test
images (nobody wins by being wrong). Files: our ``.eom`` (fp32 / int8 / pruned int8), the ORT
``.onnx``, the LiteRT ``.tflite``, PyTorch state dicts.

Verdicts (issue 7): ours int8 faster than every peer's int8 on every model and thread count;
ours int8 >= 3x faster than PyTorch fp32; ``edgeopt-bench`` (``build/host/edgeopt-bench`` from
``make native``) median within 10 % of ``Runtime.profile(x, runs)``'s median total, each taken
as the median over 15 rounds of the ratio of the two medians measured back to back (rounds of half
the runs each that alternate the two and interleave a model's four comparisons)
(other tenants of a shared machine only add time; the median over rounds is printed too). A
contestant that cannot run shows ``n/a (reason)``; a benchmark prints, it never fails a build
(exit 0).

    python benchmarks/e2e.py                        # full run (minutes; on a quiet machine)
    python benchmarks/e2e.py --quick --models mlp   # smoke run
    python benchmarks/e2e.py --threads 1 --json e2e.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

# numpy's BLAS only evaluates accuracy here; its idle workers would spin on the cores of the
# contestant timed next (see benchmarks/gemm.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
for _p in (str(ROOT), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import _peers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import optimizer  # noqa: E402
from optimizer._util import atomic_write  # noqa: E402
from optimizer.examples import digits  # noqa: E402

MODELS = ("vgg", "resnet", "mobilenetv2", "mlp")
OURS = ("ours fp32", "ours int8", "ours pruned int8")
PEERS = ("PyTorch fp32", "PyTorch x86 int8", "ORT int8", "LiteRT int8")
PEER_INT8 = ("PyTorch x86 int8", "ORT int8", "LiteRT int8")
CONTESTANTS = OURS + PEERS
EXAMPLE = torch.zeros(1, 1, 8, 8)
DEFAULT_BENCH = ROOT / "build" / "host" / "edgeopt-bench"
SPEEDUP_VS_FP32 = 3.0  # issue 7: ours int8 >= 3x PyTorch fp32
BENCH_AGREEMENT = 0.10  # issue 7: edgeopt-bench median within 10 % of Runtime.profile
AGREEMENT_ROUNDS = 15  # rounds of edgeopt-bench / Runtime.profile per comparison (interleaved)
# Pause before each contestant's block of calls: thread pools spin after a call (ours ~50 us,
# libgomp in PyTorch and ORT's pool longer) and, with 2 threads on 2 cores, a pool still spinning
# would steal a core from the contestant timed next.
SETTLE_S = 0.02


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _why(e: BaseException) -> str:
    """One line naming the exception (the first line of its message)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


@contextlib.contextmanager
def _quiet() -> Any:
    """Hides the peers' deprecation warnings and their log lines on stderr."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _load_quantization_bench() -> Any:
    """benchmarks/quantization.py as a module (its ``torch_x86_ptq`` is PyTorch's PTQ recipe)."""
    spec = importlib.util.spec_from_file_location("_bench_quantization", _HERE / "quantization.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_HERE / 'quantization.py'} (PyTorch's PTQ recipe)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _state_dict_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def _has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _stats(samples: list[float]) -> dict[str, float]:
    """Median, p90 and min in microseconds."""
    a = np.asarray(samples) * 1e6
    return {
        "median_us": float(np.median(a)),
        "p90_us": float(np.percentile(a, 90)),
        "min_us": float(a.min()),
        "n": len(samples),
    }


def machine_info() -> dict[str, Any]:
    """CPU, ISA paths of our kernels, library versions.

    Example:
        >>> machine_info()["isa_paths"][-1]  # the best path this build runs here
        'avx512vnni'
    """
    info: dict[str, Any] = {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": _peers.peer_versions(),
    }
    try:
        from optimizer import kernels

        info["cpu"] = kernels.cpu_description()
        info["isa_paths"] = kernels.available_paths()
    except ImportError as e:
        info["cpu"] = platform.processor() or "unknown"
        info["isa_paths"] = []
        info["kernels_error"] = _why(e)
    info["torch_quantized_engines"] = list(torch.backends.quantized.supported_engines)
    return info


# --------------------------------------------------------------------------------------------
# Building every variant of one model
# --------------------------------------------------------------------------------------------


class Variant:
    """One contestant on one model: how to build a runner for a thread count, accuracy, file.

    Example:
        >>> v = Variant("ORT int8"); v.error = "ImportError: onnxruntime"  # shown as n/a (...)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.error: str | None = None  # why it cannot run
        self.make: Callable[[int], _peers.Runner] | None = None  # threads -> runner
        self.accuracy: float | None = None
        self.file: str | None = None  # what the size is of
        self.file_bytes: int | None = None
        self.detail = ""
        self.notes: list[str] = []
        self.eom: Path | None = None  # ours: the .eom file (edgeopt-bench / profile check)
        self.runtime: Any = None  # ours: the loaded Runtime


def _native_accuracy(rt: Any, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Runs the .eom model on every test image (its batch is fixed at 1)."""
    spec = rt.inputs[0]
    if np.dtype(spec["dtype"]) != np.float32:
        raise ValueError(f"the .eom input is {spec['dtype']}, expected float32 (float in/out)")
    xs = x_test.numpy().astype(np.float32)
    correct = 0
    for i in range(len(xs)):
        y = rt.run(np.ascontiguousarray(xs[i : i + 1].reshape(spec["shape"])))
        correct += int(np.argmax(y) == int(y_test[i]))
    return 100.0 * correct / len(xs)


def _ours(name: str, model: nn.Module, path: Path, data: tuple, x1: np.ndarray) -> Variant:
    """export_native + runtime.load; accuracy with the native runtime."""
    from optimizer import runtime

    v = Variant(name)
    _, _, x_test, y_test = data
    try:
        report = optimizer.export_native(model, (torch.from_numpy(x1),), path)
        v.eom, v.file, v.file_bytes = path, path.name, report.size_bytes
        rt = runtime.load(path)
        v.runtime = rt
        v.accuracy = _native_accuracy(rt, x_test, y_test)
        rt.run(x1)
        kernels = sorted({str(layer.get("kernel", "")) for layer in rt.layers} - {"", "alias"})
        v.detail = "kernels: " + ", ".join(kernels)

        def make(threads: int) -> _peers.Runner:
            rt.num_threads = threads
            run = lambda: rt.run(x1)  # noqa: E731 - the public call, as a user makes it
            return _peers.Runner(name, run, run, "f32", v.detail, keep=[rt, x1])

        v.make = make
    except Exception as e:  # a variant that cannot be exported or loaded is reported
        v.error = _why(e)
    return v


def _pytorch_fp32(model: nn.Module, data: tuple, x1: np.ndarray) -> Variant:
    v = Variant("PyTorch fp32")
    _, _, x_test, y_test = data
    with torch.inference_mode():
        v.accuracy = float((model(x_test).argmax(1) == y_test).float().mean()) * 100
    v.file, v.file_bytes = "state_dict fp32", _state_dict_bytes(model)
    xt = torch.from_numpy(x1.copy())
    v.detail = f"eager, torch {torch.__version__}"
    v.make = lambda threads: _peers.torch_model_runner(model, xt, v.name, v.detail)
    return v


def _pytorch_x86(model: nn.Module, calib: list, data: tuple, x1: np.ndarray) -> Variant:
    v = Variant("PyTorch x86 int8")
    _, _, x_test, y_test = data
    try:
        if "x86" not in torch.backends.quantized.supported_engines:
            raise RuntimeError(
                "torch.backends.quantized.supported_engines has no 'x86' "
                f"({torch.backends.quantized.supported_engines})"
            )
        qbench = _load_quantization_bench()
        with _quiet():
            qm = qbench.torch_x86_ptq(model, calib)
            with torch.inference_mode():
                v.accuracy = float((qm(x_test).argmax(1) == y_test).float().mean()) * 100
        v.file, v.file_bytes = "state_dict int8", _state_dict_bytes(qm)
        xt = torch.from_numpy(x1.copy())
        v.detail = "torch.ao FX prepare_fx/convert_fx, x86 qconfig, engine x86"
        v.make = lambda threads: _peers.torch_model_runner(qm, xt, v.name, v.detail)
    except Exception as e:
        v.error = _why(e)
    return v


def _ort(model: nn.Module, calib: list, data: tuple, x1: np.ndarray, tmp: Path) -> Variant:
    """Both activation types are built; the runner factory returns both (the faster counts)."""
    v = Variant("ORT int8")
    _, _, x_test, y_test = data
    try:
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
        files = {}
        for act in ("int8", "uint8"):
            files[act] = _peers.ort_quantize_static_qdq(
                model, calib, tmp / f"ort_{act}.onnx", activation_type=act
            )
        accs = {}
        for act, f in files.items():
            sess = _peers.ort_session(f, 1)
            y = sess.run(None, {"x": x_test.numpy()})[0]
            accs[act] = float((np.argmax(y, 1) == y_test.numpy()).mean()) * 100
        v.accuracy = accs["int8"]
        v.file, v.file_bytes = "ort_int8.onnx (QDQ)", files["int8"].stat().st_size
        v.notes.append(
            f"ORT accuracy S8S8 {accs['int8']:.2f} %, U8S8 {accs['uint8']:.2f} %; "
            f"onnxruntime {ort.__version__}"
        )

        def make(threads: int, act: str = "int8") -> _peers.Runner:
            sess = _peers.ort_session(files[act], threads)
            tag = "S8S8" if act == "int8" else "U8S8"
            return _peers.ort_model_runner(
                sess, x1, f"ORT int8 {tag}", f"QDQ {tag}, intra_op_num_threads={threads}"
            )

        v.make = make
    except Exception as e:
        v.error = _why(e)
    return v


def _litert(
    name: str, q: Any, qmodel_src: nn.Module, calib: list, data: tuple, x1: np.ndarray, tmp: Path
) -> Variant:
    """Our export_tflite file of the int8 module, float in/out. The digits MLP flattens its input
    before the first QuantStub, which export_tflite refuses (a quantize in the middle of the
    graph); for it the same Sequential (``model.net``) is quantized on pre-flattened images of the
    same calibration set and exported with a [1, 64] input (the same memory as [1, 1, 8, 8])."""
    v = Variant("LiteRT int8")
    _, _, x_test, y_test = data
    path = tmp / f"{name}.tflite"
    try:
        _peers._litert_interpreter_cls()
        xs, x_in = x_test, x1
        try:
            with _quiet():
                report = optimizer.export_tflite(
                    q, torch.from_numpy(x1), path, io="float", sample_inputs=x_test[:64]
                )
        except ValueError as e:
            net = getattr(qmodel_src, "net", None)
            if "quantize_flatten" not in str(e) or not isinstance(net, nn.Sequential):
                raise
            flat_calib = [c.flatten(1) for c in calib]
            qn = optimizer.quantize_(net, optimizer.Int8Config(), calibration=flat_calib)
            xs, x_in = x_test.flatten(1), x1.reshape(1, -1)
            with _quiet():
                report = optimizer.export_tflite(
                    qn, torch.from_numpy(x_in), path, io="float", sample_inputs=xs[:64]
                )
            v.notes.append(
                "export_tflite refuses the MLP's flatten before its QuantStub "
                f"({_why(e)[:90]}...); LiteRT runs model.net on the pre-flattened [1, 64] input"
            )
        v.file, v.file_bytes = path.name, report.size_bytes
        if not report.agrees:
            v.notes.append(f"LiteRT vs module: within 1 unit {report.within_one:.2%}")
        blob = path.read_bytes()
        r1 = _peers.litert_model_runner(blob, x_in, 1, v.name)
        if _peers.litert_delegation(r1) == "none":
            v.notes.append("XNNPACK did not take the graph: LiteRT built-in kernels")
        interp = r1.keep[0]
        d_in = interp.get_input_details()[0]
        o_idx = interp.get_output_details()[0]["index"]
        xs_np = xs.numpy().astype(np.float32)
        correct = 0
        for i in range(len(xs_np)):
            interp.set_tensor(d_in["index"], xs_np[i : i + 1].reshape(d_in["shape"]))
            interp.invoke()
            correct += int(np.argmax(interp.get_tensor(o_idx)) == int(y_test[i]))
        v.accuracy = 100.0 * correct / len(xs_np)
        v.detail = r1.detail
        v.make = lambda threads: _peers.litert_model_runner(blob, x_in, threads, v.name)
    except Exception as e:
        v.error = _why(e)
    return v


def _prune(base: nn.Module, args: argparse.Namespace, train_loader: Any) -> tuple[nn.Module, str]:
    pruned = copy.deepcopy(base)
    importance = "bn_scale" if _has_bn(base) else "l1"
    optimizer.prune_channels_(
        pruned, (EXAMPLE,), optimizer.ChannelPruneConfig(ratio=0.5, importance=importance)
    )
    if _has_bn(pruned):
        optimizer.recalibrate_bn_(pruned, train_loader)
    if args.prune_epochs:
        cfg = optimizer.DistillConfig(
            epochs=args.prune_epochs, lr=args.prune_lr, progress=False, seed=0
        )
        optimizer.distill_(pruned, base, train_loader, cfg)
    pruned.eval()
    macs = optimizer.count_macs(base, (EXAMPLE,)) / max(optimizer.count_macs(pruned, (EXAMPLE,)), 1)
    return pruned, (
        f"50 % channels ({importance} importance), {macs:.2f}x fewer MACs, "
        f"{args.prune_epochs} epoch(s) of distill_ at lr {args.prune_lr:g}"
    )


def build_variants(
    name: str, args: argparse.Namespace, data: tuple, train_loader: Any, tmp: Path
) -> dict[str, Variant]:
    """Every contestant of digits model ``name``, built, checked for accuracy, files in ``tmp``.

    Example:
        >>> v = build_variants("mlp", args, digits.load_digits_split(0), loader, Path(d))
        >>> v["ours int8"].accuracy, v["ORT int8"].file_bytes
        (98.22..., 61542)
    """
    x_train, _, x_test, _ = data
    calib = [x_train[i : i + 64] for i in range(0, args.calib, 64)]
    x1 = np.ascontiguousarray(x_test[:1].numpy())
    base = digits.pretrained(name).eval()
    out: dict[str, Variant] = {}
    out["ours fp32"] = _ours("ours fp32", base, tmp / f"{name}_fp32.eom", data, x1)
    q = None
    try:
        q = optimizer.quantize_(base, optimizer.Int8Config(), calibration=calib)
        out["ours int8"] = _ours("ours int8", q, tmp / f"{name}_int8.eom", data, x1)
    except Exception as e:
        out["ours int8"] = Variant("ours int8")
        out["ours int8"].error = f"quantize_: {_why(e)}"
    try:
        pruned, how = _prune(base, args, train_loader)
        qp = optimizer.quantize_(pruned, optimizer.Int8Config(), calibration=calib)
        v = _ours("ours pruned int8", qp, tmp / f"{name}_pruned_int8.eom", data, x1)
        v.notes.append(how)
        out["ours pruned int8"] = v
    except Exception as e:
        out["ours pruned int8"] = Variant("ours pruned int8")
        out["ours pruned int8"].error = f"pruning: {_why(e)}"
    out["PyTorch fp32"] = _pytorch_fp32(base, data, x1)
    out["PyTorch x86 int8"] = _pytorch_x86(base, calib, data, x1)
    out["ORT int8"] = _ort(base, calib, data, x1, tmp)
    if q is None:
        out["LiteRT int8"] = Variant("LiteRT int8")
        out["LiteRT int8"].error = "no int8 module (quantize_ failed)"
    else:
        out["LiteRT int8"] = _litert(name, q, base, calib, data, x1, tmp)
    return out


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def measure(
    runners: dict[str, Callable[[], Any]], warmup: int, runs: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Interleaved timing: every runner gets ``warmup`` calls, then ``rounds`` rounds in which each
    runner (in rotating order) pauses ``SETTLE_S``, makes a few re-warm calls, then
    ``runs / rounds`` timed calls.
    Returns per runner the median, p90 and min in microseconds.

    Example:
        >>> measure({"noop": lambda: None}, warmup=10, runs=100, rounds=2)["noop"]["median_us"]
        0.09...
    """
    names = list(runners)
    samples: dict[str, list[float]] = {n: [] for n in names}
    per = max(1, math.ceil(runs / rounds))
    rewarm = max(1, min(10, warmup))
    clock = time.perf_counter
    for n in names:
        fn = runners[n]
        for _ in range(warmup):
            fn()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                fn, out = runners[n], samples[n]
                time.sleep(SETTLE_S)  # the previous contestant's idle workers park
                for _ in range(rewarm):
                    fn()
                for _ in range(per):
                    t0 = clock()
                    fn()
                    out.append(clock() - t0)
    finally:
        if gc_was:
            gc.enable()
    return {n: _stats(s) for n, s in samples.items()}


def bench_agreement(
    jobs: list[tuple[Variant, int]], args: argparse.Namespace, x1: np.ndarray
) -> list[dict]:
    """edgeopt-bench's median vs ``Runtime.profile(x, runs)``'s median total, same file, input,
    threads, warmup and runs, for each ``(variant, threads)`` job, in ``AGREEMENT_ROUNDS``
    rounds; a round visits every job (profile, then the binary), so one job's rounds are spread
    over the whole comparison rather than bunched in one second.

    ``diff`` is the median over rounds of ``bench / profile - 1`` within a round (each round runs
    half of ``runs`` on each side, back to back): a paired comparison. This VM has slow phases
    lasting seconds in which everything takes ~1.4x longer, and rarer fast ones; the two
    halves of a round almost always share a phase, so their ratio cancels it, and the median
    over rounds discards the few rounds where a phase changed between them. (Comparing each
    side's quietest round instead failed 6 of 16 comparisons once, each on a single lucky
    round of one side.) A real difference between the binary and the API (a different kernel,
    thread count or timer) shows in every round. ``profile_us`` / ``bench_us`` are each side's
    quietest round and ``diff_median`` the ratio of the medians over rounds, for reference.

    Example:
        >>> bench_agreement([(variants["ours int8"], 1)], args, x1)[0]["diff"]  # bench/profile-1
        -0.042
    """
    rows: list[dict[str, Any]] = []
    live: list[tuple[dict[str, Any], Variant, int]] = []
    exe = Path(args.bench_bin)
    runs = max(1, args.runs // 2)
    for v, threads in jobs:
        row: dict[str, Any] = {"variant": v.name, "threads": threads}
        rows.append(row)
        if v.runtime is None or v.eom is None:
            row["error"] = v.error or "no .eom file"
        elif not exe.is_file():
            row["error"] = f"{exe} is not built (run `make native`)"
        else:
            row.update(prof=[], bench=[], warnings=[], best_prof=None)
            live.append((row, v, threads))
    with tempfile.TemporaryDirectory() as d:
        inp, out = Path(d) / "x.bin", Path(d) / "out.json"
        inp.write_bytes(np.ascontiguousarray(x1, dtype=np.float32).tobytes())
        for _ in range(AGREEMENT_ROUNDS):
            for row, v, threads in live:
                if "error" in row:
                    continue
                rt = v.runtime
                rt.num_threads = threads
                time.sleep(SETTLE_S)
                prof = rt.profile(x1, runs, warmup=args.warmup)
                row["prof"].append(prof.median_s * 1e6)
                if row["best_prof"] is None or prof.median_s < row["best_prof"].median_s:
                    row["best_prof"] = prof
                time.sleep(SETTLE_S)
                cmd = [str(exe), "--model", str(v.eom), "--threads", str(threads), "--warmup",
                       str(args.warmup), "--runs", str(runs), "--input", str(inp),
                       "--json", str(out)]  # fmt: skip
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                    if proc.returncode != 0:
                        raise RuntimeError(
                            f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}"
                        )
                    js = json.loads(out.read_text())
                except Exception as e:
                    row["error"] = f"edgeopt-bench: {_why(e)}"
                    continue
                row["bench"].append(float(js["latency_ms"]["median"]) * 1e3)
                row["warnings"].append(js.get("warning"))
    for row, _, _ in live:
        prof_meds, bench_meds = row.pop("prof"), row.pop("bench")
        warnings, best_prof = row.pop("warnings"), row.pop("best_prof")
        if "error" in row:
            continue
        row["profile_us"] = min(prof_meds)
        row["layers"] = [
            {"name": layer.name, "op": layer.op, "kernel": layer.kernel,
             "median_us": layer.median_s * 1e6, "min_us": layer.min_s * 1e6, "macs": layer.macs}
            for layer in best_prof.layers
        ]  # fmt: skip
        row["bench_us"] = min(bench_meds)
        row["bench_rounds_us"], row["profile_rounds_us"] = bench_meds, prof_meds
        row["bench_warning"] = next((w for w in warnings if w), None)
        row["diff"] = statistics.median(b / p for b, p in zip(bench_meds, prof_meds)) - 1.0
        row["diff_quietest"] = row["bench_us"] / row["profile_us"] - 1.0
        row["diff_median"] = statistics.median(bench_meds) / statistics.median(prof_meds) - 1.0
    return rows


def bench_model(name: str, args: argparse.Namespace, data: tuple, train_loader: Any) -> dict:
    """Builds, times (every thread count of ``args.threads``) and checks one model; one JSON row.

    Example:
        >>> row = bench_model("mlp", args, digits.load_digits_split(0), loader)
        >>> row["latency"]["1"]["ours int8"]["median_us"] > 0
        True
    """
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        variants = build_variants(name, args, data, train_loader, tmp)
        x1 = np.ascontiguousarray(data[2][:1].numpy())
        build_s = time.perf_counter() - t0
        latency: dict[str, dict[str, Any]] = {}
        agreement: list[dict] = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            runners: dict[str, Callable[[], Any]] = {}
            names: dict[str, str] = {}  # runner key -> contestant column
            errors: dict[str, str] = {}
            for col in CONTESTANTS:
                v = variants[col]
                if v.make is None:
                    continue
                try:
                    if col == "ORT int8":
                        for act in ("int8", "uint8"):
                            r = v.make(threads, act)  # type: ignore[call-arg]
                            r.result()
                            runners[r.name], names[r.name] = r.run, col
                    else:
                        r = v.make(threads)
                        r.result()
                        runners[col], names[col] = r.run, col
                except Exception as e:
                    errors[col] = _why(e)
            stats = measure(runners, args.warmup, args.runs, args.rounds)
            per_col: dict[str, Any] = {}
            for col in CONTESTANTS:
                keys = [k for k, c in names.items() if c == col]
                if keys:
                    best = min(keys, key=lambda k: stats[k]["median_us"])
                    per_col[col] = dict(stats[best], runner=best)
                    if len(keys) > 1:
                        per_col[col]["all"] = {k: stats[k] for k in keys}
                else:
                    per_col[col] = {"error": errors.get(col) or variants[col].error or "not run"}
            latency[str(threads)] = per_col
        # The peers' sessions and interpreters (and their thread pools) go before the agreement
        # rounds, so no idle pool of theirs shares the cores with ours.
        runners = r = None  # noqa: F841
        gc.collect()
        torch.set_num_threads(1)
        if args.agreement:
            jobs = [(variants[c], t) for t in args.threads for c in ("ours int8", "ours fp32")]
            agreement = bench_agreement(jobs, args, x1)
        row = {
            "model": name,
            "variants": {
                col: {
                    "accuracy": v.accuracy,
                    "file": v.file,
                    "file_bytes": v.file_bytes,
                    "error": v.error,
                    "detail": v.detail,
                    "notes": v.notes,
                }
                for col, v in variants.items()
            },
            "latency": latency,
            "agreement": agreement,
            "seconds": time.perf_counter() - t0,
            "build_seconds": build_s,
        }
        for v in variants.values():  # the runtimes map files in the temporary directory
            v.runtime = None
            v.make = None
        gc.collect()
    return row


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _na(err: str | None, width: int = 70) -> str:
    e = (err or "not run").replace("|", "/")
    return f"n/a ({e[:width]}{'...' if len(e) > width else ''})"


def _lat_cell(cell: dict) -> str:
    if "median_us" not in cell:
        return _na(cell.get("error"))
    return f"{cell['median_us']:.1f} / {cell['p90_us']:.1f}"


def latency_table(rows: list[dict]) -> str:
    """Markdown: median / p90 µs per model and thread count, one column per contestant.

    Example:
        >>> print(latency_table(rows).splitlines()[0])
        | model | threads | ours fp32 | ours int8 | ... | LiteRT int8 |
    """
    head = "| model | threads | " + " | ".join(CONTESTANTS) + " |"
    out = [head, "|---|---:|" + "---:|" * len(CONTESTANTS)]
    for r in rows:
        for t, cells in r["latency"].items():
            out.append(
                f"| {r['model']} | {t} | "
                + " | ".join(_lat_cell(cells[c]) for c in CONTESTANTS)
                + " |"
            )
    return "\n".join(out)


def accuracy_table(rows: list[dict]) -> str:
    """Markdown: accuracy (and change vs PyTorch fp32) and file size per model and contestant.

    Example:
        >>> "| mlp | ours int8 |" in accuracy_table(rows)
        True
    """
    out = [
        "| model | variant | accuracy % | Δ vs PyTorch fp32 | file | KiB |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        ref = r["variants"]["PyTorch fp32"]["accuracy"]
        for col in CONTESTANTS:
            v = r["variants"][col]
            if v["accuracy"] is None:
                out.append(f"| {r['model']} | {col} | {_na(v['error'])} | | {v['file'] or ''} | |")
                continue
            d = None if ref is None else v["accuracy"] - ref
            delta = "" if d is None else f"{0.0 if abs(d) < 5e-3 else d:+.2f}"
            kib = "" if v["file_bytes"] is None else f"{v['file_bytes'] / 1024:.1f}"
            out.append(
                f"| {r['model']} | {col} | {v['accuracy']:.2f} | {delta} | {v['file'] or ''} "
                f"| {kib} |"
            )
    return "\n".join(out)


def _ratio(cells: dict, peer: str, ours: str = "ours int8") -> float | None:
    a, b = cells.get(ours, {}), cells.get(peer, {})
    if "median_us" not in a or "median_us" not in b:
        return None
    return b["median_us"] / a["median_us"]


def ratio_table(rows: list[dict]) -> str:
    """Markdown: peer median / ours median for ours int8 and ours pruned int8.

    Example:
        >>> "int8 vs LiteRT int8" in ratio_table(rows).splitlines()[0]
        True
    """
    cols = [(p, "ours int8") for p in (*PEER_INT8, "PyTorch fp32")] + [
        (p, "ours pruned int8") for p in (*PEER_INT8, "PyTorch fp32")
    ]
    head = " | ".join(f"{o.replace('ours ', '')} vs {p}" for p, o in cols)
    out = [f"| model | threads | {head} |", "|---|---:|" + "---:|" * len(cols)]
    for r in rows:
        for t, cells in r["latency"].items():
            vals = []
            for p, o in cols:
                x = _ratio(cells, p, o)
                vals.append("n/a" if x is None else f"{x:.2f}x")
            out.append(f"| {r['model']} | {t} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def agreement_table(rows: list[dict]) -> str:
    """Markdown: edgeopt-bench vs ``Runtime.profile`` per file and threads: each side's quietest
    round, the median of the per-round ratios (``diff``, the checked one), the ratio of the
    quietest rounds and that of the medians over rounds.

    Example:
        >>> print(agreement_table(rows).splitlines()[2])
        | mlp | ours int8 | 1 | 2.6 | 2.7 | -2.1% | -3.7% | -16.1% |
    """
    out = [
        "| model | variant | threads | edgeopt-bench µs (quietest round) | Runtime.profile µs "
        "(quietest round) | diff (median of the rounds' ratios) | diff of the quietest rounds | "
        "diff of the medians over rounds |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for a in r["agreement"]:
            if "diff" in a:
                out.append(
                    f"| {r['model']} | {a['variant']} | {a['threads']} | {a['bench_us']:.1f} | "
                    f"{a['profile_us']:.1f} | {a['diff']:+.1%} | "
                    f"{a.get('diff_quietest', float('nan')):+.1%} | "
                    f"{a.get('diff_median', float('nan')):+.1%} |"
                )
            else:
                prof = f"{a['profile_us']:.1f}" if "profile_us" in a else ""
                out.append(
                    f"| {r['model']} | {a['variant']} | {a['threads']} | {_na(a['error'])} | "
                    f"{prof} | | | |"
                )
    return "\n".join(out)


def slowest_layers_table(rows: list[dict], top: int = 6) -> str:
    """Markdown: the ``top`` slowest operators of ours int8 per model at 1 thread (the first
    thread count measured), from ``Runtime.profile``: where to look when a peer is faster.

    Example:
        >>> print(slowest_layers_table(rows).splitlines()[2])
        | resnet | layer1.conv1 | conv2d | im2col+s8_gemm__avx512vnni | 7.5 | 589,824 | 78.2 |
    """
    out = [
        "| model | layer | op | kernel | median µs | MACs | GMAC/s |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        prof = next(
            (a for a in r["agreement"] if a["variant"] == "ours int8" and "layers" in a), None
        )
        if prof is None:
            continue
        for layer in sorted(prof["layers"], key=lambda x: -x["median_us"])[:top]:
            us, macs = layer["median_us"], layer["macs"]
            rate = f"{macs / us / 1e3:.1f}" if macs and us > 0 else ""
            out.append(
                f"| {r['model']} | {layer['name']} | {layer['op']} | {layer['kernel']} | "
                f"{us:.1f} | {macs:,} | {rate} |"
            )
    return "\n".join(out)


def verdicts(rows: list[dict]) -> list[str]:
    """PASS / FAIL / N/A / NOTE lines for issue 7's targets (speed vs every peer's int8, >= 3x
    PyTorch fp32, edgeopt-bench agreement) and for sane int8 accuracy.

    Example:
        >>> verdicts(rows)[0]
        'PASS  mlp 1t: ours int8 faster than PyTorch x86 int8: 2.9 vs 120.3 µs (41.48x)'
    """
    lines: list[str] = []

    def add(verdict: str | bool, text: str) -> None:
        if isinstance(verdict, bool):
            verdict = "PASS" if verdict else "FAIL"
        lines.append(f"{verdict:<5} {text}")

    def short(err: Any) -> str:  # the full reason is in the notes
        e = str(err)
        return e if len(e) <= 110 else e[:110] + "... (see notes)"

    for r in rows:
        m = r["model"]
        var = r["variants"]
        for t, cells in r["latency"].items():
            ours = cells["ours int8"]
            for peer in PEER_INT8:
                x = _ratio(cells, peer)
                what = f"{m} {t}t: ours int8 faster than {peer}"
                if "median_us" not in ours:
                    add("FAIL", f"{what}: ours int8 did not run: {short(ours['error'])}")
                elif x is None:
                    add("N/A", f"{what}: {peer} did not run: {short(cells[peer].get('error'))}")
                else:
                    add(
                        x > 1.0,
                        f"{what}: {ours['median_us']:.1f} vs {cells[peer]['median_us']:.1f} µs "
                        f"({x:.2f}x)",
                    )
            x = _ratio(cells, "PyTorch fp32")
            what = f"{m} {t}t: ours int8 >= {SPEEDUP_VS_FP32:g}x faster than PyTorch fp32"
            if x is None:
                why = ours.get("error") or cells["PyTorch fp32"].get("error")
                add("FAIL", f"{what}: not measured ({short(why)})")
            else:
                add(x >= SPEEDUP_VS_FP32, f"{what} ({x:.2f}x)")
        for a in r["agreement"]:
            what = (
                f"{m} {a['threads']}t: edgeopt-bench median within {BENCH_AGREEMENT:.0%} of "
                f"Runtime.profile ({a['variant']})"
            )
            if "diff" in a:
                add(
                    abs(a["diff"]) <= BENCH_AGREEMENT,
                    f"{what}: median ratio of {len(a['bench_rounds_us'])} paired rounds "
                    f"{a['diff']:+.1%} (quietest rounds {a['bench_us']:.1f} vs "
                    f"{a['profile_us']:.1f} µs)",
                )
            else:
                add("FAIL", f"{what}: {short(a['error'])}")
        ref = var["PyTorch fp32"]["accuracy"]
        for col, tol in (("ours int8", 1.0), ("ours pruned int8", 2.0)):
            acc = var[col]["accuracy"]
            what = f"{m}: {col} accuracy within {tol:g} pt of fp32"
            if acc is None or ref is None:
                add("FAIL", f"{what}: not measured ({short(var[col]['error'])})")
            else:
                add(acc >= ref - tol, f"{what}: {acc:.2f} vs {ref:.2f}")
        for col in PEER_INT8:
            acc = var[col]["accuracy"]
            if acc is not None and ref is not None and acc < ref - 2.0:
                add("NOTE", f"{m}: {col} accuracy {acc:.2f} is > 2 pt below fp32 {ref:.2f}")
    return lines


def notes(rows: list[dict]) -> list[str]:
    """Bullet lines: why a contestant did not run, what each one ran, ORT's two variants.

    Example:
        >>> notes(rows)[0]
        '- mlp / ours fp32: kernels: f32_gemm__avx512vnni'
    """
    out = []
    for r in rows:
        for col, v in r["variants"].items():
            if v["error"]:
                out.append(f"- {r['model']} / {col}: did not run: {v['error']}")
            for n in v["notes"]:
                out.append(f"- {r['model']} / {col}: {n}")
            if v["detail"]:
                out.append(f"- {r['model']} / {col}: {v['detail']}")
        for t, cells in r["latency"].items():
            ort_all = cells.get("ORT int8", {}).get("all")
            if ort_all:
                desc = ", ".join(f"{k} {s['median_us']:.1f} µs" for k, s in ort_all.items())
                out.append(f"- {r['model']} {t}t / ORT int8: {desc} (the faster is the column)")
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); prints the report, returns 0.

    Example:
        >>> main(["--quick", "--models", "mlp", "--threads", "1"])
        0
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--warmup", type=int, default=100, help="untimed calls per contestant")
    ap.add_argument("--runs", type=int, default=1000, help="timed calls per contestant")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    ap.add_argument("--calib", type=int, default=256, help="calibration images (train split)")
    ap.add_argument("--prune-epochs", type=int, default=5, help="distill_ epochs after pruning")
    ap.add_argument(
        "--prune-lr", type=float, default=digits.LR,
        help="distill_ learning rate after pruning (the models' training rate)",
    )  # fmt: skip
    ap.add_argument("--bench-bin", default=str(DEFAULT_BENCH), help="edgeopt-bench binary")
    ap.add_argument(
        "--no-agreement", dest="agreement", action="store_false",
        help="skip the edgeopt-bench vs Runtime.profile check",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="smoke run: 60 runs, 2 epochs, 128 calib")
    ap.add_argument("--json", type=Path, help="write everything as JSON here")
    args = ap.parse_args(argv)
    if any(t < 1 for t in args.threads):
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if args.quick:
        args.warmup, args.runs, args.rounds = 10, 60, 2
        args.calib, args.prune_epochs = 128, 2
    torch.set_num_threads(1)
    _peers.silence_quantization_warnings()
    warnings.filterwarnings("ignore", category=RuntimeWarning)

    info = machine_info()
    v = info["versions"]
    print(
        f"# End to end on sklearn digits, batch 1: {info['arch']}, {info['cpu']}, "
        f"{info['cores']} cores; our ISA paths: {', '.join(info['isa_paths']) or 'none'} "
        f"(best: {info['isa_paths'][-1] if info['isa_paths'] else 'n/a'}); torch {v['torch']}, "
        f"onnxruntime {v['onnxruntime']}, ai-edge-litert {v['ai-edge-litert']}"
    )
    print(
        f"# threads {', '.join(map(str, args.threads))}; warmup {args.warmup}, {args.runs} runs "
        f"per contestant in {args.rounds} interleaved rounds; calibration: first {args.calib} "
        f"training images; pruned: 50 % channels + {args.prune_epochs} epoch(s) of distill_"
        + ("; QUICK mode (smoke run, timings not meaningful)" if args.quick else "")
    )
    data = digits.load_digits_split(seed=0)
    train_loader, _ = digits.loaders(batch_size=64, seed=0)
    rows = []
    t0 = time.time()
    for name in args.models:
        try:
            rows.append(bench_model(name, args, data, train_loader))
        except Exception as e:  # a benchmark never fails a build: print and go on
            traceback.print_exc()
            print(f"ERROR {name}: {_why(e)}")
    print("\n## Latency µs, batch 1 (median / p90)\n")
    print(latency_table(rows))
    print("\n## Accuracy on the test split (450 images) and file sizes\n")
    print(accuracy_table(rows))
    print("\n## Speed-up of ours (peer median / ours median; > 1: ours faster)\n")
    print(ratio_table(rows))
    if args.agreement:
        print("\n## edgeopt-bench vs Runtime.profile (same file, input, threads, warmup, runs)\n")
        print(agreement_table(rows))
        print(
            f"\n## Slowest operators of ours int8 ({args.threads[0]} thread(s), Runtime.profile)\n"
        )
        print(slowest_layers_table(rows))
    print("\n## Notes\n")
    for line in notes(rows):
        print(line)
    print("\n## Verdicts (issue 7)\n")
    lines = verdicts(rows)
    for line in lines:
        print(line)
    n_fail = sum(line.startswith("FAIL") for line in lines)
    n_pass = sum(line.startswith("PASS") for line in lines)
    print(f"\n{n_pass} PASS, {n_fail} FAIL (total {time.time() - t0:.0f} s)")
    if args.json:
        payload = {
            "machine": info,
            "settings": {k: (str(x) if isinstance(x, Path) else x) for k, x in vars(args).items()},
            "rows": rows,
            "verdicts": lines,
        }
        text = json.dumps(payload, indent=1, default=str).encode()
        atomic_write(args.json, lambda f: f.write(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
