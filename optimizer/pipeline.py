"""`compress`: runs a recipe's stages in order on copies of a model, measuring after every stage.

The teacher of every distillation is the original model; the input model is never changed. After
each stage the model is evaluated (accuracy by ``eval_fn``, parameters, MACs and the size of the
file :func:`optimizer.save` writes), each stage's model and metrics are kept, and the recipe's
budgets are checked on the last one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optimizer.recipes import Recipe, Stage, builtin, load_recipe

__all__ = ["BudgetCheck", "CompressResult", "StageResult", "compress", "top1"]


@dataclass
class StageResult:
    """The model and measurements after one stage (index 0 is the original).

    Attributes:
        index: 0 for the original, then 1, 2, ... as the recipe's stages.
        kind: the stage kind (``"original"`` for index 0).
        name: the stage's label.
        model: the model after this stage (None when ``compress(keep_models=False)``, except
            the last).
        accuracy: ``eval_fn(model, eval_data)``.
        params: parameters (of the float model before quantization for int8 stages).
        macs: multiply-accumulates for ``example_inputs`` (likewise).
        size_bytes: bytes of the file :func:`optimizer.save` writes for the model.
        bits: 8 after quantization, else 32.
        seconds: time the stage took (evaluation excluded).
        info: what the pass reported (kept channels, sparsity, ...), JSON-ready.
    """

    index: int
    kind: str
    name: str
    model: nn.Module | None
    accuracy: float
    params: int
    macs: int
    size_bytes: int
    bits: int = 32
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dict (no model)."""
        keys = ("index", "kind", "name", "accuracy", "params", "macs", "size_bytes", "bits")
        d = {k: getattr(self, k) for k in keys}
        d.update(seconds=round(self.seconds, 3), info=self.info)
        return d


@dataclass
class BudgetCheck:
    """One budget of the recipe against the final model: ``ok`` when ``value`` meets ``limit``."""

    name: str
    limit: float
    value: float
    ok: bool

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return f"{self.name}: {self.value:.4g} (limit {self.limit:.4g}) {verdict}"


@dataclass
class CompressResult:
    """What :func:`compress` did: per-stage results, the final model and the budget checks.

    Example:
        >>> result = compress(model, recipe, train_loader, test_loader)
        >>> print(result.to_markdown())
        >>> result.ok, [str(b) for b in result.failed]
    """

    recipe: Recipe
    stages: list[StageResult]
    budgets: list[BudgetCheck]

    @property
    def original(self) -> StageResult:
        """The measurements of the input model."""
        return self.stages[0]

    @property
    def final(self) -> StageResult:
        """The last stage's result."""
        return self.stages[-1]

    @property
    def model(self) -> nn.Module:
        """The compressed model (the last stage's)."""
        return self.final.model

    @property
    def failed(self) -> list[BudgetCheck]:
        """The budgets the final model misses."""
        return [b for b in self.budgets if not b.ok]

    @property
    def ok(self) -> bool:
        """True when every budget is met."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the recipe, every stage's metrics, the budgets and ``ok``."""
        o = self.original
        return {
            "recipe": self.recipe.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "size_reduction": _ratio(o.size_bytes, self.final.size_bytes),
            "macs_reduction": _ratio(o.macs, self.final.macs),
            "accuracy_drop": o.accuracy - self.final.accuracy,
            "budgets": [vars(b) for b in self.budgets],
            "ok": self.ok,
        }

    def to_markdown(self) -> str:
        """A table: one row per stage with accuracy, params, MACs, file size and ratios."""
        o = self.original
        lines = [
            "| # | stage | accuracy | params | MACs | size (kB) | size x | MACs x | time (s) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.stages:
            lines.append(
                f"| {s.index} | {s.name} | {s.accuracy:.2f} | {s.params:,} | {s.macs:,} | "
                f"{s.size_bytes / 1000:.1f} | {_ratio(o.size_bytes, s.size_bytes):.2f} | "
                f"{_ratio(o.macs, s.macs):.2f} | {s.seconds:.1f} |"
            )
        if self.budgets:
            lines.append("")
            lines.extend(f"- {b}" for b in self.budgets)
        return "\n".join(lines)


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else math.inf


def top1(model: nn.Module, data: Iterable) -> float:
    """Top-1 accuracy in percent over ``(inputs, labels)`` batches (eval mode, no grad).

    Example:
        >>> top1(model, test_loader)
        97.6
    """
    was = model.training
    model.eval()
    correct = total = 0
    try:
        with torch.no_grad():
            for batch in data:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise ValueError(
                        "compress: the default eval_fn needs (inputs, labels) batches; expected "
                        f"a pair, got {type(batch).__name__}. Pass eval_fn=fn(model, data)"
                    )
                x, y = batch
                out = model(*x) if isinstance(x, tuple) else model(x)
                correct += int((out.argmax(-1) == y).sum())
                total += int(y.numel())
    finally:
        model.train(was)
    return 100.0 * correct / max(total, 1)


def _example_from(data: Iterable) -> tuple:
    try:
        batch = next(iter(data))
    except StopIteration:
        raise ValueError("compress: train_data is empty; expected at least one batch") from None
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(x, torch.Tensor):
        return (x[:1],)
    if isinstance(x, (tuple, list)):
        return tuple(t[:1] if isinstance(t, torch.Tensor) else t for t in x)
    raise ValueError(
        f"compress: cannot take example inputs from a batch of {type(x).__name__}; pass "
        "example_inputs=(tensor, ...)"
    )


class _Stepping:
    """Re-iterable view of ``data`` that calls ``on_step()`` between batches.

    The training loop fetches batch i + 1 after the optimizer step of batch i, so the schedule's
    mask update falls exactly between steps.
    """

    def __init__(self, data: Iterable, on_step: Callable[[], None]) -> None:
        self.data, self.on_step = data, on_step
        self.started = False

    def __iter__(self) -> Iterator:
        for batch in self.data:
            if self.started:  # also between epochs: every optimizer step counts
                self.on_step()
            self.started = True
            yield batch

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # sampler / batch_sampler for the trainer
        return getattr(self.data, name)


class _Runner:
    def __init__(self, recipe, teacher, train_data, example, progress, calib_pool):
        self.recipe, self.teacher, self.train_data = recipe, teacher, train_data
        self.example, self.progress = example, progress
        self.calib_pool = calib_pool
        self.float_model: nn.Module | None = None  # the model int8 stages quantized

    def _dcfg(self, cfg: Any) -> Any:
        return replace(cfg, progress=self.progress and cfg.progress)

    def _train(self, model: nn.Module, spec: Any, data: Iterable) -> dict[str, Any]:
        import optimizer

        cfg = self._dcfg(spec.config)
        if spec.method == "distill":
            res = optimizer.distill_(model, self.teacher, data, cfg)
        else:
            res = optimizer.fine_tune_(model, data, cfg)
        return {
            "steps": res.steps,
            "final_loss": res.epoch_losses[-1] if res.epoch_losses else None,
        }

    def _calibration(self, n: int) -> list:
        out = []
        for batch in self.train_data:
            out.append(batch[0] if isinstance(batch, (tuple, list)) else batch)
            if len(out) >= n:
                break
        return out

    def run(self, st: Stage, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        import optimizer

        k, cfg = st.kind, st.config
        if k == "prune_channels":
            rep = optimizer.prune_channels_(model, self.example, cfg)
            return model, {"ratio": rep.ratio, "params": [rep.params_before, rep.params_after]}
        if k == "prune_layers":
            return model, {"removed": optimizer.prune_layers_(model, self.example, cfg)}
        if k == "recalibrate_bn":
            n = optimizer.recalibrate_bn_(model, self.train_data, st.extra.get("max_batches"))
            return model, {"batches": n}
        if k in ("distill", "fine_tune"):
            from optimizer.recipes import TrainSpec

            return model, self._train(model, TrainSpec(k, cfg), self.train_data)
        if k == "factorize":
            rep = optimizer.factorize_(model, cfg, self.example)
            return model, {"params": [rep.params_before, rep.params_after]}
        if k == "prune_blocks":
            return model, self._prune_blocks(st, model)
        if k == "share_weights":
            rep = optimizer.share_weights_(model, cfg)
            info: dict[str, Any] = {"clusters": cfg.clusters, "bits": cfg.bits}
            if st.train is not None:
                info["train"] = self._train(model, st.train, self.train_data)
            rep.remove()
            info["distinct"] = max(rep.distinct().values(), default=0)
            return model, info
        if k == "quantize":
            calib = self._calibration(st.extra["calibration_batches"])
            self.float_model = model
            q = optimizer.quantize_(
                model.eval(), cfg, calibration=calib, example_inputs=self.example
            )
            return q, {"calibration_batches": len(calib)}
        if k == "qat":
            calib = self._calibration(st.extra["calibration_batches"])
            self.float_model = model
            fq = optimizer.prepare_qat_(model.eval(), cfg, self.example, calibration=calib)
            info = {"train": self._train(fq, st.train, self.train_data)}
            return optimizer.convert_(fq.eval()), info
        raise AssertionError(k)  # the recipe validated the kind

    def _prune_blocks(self, st: Stage, model: nn.Module) -> dict[str, Any]:
        import optimizer

        cfg = st.config
        if st.train is None:
            sp = optimizer.prune_blocks_(model, cfg)
            sp.remove()
            return {"sparsity": cfg.sparsity, "steps": 0}
        tcfg = st.train.config
        sched = dict(st.extra.get("schedule") or {})
        if "end_step" not in sched:
            try:
                per_epoch = len(self.train_data)  # type: ignore[arg-type]
            except TypeError:
                raise ValueError(
                    f"compress: stage `{st.label}` needs schedule.end_step when train_data has "
                    "no len(); expected e.g. schedule = {end_step = 500}"
                ) from None
            if tcfg.max_steps_per_epoch is not None:
                per_epoch = min(per_epoch, tcfg.max_steps_per_epoch)
            sched["end_step"] = max(1, (2 * tcfg.epochs * per_epoch) // 3)
        sched.setdefault("initial_sparsity", 0.0)
        sched.setdefault("begin_step", 0)
        schedule = optimizer.PolynomialDecay(final_sparsity=cfg.sparsity, **sched)
        sp = optimizer.prune_blocks_(model, replace(cfg, schedule=schedule))
        info = {"train": self._train(model, st.train, _Stepping(self.train_data, sp.step))}
        info["sparsity"] = sum(sp.sparsity().values()) / max(len(sp.sparsity()), 1)
        info["steps"] = sp.step_count
        sp.remove()
        return info


def _measure(model: nn.Module, example: tuple, workdir: str) -> tuple[int, int, int]:
    import optimizer

    params = optimizer.count_params(model)
    macs = optimizer.count_macs(model, example)
    fd, path = tempfile.mkstemp(suffix=".pt", dir=workdir)
    os.close(fd)
    try:
        size = optimizer.save(model, path)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return params, macs, size


def _check_budgets(recipe: Recipe, o: StageResult, f: StageResult) -> list[BudgetCheck]:
    b, out = recipe.budget, []
    if b.max_accuracy_drop is not None:
        drop = o.accuracy - f.accuracy
        out.append(
            BudgetCheck("max_accuracy_drop", b.max_accuracy_drop, drop, drop <= b.max_accuracy_drop)
        )
    if b.min_accuracy is not None:
        out.append(
            BudgetCheck("min_accuracy", b.min_accuracy, f.accuracy, f.accuracy >= b.min_accuracy)
        )
    if b.min_size_reduction is not None:
        r = _ratio(o.size_bytes, f.size_bytes)
        out.append(
            BudgetCheck("min_size_reduction", b.min_size_reduction, r, r >= b.min_size_reduction)
        )
    if b.max_size_bytes is not None:
        out.append(
            BudgetCheck(
                "max_size_bytes", b.max_size_bytes, f.size_bytes, f.size_bytes <= b.max_size_bytes
            )
        )
    if b.min_macs_reduction is not None:
        r = _ratio(o.macs, f.macs)
        out.append(
            BudgetCheck("min_macs_reduction", b.min_macs_reduction, r, r >= b.min_macs_reduction)
        )
    return out


def _as_recipe(recipe: Any, target: str | None) -> Recipe:
    if isinstance(recipe, Recipe):
        if target is None or target == recipe.target:
            return recipe
        return Recipe(  # re-resolve: round_to and block come from the target
            [Stage(s.kind, s.settings, s.name) for s in recipe.stages],
            target=target,
            budget=recipe.budget,
            name=recipe.name,
            description=recipe.description,
            seed=recipe.seed,
            source=recipe.source,
        )
    if isinstance(recipe, dict):
        return Recipe.from_dict(recipe, target=target)
    if isinstance(recipe, (str, os.PathLike)):
        p = Path(recipe)
        if p.suffix == "" and not p.exists():
            return builtin(str(recipe), target or "host")
        return load_recipe(p, target=target)
    raise TypeError(
        "compress: recipe must be a Recipe, a dict, a TOML path or a built-in name; got "
        f"{type(recipe).__name__}"
    )


def compress(
    model: nn.Module,
    recipe: Recipe | dict | str | os.PathLike,
    train_data: Iterable,
    eval_data: Iterable,
    example_inputs: Any = None,
    eval_fn: Callable[[nn.Module, Iterable], float] | None = None,
    *,
    target: str | None = None,
    progress: bool = True,
    keep_models: bool = True,
) -> CompressResult:
    """Runs ``recipe`` on a copy of ``model``; returns every stage's model and metrics.

    The recipe is validated before any work. Each stage works on a copy of the previous stage's
    model, so ``model`` and every kept stage model stay as they were. Distillation stages learn
    from ``model`` itself (the original). After each stage: ``eval_fn(model, eval_data)``,
    parameters, MACs for ``example_inputs`` and the bytes of :func:`optimizer.save`'s file.

    Args:
        model: the trained float model (not modified).
        recipe: a :class:`~optimizer.recipes.Recipe`, a dict as in a file, a TOML path, or a
            built-in name (``"default"``, ``"smallest"``).
        train_data: re-iterable ``(inputs, labels)`` batches for training, BN recalibration and
            int8 calibration (a DataLoader or a list).
        eval_data: batches for ``eval_fn``.
        example_inputs: a tuple of inputs for tracing and MAC counts (default: the first sample
            of ``train_data``).
        eval_fn: ``fn(model, eval_data) -> float``, higher is better (default :func:`top1`).
        target: overrides the recipe's target profile.
        progress: progress bars on stderr (one per stage plus the passes' own).
        keep_models: keep every stage's model (False keeps only the last one's).

    Returns:
        :class:`CompressResult`; ``result.ok`` says whether the budgets are met.

    Example:
        >>> result = optimizer.compress(model, "default", train_loader, test_loader, target="rpi5")
        >>> print(result.to_markdown())
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"compress: model must be a torch.nn.Module, got {type(model).__name__}")
    recipe = _as_recipe(recipe, target)
    eval_fn = top1 if eval_fn is None else eval_fn
    if example_inputs is None:
        example = _example_from(train_data)
    else:
        example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    runner = _Runner(recipe, teacher, train_data, example, progress, None)
    with tempfile.TemporaryDirectory(prefix="edgeopt-compress-") as workdir:
        current = copy.deepcopy(model).eval()
        params, macs, size = _measure(current, example, workdir)
        results = [
            StageResult(
                0,
                "original",
                "original",
                current,
                float(eval_fn(current, eval_data)),
                params,
                macs,
                size,
            )
        ]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(recipe.stages), desc="compress", unit="stage", file=sys.stderr)
        try:
            for i, st in enumerate(recipe.stages, 1):
                if bar is not None:
                    bar.set_postfix_str(st.label)
                work = copy.deepcopy(current)
                t0 = time.perf_counter()
                try:
                    work, info = runner.run(st, work)
                except (ValueError, TypeError) as e:
                    raise type(e)(f"compress: stage {i} ({st.label}) failed: {e}") from e
                seconds = time.perf_counter() - t0
                work.eval()
                bits = 8 if st.kind in ("quantize", "qat") else 32
                if bits == 8:
                    params, macs, _ = _measure(runner.float_model, example, workdir)
                    size = _measure_size(work, workdir)
                else:
                    params, macs, size = _measure(work, example, workdir)
                acc = float(eval_fn(work, eval_data))
                results.append(
                    StageResult(
                        i,
                        st.kind,
                        st.label,
                        work,
                        acc,
                        params,
                        macs,
                        size,
                        bits,
                        seconds,
                        _jsonable(info),
                    )
                )
                current = work
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    if not keep_models:
        for r in results[:-1]:
            r.model = None
    return CompressResult(recipe, results, _check_budgets(recipe, results[0], results[-1]))


def _measure_size(model: nn.Module, workdir: str) -> int:
    import optimizer

    fd, path = tempfile.mkstemp(suffix=".pt", dir=workdir)
    os.close(fd)
    try:
        return optimizer.save(model, path)
    finally:
        os.unlink(path)


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(info, default=repr))
