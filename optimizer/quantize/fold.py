"""BatchNorm folding and the float graph that quantization starts from.

:func:`float_graph` traces a copy of the model with :func:`optimizer.graph.dependency.capture`,
turns in-place ops into out-of-place ones (so every intermediate value can be observed and
compared), folds each BatchNorm into the conv/linear that feeds it, and turns a BatchNorm that
follows no conv (pre-activation DenseNet) into the equivalent depthwise 1x1 conv, which the int8
path runs like any depthwise conv. The user's model is never changed.

Example::

    gm = float_graph(model, (torch.randn(1, 3, 32, 32),))
    torch.testing.assert_close(gm(x), model.eval()(x))
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
from torch import fx, nn

from optimizer.graph.dependency import capture
from optimizer.quantize.observers import shared_weight_amax

__all__ = ["bn_as_depthwise", "fold_bn", "float_graph", "node_path", "set_submodule"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_INPLACE_METHODS = {"add_": "add", "mul_": "mul", "relu_": "relu", "sigmoid_": "sigmoid"}


def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode BatchNorm: ``y = x * scale + shift`` per channel."""
    var = bn.running_var.detach().to(torch.float64)
    mean = bn.running_mean.detach().to(torch.float64)
    inv = torch.rsqrt(var + bn.eps)
    gamma = bn.weight.detach().to(torch.float64) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().to(torch.float64) if bn.bias is not None else torch.zeros_like(var)
    scale = gamma * inv
    return scale, beta - mean * scale


def fold_bn(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``layer`` (Conv2d or Linear) with the eval-mode ``bn`` that follows it folded in.

    ``w' = w * gamma / sqrt(var + eps)`` per output channel and
    ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; computed in float64.

    Example:
        >>> conv, bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8).eval()
        >>> folded = fold_bn(conv, bn)
        >>> x = torch.randn(1, 3, 5, 5)
        >>> torch.allclose(folded(x), bn(conv(x)), atol=1e-5)
        True
    """
    scale, shift = _bn_affine(bn)
    new = copy.deepcopy(layer)
    w = layer.weight.detach().to(torch.float64)
    w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    b = layer.bias.detach().to(torch.float64) if layer.bias is not None else torch.zeros_like(scale)
    b = b * scale + shift
    dtype = layer.weight.dtype
    new.weight = nn.Parameter(w.to(dtype))
    new.bias = nn.Parameter(b.to(dtype))
    # A shared (codebook) weight keeps one int8 table per layer: each channel's int8 range is
    # the BatchNorm factor times the codebook's range (quantize_ reads this attribute).
    amax = shared_weight_amax(layer.weight, scale)
    if amax is not None:
        new._edgeopt_weight_amax = amax
    return new


def bn_as_depthwise(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The depthwise 1x1 conv that computes the eval-mode ``bn`` (its per-channel affine map).

    Example:
        >>> bn = nn.BatchNorm2d(4).eval()
        >>> conv = bn_as_depthwise(bn)
        >>> conv.groups, tuple(conv.weight.shape)
        (4, (4, 1, 1, 1))
    """
    scale, shift = _bn_affine(bn)
    c = bn.num_features
    dtype = bn.running_mean.dtype
    conv = nn.Conv2d(c, c, 1, groups=c, bias=True)
    conv.weight = nn.Parameter(scale.reshape(c, 1, 1, 1).to(dtype))
    conv.bias = nn.Parameter(shift.to(dtype))
    return conv.to(bn.running_mean.device)


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replaces the submodule at dotted ``path`` of ``root``."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def node_path(node: fx.Node) -> str:
    """A readable PyTorch module path for a node: the module's own path for ``call_module``; the
    enclosing module's path plus the op name for functions (``layer1.0.add``)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    scope = ""
    if stack:
        last = list(stack.values())[-1]
        scope = last[0] if isinstance(last, tuple) and isinstance(last[0], str) else ""
        scope = scope.split("@")[0]
    if node.op == "call_function":
        name = getattr(node.target, "__name__", str(node.target))
    elif node.op == "call_method":
        name = str(node.target)
    else:
        name = node.name
    return f"{scope}.{name}" if scope else name


def _users(node: fx.Node) -> list[fx.Node]:
    return list(node.users)


def _module_calls(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            counts[n.target] = counts.get(n.target, 0) + 1
    return counts


def _bn_usable(bn: nn.Module) -> bool:
    return bn.track_running_stats and bn.running_mean is not None


def _drop_sharing_hooks(work: nn.Module) -> None:
    """Applies live weight-sharing hooks (``share_weights_`` before ``remove()``) once and drops
    them: carried into a folded conv, they would re-snap its folded weights to clusters that span
    channels (the fold scales each channel differently)."""
    for m in work.modules():
        for hid, hook in list(m._forward_pre_hooks.items()):
            if type(hook).__name__ == "_Shared" and callable(getattr(hook, "snap", None)):
                hook.snap(force=True)
                del m._forward_pre_hooks[hid]


def float_graph(
    model: nn.Module, example_inputs: tuple, leaves: Any = (), fold: bool = True
) -> fx.GraphModule:
    """Traces a deep copy of ``model`` and returns its float GraphModule with BatchNorm folded.

    Every node keeps its name and module path; a folded BatchNorm's node is removed and its path
    listed in ``meta["edgeopt_folded"]`` of the conv/linear node that absorbed it. The result is in
    eval mode and computes the same function as ``model.eval()`` up to float rounding.

    Args:
        model: the float model (not changed).
        example_inputs: tuple of inputs for tracing and shape propagation.
        leaves: module paths traced as opaque leaves.
        fold: fold BatchNorm (False keeps the traced graph as it is, for comparisons).
    """
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    work = copy.deepcopy(model)
    _drop_sharing_hooks(work)
    gm = capture(work, example_inputs, leaves)
    for m in gm.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.kwargs.get("inplace"):
            n.kwargs = {**n.kwargs, "inplace": False}
        if n.op == "call_function" and n.target is operator.iadd:
            n.target = operator.add
        if n.op == "call_function" and n.target is operator.imul:
            n.target = operator.mul
        if n.op == "call_method" and n.target in _INPLACE_METHODS:
            n.target = _INPLACE_METHODS[n.target]
    if fold:
        calls = _module_calls(gm)
        for n in list(gm.graph.nodes):
            if n.op != "call_module" or not isinstance(gm.get_submodule(n.target), _BN):
                continue
            bn = gm.get_submodule(n.target)
            if not _bn_usable(bn):
                continue
            src = n.args[0] if n.args else None
            producer = None
            if isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1:
                producer = gm.get_submodule(src.target)
            foldable = (
                producer is not None
                and calls.get(src.target) == 1
                and calls.get(n.target) == 1
                and (
                    (isinstance(producer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d))
                    or (isinstance(producer, nn.Linear) and isinstance(bn, nn.BatchNorm1d))
                )
                and producer.weight.shape[0] == bn.num_features
            )
            if foldable:
                set_submodule(gm, src.target, fold_bn(producer, bn))
                src.meta["edgeopt_folded"] = [*src.meta.get("edgeopt_folded", []), n.target]
                n.replace_all_uses_with(src)
                gm.graph.erase_node(n)
            elif isinstance(bn, nn.BatchNorm2d) and calls.get(n.target) == 1:
                set_submodule(gm, n.target, bn_as_depthwise(bn))
                n.meta["edgeopt_bn_as_conv"] = True
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
