"""Renders :class:`~optimizer.report._collect.ReportData` as Markdown and as one self-contained HTML
page (inline CSS, images as base64 data URIs, no script, no external reference)."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from typing import Any

from optimizer.report._collect import ReportData


@dataclass
class Table:
    """Headers, per-column alignment (``"l"`` / ``"r"``) and rows of already formatted cells."""

    headers: list[str]
    align: str
    rows: list[list[str]]


@dataclass
class Section:
    """A titled section: a table (or None), a note when something is absent, images, bullets."""

    id: str
    title: str
    table: Table | None = None
    absent: str | None = None
    images: tuple[tuple[str, str], ...] = ()  # (file name, alt text)
    bullets: tuple[str, ...] = ()
    intro: str = ""


def _num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _arrow(before: str, after: str) -> str:
    return before if before == after else f"{before} → {after}"


def _chan(ch: tuple[int | None, int | None] | None) -> str:
    if ch is None:
        return "-"
    if ch == (None, None):
        return ""
    return f"{ch[0]}, {ch[1]}"


def _f(v: float | None, fmt: str) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v, fmt)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "inf"


def _info(info: dict[str, Any]) -> str:
    parts = []
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk}={vv}" for kk, vv in v.items())
        elif isinstance(v, float):
            v = f"{v:.3g}"
        parts.append(f"{k}: {v}")
    s = "; ".join(parts)
    return s if len(s) <= 80 else s[:77] + "..."


def stage_table(data: ReportData) -> Table:
    o = data.result.original
    rows = []
    for s in data.result.stages:
        rows.append(
            [
                str(s.index),
                s.name,
                s.kind,
                f"{s.accuracy:.2f}",
                _num(s.params),
                _num(s.macs),
                _num(s.size_bytes),
                _ratio(o.size_bytes, s.size_bytes),
                str(s.bits),
                f"{s.seconds:.2f}",
                _info(s.info),
            ]
        )
    return Table(
        [
            "#",
            "stage",
            "kind",
            "accuracy (%)",
            "params",
            "MACs",
            "bytes on disk",
            "size reduction",
            "bits",
            "time (s)",
            "details",
        ],
        "lllrrrrrrrl",
        rows,
    )


def layer_table(data: ReportData) -> Table:
    rows = []
    for r in data.layers:
        rows.append(
            [
                r.path or "(root)",
                r.kind,
                _arrow(_chan(r.channels_before), _chan(r.channels_after)),
                _arrow(_num(r.params_before), _num(r.params_after)),
                _arrow(_num(r.macs_before), _num(r.macs_after)),
                _f(None if r.sparsity is None else 100 * r.sparsity, ".1f"),
                "-" if r.bits is None else str(r.bits),
                r.kernel_format or "-",
                _f(r.sqnr_db, ".1f"),
                _f(r.latency_us, ".2f"),
            ]
        )
    pb = sum(r.params_before for r in data.layers)
    pa = sum(r.params_after for r in data.layers)
    mb = sum(r.macs_before for r in data.layers)
    ma = sum(r.macs_after for r in data.layers)
    rows.append(["total", "", "", _arrow(_num(pb), _num(pa)), _arrow(_num(mb), _num(ma))])
    rows[-1] += ["", "", "", "", ""]
    return Table(
        [
            "layer",
            "kind",
            "channels (in, out)",
            "params",
            "MACs",
            "zero weights (%)",
            "bits",
            "weight format",
            "int8 SQNR (dB)",
            "latency (µs)",
        ],
        "lllrrrrlrr",
        rows,
    )


def op_table(data: ReportData) -> Table:
    total = sum(o.median_us for o in data.ops) or 1.0
    rows = [
        [
            str(i),
            o.name,
            o.op,
            o.kernel,
            f"{o.median_us:.2f}",
            f"{100 * o.median_us / total:.1f}",
        ]
        for i, o in enumerate(data.ops)
    ]
    return Table(["#", "operator", "op", "kernel", "median (µs)", "share (%)"], "llllrr", rows)


def bench_table(data: ReportData) -> Table:
    rows = [
        [
            r["runtime"],
            str(r.get("model", "-")),
            _f(r["median_us"], ".1f"),
            _f(r.get("p90_us"), ".1f"),
            _num(None if r.get("file_bytes") is None else int(r["file_bytes"])),
            _f(r.get("accuracy"), ".2f"),
        ]
        for r in data.bench
    ]
    return Table(
        ["runtime", "model", "median (µs)", "p90 (µs)", "file bytes", "accuracy (%)"],
        "llrrrr",
        rows,
    )


def sections(data: ReportData, images: dict[str, bytes]) -> list[Section]:
    """The report's sections in order; absent pieces carry their note instead of a table."""
    res = data.result
    size_x = _ratio(res.original.size_bytes, res.final.size_bytes)
    out = [
        Section(
            "stages",
            "Stages",
            stage_table(data),
            images=(("tradeoff.png", "accuracy vs size and latency"),)
            if "tradeoff.png" in images
            else (),
            bullets=tuple(str(b) for b in res.budgets),
            intro=(
                f"Recipe `{res.recipe.name or 'custom'}` for target `{res.recipe.target}`: "
                f"{len(res.stages) - 1} stage(s). Size {size_x} smaller, "
                f"MACs {_ratio(res.original.macs, res.final.macs)} fewer, accuracy "
                f"{res.original.accuracy:.2f} → {res.final.accuracy:.2f} %. Budgets: "
                + ("all met." if res.ok else "some FAILED." if res.budgets else "none set.")
            ),
        ),
        Section(
            "layers",
            "Layers of the final model",
            layer_table(data) if data.layers else None,
            absent=data.absent.get("layers"),
            images=(("layer_params.png", "parameters per layer, original vs final"),)
            if "layer_params.png" in images
            else (),
            intro=(
                "Original → final (the last float stage for an int8 model). Zero weights: share "
                "of exactly-zero weights in the final model. Weight format: what the native "
                "export stored."
                if data.layers
                else ""
            ),
            bullets=tuple(
                f"{k}" for k in (data.absent.get("export"), data.absent.get("quant")) if k
            )
            + tuple(f"export note: {n}" for n in data.export_notes),
        ),
        Section(
            "latency",
            "Per-layer latency (native runtime)",
            op_table(data) if data.ops else None,
            absent=data.absent.get("profile"),
            images=(("layer_latency.png", "per-layer latency"),)
            if "layer_latency.png" in images
            else (),
            intro=(
                f"Median over {data.profile_runs} run(s) with {data.profile_threads} thread(s); "
                f"whole inference median {data.profile_total_us:.1f} µs."
                if data.ops
                else ""
            ),
        ),
        Section(
            "bench",
            "Benchmarks",
            bench_table(data) if data.bench else None,
            absent=data.absent.get("bench"),
        ),
    ]
    return out


# --------------------------------------------------------------------------- Markdown


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in t.headers) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in t.align) + "|")
    for row in t.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    return lines


def markdown(data: ReportData, images: dict[str, bytes]) -> str:
    lines = [f"# {data.title}", ""]
    for s in sections(data, images):
        lines += [f"## {s.title}", ""]
        if s.intro:
            lines += [s.intro, ""]
        if s.table is not None:
            lines += _md_table(s.table) + [""]
        if s.absent:
            lines += [f"*Not available: {s.absent}.*", ""]
        if s.bullets:
            lines += [f"- {b}" for b in s.bullets] + [""]
        for name, alt in s.images:
            lines += [f"![{alt}]({name})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.6em; border-bottom: 2px solid #08519c; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; color: #08519c; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; }
th { background: #eef3f8; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
tr.total td { font-weight: bold; background: #eef3f8; }
p.absent { color: #8a4b00; background: #fff6e5; border-left: 4px solid #f0a030;
           padding: .4em .8em; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; border: 1px solid #eee; }
code { background: #f2f2f2; padding: 0 .25em; }
footer { margin-top: 2em; font-size: .8em; color: #777; }
"""


def _html_table(t: Table, sid: str) -> str:
    e = html.escape
    out = [f'<table id="table-{sid}">', "<thead><tr>"]
    out += [
        f'<th class="{"r" if a == "r" else "l"}">{e(h)}</th>' for h, a in zip(t.headers, t.align)
    ]
    out.append("</tr></thead><tbody>")
    for row in t.rows:
        cls = ' class="total"' if row and row[0] == "total" and sid == "layers" else ""
        out.append(f"<tr{cls}>")
        out += [f'<td class="{"r" if a == "r" else "l"}">{e(c)}</td>' for c, a in zip(row, t.align)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _inline_code(s: str) -> str:
    """Escapes ``s`` and turns `backticked` spans into <code>."""
    parts = html.escape(s).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def page(data: ReportData, images: dict[str, bytes]) -> str:
    e = html.escape
    body = [f"<h1>{e(data.title)}</h1>"]
    for s in sections(data, images):
        body.append(f'<section id="{s.id}"><h2>{e(s.title)}</h2>')
        if s.intro:
            body.append(f"<p>{_inline_code(s.intro)}</p>")
        if s.table is not None:
            body.append(_html_table(s.table, s.id))
        if s.absent:
            body.append(f'<p class="absent">Not available: {_inline_code(s.absent)}.</p>')
        if s.bullets:
            body.append("<ul>" + "".join(f"<li>{_inline_code(b)}</li>" for b in s.bullets))
            body.append("</ul>")
        for name, alt in s.images:
            b64 = base64.b64encode(images[name]).decode("ascii")
            body.append(f'<img src="data:image/png;base64,{b64}" alt="{e(alt)}" title="{e(name)}">')
        body.append("</section>")
    body.append("<footer>Written by edge-optimizer (optimizer.report.write_report).</footer>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(data.title)}</title><style>{_CSS}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
