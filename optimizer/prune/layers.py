"""Depth pruning: removes whole residual blocks whose output is their input plus a small change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx, nn

from optimizer._util import eval_mode
from optimizer.graph.dependency import capture
from optimizer.graph.record import get_record
from optimizer.prune.plan import apply_op, get_module

__all__ = ["LayerPruneConfig", "prune_layers_", "residual_blocks"]


@dataclass
class LayerPruneConfig:
    """Settings of :func:`prune_layers_`.

    Args:
        num_blocks: how many residual blocks to remove (or use ``ratio``).
        ratio: fraction of the removable residual blocks to remove.
        importance: ``"influence"`` (relative change ``|f(x)| / |x|`` the block makes on the
            example inputs; the blocks that change their input least go first) or ``"l1"``
            (mean weight magnitude of the block).
        ignore: block paths that must stay.
        filter_fn: ``filter_fn(module, path) -> bool`` selects candidate blocks.
    """

    num_blocks: int | None = None
    ratio: float | None = None
    importance: str = "influence"
    ignore: tuple[str, ...] = ()
    filter_fn: Callable[[nn.Module, str], bool] | None = None

    def __post_init__(self) -> None:
        if (self.num_blocks is None) == (self.ratio is None):
            raise ValueError("LayerPruneConfig: give exactly one of num_blocks and ratio")
        if self.num_blocks is not None and self.num_blocks < 0:
            raise ValueError(f"LayerPruneConfig: num_blocks must be >= 0, got {self.num_blocks}")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"LayerPruneConfig: ratio must be in [0, 1), got {self.ratio}")
        if self.importance not in ("influence", "l1"):
            raise ValueError(
                f"LayerPruneConfig: unknown importance {self.importance!r}; expected "
                "'influence' or 'l1'"
            )
        self.ignore = tuple(self.ignore)


def residual_blocks(model: nn.Module, example_inputs: tuple) -> list[str]:
    """Paths of submodules computing ``x + f(x)`` with one input and an output of its shape.

    Found on the traced graph: the module's nodes (by their module stack) take one tensor from
    outside, hand one tensor out, and that tensor is an add whose operand is the input itself.
    """
    gm = capture(model, example_inputs)
    scope: dict[str, list[fx.Node]] = {}
    for n in gm.graph.nodes:
        stack = n.meta.get("nn_module_stack") or {}
        paths = [v[0] for v in stack.values()]
        if n.op == "call_module":
            paths.append(str(n.target))
        for p in dict.fromkeys(paths):
            scope.setdefault(p, []).append(n)
    found = []
    for path, nodes in scope.items():
        if not path:
            continue
        inside = set(nodes)
        inputs = {a for n in nodes for a in n.all_input_nodes if a not in inside}
        outputs = [n for n in nodes if any(u not in inside for u in n.users)]
        if len(inputs) != 1 or len(outputs) != 1:
            continue
        (x,) = inputs
        y = outputs[0]
        if _is_relu(y, gm):  # torchvision's BasicBlock ends in relu(out + identity)
            y = y.args[0] if y.args and isinstance(y.args[0], fx.Node) else y
        if not _residual_chain(y, x, inside):
            continue
        sx = x.meta.get("tensor_meta")
        sy = y.meta.get("tensor_meta")
        if sx is None or sy is None or tuple(sx.shape) != tuple(sy.shape):
            continue
        found.append(path)
    # Keep the outermost blocks only (a block inside a removed block goes with it).
    return [p for p in found if not any(p.startswith(q + ".") for q in found)]


def _is_relu(n: fx.Node, gm: fx.GraphModule) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(str(n.target)), (nn.ReLU, nn.ReLU6))
    name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    return name in ("relu", "relu_", "relu6")


def _residual_chain(y: fx.Node, x: fx.Node, inside: set) -> bool:
    """``y`` is ``x + f(x)``, or ``z + g(z)`` where ``z`` is itself such a chain (an encoder
    layer's two residuals)."""
    if y.op != "call_function" or getattr(y.target, "__name__", "") not in ("add", "iadd"):
        return False
    if x in y.args:
        return True
    return any(
        isinstance(a, fx.Node) and a in inside and _residual_chain(a, x, inside) for a in y.args
    )


def _influence(model: nn.Module, paths: list[str], example_inputs: tuple) -> dict[str, float]:
    seen: dict[str, float] = {}
    hooks = []

    def hook(path):
        def fn(mod, args, out):
            x = args[0]
            seen[path] = float((out - x).norm() / (x.norm() + 1e-12))

        return fn

    for p in paths:
        hooks.append(get_module(model, p).register_forward_hook(hook(p)))
    try:
        with eval_mode(model), torch.no_grad():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def prune_layers_(model: nn.Module, example_inputs: Any, config: LayerPruneConfig) -> list[str]:
    """Replaces the least important residual blocks by ``nn.Identity``; returns their paths.

    Example:
        >>> removed = optimizer.prune_layers_(model, x, optimizer.LayerPruneConfig(num_blocks=2))
    """
    x = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    blocks = residual_blocks(model, x)
    for p in config.ignore:
        get_module(model, p)  # raises naming a path that does not exist
    cands = [
        p
        for p in blocks
        if p not in config.ignore
        and (config.filter_fn is None or config.filter_fn(get_module(model, p), p))
    ]
    n = config.num_blocks if config.num_blocks is not None else int(len(cands) * config.ratio)
    if n > len(cands):
        raise ValueError(
            f"prune_layers_: asked to remove {n} blocks but only {len(cands)} residual blocks "
            f"can go ({cands})"
        )
    if n == 0:
        return []
    if config.importance == "influence":
        score = _influence(model, cands, x)
    else:
        score = {}
        for p in cands:
            ps = [q.detach().abs().mean() for q in get_module(model, p).parameters()]
            score[p] = float(torch.stack(ps).mean()) if ps else 0.0
    drop = sorted(cands, key=lambda p: score[p])[:n]
    plan = [{"op": "replace", "module": p, "with": "Identity"} for p in drop]
    for op in plan:
        apply_op(model, op)
    with eval_mode(model), torch.no_grad():
        model(*x)
    rec = get_record(model)
    rec["plan"].extend(plan)
    rec["passes"].append({"pass": "prune_layers", "removed": drop})
    return drop
