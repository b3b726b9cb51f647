"""Per-layer diagnosis of int8 quantization: which layer costs how much, worst first.

For every int8 layer of a model returned by :func:`optimizer.quantize.ptq.quantize_` (or
:func:`optimizer.quantize.qat.convert_`), :func:`quant_report` runs the float model and the
quantized model on the same data and measures, on the layer's output:

- ``sqnr_db``: the layer's own signal-to-quantization-noise ratio: the float layer applied to the
  *dequantized int8 inputs the quantized model actually fed it*, against the dequantized int8
  output. It isolates what quantizing this layer costs (weights, bias, output rounding), so it is
  what ``Int8Config(auto_keep_float=k)`` ranks by;
- ``cumulative_sqnr_db``: the float model's value at that point against the quantized model's
  (every earlier layer's error included);
- ``max_abs_error``: the largest absolute error of the layer's own output.

Example::

    q = quantize_(model, Int8Config(), calibration=data)
    report = quant_report(model, q, data)
    print(report.to_markdown())        # worst layers first
    q2 = quantize_(model, Int8Config(keep_float=[report[0].path]), calibration=data)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from optimizer.graph.record import get_record
from optimizer.quantize import qops

__all__ = ["LayerError", "QuantReport", "layer_errors", "quant_report"]


@dataclass
class LayerError:
    """One row of :class:`QuantReport` (see the module docstring for the measures)."""

    path: str
    op: str
    sqnr_db: float
    max_abs_error: float
    cumulative_sqnr_db: float


class QuantReport(list):
    """A list of :class:`LayerError`, worst (lowest own SQNR) first, with a markdown table."""

    def to_markdown(self) -> str:
        """The rows as a markdown table.

        Example:
            >>> QuantReport([LayerError("fc", "linear", 30.0, 0.01, 28.0)]).to_markdown()
            '| layer | op | SQNR dB | max abs err | cumulative SQNR dB |\\n|---|---|---:|---:|---:|\\n| fc | linear | 30.0 | 0.01 | 28.0 |'
        """  # noqa: E501
        lines = [
            "| layer | op | SQNR dB | max abs err | cumulative SQNR dB |",
            "|---|---|---:|---:|---:|",
        ]
        for r in self:
            lines.append(
                f"| {r.path} | {r.op} | {_fmt(r.sqnr_db)} | {r.max_abs_error:.4g} | "
                f"{_fmt(r.cumulative_sqnr_db)} |"
            )
        return "\n".join(lines)

    def worst(self, k: int) -> list[str]:
        """Paths of the ``k`` worst layers."""
        return [r.path for r in self[:k]]


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) and v > 0 else f"{v:.1f}"


class _Acc:
    def __init__(self) -> None:
        self.sig = 0.0
        self.err = 0.0
        self.csig = 0.0
        self.cerr = 0.0
        self.max = 0.0

    def add(self, ref: torch.Tensor, got: torch.Tensor, cref: torch.Tensor) -> None:
        ref, got, cref = (t.detach().to(torch.float64) for t in (ref, got, cref))
        d = got - ref
        self.sig += float((ref**2).sum())
        self.err += float((d**2).sum())
        self.csig += float((cref**2).sum())
        self.cerr += float(((got - cref) ** 2).sum())
        if d.numel():
            self.max = max(self.max, float(d.abs().max()))


def _db(sig: float, err: float) -> float:
    if err == 0:
        return math.inf
    if sig == 0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


def _env(gm: fx.GraphModule, inputs: tuple) -> dict[str, Any]:
    interp = fx.Interpreter(gm, garbage_collect_values=False)
    interp.run(*inputs)
    return {n.name: v for n, v in interp.env.items()}


def _run_float_node(fg: fx.GraphModule, n: fx.Node, args: tuple, kwargs: dict) -> Any:
    if n.op == "call_module":
        return fg.get_submodule(n.target)(*args, **kwargs)
    if n.op == "call_function":
        return n.target(*args, **kwargs)
    return getattr(args[0], n.target)(*args[1:], **kwargs)


def _input_qparams(entry: dict, i: int) -> tuple[float, int]:
    if "input_scales" in entry:
        return entry["input_scales"][i], entry["input_zero_points"][i]
    return entry["input_scale"], entry["input_zero_point"]


def _float_arg(a: fx.Node, e: dict, values: dict, fenv: dict, qenv: dict) -> Any:
    """The layer's float input: its int8 input dequantized, or the float model's value."""
    ins = e["inputs"]
    if a.name in ins and values.get(a.name) in qenv:
        s, z = _input_qparams(e, ins.index(a.name))
        return qops.dequantize(qenv[values[a.name]], s, z)
    return fenv[a.name]


def _errors(fg: fx.GraphModule, qmodel: fx.GraphModule, batches: list[tuple]) -> list[LayerError]:
    rec = get_record(qmodel).get("quantization")
    values = getattr(qmodel, "_edgeopt_values", None)
    if rec is None or values is None:
        raise ValueError(
            "quant_report: the second model is not an int8 model from quantize_ or convert_; "
            "expected the GraphModule they return"
        )
    by_name = {n.name: n for n in fg.graph.nodes}
    layers = {
        path: e
        for path, e in rec["layers"].items()
        if e["op"] not in ("quantize", "dequantize") and "float_nodes" in e
    }
    for path, e in layers.items():
        for name in e["float_nodes"]:
            if name not in by_name:
                raise ValueError(
                    f"quant_report: layer `{path}` of the quantized model has no counterpart "
                    f"(fx node {name!r}) in the float model; expected the float model that was "
                    "quantized (same architecture)"
                )
    accs = {path: _Acc() for path in layers}
    with torch.no_grad():
        for inputs in batches:
            fenv = _env(fg, inputs)
            qenv = _env(qmodel, inputs)
            for path, e in layers.items():
                qname = values.get(e["float_nodes"][-1])
                if qname is None or qname not in qenv:
                    continue
                first = by_name[e["float_nodes"][0]]

                arg = functools.partial(_float_arg, e=e, values=values, fenv=fenv, qenv=qenv)
                args = fx.map_arg(first.args, arg)
                kwargs = fx.map_arg(first.kwargs, arg)
                ref = _run_float_node(fg, first, args, kwargs)
                for name in e["float_nodes"][1:]:
                    nxt = by_name[name]
                    ref = _run_float_node(fg, nxt, (ref, *nxt.args[1:]), dict(nxt.kwargs))
                got = qops.dequantize(qenv[qname], e["output_scale"], e["output_zero_point"])
                accs[path].add(ref.reshape(got.shape), got, fenv[e["float_nodes"][-1]])
    rows = [
        LayerError(
            path,
            layers[path]["op"],
            _db(a.sig, a.err),
            a.max,
            _db(a.csig, a.cerr),
        )
        for path, a in accs.items()
    ]
    rows.sort(key=lambda r: (r.sqnr_db, -r.max_abs_error))
    return QuantReport(rows)


def layer_errors(an: Any, qmodel: fx.GraphModule, batches: list[tuple]) -> QuantReport:
    """Rows for the int8 layers of ``qmodel`` against the analysed float graph ``an.fg``
    (used by ``quantize_(auto_keep_float=k)``); only compute layers (conv, linear, add, mul,
    lookup tables) are listed."""
    rows = _errors(an.fg, qmodel, batches)
    keep = set(an.quant_layers())
    return QuantReport(r for r in rows if r.path in keep)


def quant_report(
    float_model: nn.Module, quantized_model: fx.GraphModule, data: Any, max_batches: int = 8
) -> QuantReport:
    """Per-layer SQNR and error of ``quantized_model`` against ``float_model``, worst first.

    Args:
        float_model: the float model that was quantized (same architecture; BatchNorm is folded
            the same way as by ``quantize_``).
        quantized_model: the GraphModule returned by ``quantize_`` or ``convert_``.
        data: batches as for calibration (tensors or ``(inputs, targets)`` pairs).
        max_batches: use at most this many batches.

    Returns:
        :class:`QuantReport` (a list of :class:`LayerError`) with ``.to_markdown()``.

    Example::

        q = quantize_(model, Int8Config(), calibration=data)
        print(quant_report(model, q, data).to_markdown())
    """
    from optimizer.quantize.fold import float_graph
    from optimizer.quantize.ptq import input_batches

    api = "quant_report"
    if not isinstance(float_model, nn.Module):
        raise TypeError(f"{api}: float_model must be an nn.Module, got {type(float_model)}")
    batches = input_batches(api, data, max_batches)
    fg = float_graph(float_model, batches[0])
    return _errors(fg, quantized_model, batches)
