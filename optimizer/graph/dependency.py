"""Channel-dependency graph: which channels of which tensors must be removed together.

The model is traced with ``torch.fx`` (standard ``torch.nn`` layers stay leaves) and shapes are
propagated with the example inputs. Every tensor value then carries one *slot* per channel of its
channel dimension. Layers that create channels (conv, linear, embedding, attention output) make
fresh slots; ops that pass channels through (activations, pooling, norms, depthwise convs) keep
them; ops that combine tensors elementwise (residual adds, squeeze-excitation multiplies, concat
along another dim) unify the slots of their inputs index by index; concat and split along the
channel dim join and cut slot lists (index offsets come for free); flatten repeats each slot over
the spatial positions it covers (channel to feature blocks).

After propagation, slots that were unified form one *unit*: one channel that can be removed from
every tensor that holds it without breaking a shape. Units created by the same producer form a
:class:`Group` (the unit of a pruning decision, like Torch-Pruning's group). A unit is *locked*
when it reaches a model input or output, an ignored module, or an op that needs it whole.

Ops the graph cannot reason about raise :class:`UnsupportedOpError` before anything is changed,
naming the module path and op, and the ``ignore`` parameter that makes the tracer treat the
enclosing module as an opaque leaf whose channels are left alone.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from optimizer._util import eval_mode
from optimizer.graph.attention import MultiheadSelfAttention

__all__ = [
    "DependencyGraph",
    "Group",
    "Member",
    "UnsupportedOpError",
    "capture",
]


class UnsupportedOpError(ValueError):
    """An op the dependency graph cannot reason about touches prunable channels."""


# Leaf module kinds that pass channels through unchanged (shape-preserving on the channel dim).
_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Mish,
    nn.Softmax,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
)
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)

_PASS_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.hardswish,
    F.hardsigmoid,
    F.sigmoid,
    F.tanh,
    F.mish,
    F.elu,
    F.dropout,
    F.softmax,
    F.log_softmax,
    F.max_pool1d,
    F.max_pool2d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.interpolate,
    F.pad,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.abs,
    torch.neg,
    torch.exp,
    torch.sqrt,
    torch.clamp,
    torch.clip,
    torch.softmax,
    torch.log_softmax,
    operator.neg,
    operator.pos,
}
_PASS_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "tanh",
    "abs",
    "neg",
    "exp",
    "sqrt",
    "clamp",
    "clamp_",
    "clip",
    "contiguous",
    "float",
    "to",
    "type_as",
    "clone",
    "detach",
    "softmax",
    "log_softmax",
    "pow",
}
_BINARY_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
_SPLIT_METHODS = {"chunk", "split", "tensor_split", "unbind"}
_SPLIT_FUNCTIONS = {torch.chunk, torch.split, torch.tensor_split, torch.unbind}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_NON_TENSOR_METHODS = {"size", "dim", "numel"}


# --------------------------------------------------------------------------------------------
# Members: the tensors a unit touches
# --------------------------------------------------------------------------------------------


@dataclass
class Member:
    """One place a group's channels live: a module's output rows, input columns, or norm params.

    Attributes:
        module: module path (``""`` is the root).
        role: ``"out"`` (channels it produces), ``"in"`` (channels it consumes), ``"norm"``
            (per-channel parameters of a norm or a depthwise conv), ``"param"`` (a bare
            parameter added to the activations, e.g. a positional embedding) or ``"heads"``.
        kind: the module's class name.
        slots: one slot id per index along the pruned dimension of this member.
        segments: for grouped convs and GroupNorm, the number of equal segments the indices fall
            into; pruning must remove the same count from each.
        dim: for ``"param"``, the parameter's dimension that holds the channels.
    """

    module: str
    role: str
    kind: str
    slots: np.ndarray
    segments: int = 1
    dim: int = 0
    tensor: str = ""

    def __str__(self) -> str:
        where = f"{self.module}.{self.tensor}" if self.tensor else self.module or "<root>"
        seg = f", {self.segments} groups" if self.segments > 1 else ""
        return f"{where} ({self.kind}, {self.role} channels x{len(self.slots)}{seg})"


class _Value:
    """A traced tensor: its shape, its channel dim (or None) and one slot per channel."""

    __slots__ = ("shape", "cdim", "slots")

    def __init__(self, shape: Sequence[int], cdim: int | None, slots: np.ndarray | None):
        self.shape = tuple(int(s) for s in shape)
        self.cdim = cdim
        self.slots = slots


class _Param:
    """A parameter read by ``get_attr``; becomes a member when it meets an activation."""

    __slots__ = ("module", "name", "shape")

    def __init__(self, module: str, name: str, shape: Sequence[int]):
        self.module, self.name, self.shape = module, name, tuple(shape)


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


@dataclass
class Group:
    """Channels that must be removed together, one pruning decision.

    ``units`` lists the removable channels; ``unit_index[m][i]`` gives, for member ``m`` and unit
    ``i``, the indices of that member's pruned dimension that belong to the unit.

    Example:
        >>> g = DependencyGraph(model, (x,)).groups()[0]
        >>> print(g.details())
    """

    id: int
    members: list[Member]
    units: list[int]
    locked: np.ndarray
    segments: int = 1
    segment_of: np.ndarray | None = None
    unit_index: list[list[np.ndarray]] = field(default_factory=list)
    prunable: bool = True
    reason: str = ""
    heads: bool = False
    head_dim: int = 0

    def __len__(self) -> int:
        return len(self.units)

    @property
    def root(self) -> str:
        """Path of the first producer, the name the group goes by in reports."""
        for m in self.members:
            if m.role in ("out", "heads"):
                return m.module
        return self.members[0].module

    def details(self) -> str:
        """Readable lines: ``producer => consumer`` per member, as Torch-Pruning prints them."""
        kind = f"{len(self.units)} heads of {self.head_dim}" if self.heads else f"{len(self)} ch"
        state = "prunable" if self.prunable else f"not prunable: {self.reason}"
        lines = [f"Group {self.id} `{self.root}` ({kind}, {state})"]
        if self.segments > 1:
            lines.append(f"  removes the same count from each of {self.segments} segments")
        producers = [m for m in self.members if m.role in ("out", "heads")]
        others = [m for m in self.members if m.role not in ("out", "heads")]
        src = ", ".join(f"`{m.module}`" for m in producers) or "<input>"
        for m in others:
            lines.append(f"  {src} => {m}")
        if self.heads:
            lines.append(
                f"  {src}: rows of q_proj/k_proj/v_proj and columns of out_proj per head; "
                "num_heads updated"
            )
        elif not others:
            lines.append(f"  {src} (no consumers inside the model)")
        nlock = int(self.locked.sum())
        if nlock and self.prunable:
            lines.append(f"  {nlock} channel(s) locked (model input/output or ignored module)")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    def __init__(self, leaves: Iterable[str]):
        super().__init__()
        self._leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self._leaves or isinstance(m, (nn.MultiheadAttention,)):
            return True
        if isinstance(m, MultiheadSelfAttention):
            return True
        return super().is_leaf_module(m, qualname)


def capture(model: nn.Module, example_inputs: tuple, leaves: Iterable[str] = ()) -> fx.GraphModule:
    """Traces ``model`` with torch.fx and annotates every node with its output shape.

    The model is run once in eval mode under ``no_grad`` (BatchNorm statistics do not move) and
    its train/eval mode is restored.

    Raises:
        ValueError: the model cannot be traced symbolically; names the cause.
    """
    tracer = _Tracer(leaves)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # torch.fx raises TraceError, TypeError, ... depending on the code
        raise ValueError(
            f"capture: torch.fx could not trace `{type(model).__name__}`: {e}. Data-dependent "
            "Python control flow cannot be traced; pass the module that holds it in `ignore`"
        ) from e
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    with eval_mode(model), torch.no_grad():
        ShapeProp(gm).propagate(*example_inputs)
    return gm


# --------------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------------


def _shape_of(meta: Any) -> tuple[int, ...] | None:
    if meta is None:
        return None
    if hasattr(meta, "shape"):
        return tuple(int(s) for s in meta.shape)
    return None


class DependencyGraph:
    """Channel-dependency graph of a model traced with example inputs.

    Args:
        model: the module (not changed).
        example_inputs: a tuple of inputs for one forward pass.
        ignore: module paths left untouched: the tracer treats each as an opaque leaf and the
            channels entering and leaving it are locked.

    Example:
        >>> dg = DependencyGraph(model, (torch.randn(1, 3, 32, 32),))
        >>> for g in dg.groups():
        ...     print(g.details())
    """

    def __init__(self, model: nn.Module, example_inputs: tuple, ignore: Iterable[str] = ()):
        if not isinstance(example_inputs, tuple):
            example_inputs = (example_inputs,)
        self.model = model
        self.ignore = tuple(ignore)
        names = dict(model.named_modules())
        for p in self.ignore:
            if p not in names:
                raise ValueError(
                    f"DependencyGraph: `ignore` names `{p}`, which is not a module of "
                    f"{type(model).__name__}; expected one of its module paths"
                )
        self.modules = names
        self.gm = capture(model, example_inputs, self.ignore)
        self._parent: list[int] = []
        self._locked: list[bool] = []
        self._owner: list[int] = []  # producer member index that created the slot, or -1
        self.members: list[Member] = []
        self._by_key: dict[tuple, Member] = {}
        self._head_members: list[tuple[Member, int, int]] = []  # (member, heads, head_dim)
        self._build()
        self._groups = self._make_groups()

    # ---------------- union-find over slots ----------------
    def _new(self, n: int, locked: bool = False, owner: int = -1) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        self._locked.extend([locked] * n)
        self._owner.extend([owner] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def _find(self, s: int) -> int:
        p = self._parent
        root = s
        while p[root] != root:
            root = p[root]
        while p[s] != root:
            p[s], s = root, p[s]
        return root

    def _union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self._find(x), self._find(y)
            if rx != ry:
                self._parent[ry] = rx
                self._locked[rx] = self._locked[rx] or self._locked[ry]

    def _lock(self, slots: np.ndarray | None) -> None:
        if slots is None:
            return
        for s in slots.tolist():
            self._locked[self._find(s)] = True

    def _lock_value(self, v: Any) -> None:
        if isinstance(v, _Value):
            self._lock(v.slots)
        elif isinstance(v, (list, tuple)):
            for x in v:
                self._lock_value(x)
        elif isinstance(v, dict):
            for x in v.values():
                self._lock_value(x)

    def _member(self, m: Member) -> Member:
        # A module called more than once (shared weights, or norm(x) written three times) owns
        # one set of tensors: its channels are the same at every call, so the slots unify.
        key = (m.module, m.role, m.tensor, m.kind)
        old = self._by_key.get(key)
        if old is not None and len(old.slots) == len(m.slots) and m.role != "split":
            self._union(old.slots, m.slots)
            return old
        self._by_key[key] = m
        self.members.append(m)
        return m

    # ---------------- propagation ----------------
    def _where(self, node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        path = next(reversed(stack.values()))[0] if stack else ""
        if node.op == "call_module":
            path = str(node.target)
        return path

    def _unsupported(self, node: fx.Node, why: str) -> UnsupportedOpError:
        path = self._where(node)
        op = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "?")
        where = f"`{path}`" if path else "the top-level forward"
        hint = (
            f"pass `ignore=['{path}']` to leave that module's channels alone"
            if path
            else "move the op into a submodule and pass its path in `ignore`"
        )
        return UnsupportedOpError(
            f"DependencyGraph: cannot reason about op `{op}` ({node.op}) in {where}: {why}; {hint}"
        )

    def _needs(self, node: fx.Node, v: _Value, dim: int) -> np.ndarray:
        """The slots of ``v`` along ``dim`` (fresh locked slots when ``v`` has none there)."""
        dim = dim % len(v.shape)
        if v.cdim == dim and v.slots is not None:
            return v.slots
        if v.cdim is None or v.slots is None or self._all_locked(v.slots):
            return self._new(v.shape[dim], locked=True)
        raise self._unsupported(
            node, f"it uses dim {dim} as channels while the channels are on dim {v.cdim}"
        )

    def _all_locked(self, slots: np.ndarray) -> bool:
        return all(self._locked[self._find(s)] for s in slots.tolist())

    def _fresh_locked(self, shape: tuple[int, ...] | None) -> _Value | None:
        if shape is None:
            return None
        if len(shape) < 2:
            return _Value(shape, None, None)
        return _Value(shape, 1, self._new(shape[1], locked=True))

    def _build(self) -> None:
        env: dict[fx.Node, Any] = {}
        for node in self.gm.graph.nodes:
            shape = _shape_of(node.meta.get("tensor_meta"))
            if node.op == "placeholder":
                env[node] = self._fresh_locked(shape)
            elif node.op == "get_attr":
                path, _, name = str(node.target).rpartition(".")
                env[node] = _Param(path, name, shape or ())
            elif node.op == "output":
                self._lock_value(self._args(env, node.args[0]))
            elif node.op == "call_module":
                env[node] = self._call_module(node, env, shape)
            elif node.op in ("call_function", "call_method"):
                env[node] = self._call(node, env, shape)

    def _args(self, env: dict, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return env.get(a)
        if isinstance(a, (list, tuple)):
            return type(a)(self._args(env, x) for x in a)
        if isinstance(a, dict):
            return {k: self._args(env, x) for k, x in a.items()}
        return a

    def _call_module(self, node: fx.Node, env: dict, shape) -> Any:
        path = str(node.target)
        mod = self.modules[path]
        args = [self._args(env, a) for a in node.args]
        kwargs = {k: self._args(env, a) for k, a in node.kwargs.items()}
        x = args[0] if args else next(iter(kwargs.values()), None)
        kind = type(mod).__name__
        if path in self.ignore:
            self._lock_value(args)
            self._lock_value(kwargs)
            return self._opaque_output(node)
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return self._conv(node, mod, path, x, shape)
        if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            if mod.groups != 1:
                raise self._unsupported(node, "grouped transposed convolutions are not handled")
            inp = self._needs(node, x, 1)
            self._member(Member(path, "in", kind, inp))
            mi = len(self.members)
            out = self._new(mod.out_channels, owner=mi)
            self._member(Member(path, "out", kind, out))
            return _Value(shape, 1, out)
        if isinstance(mod, nn.Linear):
            inp = self._needs(node, x, -1)
            self._member(Member(path, "in", kind, inp))
            mi = len(self.members)
            out = self._new(mod.out_features, owner=mi)
            self._member(Member(path, "out", kind, out))
            return _Value(shape, len(shape) - 1, out)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d)):
            slots = self._needs(node, x, 1)
            if getattr(mod, "affine", True) or getattr(mod, "track_running_stats", False):
                self._member(Member(path, "norm", kind, slots))
            return _Value(shape, 1, slots)
        if isinstance(mod, nn.GroupNorm):
            slots = self._needs(node, x, 1)
            self._member(Member(path, "norm", kind, slots, segments=mod.num_groups))
            return _Value(shape, 1, slots)
        if isinstance(mod, nn.LayerNorm):
            nd = len(mod.normalized_shape)
            if x.cdim is not None and x.cdim >= len(x.shape) - nd:
                if nd != 1:
                    raise self._unsupported(
                        node, f"LayerNorm over {nd} dims that include the channel dim"
                    )
                slots = self._needs(node, x, -1)
                if mod.elementwise_affine:
                    self._member(Member(path, "norm", kind, slots))
                return _Value(shape, x.cdim, slots)
            return _Value(shape, x.cdim, x.slots)
        if isinstance(mod, nn.Embedding):
            mi = len(self.members)
            out = self._new(mod.embedding_dim, owner=mi)
            self._member(Member(path, "out", kind, out))
            return _Value(shape, len(shape) - 1, out)
        if isinstance(mod, (nn.MultiheadAttention, MultiheadSelfAttention)):
            return self._attention(node, mod, path, args, kwargs)
        if isinstance(mod, _PASS_MODULES):
            if isinstance(mod, nn.PReLU) and mod.num_parameters > 1:
                self._member(Member(path, "norm", kind, self._needs(node, x, 1)))
            return self._pass(x, shape)
        if isinstance(mod, _RESHAPE_MODULES):
            return self._reshape(node, x, shape)
        if self._tensor_values_locked(args, kwargs):
            return self._opaque_output(node)
        raise self._unsupported(node, f"module type {kind} is not known to the pruner")

    def _opaque_output(self, node: fx.Node) -> Any:
        meta = node.meta.get("tensor_meta")
        if _is_seq(meta):
            return tuple(self._fresh_locked(_shape_of(m)) for m in meta)
        return self._fresh_locked(_shape_of(meta))

    def _tensor_values_locked(self, args, kwargs) -> bool:
        vals: list[_Value] = []

        def walk(a):
            if isinstance(a, _Value):
                vals.append(a)
            elif isinstance(a, _Param):
                vals.append(None)
            elif isinstance(a, (list, tuple)):
                for x in a:
                    walk(x)
            elif isinstance(a, dict):
                for x in a.values():
                    walk(x)

        walk(args)
        walk(kwargs)
        return all(v is not None and (v.slots is None or self._all_locked(v.slots)) for v in vals)

    def _pass(self, x: Any, shape) -> Any:
        if not isinstance(x, _Value):
            return None
        shape = shape or x.shape
        if len(shape) != len(x.shape):
            return _Value(shape, None, None)
        return _Value(shape, x.cdim, x.slots)

    def _conv(self, node, mod, path, x, shape) -> _Value:
        kind = type(mod).__name__
        inp = self._needs(node, x, 1)
        g = mod.groups
        if g == mod.in_channels and g > 1:  # depthwise: output channel j reads input j // mult
            mult = mod.out_channels // mod.in_channels
            out = np.repeat(inp, mult)
            self._member(Member(path, "norm", kind, out, tensor="depthwise"))
            return _Value(shape, 1, out)
        self._member(Member(path, "in", kind, inp, segments=g))
        mi = len(self.members)
        out = self._new(mod.out_channels, owner=mi)
        self._member(Member(path, "out", kind, out, segments=g))
        return _Value(shape, 1, out)

    def _attention(self, node, mod, path, args, kwargs) -> Any:
        q = node.args[0] if node.args else node.kwargs.get("query")
        k = node.args[1] if len(node.args) > 1 else node.kwargs.get("key", q)
        v = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", k)
        if k is None:
            k = q
        if v is None:
            v = k
        if not (_same(q, k) and _same(q, v)):
            raise self._unsupported(node, "only self-attention (query is key is value) is handled")
        if isinstance(mod, nn.MultiheadAttention) and (
            not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn
        ):
            raise self._unsupported(node, "MultiheadAttention with kdim/vdim/bias_k/add_zero_attn")
        x = args[0]
        kind = type(mod).__name__
        batch_first = mod.batch_first
        inp = self._needs(node, x, -1)
        self._member(Member(path, "in", kind, inp))
        heads = self._member(
            Member(path, "heads", kind, self._new(mod.num_heads, owner=len(self.members)))
        )
        if all(h is not heads for h, _, _ in self._head_members):
            self._head_members.append((heads, mod.num_heads, mod.head_dim))
        mi = len(self.members)
        out = self._new(mod.embed_dim, owner=mi)
        self._member(Member(path, "out", kind, out))
        del batch_first
        meta = node.meta.get("tensor_meta")
        shapes = [_shape_of(m) for m in meta] if _is_seq(meta) else [None]
        y = _Value(shapes[0], len(shapes[0]) - 1, out) if shapes[0] else None
        return (y, self._fresh_locked(shapes[1]) if len(shapes) > 1 else None)

    def _call(self, node: fx.Node, env: dict, shape) -> Any:
        t = node.target
        args = [self._args(env, a) for a in node.args]
        kwargs = {k: self._args(env, a) for k, a in node.kwargs.items()}
        method = node.op == "call_method"
        x = args[0] if args else None
        if method and t in _NON_TENSOR_METHODS:
            return None
        if t is getattr and node.op == "call_function":
            return None  # x.shape, x.dtype
        if (method and t in _PASS_METHODS) or (not method and t in _PASS_FUNCTIONS):
            return self._pass(x, shape)
        if (method and t in _BINARY_METHODS) or (not method and t in _BINARY_FUNCTIONS):
            return self._binary(node, [a for a in args[:2]], shape)
        if (method and t in _RESHAPE_METHODS) or (not method and t in _RESHAPE_FUNCTIONS):
            return self._reshape(node, x, shape)
        if (method and t in ("transpose", "permute")) or (
            not method and t in (torch.transpose, torch.permute)
        ):
            return self._permute(node, t, args, shape)
        if (method and t in _REDUCE_METHODS) or (not method and t in _REDUCE_FUNCTIONS):
            return self._reduce(node, x, args, kwargs, shape)
        if not method and t in _CAT_FUNCTIONS:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            return self._cat(node, list(args[0]), dim, shape)
        if (method and t in _SPLIT_METHODS) or (not method and t in _SPLIT_FUNCTIONS):
            return self._split(node, t, args, kwargs)
        if not method and t is operator.getitem:
            return self._getitem(node, x, args[1], shape)
        if self._tensor_values_locked(args, kwargs):
            return self._opaque_output(node)
        name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
        raise self._unsupported(node, f"`{name}` is not known to the pruner")

    def _binary(self, node, ops: list, shape) -> Any:
        if shape is None:
            return None
        nd = len(shape)
        out_slots: np.ndarray | None = None
        out_cdim: int | None = None
        pending_params: list[tuple[_Param, int]] = []
        for a in ops:
            if isinstance(a, _Value) and a.cdim is not None and a.slots is not None:
                d = a.cdim + nd - len(a.shape)
                if a.shape[a.cdim] != shape[d]:
                    continue  # broadcast along the channel dim: no coupling
                if out_slots is None:
                    out_slots, out_cdim = a.slots, d
                elif d == out_cdim:
                    self._union(out_slots, a.slots)
                elif not (self._all_locked(a.slots) and self._all_locked(out_slots)):
                    raise self._unsupported(node, "operands carry channels on different dims")
            elif isinstance(a, _Param):
                pending_params.append((a, nd - len(a.shape)))
        for p, off in pending_params:
            if out_cdim is None:
                continue
            d = out_cdim - off
            if 0 <= d < len(p.shape) and p.shape[d] == shape[out_cdim] and p.shape[d] > 1:
                slots = out_slots
                self._member(Member(p.module, "param", "Parameter", slots, dim=d, tensor=p.name))
        if out_slots is None:
            return _Value(shape, None, None)
        return _Value(shape, out_cdim, out_slots)

    def _reshape(self, node, x, shape) -> Any:
        if not isinstance(x, _Value) or shape is None:
            return None
        if x.cdim is None or x.slots is None:
            return _Value(shape, None, None)
        s = x.shape
        pre = math.prod(s[: x.cdim])
        c = s[x.cdim]
        k, acc = 0, 1
        while k < len(shape) and acc < pre:
            acc *= shape[k]
            k += 1
        while k < len(shape) and shape[k] == 1 and acc == pre and c != 1:
            k += 1
        if acc != pre or k >= len(shape):
            if self._all_locked(x.slots):
                return self._fresh_locked(shape)
            raise self._unsupported(node, f"reshape {s} -> {shape} moves the channel dim")
        if shape[k] == c:
            return _Value(shape, k, x.slots)
        if shape[k] % c == 0 and math.prod(s[x.cdim + 1 :]) % (shape[k] // c) == 0:
            return _Value(shape, k, np.repeat(x.slots, shape[k] // c))
        if self._all_locked(x.slots):
            return self._fresh_locked(shape)
        raise self._unsupported(
            node,
            f"reshape {s} -> {shape} splits the channel dim (e.g. into attention heads); "
            "use optimizer.graph.attention.MultiheadSelfAttention or nn.MultiheadAttention",
        )

    def _permute(self, node, t, args, shape) -> Any:
        x = args[0]
        if not isinstance(x, _Value) or x.cdim is None:
            return self._pass(x, shape)
        nd = len(x.shape)
        if t == "permute" or t is torch.permute:
            dims = (
                args[1:] if t == "permute" and not isinstance(args[1], (list, tuple)) else args[1]
            )
            perm = [d % nd for d in dims]
            return _Value(shape, perm.index(x.cdim), x.slots)
        d0, d1 = args[1] % nd, args[2] % nd
        c = d1 if x.cdim == d0 else d0 if x.cdim == d1 else x.cdim
        return _Value(shape, c, x.slots)

    def _reduce(self, node, x, args, kwargs, shape) -> Any:
        if not isinstance(x, _Value) or shape is None:
            return None
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if x.cdim is None:
            return _Value(shape, None, None)
        nd = len(x.shape)
        if dims is None:
            return _Value(shape, None, None)
        dims = [d % nd for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if x.cdim in dims:
            return _Value(shape, None, None)
        keep = len(shape) == nd
        c = x.cdim if keep else x.cdim - sum(1 for d in dims if d < x.cdim)
        return _Value(shape, c, x.slots)

    def _cat(self, node, xs: list, dim: int, shape) -> Any:
        vals = [v for v in xs if isinstance(v, _Value)]
        if shape is None or not vals:
            return None
        nd = len(shape)
        dim = dim % nd
        with_c = [v for v in vals if v.cdim is not None and v.slots is not None]
        if with_c and all(v.cdim == dim for v in with_c) and len(with_c) == len(vals):
            return _Value(shape, dim, np.concatenate([v.slots for v in vals]))
        if any(v.cdim == dim for v in with_c):
            parts = []
            for v in vals:
                if v.cdim == dim and v.slots is not None:
                    parts.append(v.slots)
                elif v.slots is None or self._all_locked(v.slots):
                    parts.append(self._new(v.shape[dim], locked=True))
                else:
                    raise self._unsupported(
                        node, "concatenated tensors hold channels on other dims"
                    )
            return _Value(shape, dim, np.concatenate(parts))
        return self._binary(node, vals, shape)

    def _split(self, node, t, args, kwargs) -> Any:
        x = args[0]
        meta = node.meta.get("tensor_meta")
        if not isinstance(x, _Value) or not _is_seq(meta):
            return None
        shapes = [_shape_of(m) for m in meta]
        name = t if isinstance(t, str) else t.__name__
        dim = kwargs.get("dim", args[2] if len(args) > 2 else (0 if name == "unbind" else 0))
        if name == "unbind":
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        dim = dim % len(x.shape)
        if x.cdim is None or dim != x.cdim:
            return tuple(
                _Value(
                    s,
                    None if x.cdim is None else (x.cdim - (name == "unbind" and dim < x.cdim)),
                    x.slots,
                )
                for s in shapes
            )
        if name == "unbind":
            self._lock(x.slots)
            return tuple(_Value(s, None, None) for s in shapes)
        if name == "chunk" and len({s[dim] for s in shapes}) == 1:
            # chunk(n) cuts the channels into n equal parts at run time: prune each part alike.
            self._member(Member(self._where(node), "split", "chunk", x.slots, segments=len(shapes)))
        else:
            # split/tensor_split sizes are constants in the model's code: keep those channels.
            self._lock(x.slots)
        out, off = [], 0
        for s in shapes:
            n = s[dim]
            out.append(_Value(s, dim, x.slots[off : off + n]))
            off += n
        return tuple(out)

    def _getitem(self, node, x, idx, shape) -> Any:
        if isinstance(x, (tuple, list)):
            return x[idx]
        if not isinstance(x, _Value):
            return None
        if x.cdim is None or x.slots is None:
            return _Value(shape, None, None) if shape is not None else None
        if not isinstance(idx, tuple):
            idx = (idx,)
        d_in, d_out = 0, 0
        cdim_out: int | None = None
        slots = x.slots
        for i in idx:
            if i is Ellipsis:
                rest = len(idx) - idx.index(Ellipsis) - 1
                skip = len(x.shape) - d_in - rest
                if d_in <= x.cdim < d_in + skip:
                    cdim_out = d_out + (x.cdim - d_in)
                d_in += skip
                d_out += skip
                continue
            if i is None:
                d_out += 1
                continue
            if d_in == x.cdim:
                if isinstance(i, slice):
                    slots = slots[i]
                    cdim_out = d_out
                else:
                    self._lock(slots)
                    slots = None
                    cdim_out = None
            if isinstance(i, slice):
                d_out += 1
            elif not isinstance(i, int):
                if self._all_locked(x.slots):
                    return self._fresh_locked(shape)
                raise self._unsupported(node, "indexing with tensors")
            d_in += 1
        if x.cdim >= d_in:
            cdim_out = d_out + (x.cdim - d_in)
        if slots is None or cdim_out is None:
            return _Value(shape, None, None)
        return _Value(shape, cdim_out, slots)

    # ---------------- groups ----------------
    def _make_groups(self) -> list[Group]:
        roots_of = [
            np.array([self._find(s) for s in m.slots.tolist()], dtype=np.int64)
            for m in self.members
        ]
        # Units: the distinct roots that some producer created. Link the units of each producer.
        producer_of: dict[int, int] = {}
        for mi, m in enumerate(self.members):
            if m.role in ("out", "heads"):
                for r in roots_of[mi].tolist():
                    producer_of.setdefault(r, mi)
        gparent = list(range(len(self.members)))

        def gfind(a: int) -> int:
            while gparent[a] != a:
                gparent[a] = gparent[gparent[a]]
                a = gparent[a]
            return a

        for mi, m in enumerate(self.members):
            if m.role in ("out", "heads"):
                for r in roots_of[mi].tolist():
                    a, b = gfind(producer_of[r]), gfind(mi)
                    if a != b:
                        gparent[b] = a
        by_group: dict[int, list[int]] = {}
        for r, mi in producer_of.items():
            by_group.setdefault(gfind(mi), []).append(r)
        groups: list[Group] = []
        head_info = {id(m): (h, d) for m, h, d in self._head_members}
        for gi, (_, roots) in enumerate(sorted(by_group.items())):
            rootset = set(roots)
            mids = [i for i in range(len(self.members)) if rootset & set(roots_of[i].tolist())]
            # Order units as the first producer orders its channels.
            first = next(i for i in mids if self.members[i].role in ("out", "heads"))
            order: list[int] = []
            seen: set[int] = set()
            for i in [first] + [i for i in mids if i != first]:
                for r in roots_of[i].tolist():
                    if r in rootset and r not in seen:
                        seen.add(r)
                        order.append(r)
            pos = {r: k for k, r in enumerate(order)}
            members = [self.members[i] for i in mids]
            unit_index = []
            for i in mids:
                per = [[] for _ in order]
                for j, r in enumerate(roots_of[i].tolist()):
                    if r in pos:
                        per[pos[r]].append(j)
                unit_index.append([np.asarray(p, dtype=np.int64) for p in per])
            locked = np.array([self._locked[r] for r in order], dtype=bool)
            g = Group(gi, members, order, locked, unit_index=unit_index)
            if any(m.role == "heads" for m in members):
                h, d = head_info[id(next(m for m in members if m.role == "heads"))]
                g.heads, g.head_dim = True, d
            self._segment(g, mids, roots_of, pos)
            if g.prunable and locked.all():
                g.prunable, g.reason = (
                    False,
                    "all channels reach a model input/output or ignored module",
                )
            groups.append(g)
        return groups

    def _segment(self, g: Group, mids, roots_of, pos) -> None:
        """Sets ``g.segments``/``g.segment_of`` from grouped convs and GroupNorms in the group."""
        seg_of: np.ndarray | None = None
        nseg = 1
        for i in mids:
            m = self.members[i]
            if m.segments <= 1:
                continue
            n = len(m.slots)
            if n % m.segments:
                g.prunable, g.reason = False, f"`{m.module}` has channels not divisible by groups"
                return
            this = np.full(len(g.units), -1, dtype=np.int64)
            for j, r in enumerate(roots_of[i].tolist()):
                if r in pos:
                    this[pos[r]] = j * m.segments // n
            if seg_of is None:
                seg_of, nseg = this, m.segments
            else:
                same = np.unique(np.stack([seg_of, this]), axis=1).shape[1] == max(nseg, m.segments)
                if not same or m.segments != nseg:
                    g.prunable = False
                    g.reason = f"`{m.module}` splits the channels into groups differently"
                    return
        if seg_of is not None:
            if (seg_of < 0).any():
                g.prunable, g.reason = False, "grouped layer sees only part of the channels"
                return
            g.segments, g.segment_of = nseg, seg_of

    def groups(self, prunable_only: bool = False) -> list[Group]:
        """All groups (or only the ones that can be pruned)."""
        return [g for g in self._groups if g.prunable or not prunable_only]

    def details(self) -> str:
        """Every group's ``details()``."""
        return "\n".join(g.details() for g in self._groups)

    def group_of(self, module: str) -> Group:
        """The group whose channels ``module`` produces."""
        for g in self._groups:
            if any(m.module == module and m.role in ("out", "heads") for m in g.members):
                return g
        raise ValueError(f"DependencyGraph.group_of: `{module}` produces no prunable channels")


def _same(a: Any, b: Any) -> bool:
    """Whether two fx arguments compute the same tensor (the same node, or the same op applied
    to the same arguments, as in ``attn(norm(x), norm(x), norm(x))``)."""
    if a is b:
        return True
    if isinstance(a, fx.Node) and isinstance(b, fx.Node):
        return (
            a.op == b.op
            and a.op in ("call_module", "call_function", "call_method")
            and a.target == b.target
            and len(a.args) == len(b.args)
            and all(_same(x, y) for x, y in zip(a.args, b.args))
            and a.kwargs == b.kwargs
        )
    return a == b if not isinstance(a, fx.Node) and not isinstance(b, fx.Node) else False


def _is_seq(meta: Any) -> bool:
    """A tuple/list of tensor metadata (TensorMetadata itself is a NamedTuple: not a sequence)."""
    return isinstance(meta, (tuple, list)) and not hasattr(meta, "shape")
