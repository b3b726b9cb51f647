"""The `edgeopt` command line: compress a model with a recipe, list targets (export, bench soon).

Exit codes a shell script can rely on: 0 done (budgets met), 1 the compressed model misses a
budget of the recipe, 2 bad usage or bad input (unknown option, recipe error, model that cannot be
loaded, command not available yet). Messages and progress bars go to stderr; tables and JSON to
stdout.

Example::

    edgeopt targets
    edgeopt compress --example digits-vgg --target rpi5 --out out/
    edgeopt compress --model mypkg.models:make_net --weights net.pt --data mypkg.data:loaders \\
        --recipe my_recipe.toml --out out/
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
_NOT_YET = {
    "export": "write the native (.eom) and TFLite files",
    "bench": "benchmark the native runtime, LiteRT and PyTorch side by side",
    "report": "write the Markdown/HTML report with per-layer latency",
    "demo": "train, compress, export and benchmark the digits CNN end to end",
}

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


def _load_model(args: argparse.Namespace) -> tuple[Any, Callable[[], Any], Any, Any]:
    """Returns (model, factory, train_data, eval_data)."""
    import torch

    if args.example:
        from optimizer.examples import digits

        name = args.example.split("-", 1)[1]
        _err(f"loading example {args.example} (trained once and cached)")
        model = digits.pretrained(name, epochs=args.pretrain_epochs, progress=not args.quiet)
        train, test = digits.loaders()
        return model, digits.MODELS[name], train, test
    if not args.model:
        raise UsageError("compress: give --model module:factory (with --data) or --example NAME")
    if not args.data:
        raise UsageError(
            "compress: --model needs --data module:function returning (train_loader, eval_loader)"
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
        summary["files"] = files
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=repr) + "\n")
        (out / "summary.md").write_text(result.to_markdown() + "\n")
        _err(f"wrote {', '.join(str(out / f) for f in [*files.values(), 'summary.json'])}")
    if not result.ok:
        _err("budget not met: " + "; ".join(str(b) for b in result.failed))
        return EXIT_BUDGET
    return EXIT_OK


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
    print("| target | arch | kernel paths | channels | BSR block | description |")
    print("|---|---|---|---:|---|---|")
    for t in rows:
        mark = " (host)" if t.name == host else ""
        print(
            f"| {t.name}{mark} | {t.arch} | {' '.join(t.paths)} | {t.channel_multiple} | "
            f"{t.bsr_block[0]}x{t.bsr_block[1]} | {t.description} |"
        )
    return EXIT_OK


def _not_yet(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        _err(f"`{name}` is not available yet (needs the native runtime, issue 7)")
        return EXIT_USAGE

    return run


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
        "with --out write model.pt (optimizer.save), summary.json and summary.md. Exit 1 when "
        "the result misses a budget.",
    )
    src = c.add_mutually_exclusive_group()
    src.add_argument("--example", choices=EXAMPLES, help="a built-in digits model (trained once)")
    src.add_argument("--model", metavar="MODULE:FACTORY", help="factory returning the nn.Module")
    c.add_argument("--weights", metavar="FILE", help="state dict (or optimizer.save file)")
    c.add_argument(
        "--data",
        metavar="MODULE:FUNCTION",
        help="returns (train_loader, eval_loader) of (inputs, labels) batches",
    )
    c.add_argument(
        "--recipe",
        default="default",
        metavar="FILE|NAME",
        help="TOML recipe file or a built-in name (default, smallest); default: default",
    )
    c.add_argument("--target", default=None, help="target profile (see `edgeopt targets`)")
    c.add_argument("--out", metavar="DIR", help="write the compressed model and summary here")
    c.add_argument("--pretrain-epochs", type=int, default=None, help=argparse.SUPPRESS)
    c.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    c.add_argument("--dry-run", action="store_true", help="validate the recipe, print it, exit")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=_cmd_compress)

    t = sub.add_parser(
        "targets",
        help="list the target profiles",
        description="List the deployment target profiles (the host is marked).",
    )
    t.add_argument("--json", action="store_true", help="print JSON instead of a table")
    t.set_defaults(func=_cmd_targets)

    for name, what in _NOT_YET.items():
        s = sub.add_parser(
            name,
            help=f"{what} (not available yet)",
            description=f"{what[0].upper()}{what[1:]}. Not available yet: needs the native "
            "runtime (issue 7); exits with code 2.",
        )
        s.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        s.set_defaults(func=_not_yet(name))
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


if __name__ == "__main__":
    sys.exit(main())
