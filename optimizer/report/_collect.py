"""Gathers what the report shows: per-stage metrics, per-layer rows of the final model, benchmark
rows and per-operator latencies, checking every input and noting each piece that is absent."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from optimizer.graph.profile import LayerDiff

API = "write_report"

#: Keys a benchmark row may have; ``runtime`` and ``median_us`` are required.
BENCH_KEYS = ("runtime", "model", "median_us", "p90_us", "file_bytes", "accuracy")


@dataclass
class LayerRow(LayerDiff):
    """One layer of the final model: the original's and the final's numbers side by side
    (:class:`~optimizer.graph.profile.LayerDiff`) plus what the later passes and the runtime add.

    ``None`` means "not known" (no example inputs, no export report, not quantized, ...)."""

    sparsity: float | None = None
    bits: int | None = None
    kernel_format: str | None = None
    sqnr_db: float | None = None
    latency_us: float | None = None
    kernel: str | None = None


@dataclass
class OpTime:
    """One operator of the runtime profile (several operators may share a module path)."""

    name: str
    op: str
    kernel: str
    median_us: float


@dataclass
class ReportData:
    """Everything the Markdown and HTML pages render, plus ``absent``: what was not given and
    why the matching section is empty."""

    title: str
    result: Any
    layers: list[LayerRow] = field(default_factory=list)
    ops: list[OpTime] = field(default_factory=list)
    bench: list[dict[str, Any]] = field(default_factory=list)
    profile_total_us: float | None = None
    profile_runs: int | None = None
    profile_threads: int | None = None
    quantized: bool = False
    export_notes: list[str] = field(default_factory=list)
    absent: dict[str, str] = field(default_factory=dict)


def check_result(result: Any) -> None:
    from optimizer.pipeline import CompressResult, StageResult

    if not isinstance(result, CompressResult):
        raise TypeError(
            f"{API}: `result` must be an optimizer.pipeline.CompressResult (what "
            f"optimizer.compress returns); got {type(result).__name__}"
        )
    if not result.stages:
        raise ValueError(f"{API}: `result` has no stages; expected at least the original")
    for i, s in enumerate(result.stages):
        if not isinstance(s, StageResult):
            raise TypeError(
                f"{API}: `result.stages[{i}]` must be a StageResult; got {type(s).__name__}"
            )


def check_bench(bench: Any) -> list[dict[str, Any]]:
    """Validates benchmark rows; returns copies with ``model`` filled from ``variant``."""
    if bench is None:
        return []
    if isinstance(bench, (str, bytes, Mapping)) or not isinstance(bench, Sequence):
        raise TypeError(
            f"{API}: `bench` must be a list of dicts (one per runtime and model); got "
            f"{type(bench).__name__}"
        )
    rows = []
    for i, row in enumerate(bench):
        if not isinstance(row, Mapping):
            raise TypeError(f"{API}: `bench[{i}]` must be a dict; got {type(row).__name__}")
        r = dict(row)
        if "model" not in r and "variant" in r:
            r["model"] = r.pop("variant")
        for key in ("runtime", "median_us"):
            if key not in r:
                raise ValueError(
                    f"{API}: `bench[{i}]` has no `{key}`; expected keys {', '.join(BENCH_KEYS)} "
                    f"(runtime and median_us required), got {sorted(row)}"
                )
        if not isinstance(r["runtime"], str):
            raise TypeError(
                f"{API}: `bench[{i}]['runtime']` must be a str; got {type(r['runtime']).__name__}"
            )
        for key in ("median_us", "p90_us", "file_bytes", "accuracy"):
            v = r.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"{API}: `bench[{i}]['{key}']` must be a finite number; got {v!r}")
            if v < 0 or (key == "median_us" and v == 0):
                bound = "> 0" if key == "median_us" else ">= 0"
                raise ValueError(f"{API}: `bench[{i}]['{key}']` must be {bound}; got {v!r}")
        rows.append(r)
    return rows


def check_profile(profile: Any) -> list[OpTime]:
    if profile is None:
        return []
    layers = getattr(profile, "layers", None)
    if layers is None or not hasattr(profile, "total_s"):
        raise TypeError(
            f"{API}: `profile` must be an optimizer.runtime.Profile (what Runtime.profile "
            f"returns); got {type(profile).__name__}"
        )
    ops = []
    for i, lt in enumerate(layers):
        try:
            ops.append(OpTime(str(lt.name), str(lt.op), str(lt.kernel), float(lt.median_s) * 1e6))
        except AttributeError as e:
            raise TypeError(
                f"{API}: `profile.layers[{i}]` must be a LayerTime (name, op, kernel, median_s); "
                f"got {type(lt).__name__}"
            ) from e
    return ops


def check_export(export: Any) -> None:
    if export is None:
        return
    if not hasattr(export, "layers") or not hasattr(export, "size_bytes"):
        raise TypeError(
            f"{API}: `export` must be an optimizer.export.native.NativeExportReport (what "
            f"export_native returns); got {type(export).__name__}"
        )


def example_from(example_inputs: Any, export: Any) -> tuple | None:
    """The example inputs as a tuple: given, else zeros of the exported model's input shapes."""
    if example_inputs is not None:
        xs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        for i, x in enumerate(xs):
            if not isinstance(x, torch.Tensor):
                raise TypeError(
                    f"{API}: `example_inputs[{i}]` must be a torch.Tensor; got {type(x).__name__}"
                )
        return tuple(xs)
    if export is not None and export.inputs:
        return tuple(
            torch.zeros(tuple(s["shape"]), dtype=getattr(torch, str(s["dtype"])))
            for s in export.inputs
        )
    return None


def _int8_layers(model: nn.Module) -> dict[str, nn.Module]:
    from optimizer.quantize.modules import QModule

    return {
        m.path: m
        for m in model.modules()
        if isinstance(m, QModule) and m.op in ("conv2d", "linear")
    }


def _float_model(result: Any) -> Any:
    """The last float stage's model (the one an int8 stage quantized), or None."""
    for s in reversed(result.stages):
        if s.bits == 32:
            return s.model
    return None


def _sparsity(model: nn.Module, path: str, int8: dict[str, nn.Module]) -> float | None:
    if path in int8:
        w = int8[path].weight_int8
    else:
        try:
            w = getattr(model.get_submodule(path), "weight", None)
        except AttributeError:
            return None
    if not isinstance(w, torch.Tensor) or w.numel() == 0:
        return None
    return float((w == 0).sum()) / w.numel()


def _format(row: Mapping[str, Any]) -> str:
    fmt = str(row.get("format", "?"))
    if fmt == "bsr" and row.get("block"):
        return f"BSR {'x'.join(str(b) for b in row['block'])}"
    if fmt == "codebook" and row.get("bits"):
        return f"codebook {row['bits']}-bit"
    return {"bsr": "BSR"}.get(fmt, fmt)


def layer_rows(
    result: Any,
    example: tuple | None,
    export: Any,
    quant: Any,
    ops: list[OpTime],
    absent: dict[str, str],
) -> list[LayerRow]:
    """Per-layer rows: original vs final float model (channels, params, MACs), then sparsity,
    bits, weight format, SQNR and latency of the final model where known."""
    from optimizer.graph.profile import compare, layer_stats

    before_model = result.stages[0].model
    float_after = _float_model(result)
    final = result.final.model
    if example is None:
        absent["layers"] = (
            "no example inputs: pass `example_inputs=` (or `export=`, whose input shapes are "
            "used) to compare the layers"
        )
        return []
    if before_model is None or float_after is None:
        absent["layers"] = (
            "the original or the last float stage's model was not kept (compress ran with "
            "keep_models=False)"
        )
        return []
    diff = compare(layer_stats(before_model, example), layer_stats(float_after, example))
    int8 = _int8_layers(final) if final is not None else {}
    fmt = {str(r["name"]): r for r in export.layers} if export is not None else {}
    sqnr = {r.path: r.sqnr_db for r in quant} if quant is not None else {}
    times: dict[str, float] = {}
    kernels: dict[str, str] = {}
    for op in ops:
        times[op.name] = times.get(op.name, 0.0) + op.median_us
        kernels.setdefault(op.name, op.kernel)
    rows = []
    for d in diff.rows:
        exists = d.channels_after is not None
        has_weight = d.kind.split(" -> ")[-1] in ("Conv1d", "Conv2d", "Conv3d", "Linear")
        bits = None
        if exists and has_weight:
            bits = 8 if d.path in int8 else 32
        rows.append(
            LayerRow(
                **dataclasses.asdict(d),
                sparsity=_sparsity(final, d.path, int8) if bits is not None and final else None,
                bits=bits,
                kernel_format=_format(fmt[d.path]) if d.path in fmt else None,
                sqnr_db=sqnr.get(d.path),
                latency_us=times.get(d.path),
                kernel=kernels.get(d.path),
            )
        )
    return rows


def quant_rows(result: Any, quant: Any, data: Any, absent: dict[str, str]) -> Any:
    """The int8 report: given, or measured from ``data``; None (with a note) otherwise."""
    from optimizer.quantize.diagnose import QuantReport, quant_report

    if result.final.bits != 8:
        absent["quant"] = "the final model is float (no int8 stage): no quantization error"
        return None
    if quant is not None:
        if not isinstance(quant, QuantReport):
            raise TypeError(
                f"{API}: `quant` must be an optimizer.quantize.diagnose.QuantReport (what "
                f"optimizer.quant_report returns); got {type(quant).__name__}"
            )
        return quant
    float_model = _float_model(result)
    if data is None or float_model is None or result.final.model is None:
        why = "no `data` given" if data is None else "the float model was not kept"
        absent["quant"] = (
            f"int8 SQNR per layer not measured: {why}; pass `data=` (calibration batches) "
            "or `quant=optimizer.quant_report(...)`"
        )
        return None
    return quant_report(float_model, result.final.model, data)
