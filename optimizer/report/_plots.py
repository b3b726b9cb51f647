"""The report's PNG plots, drawn with matplotlib's Agg canvas (headless, no pyplot global state)."""

from __future__ import annotations

import io
from typing import Any

from optimizer.report._collect import LayerRow, OpTime

DPI = 110
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "write_report: the plots need matplotlib; install it with `pip install matplotlib` "
            "(listed in requirements-dev.txt)"
        ) from e
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _log_x(ax: Any, values: list[float]) -> None:
    """Log x axis with plain tick labels (1, 2, 5 per decade; also 3 over a short range), and
    room around the points for their labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(values), max(values)
    subs = (1.0, 2.0, 3.0, 5.0) if hi < 100 * lo else (1.0, 2.0, 5.0)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.2, y=0.12)


def _unit(values: list[float], units: tuple[tuple[float, str], ...]) -> tuple[list[float], str]:
    """Scales ``values`` to the largest unit their maximum reaches (``units`` largest first)."""
    top = max(values, default=0)
    for factor, name in units:
        if top >= factor:
            return [v / factor for v in values], name
    factor, name = units[-1]
    return [v / factor for v in values], name


def _points(ax: Any, xs: list[float], ys: list[float], labels: list[str]) -> None:
    """A line through the stages in order, one coloured dot each, and one label per cluster of
    dots that would overlap (stages on nearly the same point share a label: "2, 3 quantize")."""
    import math

    ax.plot(xs, ys, "-", color="#bbbbbb", zorder=1)
    lx = [math.log10(max(x, 1e-12)) for x in xs]
    tol_x = max(0.03 * (max(lx) - min(lx)), 0.01)
    tol_y = max(0.04 * (max(ys) - min(ys)), 0.2)
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        ax.scatter(x, y, s=70, color=_COLORS[i % len(_COLORS)], zorder=2)
        for g in groups:
            if abs(lx[g[0]] - lx[i]) <= tol_x and abs(ys[g[0]] - y) <= tol_y:
                g.append(i)
                break
        else:
            groups.append([i])
    for g in groups:
        text = ", ".join([labels[i].split(" ")[0] for i in g[:-1]] + [labels[g[-1]]])
        top = max(g, key=lambda i: ys[i])
        ax.annotate(text, (xs[top], ys[top]), textcoords="offset points", xytext=(6, 5), fontsize=8)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def tradeoff(stages: list[Any], bench: list[dict[str, Any]]) -> bytes:
    """Accuracy vs file size per stage; beside it accuracy vs latency (benchmark rows with an
    accuracy) or, without those, accuracy vs MACs per stage."""
    fig = _figure(11.0, 4.4)
    ax1, ax2 = fig.subplots(1, 2)
    size, size_unit = _unit([s.size_bytes for s in stages], ((1e6, "MB"), (1e3, "kB"), (1, "B")))
    acc = [s.accuracy for s in stages]
    _points(ax1, size, acc, [f"{s.index} {s.name}" for s in stages])
    _log_x(ax1, size)
    ax1.set_xlabel(f"model file size ({size_unit}, log scale)")
    ax1.set_ylabel("accuracy (%)")
    ax1.set_title("Accuracy vs size, per stage")
    ax1.grid(True, which="both", alpha=0.3)
    timed = [r for r in bench if r.get("accuracy") is not None]
    if timed:
        runtimes = sorted({r["runtime"] for r in timed})
        for k, rt in enumerate(runtimes):
            rows = [r for r in timed if r["runtime"] == rt]
            ax2.scatter(
                [r["median_us"] for r in rows],
                [r["accuracy"] for r in rows],
                s=70,
                color=_COLORS[k % len(_COLORS)],
                label=rt,
                zorder=2,
            )
            for r in rows:
                ax2.annotate(
                    str(r.get("model", "")),
                    (r["median_us"], r["accuracy"]),
                    textcoords="offset points",
                    xytext=(6, 5),
                    fontsize=8,
                )
        _log_x(ax2, [r["median_us"] for r in timed])
        ax2.set_xlabel("median latency (µs, log scale)")
        ax2.set_title("Accuracy vs latency, per benchmark row")
        ax2.legend(fontsize=8, title="runtime", title_fontsize=8)
    else:
        macs, macs_unit = _unit(
            [max(s.macs, 1) for s in stages],
            ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands"), (1, "count")),
        )
        _points(ax2, macs, acc, [str(s.index) for s in stages])
        _log_x(ax2, macs)
        ax2.set_xlabel(f"MACs per inference ({macs_unit}, log scale)")
        ax2.set_title("Accuracy vs compute, per stage\n(no benchmark latencies given)")
    ax2.set_ylabel("accuracy (%)")
    ax2.grid(True, which="both", alpha=0.3)
    return _png(fig)


def layer_latency(ops: list[OpTime]) -> bytes:
    """Horizontal bars: median time of each runtime operator, in execution order."""
    fig = _figure(9.0, max(2.5, 0.32 * len(ops) + 1.4))
    ax = fig.subplots()
    kinds = sorted({o.op for o in ops})
    color = {k: _COLORS[i % len(_COLORS)] for i, k in enumerate(kinds)}
    ys = range(len(ops))
    ax.barh(list(ys), [o.median_us for o in ops], color=[color[o.op] for o in ops])
    ax.set_yticks(list(ys), [f"{o.name} ({o.op})" for o in ops], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.3 * max((o.median_us for o in ops), default=1.0) or 1.0)
    ax.set_xlabel("median time per inference (µs)")
    ax.set_title("Per-layer latency in the native runtime")
    ax.grid(True, axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(color=color[k], label=k) for k in kinds],
        fontsize=8,
        title="operator",
        title_fontsize=8,
        loc="best",
    )
    return _png(fig)


def layer_params(rows: list[LayerRow]) -> bytes:
    """Grouped horizontal bars: parameters of each layer in the original and the final model."""
    rows = [r for r in rows if r.params_before or r.params_after]
    fig = _figure(9.0, max(2.5, 0.42 * len(rows) + 1.4))
    ax = fig.subplots()
    ys = list(range(len(rows)))
    h = 0.4
    ax.barh(
        [y - h / 2 for y in ys],
        [r.params_before for r in rows],
        h,
        label="original",
        color="#9ecae1",
    )
    ax.barh(
        [y + h / 2 for y in ys], [r.params_after for r in rows], h, label="final", color="#08519c"
    )
    ax.set_yticks(ys, [f"{r.path} ({r.kind})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("parameters (count)")
    ax.set_title("Parameters per layer: original vs final")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)
