"""The built-in demo, the README's main command (``make demo`` / ``edgeopt demo``).

It trains (once, then cached) the VGG-style CNN on ``sklearn.datasets.load_digits`` (354 k
parameters, 1.4 MB of fp32 weights, as the seed paper's VGG), compresses it with the ``default``
and ``smallest`` recipes for this machine's target, exports every result as a native ``.eom``
file and as a ``.tflite`` file, and measures in one run, at batch 1 and the same thread count:

* accuracy on the 450 held-out digits of the original (PyTorch fp32), of each compressed model
  in the native runtime, and of its ``.tflite`` file in LiteRT;
* file sizes, no zip: the original as an fp32 ``.eom`` (the same format, so the ratio counts
  only what compression removed) and as a PyTorch state dict;
* latency of the native runtime, of LiteRT (XNNPACK) on the same int8 model, and of PyTorch fp32
  eager on the original.

It prints the summary table and one PASS/FAIL line per goal of issue 9, and writes the files and
the report (Markdown + HTML) to ``out_dir``.

Example::

    python -m optimizer.demo --out edgeopt-demo
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DemoResult", "DemoRow", "main", "run_demo"]

MODEL = "vgg"


@dataclass
class DemoRow:
    """One line of the summary: a model in one format, measured in one runtime.

    Attributes:
        recipe: ``"original"`` or the recipe's name.
        runtime: ``"pytorch"``, ``"native"`` or ``"litert"``.
        file: the file measured (None for the PyTorch module).
        size_bytes: its size (the original: its fp32 ``.eom``).
        accuracy: top-1 % on the digits test split, computed by this runtime.
        latency_us: median latency at batch 1 (None when not measured).
        p90_us: 90th percentile latency.
        note: why something is missing, or what ran.
    """

    recipe: str
    runtime: str
    file: str | None
    size_bytes: int | None
    accuracy: float | None
    latency_us: float | None = None
    p90_us: float | None = None
    note: str = ""


@dataclass
class DemoResult:
    """What :func:`run_demo` measured: the rows, the goal checks and the written files."""

    rows: list[DemoRow]
    checks: list[tuple[str, bool]]
    files: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when every goal is met."""
        return all(ok for _, ok in self.checks)

    def table(self) -> str:
        """The summary as a Markdown table (ratios against the original fp32 model)."""
        orig = next(r for r in self.rows if r.recipe == "original" and r.runtime == "pytorch")
        lines = [
            "| recipe | runtime | file | size (bytes) | x smaller | top-1 % | Δ pt "
            "| latency µs (median) | p90 µs | x faster than PyTorch fp32 |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            size = f"{r.size_bytes:,}" if r.size_bytes else "n/a"
            smaller = f"{orig.size_bytes / r.size_bytes:.1f}" if r.size_bytes else "n/a"
            acc = f"{r.accuracy:.2f}" if r.accuracy is not None else "n/a"
            delta = f"{r.accuracy - orig.accuracy:+.2f}" if r.accuracy is not None else ""
            lat = f"{r.latency_us:.1f}" if r.latency_us else "n/a"
            p90 = f"{r.p90_us:.1f}" if r.p90_us else ""
            faster = (
                f"{orig.latency_us / r.latency_us:.1f}" if r.latency_us and orig.latency_us else ""
            )
            name = Path(r.file).name if r.file else "(module)"
            note = f" ({r.note})" if r.note and r.latency_us is None else ""
            lines.append(
                f"| {r.recipe} | {r.runtime}{note} | {name} | {size} | {smaller} | {acc} | "
                f"{delta} | {lat} | {p90} | {faster} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: rows, checks, files."""
        return {
            "rows": [asdict(r) for r in self.rows],
            "checks": [{"goal": g, "ok": ok} for g, ok in self.checks],
            "files": self.files,
        }


# --------------------------------------------------------------------------- the demo


def _images(loader) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np
    import torch

    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs).numpy().astype(np.float32), torch.cat(ys).numpy()


def _recipe(name: str, quick: bool, target: str):
    """The built-in recipe; ``quick`` cuts every training run to one epoch (smoke tests)."""
    from optimizer import recipes

    if not quick:
        return recipes.builtin(name, target=target)
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    d = tomllib.loads(recipes.builtin_path(name).read_text())
    for st in d["stages"]:
        if "epochs" in st:
            st["epochs"] = 1
        if isinstance(st.get("train"), dict) and "epochs" in st["train"]:
            st["train"]["epochs"] = 1
    d["target"] = target
    d["source"] = f"{name} (quick)"
    return recipes.Recipe(**d)


def run_demo(
    out_dir: str | Path = "edgeopt-demo",
    *,
    recipes: Sequence[str] = ("default", "smallest"),
    target: str = "host",
    threads: int = 1,
    runs: int = 300,
    quick: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Trains (cached), compresses, exports and benchmarks the digits VGG; see the module doc.

    Args:
        out_dir: where the files and the report go (created).
        recipes: built-in recipe names to run.
        target: target profile name (``"host"`` detects this machine).
        threads: threads of every runtime (the same for all).
        runs: timed runs per latency measurement (after a warm-up of ``runs // 10 + 5``).
        quick: one epoch per training stage and few timed runs (a smoke test, not a result).
        progress: progress bars on stderr.
        log: where progress lines go (default: stderr).

    Returns:
        A :class:`DemoResult` (``.table()``, ``.checks``, ``.ok``).

    Example:
        >>> r = run_demo("out", recipes=["default"])
        >>> print(r.table())
    """
    import torch

    import optimizer
    import optimizer.runtime
    from optimizer.examples import digits
    from optimizer.measure import accuracy, litert_predictor, time_interleaved, time_us
    from optimizer.pipeline import compress
    from optimizer.report import write_report

    def say(msg: str) -> None:
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(msg)

    if isinstance(recipes, str):
        recipes = [recipes]
    if threads < 1 or runs < 1:
        raise ValueError(f"run_demo: threads and runs must be >= 1; got {threads}, {runs}")
    if quick:
        runs = min(runs, 20)
    warmup = runs // 10 + 5
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        say(f"demo: digits {MODEL} (trained once, cached in {digits.cache_path(MODEL).parent})")
        base = digits.pretrained(MODEL, progress=progress).eval()
        train_loader, test_loader = digits.loaders()
        x_test, y_test = _images(test_loader)
        example = (torch.from_numpy(x_test[:1]),)
        rows: list[DemoRow] = []
        files: dict[str, str] = {}

        # The original: PyTorch fp32 eager, and its fp32 .eom (the size baseline).
        orig_eom = out / "original-fp32.eom"
        optimizer.export_native(base, example, orig_eom, target=target)
        files["original-fp32.eom"] = str(orig_eom)
        x1 = example[0]
        with torch.inference_mode():
            lat, p90 = time_us(lambda: base(x1), runs, warmup)
            base_acc = digits.evaluate(base, test_loader)
        rows.append(
            DemoRow("original", "pytorch", None, orig_eom.stat().st_size, base_acc, lat, p90)
        )
        rt = optimizer.runtime.load(orig_eom)
        rt.num_threads = threads
        lat, p90 = time_us(lambda: rt.run(x_test[:1]), runs, warmup)
        acc = accuracy(rt.run, x_test, y_test)
        rows.append(
            DemoRow("original", "native", str(orig_eom), orig_eom.stat().st_size, acc, lat, p90)
        )

        results: dict[str, Any] = {}
        for name in recipes:
            say(f"demo: compressing with the `{name}` recipe")
            recipe = _recipe(name, quick, target)
            res = compress(
                copy.deepcopy(base), recipe, train_loader, test_loader, example, progress=progress
            )
            results[name] = res
            model = res.model
            eom = out / f"{name}.eom"
            tfl = out / f"{name}.tflite"
            native_report = profile = rt = None
            contestants: dict[str, Any] = {}
            try:
                native_report = optimizer.export_native(model, example, eom, target=target)
                files[eom.name] = str(eom)
                rt = optimizer.runtime.load(eom)
                rt.num_threads = threads
                contestants["native"] = (rt.run, eom)
            except (ValueError, RuntimeError) as e:
                rows.append(DemoRow(name, "native", None, None, None, note=f"not exported: {e}"))
            try:
                optimizer.export_tflite(model, example, tfl, io="float", verify=False)
                files[tfl.name] = str(tfl)
                contestants["litert"] = (litert_predictor(tfl, threads), tfl)
            except (ValueError, RuntimeError, ImportError) as e:
                rows.append(DemoRow(name, "litert", None, None, None, note=f"not run: {e}"))
            # Both runtimes in alternating rounds: a drifting machine treats them alike.
            x1 = x_test[:1].copy()
            times = time_interleaved(
                {k: (lambda f=f, x=x1: f(x)) for k, (f, _) in contestants.items()}, runs, warmup
            )
            for runtime, (predict, path) in contestants.items():
                acc = accuracy(predict, x_test, y_test)
                lat, p90 = times[runtime]
                rows.append(DemoRow(name, runtime, str(path), path.stat().st_size, acc, lat, p90))
            if rt is not None:
                profile = rt.profile(x1, runs=max(10, runs // 5), warmup=warmup)
            say(f"demo: writing the `{name}` report")
            bench = [
                {
                    "runtime": r.runtime if r.recipe != "original" else f"{r.runtime} (original)",
                    "model": r.recipe,
                    "median_us": r.latency_us,
                    "p90_us": r.p90_us,
                    "file_bytes": r.size_bytes,
                    "accuracy": r.accuracy,
                }
                for r in rows
                if r.latency_us and r.recipe in ("original", name)
            ]
            paths = write_report(
                res,
                out / f"report-{name}",
                example_inputs=example,
                bench=bench,
                profile=profile,
                export=native_report,
                data=[b for b, _ in zip(train_loader, range(4))],
                title=f"edge-optimizer demo: digits {MODEL}, `{name}` recipe",
            )
            files[f"report-{name}.html"] = str(paths.html)
            files[f"report-{name}.md"] = str(paths.markdown)
    finally:
        torch.set_num_threads(prev_threads)
    result = DemoResult(rows, _checks(rows, recipes), files, results)
    (out / "demo.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    (out / "demo.md").write_text(result.table() + "\n\n" + _checks_text(result.checks) + "\n")
    files["demo.md"] = str(out / "demo.md")
    return result


def _get(rows: list[DemoRow], recipe: str, runtime: str) -> DemoRow | None:
    return next((r for r in rows if r.recipe == recipe and r.runtime == runtime), None)


def _vs_original(drop: float) -> str:
    """``drop`` points of accuracy lost, in words: "0.22 pt below the original" / "above"."""
    if abs(drop) < 5e-3:
        return "equal to the original"
    return f"{abs(drop):.2f} pt {'below' if drop > 0 else 'above'} the original"


def _checks(rows: list[DemoRow], recipes: Sequence[str]) -> list[tuple[str, bool]]:
    """Issue 9's goals, each measured in this run."""
    orig = _get(rows, "original", "pytorch")
    assert orig is not None and orig.size_bytes and orig.latency_us and orig.accuracy
    out: list[tuple[str, bool]] = []
    for name in recipes:
        nat, lite = _get(rows, name, "native"), _get(rows, name, "litert")
        if nat is None or nat.size_bytes is None:
            out.append((f"{name}: exported and run in the native runtime", False))
            continue
        ratio = orig.size_bytes / nat.size_bytes
        if name == "smallest":
            kept = 100.0 * nat.accuracy / orig.accuracy
            out.append((f"smallest: {ratio:.0f}x smaller file (goal >= 200x)", ratio >= 200))
            out.append(
                (f"smallest: {kept:.1f} % of the original accuracy (goal >= 99 %)", kept >= 99.0)
            )
            continue
        drop = orig.accuracy - nat.accuracy
        speed = orig.latency_us / nat.latency_us
        out.append((f"{name}: {ratio:.1f}x smaller file (goal >= 10x)", ratio >= 10))
        out.append((f"{name}: {speed:.1f}x faster than PyTorch fp32 (goal >= 10x)", speed >= 10))
        out.append((f"{name}: accuracy {_vs_original(drop)} (goal <= 1 pt below)", drop <= 1))
        if lite is not None and lite.latency_us:
            vs = lite.latency_us / nat.latency_us
            out.append(
                (f"{name}: {vs:.2f}x LiteRT's latency on the same int8 model (goal > 1)", vs > 1)
            )
            ldrop = orig.accuracy - lite.accuracy
            out.append(
                (
                    f"{name}: .tflite in LiteRT {_vs_original(ldrop)} (goal <= 1 pt below)",
                    ldrop <= 1,
                )
            )
        else:
            out.append((f"{name}: .tflite run in LiteRT", False))
    return out


def _checks_text(checks: list[tuple[str, bool]]) -> str:
    return "\n".join(f"{'PASS' if ok else 'FAIL'}  {goal}" for goal, ok in checks)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m optimizer.demo``: runs the demo, prints the table; exit 0 when every goal
    is met, 1 otherwise."""
    ap = argparse.ArgumentParser(prog="edgeopt demo", description=__doc__.split("\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    return run_from_args(args)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The demo's options (shared by ``python -m optimizer.demo`` and ``edgeopt demo``)."""
    ap.add_argument("--out", default="edgeopt-demo", help="output folder (default edgeopt-demo)")
    ap.add_argument("--recipes", nargs="+", default=["default", "smallest"])
    ap.add_argument("--target", default="host", help="target profile (default: this machine)")
    ap.add_argument("--threads", type=int, default=1, help="threads of every runtime")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per latency")
    ap.add_argument("--quick", action="store_true", help="1 epoch per stage: a smoke run")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    """Runs the demo from parsed options; prints the table and the goals."""
    r = run_demo(
        args.out,
        recipes=args.recipes,
        target=args.target,
        threads=args.threads,
        runs=args.runs,
        quick=args.quick,
        progress=not args.quiet,
    )
    print(r.table())
    print()
    print(_checks_text(r.checks))
    print(f"\nfiles in {args.out}: {', '.join(sorted(r.files))}")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
