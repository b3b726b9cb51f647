""":func:`write_report`: the compression report as Markdown, a self-contained HTML page, PNGs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimizer._util import atomic_write
from optimizer.report import _collect as collect
from optimizer.report import _plots as plots
from optimizer.report import _render as render
from optimizer.report._collect import API, ReportData


@dataclass
class ReportPaths:
    """The files :func:`write_report` wrote.

    Attributes:
        directory: the output directory.
        markdown: ``report.md``.
        html: ``report.html`` (self-contained: images inline, no script, no external reference).
        images: plot name (``"tradeoff"``, ``"layer_params"``, ``"layer_latency"``) -> PNG path;
            a plot whose data is absent is not drawn.
        absent: piece (``"layers"``, ``"quant"``, ``"export"``, ``"profile"``, ``"bench"``) ->
            why it is not in the report.
    """

    directory: Path
    markdown: Path
    html: Path
    images: dict[str, Path] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)


def _out_dir(out_dir: Any) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"{API}: `out_dir` must be a path (str or PathLike); got {type(out_dir)}")
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{API}: `out_dir` {str(p)!r} exists and is not a directory")
    parent = p.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"{API}: the parent of `out_dir` ({str(parent)!r}) does not exist; create it first "
            "(only the last directory is created)"
        )
    return p


def _write(path: Path, content: bytes) -> Path:
    """Atomic write (with the usual umask mode, so a report can be shared or served)."""
    return atomic_write(path, lambda f: f.write(content))


def write_report(
    result: Any,
    out_dir: str | os.PathLike,
    *,
    example_inputs: Any = None,
    bench: list[dict[str, Any]] | None = None,
    profile: Any = None,
    export: Any = None,
    quant: Any = None,
    data: Any = None,
    title: str | None = None,
) -> ReportPaths:
    """Writes the compression report of ``result`` into ``out_dir``.

    Files: ``report.md`` (tables), ``report.html`` (the same tables and the plots in one page:
    inline CSS, PNGs as data URIs, no script, no external request) and the plots as PNG files:
    ``tradeoff.png`` (accuracy vs size per stage, and vs latency or MACs),
    ``layer_params.png`` (parameters per layer, original vs final), ``layer_latency.png``
    (per-operator time in the native runtime). Every file is written atomically. Each optional
    piece that is missing leaves its section with a note saying what to pass; nothing fails
    because of it. ``result`` and its models are not changed.

    Args:
        result: what :func:`optimizer.compress` returned (``keep_models=True`` for the per-layer
            comparison, which needs the original and the last float stage's model).
        out_dir: the directory to write into; created if missing (its parent must exist).
        example_inputs: a tensor or tuple of tensors for the per-layer MACs (default: zeros of
            the input shapes in ``export``; without both, no per-layer section).
        bench: benchmark rows, dicts with ``runtime`` (str) and ``median_us`` and optionally
            ``model`` (or ``variant``), ``p90_us``, ``file_bytes``, ``accuracy`` (%).
        profile: an :class:`optimizer.runtime.Profile` (``Runtime.profile(x, runs)``) of the
            exported final model: per-layer latency and kernel.
        export: the :class:`~optimizer.export.native.NativeExportReport` of the final model's
            ``export_native``: the weight format per layer (dense, BSR, codebook).
        quant: an :class:`~optimizer.quantize.diagnose.QuantReport` for an int8 final model;
            without it, measured from ``data`` when given.
        data: calibration-like batches for measuring the int8 SQNR per layer.
        title: the page title (default: "Compression report: <recipe name>").

    Returns:
        :class:`ReportPaths` with the written files and the absent pieces.

    Raises:
        TypeError: an argument of the wrong type (named).
        ValueError: a malformed benchmark row (index and key named), an empty result.
        FileNotFoundError: the parent of ``out_dir`` does not exist.
        NotADirectoryError: ``out_dir`` is a file.

    Example::

        result = optimizer.compress(model, "default", train_loader, test_loader)
        report = optimizer.export_native(result.model, (x,), "out/model.eom")  # float model
        prof = optimizer.runtime.load("out/model.eom").profile(x.numpy(), 50)
        paths = write_report(result, "out/report", export=report, profile=prof,
                             bench=[{"runtime": "edgeopt", "model": "final", "median_us": 41.0}])
        print(paths.html)
    """
    collect.check_result(result)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"{API}: `title` must be a str; got {type(title).__name__}")
    out = _out_dir(out_dir)
    rows = collect.check_bench(bench)
    ops = collect.check_profile(profile)
    collect.check_export(export)
    example = collect.example_from(example_inputs, export)

    absent: dict[str, str] = {}
    if bench is None or not rows:
        absent["bench"] = "no benchmark rows given (`bench=[{runtime, model, median_us, ...}]`)"
    if profile is None:
        absent["profile"] = (
            "no runtime profile given (`profile=optimizer.runtime.load(path).profile(x, runs)`)"
        )
    if export is None:
        absent["export"] = (
            "weight formats unknown: no native export report given (`export=export_native(...)`)"
        )
    quant = collect.quant_rows(result, quant, data, absent)
    layers = collect.layer_rows(result, example, export, quant, ops, absent)
    rd = ReportData(
        title=title or f"Compression report: {result.recipe.name or 'custom recipe'}",
        result=result,
        layers=layers,
        ops=ops,
        bench=rows,
        quantized=result.final.bits == 8,
        export_notes=list(export.notes) if export is not None else [],
        absent=absent,
    )
    if profile is not None:
        rd.profile_total_us = profile.median_s * 1e6
        rd.profile_runs = profile.runs
        rd.profile_threads = profile.threads

    images: dict[str, bytes] = {"tradeoff.png": plots.tradeoff(result.stages, rows)}
    if any(r.params_before or r.params_after for r in layers):
        images["layer_params.png"] = plots.layer_params(layers)
    if ops:
        images["layer_latency.png"] = plots.layer_latency(ops)

    out.mkdir(exist_ok=True)
    written: dict[str, Path] = {}
    for name, png in images.items():
        written[name[: -len(".png")]] = _write(out / name, png)
    md_path = _write(out / "report.md", render.markdown(rd, images).encode("utf-8"))
    html_path = _write(out / "report.html", render.page(rd, images).encode("utf-8"))
    return ReportPaths(out, md_path, html_path, written, dict(absent))


__all__ = ["ReportPaths", "write_report"]
