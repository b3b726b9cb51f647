"""Structured channel pruning: removes whole channels, filters and heads so the model shrinks."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from optimizer._util import eval_mode, module_under
from optimizer.graph.dependency import DependencyGraph, Group, Member
from optimizer.graph.record import get_record
from optimizer.prune.importance import IMPORTANCES, group_scores
from optimizer.prune.plan import apply_op, get_module

__all__ = ["ChannelPruneConfig", "ChannelPruner", "PruneReport", "prune_channels_"]


@dataclass
class ChannelPruneConfig:
    """Settings of :func:`prune_channels_`.

    Args:
        ratio: fraction of each group's channels (uniform) or of all channels (global) to remove.
        macs_reduction: instead of ``ratio``, prune until MACs fall by this factor (2.0 halves
            them); the ratio is found by bisection on trial copies.
        importance: ``"l1"``, ``"l2"``, ``"bn_scale"`` (|gamma| of the norms in the group),
            ``"taylor"`` (|w * grad|, needs ``.grad`` from a backward pass) or ``"random"``.
        global_ranking: rank channels across groups (scores normalised per group) instead of
            removing the same fraction from every group.
        round_to: kept channel counts are rounded to a multiple of this (take it from the target
            profile, e.g. 8 or 16: irregular counts waste SIMD lanes).
        ignore: module paths left untouched (their inputs and outputs keep every channel).
        filter_fn: ``filter_fn(module, path) -> bool``; groups whose producers all fail it are
            left alone.
        max_ratio: no group loses more than this fraction of its channels.
        ratios: per-layer ratios, ``{module path: ratio}`` (Torch-Pruning's
            ``pruning_ratio_dict``): a group whose producer is at or under one of these paths
            (the longest matching path wins) loses that fraction of its channels instead of
            ``ratio``, with ``round_to`` and ``max_ratio`` still applied. With
            ``global_ranking`` or ``macs_reduction`` those groups keep their own ratio and the
            rest share the global threshold or the searched ratio. Iterative pruning
            (:class:`ChannelPruner`) scales them with the schedule, as it scales ``ratio``.
        prune_heads: remove whole attention heads (``nn.MultiheadAttention`` is replaced by the
            equivalent :class:`optimizer.graph.attention.MultiheadSelfAttention`).
        seed: seed of the ``"random"`` importance.
    """

    ratio: float = 0.5
    macs_reduction: float | None = None
    importance: str = "l1"
    global_ranking: bool = False
    round_to: int = 1
    ignore: tuple[str, ...] = ()
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    max_ratio: float = 0.9
    ratios: dict[str, float] = field(default_factory=dict)
    prune_heads: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(
                f"ChannelPruneConfig: ratio must be in [0, 1), got {self.ratio}. "
                "It is the fraction of channels removed"
            )
        if self.macs_reduction is not None and not self.macs_reduction >= 1.0:
            raise ValueError(
                f"ChannelPruneConfig: macs_reduction must be >= 1 (2.0 halves the MACs), "
                f"got {self.macs_reduction}"
            )
        if self.importance not in IMPORTANCES:
            raise ValueError(
                f"ChannelPruneConfig: unknown importance {self.importance!r}; expected one of "
                f"{IMPORTANCES}"
            )
        if int(self.round_to) < 1:
            raise ValueError(f"ChannelPruneConfig: round_to must be >= 1, got {self.round_to}")
        if not 0.0 < self.max_ratio < 1.0:
            raise ValueError(
                f"ChannelPruneConfig: max_ratio must be in (0, 1), got {self.max_ratio}"
            )
        self.ignore = tuple(self.ignore)
        if not isinstance(self.ratios, Mapping):
            raise TypeError(
                "ChannelPruneConfig: ratios must map module paths to ratios, e.g. "
                f"{{'features.0': 0.75}}; got {type(self.ratios).__name__}"
            )
        ratios = {}
        for path, r in self.ratios.items():
            if not isinstance(path, str) or not path:
                raise ValueError(f"ChannelPruneConfig: ratios: bad module path {path!r}")
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
                raise ValueError(
                    f"ChannelPruneConfig: ratios[{path!r}] must be in [0, 1), got {r!r}. It is "
                    "the fraction of that layer's channels removed"
                )
            ratios[path] = float(r)
        self.ratios = ratios


@dataclass
class PruneReport:
    """What :func:`prune_channels_` did: per-layer channels, parameters and MACs before/after."""

    ratio: float
    groups: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0

    @property
    def macs_reduction(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    def to_markdown(self) -> str:
        lines = [
            f"Channel pruning (ratio {self.ratio:.3f}): params {self.params_before:,} -> "
            f"{self.params_after:,} ({self.params_before / max(self.params_after, 1):.2f}x), "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.macs_reduction:.2f}x)",
            "",
            "| layer | kind | channels in | channels out | params | MACs |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| `{r['path']}` | {r['kind']} | {r['in_before']} -> {r['in_after']} | "
                f"{r['out_before']} -> {r['out_after']} | {r['params_before']:,} -> "
                f"{r['params_after']:,} | {r['macs_before']:,} -> {r['macs_after']:,} |"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def _round_keep(n: int, keep: float, round_to: int, segments: int, floor: int) -> int:
    """Kept count: a multiple of ``round_to`` (when that fits) and of ``segments``, >= floor."""
    step = segments * round_to // math.gcd(segments, round_to)
    k = int(round(keep / step)) * step if n >= step else n
    k = max(k, step if n >= step else n)
    if k < floor:
        k = int(math.ceil(floor / step)) * step if n >= step else n
    return int(min(k, n))


def _pick(g: Group, score: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the units to remove so that ``keep`` remain (locked units always stay)."""
    n = len(g.units)
    if keep >= n:
        return np.zeros(0, dtype=np.int64)
    s = score.astype(np.float64).copy()
    s[g.locked] = np.inf
    if g.segments > 1:
        per = keep // g.segments
        out = []
        for seg in range(g.segments):
            idx = np.nonzero(g.segment_of == seg)[0]
            order = idx[np.argsort(s[idx], kind="stable")]
            out.extend(order[: max(len(idx) - per, 0)].tolist())
        removed = np.array(sorted(out), dtype=np.int64)
    else:
        removed = np.sort(np.argsort(s, kind="stable")[: n - keep])
    if g.locked[removed].any():
        return np.zeros(0, dtype=np.int64)  # cannot reach the count without a locked unit
    return removed


def _eligible(g: Group, model: nn.Module, cfg: ChannelPruneConfig) -> bool:
    if not g.prunable:
        return False
    if g.heads and not cfg.prune_heads:
        return False
    if cfg.filter_fn is not None:
        prods = [m for m in g.members if m.role in ("out", "heads")]
        if not any(cfg.filter_fn(get_module(model, m.module), m.module) for m in prods):
            return False
    return True


def _floor(g: Group, n: int, cfg: ChannelPruneConfig) -> int:
    return max(int(g.locked.sum()), int(math.ceil(n * (1.0 - cfg.max_ratio))), 1)


def _own_ratios(groups: list[Group], cfg: ChannelPruneConfig, ratio: float) -> dict[int, float]:
    """Group id -> its ``cfg.ratios`` entry (longest path matching a producer), scaled by the
    progress of an iterative schedule (``ratio / cfg.ratio``)."""
    if not cfg.ratios:
        return {}
    progress = 1.0
    if cfg.macs_reduction is None and cfg.ratio > 0:
        progress = min(max(ratio / cfg.ratio, 0.0), 1.0)
    out: dict[int, float] = {}
    for g in groups:
        best = None
        for m in g.members:
            if m.role not in ("out", "heads"):
                continue
            for path in cfg.ratios:
                if module_under(m.module, path) and (best is None or len(path) > len(best)):
                    best = path
        if best is not None:
            out[g.id] = cfg.ratios[best] * progress
    return out


def _check_ratio_paths(groups: list[Group], model: nn.Module, cfg: ChannelPruneConfig) -> None:
    """Every ``cfg.ratios`` path must name the producer of a prunable group (or a module
    above one): a misspelt path raises, before anything changes."""
    if not cfg.ratios:
        return
    prods = sorted(
        {m.module for g in groups if _eligible(g, model, cfg) for m in g.members
         if m.role in ("out", "heads")}
    )  # fmt: skip
    for path in cfg.ratios:
        if not any(module_under(p, path) for p in prods):
            raise ValueError(
                f"ChannelPruneConfig: ratios[{path!r}] names no prunable layer; the layers whose "
                f"output channels can be pruned are: {', '.join(prods) or '(none)'}"
            )


def select(
    model: nn.Module,
    groups: list[Group],
    cfg: ChannelPruneConfig,
    ratio: float,
    scores: dict[int, np.ndarray],
    base_sizes: dict[str, int] | None = None,
) -> dict[int, np.ndarray]:
    """Units to remove per group id. ``base_sizes`` (group root -> original size) makes the
    ratio relative to the original model (iterative pruning)."""
    out: dict[int, np.ndarray] = {}
    todo = [g for g in groups if _eligible(g, model, cfg)]
    own = _own_ratios(todo, cfg, ratio)
    if (ratio <= 0 and not any(own.values())) or not todo:
        return out
    base = {g.id: (base_sizes or {}).get(g.root, len(g.units)) for g in todo}

    def uniform(g: Group, r: float) -> None:
        n = len(g.units)
        rt = 1 if g.heads else cfg.round_to
        keep = _round_keep(n, base[g.id] * (1 - r), rt, g.segments, _floor(g, n, cfg))
        if keep < n:
            out[g.id] = _pick(g, scores[g.id], keep)

    for g in todo:
        if g.id in own:
            uniform(g, own[g.id])
    todo = [g for g in todo if g.id not in own]
    if ratio <= 0 or not todo:
        return out
    if not cfg.global_ranking:
        for g in todo:
            uniform(g, ratio)
        return out
    # Global: one threshold over per-group normalised scores.
    norm, owners = [], []
    for g in todo:
        s = scores[g.id] / max(float(np.mean(scores[g.id])), 1e-12)
        s = np.where(g.locked, np.inf, s)
        norm.append(s)
        owners.append(np.full(len(s), g.id))
    allv = np.concatenate(norm)
    total_base = sum(base[g.id] for g in todo)
    current = sum(len(g.units) for g in todo)
    n_remove = int(round(total_base * ratio)) - (total_base - current)
    if n_remove <= 0:
        return out
    thr = np.sort(allv)[min(n_remove, len(allv)) - 1]
    for g, s in zip(todo, norm):
        n = len(g.units)
        want = int((s <= thr).sum())
        keep = _round_keep(
            n, n - want, 1 if g.heads else cfg.round_to, g.segments, _floor(g, n, cfg)
        )
        if keep < n:
            out[g.id] = _pick(g, scores[g.id], keep)
    return out


# --------------------------------------------------------------------------------------------
# Applying a selection: per member, the positions to drop
# --------------------------------------------------------------------------------------------


def _key(m: Member) -> tuple[str, str, str]:
    return (m.module, m.role, m.tensor)


def plan_for(groups: list[Group], removal: dict[int, np.ndarray], model: nn.Module) -> list[dict]:
    """Turns removed units into plan edits (see :mod:`optimizer.prune.plan`)."""
    drop: dict[tuple[str, str, str], tuple[Member, set[int]]] = {}
    for g in groups:
        rm = removal.get(g.id)
        if rm is None or len(rm) == 0:
            continue
        for mi, m in enumerate(g.members):
            k = _key(m)
            entry = drop.setdefault(k, (m, set()))
            for u in rm.tolist():
                entry[1].update(g.unit_index[mi][u].tolist())
    plan: list[dict] = []
    replaced: set[str] = set()
    # Members of a module: outputs first (a grouped conv slices rows before gathering columns).
    order = {"heads": 0, "out": 1, "norm": 2, "param": 3, "in": 4, "split": 5}
    for (path, _role, _), (m, pos) in sorted(drop.items(), key=lambda kv: order[kv[0][1]]):
        if not pos:
            continue
        mod = get_module(model, path)
        if isinstance(mod, nn.MultiheadAttention) and path not in replaced:
            plan.append({"op": "replace", "module": path, "with": "MultiheadSelfAttention"})
            replaced.add(path)
        plan.extend(_member_ops(m, mod, sorted(pos)))
    return plan


def _keep(n: int, drop: list[int]) -> list[int]:
    d = set(drop)
    return [i for i in range(n) if i not in d]


def _sl(path: str, tensor: str, dim: int, keep: list[int]) -> dict:
    return {"op": "slice", "module": path, "tensor": tensor, "dim": dim, "keep": keep}


def _set(path: str, attr: str, value: Any) -> dict:
    return {"op": "set", "module": path, "attr": attr, "value": value}


def _member_ops(m: Member, mod: nn.Module, drop: list[int]) -> list[dict]:
    n = len(m.slots)
    keep = _keep(n, drop)
    k = len(keep)
    p = m.module
    kind = m.kind
    if m.role == "split":
        return []  # a chunk() constraint: no tensor of its own
    if m.role == "param":
        return [_sl(p, m.tensor, m.dim, keep)]
    if kind in ("MultiheadAttention", "MultiheadSelfAttention"):
        ops = []
        if m.role == "heads":
            d = mod.head_dim
            rows = [h * d + j for h in keep for j in range(d)]
            for proj in ("q_proj", "k_proj", "v_proj"):
                ops += [_sl(f"{p}.{proj}", "weight", 0, rows), _sl(f"{p}.{proj}", "bias", 0, rows)]
                ops.append(_set(f"{p}.{proj}", "out_features", len(rows)))
            ops += [
                _sl(f"{p}.out_proj", "weight", 1, rows),
                _set(f"{p}.out_proj", "in_features", len(rows)),
            ]
            ops.append(_set(p, "num_heads", k))
        elif m.role == "in":
            for proj in ("q_proj", "k_proj", "v_proj"):
                ops += [
                    _sl(f"{p}.{proj}", "weight", 1, keep),
                    _set(f"{p}.{proj}", "in_features", k),
                ]
        else:
            ops += [_sl(f"{p}.out_proj", "weight", 0, keep), _sl(f"{p}.out_proj", "bias", 0, keep)]
            ops += [_set(f"{p}.out_proj", "out_features", k), _set(p, "embed_dim", k)]
        return ops
    if isinstance(mod, nn.Linear):
        if m.role == "out":
            return [_sl(p, "weight", 0, keep), _sl(p, "bias", 0, keep), _set(p, "out_features", k)]
        return [_sl(p, "weight", 1, keep), _set(p, "in_features", k)]
    if isinstance(mod, nn.Embedding):
        return [_sl(p, "weight", 1, keep), _set(p, "embedding_dim", k)]
    if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        if m.role == "out":
            return [_sl(p, "weight", 1, keep), _sl(p, "bias", 0, keep), _set(p, "out_channels", k)]
        return [_sl(p, "weight", 0, keep), _set(p, "in_channels", k)]
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if m.tensor == "depthwise":
            mult = mod.out_channels // mod.in_channels
            return [
                _sl(p, "weight", 0, keep),
                _sl(p, "bias", 0, keep),
                _set(p, "out_channels", k),
                _set(p, "in_channels", k // mult),
                _set(p, "groups", k // mult),
            ]
        if m.role == "out":
            return [_sl(p, "weight", 0, keep), _sl(p, "bias", 0, keep), _set(p, "out_channels", k)]
        g = mod.groups
        if g == 1:
            return [_sl(p, "weight", 1, keep), _set(p, "in_channels", k)]
        ipg = n // g
        per = [[i - gi * ipg for i in keep if gi * ipg <= i < (gi + 1) * ipg] for gi in range(g)]
        if len({len(x) for x in per}) != 1:
            raise ValueError(
                f"prune_channels_: would leave grouped conv `{p}` with unequal groups "
                f"({[len(x) for x in per]} input channels); pass it in `ignore`"
            )
        return [
            {
                "op": "gather_groups",
                "module": p,
                "tensor": "weight",
                "dim": 1,
                "groups": g,
                "keep": per,
            },
            _set(p, "in_channels", k),
        ]
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d)):
        ops = [
            _sl(p, t, 0, keep)
            for t in ("weight", "bias", "running_mean", "running_var")
            if getattr(mod, t, None) is not None
        ]
        return ops + [_set(p, "num_features", k)]
    if isinstance(mod, nn.GroupNorm):
        return [_sl(p, "weight", 0, keep), _sl(p, "bias", 0, keep), _set(p, "num_channels", k)]
    if isinstance(mod, nn.LayerNorm):
        return [
            _sl(p, "weight", 0, keep),
            _sl(p, "bias", 0, keep),
            _set(p, "normalized_shape", [k]),
        ]
    if isinstance(mod, nn.PReLU):
        return [_sl(p, "weight", 0, keep), _set(p, "num_parameters", k)]
    raise ValueError(f"prune_channels_: no rule to prune `{p}` ({kind}, {m.role})")


# --------------------------------------------------------------------------------------------
# Public passes
# --------------------------------------------------------------------------------------------


def _as_tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _apply(model: nn.Module, plan: list[dict]) -> None:
    for op in plan:
        apply_op(model, op)


def _check_forward(model: nn.Module, example_inputs: tuple, api: str) -> None:
    try:
        with eval_mode(model), torch.no_grad():
            model(*example_inputs)
    except Exception as e:
        raise RuntimeError(
            f"{api}: the pruned model no longer runs ({e}); this is a bug in edge-optimizer's "
            "dependency rules: please report it with the model, or pass the failing module in "
            "`ignore`"
        ) from e


def _macs(model: nn.Module, example_inputs: tuple) -> int:
    from optimizer.graph.profile import count_macs

    return int(count_macs(model, example_inputs))


def _report(model, before, example_inputs, ratio, groups) -> PruneReport:
    from optimizer.graph.profile import layer_stats

    after = layer_stats(model, example_inputs)
    rep = PruneReport(ratio=ratio, groups=groups)
    amap = {s.path: s for s in after}
    for b in before:
        a = amap.get(b.path)
        rep.rows.append(
            {
                "path": b.path,
                "kind": b.kind,
                "in_before": b.in_channels,
                "in_after": a.in_channels if a else 0,
                "out_before": b.out_channels,
                "out_after": a.out_channels if a else 0,
                "params_before": b.params,
                "params_after": a.params if a else 0,
                "macs_before": b.macs,
                "macs_after": a.macs if a else 0,
            }
        )
    rep.params_after = sum(p.numel() for p in model.parameters())
    rep.macs_before = sum(b.macs for b in before)
    rep.macs_after = sum(a.macs for a in after)
    return rep


class ChannelPruner:
    """Channel pruning in one shot or in steps (importance re-measured before each step).

    Args:
        model: pruned in place.
        example_inputs: inputs for tracing and the shape check after each step.
        config: :class:`ChannelPruneConfig`; its ``ratio`` is the final one.
        steps: number of pruning steps; step ``i`` reaches ``schedule(i)`` (default: linear
            from ``ratio / steps`` to ``ratio``). Fine-tune between calls to :meth:`step`.
        schedule: callable ``step -> ratio`` (e.g. ``optimizer.prune.schedules.PolynomialDecay``).

    Example:
        >>> pruner = ChannelPruner(model, x, ChannelPruneConfig(ratio=0.5), steps=4)
        >>> for _ in range(4):
        ...     pruner.step(); fine_tune(model)
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        config: ChannelPruneConfig | None = None,
        steps: int = 1,
        schedule: Callable[[int], float] | None = None,
    ) -> None:
        self.model = model
        self.example_inputs = _as_tuple(example_inputs)
        self.config = config or ChannelPruneConfig()
        if steps < 1:
            raise ValueError(f"ChannelPruner: steps must be >= 1, got {steps}")
        self.steps = steps
        self.schedule = schedule
        self.current_step = 0
        dg = DependencyGraph(model, self.example_inputs, self.config.ignore)
        self.base_sizes = {g.root: len(g.units) for g in dg.groups()}
        self._rng = np.random.default_rng(self.config.seed)

    def ratio_at(self, step: int) -> float:
        if self.schedule is not None:
            return float(self.schedule(step))
        return self.config.ratio * (step + 1) / self.steps

    def step(self) -> PruneReport:
        """Prunes up to the next ratio of the schedule; returns what changed."""
        if self.current_step >= self.steps:
            raise ValueError(f"ChannelPruner.step: all {self.steps} steps are done")
        ratio = self.ratio_at(self.current_step)
        self.current_step += 1
        return _prune_once(
            self.model, self.example_inputs, self.config, ratio, self.base_sizes, self._rng
        )


def _prune_once(model, example_inputs, cfg, ratio, base_sizes, rng) -> PruneReport:
    from optimizer.graph.profile import layer_stats

    dg = DependencyGraph(model, example_inputs, cfg.ignore)  # raises before any change
    groups = dg.groups()
    _check_ratio_paths(groups, model, cfg)
    scores = {
        g.id: group_scores(model, g, cfg.importance, rng)
        for g in groups
        if _eligible(g, model, cfg)
    }
    before = layer_stats(model, example_inputs)
    params_before = sum(p.numel() for p in model.parameters())
    removal = select(model, groups, cfg, ratio, scores, base_sizes)
    plan = plan_for(groups, removal, model)
    _apply(model, plan)
    _check_forward(model, example_inputs, "prune_channels_")
    rec = get_record(model)
    rec["plan"].extend(plan)
    rec["passes"].append(
        {
            "pass": "prune_channels",
            "ratio": float(ratio),
            "importance": cfg.importance,
            "global": cfg.global_ranking,
            "round_to": int(cfg.round_to),
            **({"ratios": dict(cfg.ratios)} if cfg.ratios else {}),
        }
    )
    rep = _report(
        model, before, example_inputs, ratio, [g.details() for g in groups if g.id in removal]
    )
    rep.params_before = params_before
    return rep


def prune_channels_(
    model: nn.Module, example_inputs: Any, config: ChannelPruneConfig | None = None
) -> PruneReport:
    """Removes whole channels, filters and attention heads in place; the modules get smaller.

    Channels that must go together (residual adds, concats, depthwise convs, norms, flatten ->
    linear) are found by :class:`optimizer.graph.dependency.DependencyGraph`. An op it cannot
    reason about raises before anything changes. After pruning, a forward pass checks shapes,
    and the edits are recorded so :func:`optimizer.save` / :func:`optimizer.load` rebuild the
    model from its constructor.

    Example:
        >>> rep = optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
        >>> print(rep.to_markdown())
    """
    cfg = config or ChannelPruneConfig()
    if not isinstance(model, nn.Module):
        raise TypeError(f"prune_channels_: expected a torch.nn.Module, got {type(model).__name__}")
    x = _as_tuple(example_inputs)
    rng = np.random.default_rng(cfg.seed)
    if cfg.macs_reduction is None:
        return _prune_once(model, x, cfg, cfg.ratio, None, rng)
    ratio = find_ratio_for_macs(model, x, cfg)
    return _prune_once(model, x, cfg, ratio, None, np.random.default_rng(cfg.seed))


def find_ratio_for_macs(model: nn.Module, example_inputs: tuple, cfg: ChannelPruneConfig) -> float:
    """The smallest ratio whose pruned model has at most ``MACs / cfg.macs_reduction`` MACs."""
    target = _macs(model, example_inputs) / float(cfg.macs_reduction)
    if cfg.macs_reduction <= 1.0:
        return 0.0
    dg = DependencyGraph(model, example_inputs, cfg.ignore)
    groups = dg.groups()
    rng = np.random.default_rng(cfg.seed)
    scores = {
        g.id: group_scores(model, g, cfg.importance, rng)
        for g in groups
        if _eligible(g, model, cfg)
    }

    def macs_at(r: float) -> int:
        trial = copy.deepcopy(model)
        removal = select(trial, groups, cfg, r, scores)
        _apply(trial, plan_for(groups, removal, trial))
        return _macs(trial, example_inputs)

    lo, hi = 0.0, min(cfg.max_ratio, 0.999)
    if macs_at(hi) > target:
        raise ValueError(
            f"prune_channels_: cannot reach {cfg.macs_reduction}x fewer MACs within max_ratio "
            f"{cfg.max_ratio} (best {macs_at(hi)} MACs vs target {int(target)}); raise max_ratio "
            "or remove layers from `ignore`"
        )
    for _ in range(14):
        mid = (lo + hi) / 2
        if macs_at(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi
