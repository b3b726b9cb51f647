"""The `edgeopt` command line: compress, export, bench, report, targets, demo.

Exit codes a shell script can rely on: 0 done (budgets met), 1 the compressed model misses a
budget of the recipe, 2 bad usage or bad input (unknown option, recipe error, model that cannot be
loaded, missing file). Messages and progress bars go to stderr; tables and JSON to
stdout.

Example::

    edgeopt targets
    edgeopt compress --example digits-vgg --target rpi5 --out out/  # + .eom, .tflite, report
    edgeopt compress --model mypkg.models:make_net --weights net.pt --data mypkg.data:loaders \\
        --recipe my_recipe.toml --out out/
    edgeopt bench out/model.eom --tflite out/model.tflite --example digits-vgg --json bench.json
    edgeopt bench out/model.eom --target rpi5 --host pi@raspberrypi.local
    edgeopt report out/ --bench bench.json
    edgeopt export --example digits-vgg --int8 --out exported/
    edgeopt demo
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

EXIT_OK, EXIT_BUDGET, EXIT_USAGE = 0, 1, 2
EXAMPLES = ("digits-vgg", "digits-resnet", "digits-mobilenetv2", "digits-mlp")
FORMATS = ("native", "tflite")

__all__ = ["EXIT_BUDGET", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _err(msg: str) -> None:
    print(f"edgeopt: {msg}", file=sys.stderr)


def _resolve(spec: str, what: str) -> Callable[..., Any]:
    """``module:attr`` or ``path/to/file.py:attr`` -> the attribute."""
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise UsageError(f"{what} must be `module:function`; got {spec!r}")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise UsageError(f"{what}: file `{path}` not found")
            spec_ = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # `mypkg.models` next to the shell
            module = importlib.import_module(mod_name)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{what}: cannot import `{mod_name}` ({type(e).__name__}: {e})") from e
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise UsageError(f"{what}: `{mod_name}` has no callable `{attr}`")
    return fn


def _load_model(
    args: argparse.Namespace, need_data: bool = True
) -> tuple[Any, Callable[[], Any], Any, Any]:
    """Returns (model, factory, train_data, eval_data); the data is None when not needed and
    not given."""
    import torch

    if args.example:
        from optimizer.examples import digits

        name = args.example.split("-", 1)[1]
        _err(f"loading example {args.example} (trained once and cached)")
        model = digits.pretrained(name, epochs=args.pretrain_epochs, progress=not args.quiet)
        train, test = digits.loaders()
        return model, digits.MODELS[name], train, test
    cmd = args.command
    if not args.model:
        raise UsageError(f"{cmd}: give --model module:factory (with --data) or --example NAME")
    if not args.data and need_data:
        raise UsageError(
            f"{cmd}: --model needs --data module:function returning (train_loader, eval_loader)"
        )
    factory = _resolve(args.model, "--model")
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model: {args.model}() returned {type(model).__name__}, not a Module")
    if args.weights:
        import optimizer

        p = Path(args.weights)
        if not p.is_file():
            raise UsageError(f"--weights: `{p}` not found")
        try:
            payload = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(payload, dict) and "format" in payload and "record" in payload:
                model = optimizer.load(p, factory)  # a pruned model from optimizer.save
            else:
                state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
                if not isinstance(state, dict):
                    raise ValueError("expected a state dict")
                model.load_state_dict(state)
        except Exception as e:
            raise UsageError(f"--weights: cannot load `{p}` into the model ({e})") from e
    if not args.data:
        return model.eval(), factory, None, None
    data = _resolve(args.data, "--data")()
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise UsageError(f"--data: {args.data}() must return (train_loader, eval_loader)")
    return model.eval(), factory, data[0], data[1]


def _cmd_compress(args: argparse.Namespace) -> int:
    import torch

    import optimizer
    from optimizer import recipes
    from optimizer.pipeline import compress

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        r = args.recipe
        if Path(r).suffix or Path(r).exists():
            recipe = recipes.load_recipe(r, target=args.target)
        else:
            recipe = recipes.builtin(r, target=args.target or "host")
    except ValueError as e:
        raise UsageError(str(e)) from e
    if args.dry_run:
        print(json.dumps(recipe.to_dict(), indent=2))
        return EXIT_OK
    model, _, train, test = _load_model(args)
    result = compress(model, recipe, train, test, progress=not args.quiet)
    print(result.to_markdown())
    summary = result.to_dict()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        optimizer.save(result.model, out / "model.pt")
        files = {"model": "model.pt"}
        floats = [s for s in result.stages if s.bits == 32 and s.model is not None]
        if result.final.bits == 8 and floats:
            optimizer.save(floats[-1].model, out / "model_float.pt")
            files["model_float"] = "model_float.pt"
        if recipe.source and Path(recipe.source).is_file():
            _write_text(out / "recipe.toml", Path(recipe.source).read_text())
            files["recipe"] = "recipe.toml"
        example = _example_of(train)
        exports, native_rep = _export(
            result.model, example, out, args.export, args.target or "host", test
        )
        files.update({k: v["file"] for k, v in exports.items() if "file" in v})
        summary["exports"] = exports
        summary["files"] = files
        _write_text(out / "summary.json", json.dumps(summary, indent=2, default=repr) + "\n")
        _write_text(out / "summary.md", result.to_markdown() + "\n")
        if not args.no_report:
            paths = _report(result, out, example, exports, native_rep, train)
            files["report"] = str(paths.html.relative_to(out))
            _write_text(out / "summary.json", json.dumps(summary, indent=2, default=repr) + "\n")
        _err(f"wrote {', '.join(str(out / f) for f in [*files.values(), 'summary.json'])}")
    if not result.ok:
        _err("budget not met: " + "; ".join(str(b) for b in result.failed))
        return EXIT_BUDGET
    return EXIT_OK


def _write_text(path: Path, text: str) -> None:
    from optimizer._util import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))


def _example_of(data: Any) -> tuple:
    """The first sample of the first batch, as a batch of one (the exported files' shape)."""
    batch = next(iter(data))
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return (x[:1],)


def _test_arrays(data: Any, limit: int = 2000) -> tuple[Any, Any] | None:
    import numpy as np
    import torch

    if data is None:
        return None
    xs, ys, n = [], [], 0
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            return None
        x, y = batch
        if not isinstance(x, torch.Tensor):
            return None
        xs.append(x.float().numpy())
        ys.append(np.asarray(y))
        n += len(x)
        if n >= limit:
            break
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def _export(
    model: Any, example: tuple, out: Path, formats: Sequence[str], target: str, test: Any
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Writes model.eom / model.tflite; returns per format {file, bytes, accuracy in that
    runtime on the eval data (batch 1)} or {error}, and export_native's report (or None)."""
    import optimizer
    from optimizer.measure import accuracy, litert_predictor

    arrays = _test_arrays(test)
    done: dict[str, dict[str, Any]] = {}
    native_rep = None
    for fmt in formats:
        path = out / ("model.eom" if fmt == "native" else "model.tflite")
        try:
            if fmt == "native":
                import optimizer.runtime

                native_rep = optimizer.export_native(model, example, path, target=target)
                predict = optimizer.runtime.load(path).run
                info: dict[str, Any] = {}
            else:
                kw = {"io": "float", "verify": False} if _is_int8(model) else {}
                optimizer.export_tflite(model, example, path, **kw)
                predict = litert_predictor(path)
                info = {}
        except (ValueError, TypeError, RuntimeError, ImportError) as e:
            _err(f"export {fmt}: not written ({e})")
            done[fmt] = {"error": str(e)}
            continue
        info.update(file=path.name, bytes=path.stat().st_size)
        if arrays is not None:
            info["accuracy"] = accuracy(predict, *arrays)
        done[fmt] = info
    return done, native_rep


def _is_int8(model: Any) -> bool:
    from optimizer.quantize.modules import QModule

    return any(isinstance(m, QModule) for m in model.modules())


def _report(
    result: Any, out: Path, example: tuple, exports: dict, native_rep: Any, data: Any
) -> Any:
    import optimizer.runtime
    from optimizer.report import write_report

    profile = None
    if "file" in exports.get("native", {}):
        rt = optimizer.runtime.load(out / exports["native"]["file"])
        profile = rt.profile(example[0].numpy(), runs=30, warmup=5)
    calib = [b for b, _ in zip(data, range(4))] if data is not None else None
    return write_report(
        result,
        out / "report",
        example_inputs=example,
        profile=profile,
        export=native_rep,
        data=calib,
    )


def _cmd_targets(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from optimizer import targets

    try:
        host = targets.host().name
    except ValueError:
        host = None
    rows = [targets.get(n) for n in targets.names()]
    if args.json:
        print(json.dumps([{**asdict(t), "host": t.name == host} for t in rows], indent=2))
        return EXIT_OK
    print("| target | arch | kernel paths | channels | BSR block | int8 stage | description |")
    print("|---|---|---|---:|---|---|---|")
    for t in rows:
        mark = " (host)" if t.name == host else ""
        print(
            f"| {t.name}{mark} | {t.arch} | {' '.join(t.paths)} | {t.channel_multiple} | "
            f"{t.bsr_block[0]}x{t.bsr_block[1]} | {t.requantization} | {t.description} |"
        )
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    import optimizer

    model, _, train, test = _load_model(args, need_data=args.int8)
    example = _example_of(train) if train is not None else None
    if example is None:
        if not args.input_shape:
            raise UsageError("export: give --input-shape (e.g. 1,3,32,32) or --data")
        import torch

        try:
            shape = tuple(int(d) for d in args.input_shape.split(","))
        except ValueError as e:
            raise UsageError(f"--input-shape: expected numbers like 1,3,32,32; got {e}") from e
        example = (torch.zeros(shape),)
    if args.int8 and not _is_int8(model):
        _err("export: quantizing to int8 (calibration on the training data)")
        model = optimizer.quantize_(model, optimizer.Int8Config(), train, example)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exports, _ = _export(model, example, out, args.format, args.target or "host", test)
    print(json.dumps(exports, indent=2))
    return EXIT_OK if all("error" not in v for v in exports.values()) else EXIT_USAGE


def _bench_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Any]:
    """Times the native file, the .tflite file and the PyTorch model (whichever are given) on
    the same input at batch 1 with the same threads; returns rows and the native profile."""
    import numpy as np

    import optimizer.runtime
    from optimizer.measure import litert_predictor, time_us

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"bench: `{path}` not found")
    rt = optimizer.runtime.load(path)
    rt.num_threads = args.threads
    shape = tuple(rt.inputs[0]["shape"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    warm = max(5, args.runs // 10)
    rows = []
    med, p90 = time_us(lambda: rt.run(x), args.runs, warm)
    rows.append(_row("native", path, med, p90))
    profile = rt.profile(x, runs=args.runs, warmup=warm)
    if args.tflite:
        tp = Path(args.tflite)
        if not tp.is_file():
            raise UsageError(f"bench: --tflite `{tp}` not found")
        predict = litert_predictor(tp, args.threads)
        med, p90 = time_us(lambda: predict(x), args.runs, warm)
        rows.append(_row("litert", tp, med, p90))
    if args.example or args.model:
        import torch

        model, *_ = _load_model(args, need_data=False)
        torch.set_num_threads(args.threads)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            med, p90 = time_us(lambda: model(xt), args.runs, warm)
        rows.append({"runtime": "pytorch", "file": None, "median_us": med, "p90_us": p90})
    return rows, profile


def _row(runtime: str, path: Path, med: float, p90: float) -> dict[str, Any]:
    return {
        "runtime": runtime,
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "median_us": med,
        "p90_us": p90,
    }


def _cmd_bench(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    if args.host:
        from optimizer import deploy

        if not args.target:
            raise UsageError("bench: --host needs --target (the device's profile, e.g. rpi5)")
        json_out = Path(args.json or "bench-device.json")
        if not args.dry_run and not _bench_binary_exists(deploy, args.target):
            _err(f"bench: cross-building edgeopt-bench for {args.target} (once)")
            deploy.build(args.target)
        result = deploy.deploy_and_bench(
            args.target,
            args.file,
            args.host,
            threads=args.threads,
            runs=args.runs,
            warmup=max(5, args.runs // 10),
            json_out=json_out,
            dry_run=args.dry_run,
        )
        if args.dry_run:
            print("\n".join(result.commands))
        else:
            print(result.output)
            _err(f"bench: device JSON in {result.json_path}")
        return EXIT_OK
    rows, profile = _bench_rows(args)
    base = rows[0]["median_us"]
    print("| runtime | file | bytes | median µs | p90 µs | x native's latency |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        name = Path(r["file"]).name if r["file"] else "(PyTorch module)"
        size = f"{r['file_bytes']:,}" if r.get("file_bytes") else ""
        print(
            f"| {r['runtime']} | {name} | {size} | {r['median_us']:.1f} | {r['p90_us']:.1f} | "
            f"{r['median_us'] / base:.2f} |"
        )
    print()
    print(profile.table(top=args.top))
    if args.json:
        payload = {"threads": args.threads, "runs": args.runs, "rows": rows}
        payload["profile"] = asdict(profile)
        _write_text(Path(args.json), json.dumps(payload, indent=2) + "\n")
    return EXIT_OK


def _bench_binary_exists(deploy: Any, target: str) -> bool:
    return (deploy.default_build_dir(target) / "edgeopt-bench").is_file()


def _result_from_summary(d: Path) -> Any:
    """A CompressResult (no models) rebuilt from `compress --out`'s summary.json."""
    from optimizer import recipes
    from optimizer.pipeline import BudgetCheck, CompressResult, StageResult

    p = d / "summary.json"
    if not p.is_file():
        raise UsageError(f"report: `{p}` not found; give the --out folder of `edgeopt compress`")
    try:
        summary = json.loads(p.read_text())
        stages = [StageResult(model=None, **st) for st in summary["stages"]]
        budgets = [BudgetCheck(**b) for b in summary.get("budgets", [])]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"report: `{p}` is not a compress summary ({e})") from e
    name, target = summary["recipe"].get("name"), summary["recipe"].get("target", "host")
    if (d / "recipe.toml").is_file():
        recipe = recipes.load_recipe(d / "recipe.toml", target=target)
    elif name in recipes.BUILTIN:
        recipe = recipes.builtin(name, target=target)
    else:
        raise UsageError(f"report: the recipe of `{p}` ({name!r}) is neither saved nor built in")
    return CompressResult(recipe, stages, budgets)


def _cmd_report(args: argparse.Namespace) -> int:
    from optimizer.report import write_report
    from optimizer.runtime import LayerTime, Profile

    d = Path(args.dir)
    result = _result_from_summary(d)
    bench = profile = None
    if args.bench:
        bp = Path(args.bench)
        if not bp.is_file():
            raise UsageError(f"report: --bench `{bp}` not found")
        try:
            payload = json.loads(bp.read_text())
            bench = list(payload["rows"])
            if "profile" in payload:
                pr = dict(payload["profile"])
                pr["layers"] = [LayerTime(**lt) for lt in pr.get("layers", [])]
                profile = Profile(**pr)
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(
                f"report: --bench `{bp}` is not `edgeopt bench --json` output ({e})"
            ) from e
    paths = write_report(
        result, Path(args.out) if args.out else d / "report", bench=bench, profile=profile
    )
    print(paths.html)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from optimizer import demo

    return demo.run_from_args(args)


def _model_args(p: argparse.ArgumentParser, data_help: str) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--example", choices=EXAMPLES, help="a built-in digits model (trained once)")
    src.add_argument("--model", metavar="MODULE:FACTORY", help="factory returning the nn.Module")
    p.add_argument("--weights", metavar="FILE", help="state dict (or optimizer.save file)")
    p.add_argument("--data", metavar="MODULE:FUNCTION", help=data_help)
    p.add_argument("--pretrain-epochs", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``edgeopt`` (one sub-command per job)."""
    p = argparse.ArgumentParser(
        prog="edgeopt",
        description="Compress PyTorch models for edge devices (pruning, distillation, block "
        "sparsity, weight sharing, int8). Exit codes: 0 ok, 1 budget not met, 2 usage/bad input.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser(
        "compress",
        help="run a compression recipe on a model",
        description="Run a recipe (stages + budgets) on a model; print the per-stage table; "
        "with --out write model.pt (optimizer.save), model.eom and model.tflite, summary.json, "
        "summary.md and report/ (Markdown + HTML). Exit 1 when the result misses a budget.",
    )
    _model_args(c, "returns (train_loader, eval_loader) of (inputs, labels) batches")
    c.add_argument(
        "--recipe",
        default="default",
        metavar="FILE|NAME",
        help="TOML recipe file or a built-in name (default, smallest); default: default",
    )
    c.add_argument("--target", default=None, help="target profile (see `edgeopt targets`)")
    c.add_argument("--out", metavar="DIR", help="write the compressed model, files and report")
    c.add_argument(
        "--export",
        nargs="*",
        choices=FORMATS,
        default=list(FORMATS),
        help="formats written with --out (default: native tflite; none: --export)",
    )
    c.add_argument("--no-report", action="store_true", help="with --out: skip report/")
    c.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    c.add_argument("--dry-run", action="store_true", help="validate the recipe, print it, exit")
    c.set_defaults(func=_cmd_compress)

    e = sub.add_parser(
        "export",
        help="write a model as .eom (native runtime) and/or .tflite",
        description="Export a float model (plain, pruned, shared: an optimizer.save file or a "
        "state dict) as .eom and/or .tflite; --int8 quantizes it first (calibrated on --data). "
        "Prints what was written (bytes, accuracy in each runtime when --data is given).",
    )
    _model_args(e, "returns (train_loader, eval_loader): calibration and accuracy")
    e.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS))
    e.add_argument("--int8", action="store_true", help="quantize to int8 first (needs --data)")
    e.add_argument("--input-shape", help="example input shape without --data, e.g. 1,3,32,32")
    e.add_argument("--target", default=None, help="target profile recorded in the file")
    e.add_argument("--out", required=True, metavar="DIR", help="folder for model.eom/.tflite")
    e.set_defaults(func=_cmd_export)

    b = sub.add_parser(
        "bench",
        help="benchmark the native runtime, LiteRT and PyTorch side by side",
        description="Time a .eom file in the native runtime (plus per-layer profile and kernel "
        "paths), and with --tflite / --example / --model the same model in LiteRT and PyTorch, "
        "at batch 1 with the same threads. With --target and --host: build edgeopt-bench for "
        "the device, copy it and the model there (ssh/scp or adb), run it and fetch the JSON.",
    )
    b.add_argument("file", metavar="MODEL.eom", help="the native model file")
    b.add_argument("--tflite", metavar="FILE", help="the same model as .tflite (LiteRT)")
    _model_args(b, "unused by bench")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--runs", type=int, default=200)
    b.add_argument("--top", type=int, default=10, help="slowest layers shown in the profile")
    b.add_argument("--json", metavar="FILE", help="write rows and profile as JSON")
    b.add_argument("--target", default=None, help="device profile (with --host)")
    b.add_argument("--host", help="user@host of a Pi, or an adb serial for android-arm64")
    b.add_argument("--dry-run", action="store_true", help="with --host: print the commands")
    b.set_defaults(func=_cmd_bench)

    r = sub.add_parser(
        "report",
        help="write the Markdown/HTML report of a compress run",
        description="Rewrite the report of `edgeopt compress --out DIR` from DIR/summary.json, "
        "adding benchmark rows and the per-layer profile of `edgeopt bench --json`.",
    )
    r.add_argument("dir", metavar="DIR", help="the --out folder of `edgeopt compress`")
    r.add_argument("--bench", metavar="FILE", help="`edgeopt bench --json` output")
    r.add_argument("--out", metavar="DIR", help="report folder (default DIR/report)")
    r.set_defaults(func=_cmd_report)

    dm = sub.add_parser(
        "demo",
        help="train, compress, export and benchmark the digits CNN end to end",
        description="The built-in demo: the digits VGG (trained once, cached), compressed with "
        "the default and smallest recipes, exported as .eom and .tflite, benchmarked against "
        "PyTorch fp32 and LiteRT; prints the summary and the goals, writes the reports. Exit 1 "
        "when a goal is missed.",
    )
    from optimizer.demo import add_arguments

    add_arguments(dm)
    dm.set_defaults(func=_cmd_demo)

    t = sub.add_parser(
        "targets",
        help="list the target profiles",
        description="List the deployment target profiles (the host is marked).",
    )
    t.add_argument("--json", action="store_true", help="print JSON instead of a table")
    t.set_defaults(func=_cmd_targets)

    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``edgeopt`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Example:
        >>> main(["targets"])
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as e:
        _err(str(e))
        return EXIT_USAGE
    except (ValueError, TypeError) as e:  # bad model or data for a pass: input, not a crash
        _err(str(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `edgeopt targets | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
