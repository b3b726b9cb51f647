"""``factorize_``: replaces Linear/Conv2d layers by low-rank factors, rank by rule or MAC budget.

Three rank rules (exactly one per run): a fixed rank; the kept energy (the fraction of the sum of
squared singular values, per layer); or a MAC budget for the whole model. The budget is spent
greedily as in Zhang et al. (2016, "Accelerating very deep convolutional networks"): the product
over layers of the kept energy is the objective, so each step takes the move with the least loss
of log-energy per MAC saved, looking ahead over every lower rank of a layer (the first cut of a
layer must go below its break-even rank before it saves anything).

Each replacement is an ``nn.Sequential`` of plain layers, recorded as a plan edit ``{"op":
"replace", "module": path, "with": "LowRankLinear" | "LowRankConv2d" | "Tucker2Conv2d", "rank":
r | [r_in, r_out]}`` so :func:`optimizer.load` rebuilds the structure from the original
constructor (this module registers the three kinds when imported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from optimizer._util import module_under
from optimizer.graph.attention import MultiheadSelfAttention
from optimizer.graph.profile import count_macs, count_params
from optimizer.graph.record import get_record
from optimizer.lowrank import decompose as dec
from optimizer.prune.plan import register_replacement

__all__ = ["KINDS", "LowRankConfig", "LowRankLayer", "LowRankReport", "factorize_"]

METHODS = ("svd", "channel_svd", "tucker2")
KINDS = ("LowRankLinear", "LowRankConv2d", "Tucker2Conv2d")
_DEFAULT_ENERGY = 0.9
# A Tucker-2 layer's (r_in, r_out) grid is searched on at most this many values per mode.
_MAX_GRID = 64


# --------------------------------------------------------------------------- config


@dataclass
class LowRankConfig:
    """Settings of :func:`factorize_`.

    Exactly one rank rule: ``rank``, ``energy`` or ``macs_reduction``; with none given the rule
    is ``energy=0.9``.

    Args:
        rank: the same rank for every layer (each Tucker-2 mode is capped at its size).
        energy: per layer, the smallest rank whose kept fraction of the sum of squared singular
            values reaches this (per channel mode for Tucker-2), in (0, 1].
        macs_reduction: the whole model's MACs (:func:`optimizer.count_macs` on the example
            inputs) must fall by this factor (2.0 halves them); per-layer ranks are chosen
            greedily by the loss of log kept energy per MAC saved. Needs ``example_inputs``.
        method: ``"svd"`` factorizes Linear layers only; ``"channel_svd"`` also convolutions by
            the SVD of the ``[out, in*kh*kw]`` kernel; ``"tucker2"`` also convolutions by
            Tucker-2 over the channel modes (1x1 convolutions, where Tucker-2 is channel SVD,
            get channel SVD). Linear layers always get SVD.
        min_rank: no layer goes below this rank.
        round_to: ranks are rounded up to a multiple of this (the target's SIMD width),
            capped at the layer's width.
        filter_fn: ``filter_fn(module, path) -> bool``; only layers it accepts are factorized.
        ignore: module paths left as they are (with everything below them).

    Example:
        >>> LowRankConfig(macs_reduction=2.0, method="tucker2").energy is None
        True
        >>> LowRankConfig().energy
        0.9
    """

    rank: int | None = None
    energy: float | None = None
    macs_reduction: float | None = None
    method: str = "svd"
    min_rank: int = 1
    round_to: int = 1
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        api = "LowRankConfig"
        given = [n for n in ("rank", "energy", "macs_reduction") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(
                f"{api}: give exactly one rank rule; expected one of rank, energy, "
                f"macs_reduction, got {', '.join(f'{n}={getattr(self, n)!r}' for n in given)}"
            )
        if not given:
            self.energy = _DEFAULT_ENERGY
        if self.rank is not None:
            _check_int(api, "rank", self.rank)
        if self.energy is not None and not (_is_real(self.energy) and 0 < self.energy <= 1):
            raise ValueError(
                f"{api}: energy is the kept fraction of the squared singular values; expected "
                f"0 < energy <= 1, got {self.energy!r}"
            )
        r = self.macs_reduction
        if r is not None and not (_is_real(r) and math.isfinite(r) and r >= 1):
            raise ValueError(
                f"{api}: macs_reduction is the factor the MACs fall by; expected a finite "
                f"macs_reduction >= 1 (2.0 halves them), got {r!r}"
            )
        if self.method not in METHODS:
            raise ValueError(
                f"{api}: unknown method; expected one of {METHODS}, got {self.method!r}"
            )
        _check_int(api, "min_rank", self.min_rank)
        _check_int(api, "round_to", self.round_to)
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise TypeError(
                f"{api}: filter_fn must be callable as fn(module, path) -> bool; got "
                f"{type(self.filter_fn).__name__}"
            )
        if isinstance(self.ignore, str):
            self.ignore = (self.ignore,)
        self.ignore = tuple(self.ignore)
        bad = [p for p in self.ignore if not isinstance(p, str)]
        if bad:
            raise TypeError(f"{api}: ignore holds module paths; expected str, got {bad[0]!r}")

    @property
    def rule(self) -> str:
        """``"rank"``, ``"energy"`` or ``"macs_reduction"``."""
        if self.rank is not None:
            return "rank"
        return "energy" if self.energy is not None else "macs_reduction"


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_int(api: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{api}: {name} must be a positive int; expected {name} >= 1, got {value!r}"
        )


# --------------------------------------------------------------------------- report


@dataclass
class LowRankLayer:
    """One candidate layer in a :class:`LowRankReport`.

    Attributes:
        path: module path in the model.
        kind: the layer's class name (``"Linear"``, ``"Conv2d"``).
        replacement: ``"LowRankLinear"``, ``"LowRankConv2d"``, ``"Tucker2Conv2d"``, or ``None``
            when the layer was left as it was.
        rank: the rank (``(r_in, r_out)`` for Tucker-2); ``None`` when skipped.
        energy: kept fraction of the weight's squared Frobenius norm (``1 - ||W - W_r||^2 /
            ||W||^2``); ``None`` when skipped.
        params_before: parameters of the layer.
        params_after: parameters of its factors (``params_before`` when skipped).
        macs_before: MACs of the layer on the example inputs (``None`` without them).
        macs_after: MACs of its factors.
        reason: why a layer was skipped.
    """

    path: str
    kind: str
    replacement: str | None
    rank: int | tuple[int, int] | None
    energy: float | None
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    reason: str | None = None


@dataclass
class LowRankReport:
    """What :func:`factorize_` did, per layer and for the whole model.

    ``str(report)`` and :meth:`to_markdown` give a Markdown table; :meth:`to_dict` JSON-ready
    values. Model totals count every layer (``None`` MACs without example inputs).
    """

    rule: str
    method: str
    rows: list[LowRankLayer] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int | None = None
    macs_after: int | None = None

    @property
    def factorized(self) -> list[LowRankLayer]:
        """The rows of the layers that were replaced."""
        return [r for r in self.rows if r.replacement is not None]

    @property
    def skipped(self) -> list[LowRankLayer]:
        """The rows of the candidate layers left as they were, each with its reason."""
        return [r for r in self.rows if r.replacement is None]

    @property
    def params_ratio(self) -> float:
        """``params_before / params_after`` for the whole model."""
        return self.params_before / max(self.params_after, 1)

    @property
    def macs_ratio(self) -> float | None:
        """``macs_before / macs_after`` for the whole model (``None`` without example inputs)."""
        if self.macs_before is None or self.macs_after is None:
            return None
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict[str, Any]:
        """Rows and totals as plain JSON-ready values."""
        rows = []
        for r in self.rows:
            d = dict(r.__dict__)
            d["rank"] = list(r.rank) if isinstance(r.rank, tuple) else r.rank
            rows.append(d)
        return {
            "rule": self.rule,
            "method": self.method,
            "rows": rows,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_ratio": self.params_ratio,
            "macs_ratio": self.macs_ratio,
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per candidate layer, then the model totals."""
        macs = (
            f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.macs_ratio:.2f}x)"
            if self.macs_ratio is not None
            else "MACs not measured (no example inputs)"
        )
        lines = [
            f"Low-rank factorization ({self.method}, by {self.rule}): {len(self.factorized)} of "
            f"{len(self.rows)} layers; params {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_ratio:.2f}x); {macs}",
            "",
            "| layer | kind | rank | energy kept | params | MACs | note |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            kind = f"{r.kind} -> {r.replacement}" if r.replacement else r.kind
            rank = "-" if r.rank is None else "x".join(map(str, np.atleast_1d(r.rank)))
            energy = "-" if r.energy is None else f"{100 * r.energy:.1f} %"
            params = f"{r.params_before:,} -> {r.params_after:,}"
            mac = "-" if r.macs_before is None else f"{r.macs_before:,} -> {r.macs_after:,}"
            note = (r.reason or "").replace("|", "\\|")
            lines.append(f"| `{r.path}` | {kind} | {rank} | {energy} | {params} | {mac} | {note} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


# --------------------------------------------------------------------------- candidates


class _Cand:
    """A layer that can be factorized: its spectra and its cost at any rank."""

    def __init__(self, path: str, module: nn.Module, replacement: str) -> None:
        self.path = path
        self.module = module
        self.replacement = replacement
        w = module.weight
        self.out_c, self.in_c = int(w.shape[0]), int(w.shape[1])
        self.k = int(w[0, 0].numel()) if w.dim() == 4 else 1
        self.bias = 0 if module.bias is None else int(module.bias.numel())
        self.params0 = int(w.numel()) + self.bias
        # Summed over calls of the forward: rows of a Linear, N*H*W at a conv's input and output.
        self.in_sites = 0
        self.out_sites = 0
        self.measured = False
        self.factors: tuple | None = None

    # ---- spectra
    def decompose(self) -> None:
        w = self.module.weight
        if self.replacement == "Tucker2Conv2d":
            u_out, s_out, u_in, s_in, core = dec.tucker2_modes(w)
            self.factors = (u_out, u_in, core)
            e = (core**2).sum((2, 3)).cpu().numpy()  # [r_out_max, r_in_max]
            self.total = float((w.detach().double() ** 2).sum())
            self.cum2 = e.cumsum(0).cumsum(1)
            self.mode_cum = (_cum(s_in), _cum(s_out))  # per mode: r_in, r_out
            self.full = (u_in.shape[1], u_out.shape[1])
        else:
            f = dec.svd(w.reshape(self.out_c, -1))
            self.factors = f
            s2 = (f[1] ** 2).cpu().numpy()
            self.total = float(s2.sum())
            self.cum = s2.cumsum()
            self.full = (len(s2),)

    def kept(self, ranks: tuple[int, ...]) -> float:
        """Kept fraction of the squared norm at ``ranks``."""
        if self.total <= 0:
            return 1.0
        if self.replacement == "Tucker2Conv2d":
            return min(float(self.cum2[ranks[1] - 1, ranks[0] - 1]) / self.total, 1.0)
        return min(float(self.cum[ranks[0] - 1]) / self.total, 1.0)

    # ---- costs
    def params(self, ranks: tuple[int, ...]) -> int:
        i, o, k = self.in_c, self.out_c, self.k
        if self.replacement == "Tucker2Conv2d":
            r1, r2 = ranks  # a mode kept at full width has no 1x1 conv
            return (i * r1 if r1 < i else 0) + r1 * r2 * k + (r2 * o if r2 < o else 0) + self.bias
        return ranks[0] * (i * k + o) + self.bias

    def macs0(self) -> int:
        return self.out_sites * self.out_c * self.in_c * self.k

    def macs(self, ranks: tuple[int, ...]) -> int:
        i, o, k = self.in_c, self.out_c, self.k
        if self.replacement == "Tucker2Conv2d":
            r1, r2 = ranks
            first = self.in_sites * i * r1 if r1 < i else 0
            last = self.out_sites * r2 * o if r2 < o else 0
            return first + self.out_sites * r1 * r2 * k + last
        return self.out_sites * ranks[0] * (i * k + o)

    def saves(self, ranks: tuple[int, ...]) -> bool:
        if self.params(ranks) - self.bias >= self.params0 - self.bias:
            return False
        return not (self.measured and self.macs0() > 0 and self.macs(ranks) >= self.macs0())

    def no_gain(self, ranks: tuple[int, ...]) -> str:
        i, o, k = self.in_c, self.out_c, self.k
        if self.replacement == "Tucker2Conv2d":
            r1, r2 = ranks
            return (
                f"ranks {r1}x{r2} would not reduce params/MACs ({self.params(ranks) - self.bias} "
                f"weights >= {self.params0 - self.bias}, or {self.macs(ranks):,} MACs >= "
                f"{self.macs0():,})"
            )
        cols = i * k
        what = "in" if k == 1 else "in*k"
        return (
            f"rank {ranks[0]} would not reduce params/MACs (r*({what}+out) = "
            f"{ranks[0] * (cols + o)} >= {what}*out = {cols * o})"
        )

    def build(self, ranks: tuple[int, ...]) -> nn.Sequential:
        if self.replacement == "LowRankLinear":
            return dec.linear_from_svd(self.module, self.factors, ranks[0])
        if self.replacement == "LowRankConv2d":
            return dec.conv_from_svd(self.module, self.factors, ranks[0])
        return dec.conv_from_tucker2(self.module, self.factors, ranks)


def _cum(s: torch.Tensor) -> np.ndarray:
    s2 = (s**2).cpu().numpy()
    tot = s2.sum()
    return s2.cumsum() / tot if tot > 0 else np.ones_like(s2)


def _round_rank(r: int, full: int, cfg: LowRankConfig) -> int:
    r = max(int(r), cfg.min_rank)
    r = -(-r // cfg.round_to) * cfg.round_to
    return int(min(r, full))


def _energy_rank(frac: np.ndarray, energy: float) -> int:
    """Smallest ``r`` with ``frac[r - 1] >= energy`` (``frac`` cumulative, ending at 1)."""
    return int(min(np.searchsorted(frac, energy - 1e-12) + 1, len(frac)))


def _excluded(path: str, prefixes: list[str]) -> bool:
    return any(module_under(path, p) for p in prefixes)


def _collect(
    model: nn.Module, cfg: LowRankConfig
) -> tuple[list[_Cand], list[tuple[str, nn.Module, str]]]:
    """Candidate layers, and ``(path, module, reason)`` for the layers that must be skipped."""
    counts: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    rec = get_record(model)
    done = [op["module"] for op in rec.get("plan", []) if op.get("with") in KINDS]
    attention = [
        p
        for p, m in model.named_modules()
        if isinstance(m, (nn.MultiheadAttention, MultiheadSelfAttention))
    ]
    cands: list[_Cand] = []
    skipped: list[tuple[str, nn.Module, str]] = []
    for path, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            skipped.append((path, m, "uninitialized lazy module; run a forward first"))
            continue
        if _excluded(path, list(cfg.ignore)):
            continue
        if cfg.filter_fn is not None and not cfg.filter_fn(m, path):
            continue
        if _excluded(path, done):
            skipped.append((path, m, "already a low-rank factor"))
        elif _excluded(path, attention) and path not in attention:
            parent = max((p for p in attention if _excluded(path, [p])), key=len)
            skipped.append(
                (path, m, f"projection inside attention `{parent}`, which uses its weight directly")
            )
        elif counts.get(id(m), 1) > 1:
            skipped.append((path, m, "the same module is used at several paths (shared weights)"))
        elif isinstance(m, nn.Linear):
            cands.append(_Cand(path, m, "LowRankLinear"))
        elif m.groups != 1:
            kind = "depthwise" if m.groups == m.in_channels else "grouped"
            skipped.append(
                (
                    path,
                    m,
                    f"{kind} conv (groups={m.groups}): no channel factorization across groups",
                )
            )
        elif cfg.method == "svd":
            skipped.append(
                (path, m, "method='svd' factorizes Linear layers; use 'channel_svd' or 'tucker2'")
            )
        elif cfg.method == "tucker2" and m.weight[0, 0].numel() > 1:
            cands.append(_Cand(path, m, "Tucker2Conv2d"))
        else:
            cands.append(_Cand(path, m, "LowRankConv2d"))
    return cands, skipped


def _check_finite(cands: list[_Cand]) -> None:
    for c in cands:
        for name in ("weight", "bias"):
            t = getattr(c.module, name)
            if t is None:
                continue
            bad = ~torch.isfinite(t.detach())
            if bad.any():
                v = t.detach()[bad].flatten()[0].item()
                raise ValueError(
                    f"factorize_: `{c.path}.{name}` has {int(bad.sum())} non-finite values "
                    f"(e.g. {v}); expected finite weights. Fix the training run or pass "
                    f"`{c.path}` in `ignore`"
                )


def _measure(model: nn.Module, inputs: tuple, cands: list[_Cand]) -> None:
    """Runs ``model`` once (eval, no grad) and records each candidate's input/output sites."""

    def hook(c: _Cand):
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            x = args[0] if args else kwargs["input"]
            if isinstance(module, nn.Conv2d):
                c.in_sites += x.numel() // c.in_c
            c.out_sites += output.numel() // c.out_c

        return fn

    handles = [c.module.register_forward_hook(hook(c), with_kwargs=True) for c in cands]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t
    for c in cands:
        c.measured = True


# --------------------------------------------------------------------------- rank choice


def _fixed_ranks(c: _Cand, cfg: LowRankConfig) -> tuple[int, ...]:
    if cfg.rule == "rank":
        return tuple(_round_rank(cfg.rank, f, cfg) for f in c.full)
    if c.replacement == "Tucker2Conv2d":
        return tuple(
            _round_rank(_energy_rank(frac, cfg.energy), f, cfg)
            for frac, f in zip(c.mode_cum, c.full)
        )
    frac = c.cum / c.total if c.total > 0 else np.ones_like(c.cum)
    return (_round_rank(_energy_rank(frac, cfg.energy), c.full[0], cfg),)


def _states(c: _Cand, cfg: LowRankConfig) -> tuple[list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """Every rank choice of ``c`` that saves params and MACs: (ranks, MACs, -log kept energy)."""
    axes = []
    for f in c.full:
        vals = sorted({_round_rank(r, f, cfg) for r in range(1, f + 1)})
        if c.replacement == "Tucker2Conv2d" and len(vals) > _MAX_GRID:
            idx = np.unique(np.linspace(0, len(vals) - 1, _MAX_GRID).round().astype(int))
            vals = [vals[i] for i in idx]
        axes.append(vals)
    grid = [(a,) for a in axes[0]] if len(axes) == 1 else [(a, b) for a in axes[0] for b in axes[1]]
    ranks = [r for r in grid if c.saves(r)]
    macs = np.array([c.macs(r) for r in ranks], dtype=np.float64)
    lost = np.array([-math.log(max(c.kept(r), 1e-300)) for r in ranks], dtype=np.float64)
    return ranks, macs, lost


def _budget_ranks(
    cands: list[_Cand], cfg: LowRankConfig, macs0: int
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Per-layer ranks so that the model's MACs fall to ``macs0 / macs_reduction`` or below."""
    target = macs0 / float(cfg.macs_reduction)
    reasons: dict[str, str] = {}
    layers = []
    for c in cands:
        if c.macs0() == 0:
            reasons[c.path] = "not run by the example inputs, so it saves no MACs"
            continue
        ranks, macs, lost = _states(c, cfg)
        if not ranks:
            reasons[c.path] = c.no_gain(tuple(_round_rank(1, f, cfg) for f in c.full))
            continue
        layers.append([c, ranks, macs, lost])
    total = float(macs0)
    best_possible = total - sum(c.macs0() - macs.min() for c, _, macs, _ in layers)
    if best_possible > target:
        reach = macs0 / max(best_possible, 1.0)
        raise ValueError(
            f"factorize_: cannot reach {cfg.macs_reduction}x fewer MACs by factorization; "
            f"expected macs_reduction <= {reach:.3f} (every eligible layer at min_rank="
            f"{cfg.min_rank}). Lower min_rank/round_to, use method='channel_svd' or 'tucker2' to "
            "include convolutions, or remove layers from `ignore`/`filter_fn`"
        )
    cur_macs = [float(c.macs0()) for c, *_ in layers]
    cur_lost = [0.0] * len(layers)
    choice: dict[int, int] = {}

    def best_move(li: int) -> tuple[float, int]:
        _, _, macs, lost = layers[li]
        ok = macs < cur_macs[li]
        if not ok.any():
            return math.inf, -1
        ratio = np.where(ok, (lost - cur_lost[li]) / np.maximum(cur_macs[li] - macs, 1.0), np.inf)
        j = int(np.argmin(ratio))
        return float(ratio[j]), j

    moves = [best_move(li) for li in range(len(layers))]
    while total > target:
        li = min(range(len(layers)), key=lambda i: moves[i][0])
        _, j = moves[li]
        if j < 0:  # cannot happen after the reachability check; never loop forever
            raise ValueError(f"factorize_: MAC budget search stalled at {int(total):,} MACs")
        _, _, macs, lost = layers[li]
        if total - cur_macs[li] + macs[j] <= target:
            # Last step: of this layer's choices that meet the budget, the one losing least.
            fits = total - cur_macs[li] + macs <= target
            j = int(np.argmin(np.where(fits, lost, np.inf)))
        total += macs[j] - cur_macs[li]
        cur_macs[li], cur_lost[li] = float(macs[j]), float(lost[j])
        choice[li] = j
        moves[li] = best_move(li)
    out: dict[str, tuple[int, ...]] = {}
    for li, (c, ranks, _, _) in enumerate(layers):
        if li in choice:
            out[c.path] = ranks[choice[li]]
        else:
            reasons[c.path] = "not needed to meet the MAC budget (cheaper cuts elsewhere)"
    return out, reasons


# --------------------------------------------------------------------------- the pass


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def _rank_value(ranks: tuple[int, ...]) -> int | list[int]:
    return int(ranks[0]) if len(ranks) == 1 else [int(r) for r in ranks]


def factorize_(
    model: nn.Module, config: LowRankConfig | None = None, example_inputs: Any = None
) -> LowRankReport:
    """Replaces Linear (and, by ``config.method``, Conv2d) layers by low-rank factors in place.

    ``Linear(in, out)`` becomes ``nn.Sequential(Linear(in, r, bias=False), Linear(r, out))``
    from the truncated SVD; a Conv2d becomes channel-SVD ``Conv(in, r, k) -> Conv1x1(r, out)`` or
    Tucker-2 ``Conv1x1(in, r_in) -> Conv(r_in, r_out, k) -> Conv1x1(r_out, out)`` (without the
    1x1 of a mode kept at full width, whose rotation is folded into the core). A layer is left
    as it is, with the reason in the report, when factorizing it would not reduce its parameters
    or MACs (``r * (in + out) >= in * out``), when it is a grouped/depthwise conv, a projection
    that attention reads directly, shared between paths, or already a factor. The new layers are
    plain modules: pruning, quantization and export treat them like any other, and the edits are
    recorded so :func:`optimizer.save` / :func:`optimizer.load` rebuild the model.

    Args:
        model: the model, changed in place.
        config: see :class:`LowRankConfig` (default: kept energy 0.9, Linear layers).
        example_inputs: a tensor or tuple of positional inputs; needed for ``macs_reduction``,
            and, when given, the report counts MACs.

    Returns:
        :class:`LowRankReport` with per-layer ranks, kept energy, params and MACs.

    Raises:
        ValueError: NaN/Inf weights (naming the layer), ``macs_reduction`` without example
            inputs or out of reach.

    Example:
        >>> model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        >>> rep = factorize_(model, LowRankConfig(macs_reduction=2.0), torch.randn(1, 256))
        >>> rep.macs_ratio >= 2.0
        True
    """
    cfg = LowRankConfig() if config is None else config
    if not isinstance(model, nn.Module):
        raise TypeError(f"factorize_: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(cfg, LowRankConfig):
        raise TypeError(f"factorize_: expected a LowRankConfig, got {type(cfg).__name__}")
    if cfg.rule == "macs_reduction" and example_inputs is None:
        raise ValueError(
            "factorize_: macs_reduction needs example_inputs to count MACs; expected a tensor or "
            "tuple of inputs, got None"
        )
    inputs = None
    if example_inputs is not None:
        inputs = (
            tuple(example_inputs)
            if isinstance(example_inputs, (tuple, list))
            else (example_inputs,)
        )
    cands, skipped = _collect(model, cfg)
    _check_finite(cands)
    params0 = count_params(model)
    macs0 = None
    if inputs is not None:
        macs0 = int(count_macs(model, inputs))
        _measure(model, inputs, cands)
    for c in cands:
        c.decompose()

    if cfg.rule == "macs_reduction":
        chosen, reasons = _budget_ranks(cands, cfg, macs0)
    else:
        chosen, reasons = {}, {}
        for c in cands:
            r = _fixed_ranks(c, cfg)
            if c.saves(r):
                chosen[c.path] = r
            else:
                reasons[c.path] = c.no_gain(r)

    rows: list[LowRankLayer] = []
    for path, m, why in skipped:
        p = count_params(m)
        rows.append(LowRankLayer(path, type(m).__name__, None, None, None, p, p, None, None, why))
    plan, layers = [], {}
    for c in cands:
        m0 = c.macs0() if c.measured else None
        ranks = chosen.get(c.path)
        if ranks is None:
            rows.append(
                LowRankLayer(
                    c.path,
                    type(c.module).__name__,
                    None,
                    None,
                    None,
                    c.params0,
                    c.params0,
                    m0,
                    m0,
                    reasons.get(c.path),
                )
            )
            continue
        new = c.build(ranks)
        rows.append(
            LowRankLayer(
                path=c.path,
                kind=type(c.module).__name__,
                replacement=c.replacement,
                rank=int(ranks[0]) if len(ranks) == 1 else (int(ranks[0]), int(ranks[1])),
                energy=c.kept(ranks),
                params_before=c.params0,
                params_after=c.params(ranks),
                macs_before=m0,
                macs_after=c.macs(ranks) if c.measured else None,
            )
        )
        _set_module(model, c.path, new)
        plan.append(
            {"op": "replace", "module": c.path, "with": c.replacement, "rank": _rank_value(ranks)}
        )
        layers[c.path] = {"with": c.replacement, "rank": _rank_value(ranks)}
        c.factors = None  # free the decomposition

    order = {p: i for i, (p, _) in enumerate(model.named_modules())}
    rows.sort(key=lambda r: order.get(r.path, len(order)))
    rec = get_record(model)
    rec["plan"].extend(plan)
    value = {"rank": cfg.rank, "energy": cfg.energy, "macs_reduction": cfg.macs_reduction}
    rec["passes"].append(
        {
            "pass": "factorize",
            "method": cfg.method,
            "rule": cfg.rule,
            "value": value[cfg.rule],
            "min_rank": cfg.min_rank,
            "round_to": cfg.round_to,
            "layers": layers,
        }
    )
    return LowRankReport(
        rule=cfg.rule,
        method=cfg.method,
        rows=rows,
        params_before=params0,
        params_after=count_params(model),
        macs_before=macs0,
        macs_after=int(count_macs(model, inputs)) if inputs is not None else None,
    )


# --------------------------------------------------------------------------- load() support


def _expect(kind: str, old: nn.Module, cls: type) -> None:
    if not isinstance(old, cls) or (isinstance(old, nn.Conv2d) and old.groups != 1):
        raise ValueError(
            f"`{kind}` replaces an nn.{cls.__name__} with groups=1; found {type(old).__name__}"
        )


def _build_linear(old: nn.Module, op: dict[str, Any]) -> nn.Module:
    _expect("LowRankLinear", old, nn.Linear)
    return dec.linear_pair(old, int(op["rank"]))


def _build_conv(old: nn.Module, op: dict[str, Any]) -> nn.Module:
    _expect("LowRankConv2d", old, nn.Conv2d)
    return dec.conv_pair(old, int(op["rank"]))


def _build_tucker2(old: nn.Module, op: dict[str, Any]) -> nn.Module:
    _expect("Tucker2Conv2d", old, nn.Conv2d)
    r_in, r_out = op["rank"]
    return dec.tucker2_triple(old, (int(r_in), int(r_out)))


register_replacement("LowRankLinear", _build_linear)
register_replacement("LowRankConv2d", _build_conv)
register_replacement("Tucker2Conv2d", _build_tucker2)
