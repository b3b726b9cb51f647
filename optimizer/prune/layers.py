"""Depth pruning: removes whole residual blocks whose output is their input plus a small change,
and (``plain_layers``) shape-preserving conv layers of plain CNNs (VGG-style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx, nn

from optimizer._util import eval_mode
from optimizer.graph.dependency import capture
from optimizer.graph.record import get_record
from optimizer.prune.plan import apply_op, get_module

__all__ = ["LayerPruneConfig", "plain_layers", "prune_layers_", "residual_blocks"]


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
        plain_layers: also count as blocks the shape-preserving layers of plain CNNs: a
            ``Conv2d`` (stride 1, one group, as many outputs as inputs, output shaped as its
            input) with its ``BatchNorm2d``, between two ReLUs (or two ReLU6s), whose removal
            leaves ``relu(relu(x)) = relu(x)``: see :func:`plain_layers`. Removing one changes
            the network's function (there is no skip connection), so distillation should follow.
    """

    num_blocks: int | None = None
    ratio: float | None = None
    importance: str = "influence"
    ignore: tuple[str, ...] = ()
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    plain_layers: bool = False

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


def plain_layers(model: nn.Module, example_inputs: tuple) -> dict[str, list[str]]:
    """Shape-preserving conv layers of a plain CNN: conv path -> the module paths a removal
    replaces by ``nn.Identity`` (the conv and its BatchNorm).

    A candidate is a ``Conv2d`` module called once, with stride 1, one group and dilation 1,
    whose output has its input's shape, that reads the output of a ReLU (ReLU6) and whose
    value (after an optional ``BatchNorm2d`` called once) only feeds a ReLU (ReLU6) of the same
    kind: without it the second activation sees the first one's output and does nothing.

    Example:
        >>> plain_layers(vgg, (torch.zeros(1, 1, 8, 8),))
        {'features.3': ['features.3', 'features.4'], ...}
    """
    gm = capture(model, example_inputs)
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    found: dict[str, list[str]] = {}
    for n in gm.graph.nodes:
        if n.op != "call_module" or calls[str(n.target)] != 1:
            continue
        conv = gm.get_submodule(str(n.target))
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
            continue
        if tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1):
            continue
        if conv.in_channels != conv.out_channels or not n.args:
            continue
        x = n.args[0]
        if not isinstance(x, fx.Node) or not _is_relu(x, gm):
            continue
        unit, y = [str(n.target)], n
        if len(y.users) == 1:
            (u,) = y.users
            if (
                u.op == "call_module"
                and isinstance(gm.get_submodule(str(u.target)), nn.BatchNorm2d)
                and calls[str(u.target)] == 1
            ):
                unit.append(str(u.target))
                y = u
        if len(y.users) != 1:
            continue
        (act,) = y.users
        if _relu_kind(act, gm) != _relu_kind(x, gm):  # x is a ReLU (ReLU6): act the same kind
            continue
        sx, sy = x.meta.get("tensor_meta"), y.meta.get("tensor_meta")
        if sx is None or sy is None or tuple(sx.shape) != tuple(sy.shape):
            continue
        found[str(n.target)] = unit
    return found


def _relu_kind(n: fx.Node, gm: fx.GraphModule) -> str | None:
    """``"relu"`` / ``"relu6"`` for a ReLU / ReLU6 node (module or function), else None."""
    if n.op == "call_module":
        mod = gm.get_submodule(str(n.target))
        if isinstance(mod, nn.ReLU6):
            return "relu6"
        return "relu" if isinstance(mod, nn.ReLU) else None
    name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    return {"relu": "relu", "relu_": "relu", "relu6": "relu6"}.get(name)


def _is_relu(n: fx.Node, gm: fx.GraphModule) -> bool:
    return _relu_kind(n, gm) is not None


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


def _influence(
    model: nn.Module,
    paths: list[str],
    example_inputs: tuple,
    units: dict[str, list[str]] | None = None,
) -> dict[str, float]:
    """``|f(x) - x| / |x|`` of each block on the example inputs; a plain layer's ``f`` runs from
    its conv's input to its last module's (BatchNorm's) output."""
    seen: dict[str, float] = {}
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    units = units or {}

    def keep(path):
        def fn(mod, args):
            inputs[path] = args[0]

        return fn

    def hook(path):
        def fn(mod, args, out):
            x = inputs.get(path, args[0])
            seen[path] = float((out - x).norm() / (x.norm() + 1e-12))

        return fn

    for p in paths:
        unit = units.get(p, [p])
        if len(unit) > 1:
            hooks.append(get_module(model, unit[0]).register_forward_pre_hook(keep(p)))
        hooks.append(get_module(model, unit[-1]).register_forward_hook(hook(p)))
    try:
        with eval_mode(model), torch.no_grad():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def prune_layers_(model: nn.Module, example_inputs: Any, config: LayerPruneConfig) -> list[str]:
    """Replaces the least important residual blocks (with ``plain_layers``, also plain conv
    layers) by ``nn.Identity``; returns their paths (a plain layer's conv path).

    Example:
        >>> removed = optimizer.prune_layers_(model, x, optimizer.LayerPruneConfig(num_blocks=2))
    """
    x = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    blocks = residual_blocks(model, x)
    units = plain_layers(model, x) if config.plain_layers else {}
    blocks += [p for p in units if not any(p.startswith(q + ".") for q in blocks)]
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
            f"prune_layers_: asked to remove {n} blocks but only {len(cands)} "
            f"{'residual blocks or plain layers' if config.plain_layers else 'residual blocks'} "
            f"can go ({cands})"
        )
    if n == 0:
        return []
    if config.importance == "influence":
        score = _influence(model, cands, x, units)
    else:
        score = {}
        for p in cands:
            mods = [get_module(model, q) for q in units.get(p, [p])]
            ps = [q.detach().abs().mean() for m in mods for q in m.parameters()]
            score[p] = float(torch.stack(ps).mean()) if ps else 0.0
    drop = sorted(cands, key=lambda p: score[p])[:n]
    plan = [
        {"op": "replace", "module": q, "with": "Identity"} for p in drop for q in units.get(p, [p])
    ]
    for op in plan:
        apply_op(model, op)
    with eval_mode(model), torch.no_grad():
        model(*x)
    rec = get_record(model)
    rec["plan"].extend(plan)
    rec["passes"].append({"pass": "prune_layers", "removed": drop})
    return drop
