"""The compression report: Markdown tables against the result, PNGs, a self-contained HTML page
rendered in headless Chromium, absent pieces noted, bad input refused."""

from __future__ import annotations

import base64
import copy
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import optimizer
from optimizer.examples import digits
from optimizer.graph.profile import layer_stats
from optimizer.pipeline import compress
from optimizer.quantize.diagnose import quant_report
from optimizer.recipes import Recipe, Stage
from optimizer.report import ReportPaths, write_report

pytest.importorskip("matplotlib", reason="the report's plots need matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def loaders():
    train, test = digits.loaders()
    return list(train)[:8], list(test)


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return digits.train(digits.mlp_digits(), digits.loaders()[0], epochs=2)


@pytest.fixture(scope="module")
def full(mlp, loaders, tmp_path_factory):
    """An int8, block-sparse, channel-pruned MLP with every optional piece of the report."""
    from optimizer import runtime

    train, test = loaders
    recipe = Recipe(
        [
            Stage("prune_channels", {"ratio": 0.5}),
            Stage("prune_blocks", {"sparsity": 0.5}),
            Stage("quantize", {"calibration_batches": 2}),
        ],
        target="rpi5",
    )
    res = compress(mlp, recipe, train, test, progress=False)
    x = train[0][0][:1]
    d = tmp_path_factory.mktemp("full")
    export = optimizer.export_native(res.stages[-2].model, (x,), d / "model.eom")
    profile = runtime.load(d / "model.eom").profile(x.numpy(), 3)
    calib = [b[0] for b in train[:2]]
    quant = quant_report(res.stages[-2].model, res.model, calib)
    bench = [
        {
            "runtime": "edgeopt",
            "model": "final",
            "median_us": profile.median_s * 1e6,
            "p90_us": max(profile.total_s) * 1e6,
            "file_bytes": export.size_bytes,
            "accuracy": res.final.accuracy,
        },
        {"runtime": "torch", "variant": "original", "median_us": 90.0, "accuracy": 91.5},
    ]
    snapshot = (copy.deepcopy(res.to_dict()), [copy.deepcopy(b) for b in bench])
    states = [{k: v.clone() for k, v in s.model.state_dict().items()} for s in res.stages]
    paths = write_report(
        res,
        d / "report",
        example_inputs=(x,),
        bench=bench,
        profile=profile,
        export=export,
        data=calib,
        title="Digits MLP",
    )
    return {
        "res": res,
        "x": x,
        "export": export,
        "profile": profile,
        "quant": quant,
        "bench": bench,
        "paths": paths,
        "snapshot": snapshot,
        "states": states,
    }


@pytest.fixture(scope="module")
def float_only(mlp, loaders, tmp_path_factory):
    """A float result with no bench, no profile, no export and no example inputs."""
    res = compress(mlp, Recipe([Stage("prune_channels", {"ratio": 0.5})]), *loaders, progress=False)
    return res, write_report(res, tmp_path_factory.mktemp("float") / "report")


def _tables(md: str) -> dict[str, list[dict[str, str]]]:
    """Markdown section title -> rows of its table as {header: cell}."""
    out: dict[str, list[dict[str, str]]] = {}
    title = None
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("| ") and title is not None and title not in out:
            headers = [c.strip() for c in line.strip("|").split(" | ")]
            rows = []
            i += 2  # header and alignment lines
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip()[1:-1].split(" | ")]
                rows.append(dict(zip(headers, cells)))
                i += 1
            out[title] = rows
            continue
        i += 1
    return out


def _arrow(before: str, after: str) -> str:
    return before if before == after else f"{before} → {after}"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- contents -------------------------------------------------------------------------------------


def test_returns_paths_of_every_file(full):
    paths: ReportPaths = full["paths"]
    assert paths.markdown.name == "report.md" and paths.html.name == "report.html"
    assert set(paths.images) == {"tradeoff", "layer_params", "layer_latency"}
    assert paths.absent == {}
    written = sorted(p.name for p in paths.directory.iterdir())
    assert written == sorted(
        ["report.md", "report.html", "tradeoff.png", "layer_params.png", "layer_latency.png"]
    )  # no temporary files left behind


def test_stage_table_matches_the_result(full):
    res = full["res"]
    rows = _tables(full["paths"].markdown.read_text())["Stages"]
    assert len(rows) == len(res.stages)
    for row, s in zip(rows, res.stages):
        assert row["#"] == str(s.index) and row["stage"] == s.name and row["kind"] == s.kind
        assert float(row["accuracy (%)"]) == pytest.approx(s.accuracy, abs=0.006)
        assert row["params"] == f"{s.params:,}" and row["MACs"] == f"{s.macs:,}"
        assert row["bytes on disk"] == f"{s.size_bytes:,}" and row["bits"] == str(s.bits)
        assert float(row["time (s)"]) == pytest.approx(s.seconds, abs=0.006)
    assert rows[-1]["bits"] == "8"
    ratio = res.original.size_bytes / res.final.size_bytes
    assert rows[-1]["size reduction"] == f"{ratio:.2f}x"


def test_layer_table_matches_layer_stats_export_quant_and_profile(full):
    res, x = full["res"], full["x"]
    before = {s.path: s for s in layer_stats(res.original.model, (x,))}
    after = {s.path: s for s in layer_stats(res.stages[-2].model, (x,))}
    formats = {r["name"]: r for r in full["export"].layers}
    sqnr = {r.path: r.sqnr_db for r in full["quant"]}
    times = {t.name: t.median_s * 1e6 for t in full["profile"].layers}
    int8 = {m.path: m for m in res.model.modules() if getattr(m, "op", None) == "linear"}
    rows = _tables(full["paths"].markdown.read_text())["Layers of the final model"]
    assert [r["layer"] for r in rows[:-1]] == list(before) == ["net.0", "net.3", "net.6"]
    for row in rows[:-1]:
        b, a = before[row["layer"]], after[row["layer"]]
        assert row["channels (in, out)"] == _arrow(
            f"{b.in_channels}, {b.out_channels}", f"{a.in_channels}, {a.out_channels}"
        )
        assert row["params"] == _arrow(f"{b.params:,}", f"{a.params:,}")
        assert row["MACs"] == _arrow(f"{b.macs:,}", f"{a.macs:,}")
        w = int8[row["layer"]].weight_int8
        assert float(row["zero weights (%)"]) == pytest.approx(
            100 * float((w == 0).float().mean()), abs=0.06
        )
        assert row["bits"] == "8"
        fmt = formats[row["layer"]]
        assert row["weight format"] == "BSR " + "x".join(map(str, fmt["block"]))
        assert float(row["int8 SQNR (dB)"]) == pytest.approx(sqnr[row["layer"]], abs=0.06)
        assert float(row["latency (µs)"]) == pytest.approx(times[row["layer"]], abs=0.006)
    total = rows[-1]
    assert total["layer"] == "total"
    assert total["params"] == f"{res.original.params:,} → {res.final.params:,}"


def test_latency_and_bench_tables(full):
    tables = _tables(full["paths"].markdown.read_text())
    ops = tables["Per-layer latency (native runtime)"]
    prof = full["profile"]
    assert [(r["operator"], r["op"], r["kernel"]) for r in ops] == [
        (t.name, t.op, t.kernel) for t in prof.layers
    ]
    bench = tables["Benchmarks"]
    assert [(r["runtime"], r["model"]) for r in bench] == [
        ("edgeopt", "final"),
        ("torch", "original"),  # `variant` is accepted for `model`
    ]
    assert bench[0]["file bytes"] == f"{full['export'].size_bytes:,}"
    assert bench[1]["p90 (µs)"] == "-" and bench[1]["median (µs)"] == "90.0"


def test_inputs_are_not_modified(full):
    res = full["res"]
    assert res.to_dict() == full["snapshot"][0]
    assert full["bench"] == full["snapshot"][1]
    for s, state in zip(res.stages, full["states"]):
        now = s.model.state_dict()
        assert now.keys() == state.keys()
        assert all(torch.equal(now[k], v) for k, v in state.items())


# --- images and the page --------------------------------------------------------------------------


def test_pngs_are_valid_images_of_sensible_size(full):
    from matplotlib import image

    for name, path in full["paths"].images.items():
        data = path.read_bytes()
        w, h = _png_size(data)
        assert 600 <= w <= 2000 and 200 <= h <= 2000, (name, w, h)
        pixels = image.imread(path)
        assert pixels.shape[:2] == (h, w)
        rgb = pixels[..., :3]
        non_white = float((rgb < 0.95).any(axis=-1).mean())
        assert non_white > 0.02, f"{name}: almost blank ({non_white:.3f} non-white)"


def test_html_is_self_contained_and_embeds_the_pngs(full):
    paths = full["paths"]
    page = paths.html.read_text()
    low = page.lower()
    for needle in ("http://", "https://", "<script", "<link", "<iframe", "url(", "@import", "//"):
        if needle == "//":
            assert not re.search(r"""(src|href)\s*=\s*["']?//""", low)
        else:
            assert needle not in low, needle
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(paths.images) and all(
        s.startswith("data:image/png;base64,") for s in srcs
    )
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in srcs}
    assert embedded == {p.read_bytes() for p in paths.images.values()}
    for table in ("stages", "layers", "latency", "bench"):
        assert f'<table id="table-{table}">' in page
    assert "Not available" not in page


def test_missing_pieces_are_noted_not_fatal(float_only):
    res, paths = float_only
    assert set(paths.images) == {"tradeoff"}
    assert set(paths.absent) == {"bench", "profile", "export", "quant", "layers"}
    assert "float" in paths.absent["quant"] and "example_inputs" in paths.absent["layers"]
    md, page = paths.markdown.read_text(), paths.html.read_text()
    assert md.count("*Not available:") == 3  # layers, latency, benchmarks
    assert page.count('<p class="absent">') == 3
    assert len(_tables(md)["Stages"]) == len(res.stages)
    assert "<table" in page and page.count("<img") == 1


def test_keep_models_false_notes_the_missing_layer_comparison(mlp, loaders, tmp_path):
    res = compress(
        mlp,
        Recipe([Stage("prune_channels", {"ratio": 0.5})]),
        *loaders,
        progress=False,
        keep_models=False,
    )
    x = loaders[0][0][0][:1]
    paths = write_report(res, tmp_path / "r", example_inputs=x)
    assert "keep_models=False" in paths.absent["layers"]
    assert "keep_models=False" in paths.markdown.read_text()


def test_int8_without_data_says_how_to_get_sqnr(full, tmp_path):
    paths = write_report(full["res"], tmp_path / "r", example_inputs=full["x"])
    assert "pass `data=`" in paths.absent["quant"]
    rows = _tables(paths.markdown.read_text())["Layers of the final model"]
    assert all(r["int8 SQNR (dB)"] == "-" for r in rows[:-1])
    assert rows[0]["bits"] == "8" and rows[0]["weight format"] == "-"


def test_rewrites_an_existing_report_in_place(float_only):
    res, paths = float_only
    again = write_report(res, paths.directory, title="Second <run> & more")
    assert again.html == paths.html
    page = again.html.read_text()
    assert "<h1>Second &lt;run&gt; &amp; more</h1>" in page
    assert again.markdown.read_text().startswith("# Second <run> & more")
    assert not [p for p in paths.directory.iterdir() if p.name.endswith(".tmp")]


# --- bad input ------------------------------------------------------------------------------------


def test_result_must_be_a_compress_result(tmp_path):
    with pytest.raises(TypeError, match=r"write_report: `result` must be .*CompressResult.*dict"):
        write_report({"stages": []}, tmp_path / "r")


def test_out_dir_parent_must_exist(float_only, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"write_report: the parent of `out_dir`.*nope"):
        write_report(float_only[0], tmp_path / "nope" / "r")
    assert not (tmp_path / "nope").exists()


def test_out_dir_must_not_be_a_file(float_only, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        write_report(float_only[0], f)
    with pytest.raises(TypeError, match="`out_dir` must be a path"):
        write_report(float_only[0], 3)


@pytest.mark.parametrize(
    ("bench", "error", "needle"),
    [
        ({"runtime": "x"}, TypeError, r"`bench` must be a list of dicts"),
        (["x"], TypeError, r"`bench\[0\]` must be a dict"),
        (
            [{"runtime": "a", "median_us": 1}, {"median_us": 2}],
            ValueError,
            r"`bench\[1\]` has no `runtime`",
        ),
        ([{"runtime": "a", "median_us": float("nan")}], ValueError, r"`bench\[0\]\['median_us'\]`"),
        ([{"runtime": "a", "median_us": 1, "accuracy": "high"}], ValueError, r"'accuracy'"),
        ([{"runtime": "a", "median_us": 0}], ValueError, r"'median_us'\]` must be > 0"),
        ([{"runtime": "a", "median_us": 1, "p90_us": -1}], ValueError, r"'p90_us'\]` must be >= 0"),
        ([{"runtime": 3, "median_us": 1}], TypeError, r"`bench\[0\]\['runtime'\]` must be a str"),
    ],
)
def test_bad_bench_rows_are_named(float_only, tmp_path, bench, error, needle):
    with pytest.raises(error, match=needle):
        write_report(float_only[0], tmp_path / "r", bench=bench)
    assert not (tmp_path / "r").exists()  # checked before anything is written


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"profile": [1, 2]}, r"`profile` must be an optimizer.runtime.Profile"),
        ({"export": "model.eom"}, r"`export` must be .*NativeExportReport"),
        ({"example_inputs": (np.zeros((1, 64)),)}, r"`example_inputs\[0\]` must be a torch.Tensor"),
        ({"title": 5}, r"`title` must be a str"),
    ],
)
def test_bad_optional_pieces_are_named(float_only, tmp_path, kwargs, needle):
    with pytest.raises(TypeError, match=needle):
        write_report(float_only[0], tmp_path / "r", **kwargs)


def test_quant_must_be_a_quant_report(full, tmp_path):
    with pytest.raises(TypeError, match=r"`quant` must be .*QuantReport"):
        write_report(full["res"], tmp_path / "r", quant={"net.0": 40.0})


# --- the page in a real browser -------------------------------------------------------------------

_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_PROBE = (
    "<script>window.addEventListener('load',function(){var r=[];"
    "for(var i=0;i<document.images.length;i++){var m=document.images[i];"
    "r.push(m.complete?m.naturalWidth+'x'+m.naturalHeight:'pending');}"
    "document.body.setAttribute('data-images',r.join(' '));});</script>"
)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        _CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(_CHROMIUM is None, reason="chromium not installed (Debian package `chromium`)")
def test_page_renders_in_headless_chromium(full, tmp_path):
    from matplotlib import image

    paths = full["paths"]
    shot = tmp_path / "page.png"
    proc = _chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=1280,2600", paths.html.as_uri()
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    assert _console(proc.stderr) == []
    pixels = image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2600, 1280)
    blue = (np.abs(pixels - np.array([8, 81, 156]) / 255).max(axis=-1) < 0.05).mean()
    assert blue > 0.002, "no heading, table or plot colour in the screenshot"
    assert float((pixels < 0.9).any(axis=-1).mean()) > 0.05, "the screenshot is almost blank"

    # The DOM after load, from a test-only copy of the page with a probe script (the report
    # itself has no script): every table is there and every image decoded at its PNG size.
    probe = tmp_path / "probe.html"
    probe.write_text(paths.html.read_text().replace("</body>", _PROBE + "</body>"))
    proc = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console(proc.stderr) == []
    dom = proc.stdout
    for table in ("stages", "layers", "latency", "bench"):
        assert f'<table id="table-{table}">' in dom
    decoded = re.search(r'data-images="([^"]*)"', dom)
    assert decoded is not None, dom[-500:]
    sizes = ["{}x{}".format(*_png_size(p.read_bytes())) for p in paths.images.values()]
    assert decoded.group(1).split() == sizes
