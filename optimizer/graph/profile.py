"""Per-layer parameters and multiply-accumulates (MACs), and before/after pruning reports.

MACs are counted by forward hooks on the modules that do the arithmetic, for the example inputs
as given (batch included; pass a batch of one for per-sample MACs). Conventions, chosen so that
MACs fall exactly in proportion to the channels removed:

- convolution: output elements x (in_channels / groups) x kernel elements; transposed
  convolution: input elements x (out_channels / groups) x kernel elements;
- linear: output elements x in_features (a ``[B, T, C]`` input counts all ``B x T`` rows);
- attention: the q/k/v/out projections plus the two matmuls ``q k^T`` and ``attn v``
  (``2 x B x heads x T_q x T_k x head_dim``). For ``nn.MultiheadAttention`` the projections are
  counted on the module itself (its weights are used directly, not through child modules); for
  :class:`optimizer.graph.attention.MultiheadSelfAttention` the projections are ``nn.Linear``
  children counted by their own hooks, so the parent counts only the two matmuls;
- bias adds, normalisation, activations, pooling, softmax, embeddings: 0.

``torch_pruning.utils.count_ops_and_params`` uses the same multiply count for convolutions and
linear layers but adds bias, BatchNorm, activation and pooling operations and divides by the batch
size; the tests check the two agree layer by layer once those terms are taken out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from optimizer._util import eval_mode
from optimizer.graph.attention import MultiheadSelfAttention

__all__ = [
    "LayerDiff",
    "LayerReport",
    "LayerStats",
    "compare",
    "count_macs",
    "count_params",
    "layer_stats",
]

_NORMS = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, InstanceNorm*d
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
# Modules reported as one row with all their parameters; the walk does not descend into them.
_LEAF_KINDS = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.MultiheadAttention,
    nn.Embedding,
    nn.EmbeddingBag,
) + _NORMS


@dataclasses.dataclass
class LayerStats:
    """Parameters and MACs of one layer of a model.

    Attributes:
        path: the module's qualified name in the model (``""`` for the root).
        kind: the module's class name (``"Conv2d"``, ``"Linear"``, ``"MultiheadAttention"``...).
        in_channels: input channels / features (embedding: vocabulary size).
        out_channels: output channels / features; for attention the inner width
            ``num_heads * head_dim``, which shrinks when heads are pruned.
        params: parameters owned by the layer.
        macs: multiply-accumulates in one forward over the example inputs.
        heads: number of attention heads (attention layers only).
    """

    path: str
    kind: str
    in_channels: int | None
    out_channels: int | None
    params: int
    macs: int
    heads: int | None = None


def count_params(model: nn.Module) -> int:
    """Returns the number of parameters of ``model`` (shared parameters counted once).

    Example:
        >>> count_params(nn.Linear(4, 3))
        15
    """
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Returns the multiply-accumulates of one forward of ``model`` on ``example_inputs``.

    Args:
        model: any module; it is run once without gradients, in eval mode (restored after).
        example_inputs: a tensor or a tuple of positional inputs.

    Example:
        >>> count_macs(nn.Conv2d(3, 8, 3), torch.randn(1, 3, 10, 10))  # 8*8*8 outputs x 27
        13824
    """
    return sum(s.macs for s in layer_stats(model, example_inputs))


def layer_stats(model: nn.Module, example_inputs: Any) -> list[LayerStats]:
    """Runs ``model`` once and returns per-layer channels, parameters and MACs in module order.

    Rows cover convolutions, linear layers, attention, embeddings and normalisation layers, plus
    one row for any other module that owns parameters directly (e.g. a learned positional
    embedding on the root), so the rows' parameters add up to :func:`count_params`. Hooks are
    removed and each module's train/eval mode restored afterwards, even if the forward raises.

    Args:
        model: the module to profile.
        example_inputs: a tensor or a tuple of positional inputs for ``model``.

    Returns:
        One :class:`LayerStats` per layer.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                       nn.Linear(8 * 4 * 4, 10))
        >>> [(s.path, s.macs) for s in layer_stats(model, torch.randn(1, 3, 4, 4))]
        [('0', 3456), ('3', 1280)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"layer_stats: `model` must be a torch.nn.Module; got {type(model).__name__}."
        )
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    rows: list[LayerStats] = []
    targets: list[tuple[nn.Module, LayerStats]] = []
    seen: set[int] = set()

    def walk(module: nn.Module, path: str) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        if isinstance(module, _LEAF_KINDS):
            row = _row(module, path, count_params(module))
            rows.append(row)
            targets.append((module, row))
            return
        if isinstance(module, MultiheadSelfAttention):
            row = _row(module, path, _direct_params(module))
            rows.append(row)
            targets.append((module, row))
        elif _direct_params(module):
            rows.append(
                LayerStats(path, type(module).__name__, None, None, _direct_params(module), 0)
            )
        for name, child in module.named_children():
            walk(child, f"{path}.{name}" if path else name)

    walk(model, "")

    handles = []
    try:
        for module, row in targets:
            handles.append(module.register_forward_hook(_make_hook(row), with_kwargs=True))
        with eval_mode(model), torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return rows


def _direct_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _row(module: nn.Module, path: str, params: int) -> LayerStats:
    kind = type(module).__name__
    if isinstance(module, nn.modules.conv._ConvNd):
        return LayerStats(path, kind, module.in_channels, module.out_channels, params, 0)
    if isinstance(module, nn.Linear):
        return LayerStats(path, kind, module.in_features, module.out_features, params, 0)
    if isinstance(module, nn.MultiheadAttention):
        e = module.embed_dim
        return LayerStats(path, kind, e, e, params, 0, heads=module.num_heads)
    if isinstance(module, MultiheadSelfAttention):
        inner = module.num_heads * module.head_dim
        return LayerStats(path, kind, module.embed_dim, inner, params, 0, heads=module.num_heads)
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return LayerStats(path, kind, module.num_embeddings, module.embedding_dim, params, 0)
    if isinstance(module, nn.GroupNorm):
        c = module.num_channels
    elif isinstance(module, nn.LayerNorm):
        c = module.normalized_shape[-1] if module.normalized_shape else None
    else:
        c = getattr(module, "num_features", None)
    return LayerStats(path, kind, c, c, params, 0)


def _make_hook(row: LayerStats):
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        row.macs += _macs(module, args, kwargs, output)

    return hook


def _numel(shape: torch.Size | tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _macs(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> int:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        x = args[0] if args else kwargs["input"]
        k = _numel(module.kernel_size)
        return x.numel() * (module.out_channels // module.groups) * k
    if isinstance(module, nn.modules.conv._ConvNd):
        k = _numel(module.kernel_size)
        return output.numel() * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.MultiheadAttention):
        return _mha_macs(module, args, kwargs)
    if isinstance(module, MultiheadSelfAttention):
        q = args[0] if args else kwargs["query"]
        b, t = _batch_and_len(q, module.batch_first)
        return 2 * b * module.num_heads * t * t * module.head_dim
    return 0


def _batch_and_len(x: torch.Tensor, batch_first: bool) -> tuple[int, int]:
    if x.dim() == 2:  # unbatched [T, C]
        return 1, x.shape[0]
    return (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])


def _mha_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> int:
    names = ("query", "key", "value")
    q, k, v = (args[i] if len(args) > i else kwargs[n] for i, n in enumerate(names))
    b, tq = _batch_and_len(q, module.batch_first)
    _, tk = _batch_and_len(k, module.batch_first)
    e, h = module.embed_dim, module.num_heads
    proj = b * (tq * e * e + tk * module.kdim * e + tk * module.vdim * e + tq * e * e)
    matmuls = 2 * b * h * tq * tk * module.head_dim
    return proj + matmuls


# --------------------------------------------------------------------------- reports


@dataclasses.dataclass
class LayerDiff:
    """One layer before and after a pass; ``None`` on the side where the layer does not exist."""

    path: str
    kind: str
    channels_before: tuple[int | None, int | None] | None
    channels_after: tuple[int | None, int | None] | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    heads_before: int | None = None
    heads_after: int | None = None


@dataclasses.dataclass
class LayerReport:
    """Per-layer comparison of two :func:`layer_stats` results, with totals and ratios.

    ``str(report)`` and :meth:`to_markdown` give a Markdown table; :meth:`to_dict` gives
    JSON-ready values for reports.
    """

    rows: list[LayerDiff]

    @property
    def params_before(self) -> int:
        return sum(r.params_before for r in self.rows)

    @property
    def params_after(self) -> int:
        return sum(r.params_after for r in self.rows)

    @property
    def macs_before(self) -> int:
        return sum(r.macs_before for r in self.rows)

    @property
    def macs_after(self) -> int:
        return sum(r.macs_after for r in self.rows)

    @property
    def params_ratio(self) -> float:
        """``params_before / params_after`` (how many times fewer parameters)."""
        return _ratio(self.params_before, self.params_after)

    @property
    def macs_ratio(self) -> float:
        """``macs_before / macs_after`` (how many times fewer MACs)."""
        return _ratio(self.macs_before, self.macs_after)

    def to_dict(self) -> dict[str, Any]:
        """Returns the rows and totals as plain JSON-ready values."""
        return {
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_ratio": self.params_ratio,
            "macs_ratio": self.macs_ratio,
        }

    def to_markdown(self) -> str:
        """Returns a Markdown table: one row per layer, then the totals and the ratios."""
        lines = [
            "| layer | kind | channels (in, out) | params | MACs |",
            "|---|---|---|---:|---:|",
        ]
        for r in self.rows:
            chans = _arrow(
                _fmt_channels(r.channels_before, r.heads_before),
                _fmt_channels(r.channels_after, r.heads_after),
            )
            params = _arrow(_fmt_num(r.params_before), _fmt_num(r.params_after))
            macs = _arrow(_fmt_num(r.macs_before), _fmt_num(r.macs_after))
            lines.append(f"| `{r.path or '(root)'}` | {r.kind} | {chans} | {params} | {macs} |")
        params = _arrow(_fmt_num(self.params_before), _fmt_num(self.params_after))
        macs = _arrow(_fmt_num(self.macs_before), _fmt_num(self.macs_after))
        lines.append(f"| **total** | | | {params} | {macs} |")
        lines.append("")
        lines.append(
            f"params {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_ratio:.2f}x fewer); MACs {self.macs_before:,} -> "
            f"{self.macs_after:,} ({self.macs_ratio:.2f}x fewer)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def compare(before: list[LayerStats], after: list[LayerStats]) -> LayerReport:
    """Pairs two :func:`layer_stats` results by module path into a :class:`LayerReport`.

    Layers present on one side only (removed blocks, new adapters) show as ``-`` on the other.
    When a layer is one row on one side and has sub-rows on the other (``nn.MultiheadAttention``
    replaced by :class:`~optimizer.graph.attention.MultiheadSelfAttention`, whose projections
    are separate ``nn.Linear`` rows), the sub-rows are folded into it so the two compare.

    Example:
        >>> model, x = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), torch.ones(1, 8)
        >>> before = layer_stats(model, x)
        >>> model[0], model[2] = nn.Linear(8, 4), nn.Linear(4, 2)
        >>> report = compare(before, layer_stats(model, x))
        >>> report.params_before, report.params_after, round(report.macs_ratio, 2)
        (90, 46, 2.0)
    """
    before = _fold(before, {r.path for r in after})
    after = _fold(after, {r.path for r in before})
    b_by_path = {r.path: r for r in before}
    a_by_path = {r.path: r for r in after}
    # Order: the "before" layers, with layers new in "after" inserted after their predecessor.
    order = [r.path for r in before]
    prev = None
    for r in after:
        if r.path not in b_by_path:
            order.insert(order.index(prev) + 1 if prev is not None else len(order), r.path)
        prev = r.path
    rows = []
    for path in order:
        b, a = b_by_path.get(path), a_by_path.get(path)
        ref = b if b is not None else a
        rows.append(
            LayerDiff(
                path=path,
                kind=ref.kind if a is None or a.kind == ref.kind else f"{ref.kind} -> {a.kind}",
                channels_before=(b.in_channels, b.out_channels) if b else None,
                channels_after=(a.in_channels, a.out_channels) if a else None,
                params_before=b.params if b else 0,
                params_after=a.params if a else 0,
                macs_before=b.macs if b else 0,
                macs_after=a.macs if a else 0,
                heads_before=b.heads if b else None,
                heads_after=a.heads if a else None,
            )
        )
    return LayerReport(rows)


def _fold(rows: list[LayerStats], other_paths: set[str]) -> list[LayerStats]:
    """Folds rows under ``P.`` into row ``P`` when ``P`` exists on the other side without them."""
    paths = {r.path for r in rows}
    folded: list[LayerStats] = []
    parents: dict[str, LayerStats] = {}
    for r in rows:
        parent = next((p for p in parents if r.path.startswith(p + ".")), None)
        if parent is not None:
            parents[parent].params += r.params
            parents[parent].macs += r.macs
            continue
        folded.append(dataclasses.replace(r))
        has_children = any(p.startswith(r.path + ".") for p in paths) if r.path else False
        other_has_children = any(p.startswith(r.path + ".") for p in other_paths)
        if has_children and r.path in other_paths and not other_has_children:
            parents[r.path] = folded[-1]
    return folded


def _ratio(a: int, b: int) -> float:
    if b == 0:
        return float("inf") if a else 1.0
    return a / b


def _fmt_num(n: int) -> str:
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1e3:.1f}k"
    return f"{n / 1e6:.2f}M"


def _fmt_channels(ch: tuple[int | None, int | None] | None, heads: int | None) -> str:
    if ch is None:
        return "-"
    if ch == (None, None):
        return ""
    s = f"{ch[0]}, {ch[1]}"
    return f"{s} ({heads} heads)" if heads is not None else s


def _arrow(before: str, after: str) -> str:
    return before if before == after else f"{before} -> {after}"
