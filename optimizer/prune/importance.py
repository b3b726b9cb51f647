"""Channel importance: one score per unit of a group, from every tensor the unit touches."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from optimizer.graph.dependency import Group, Member

IMPORTANCES = ("l1", "l2", "bn_scale", "taylor", "random")
_NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "LayerNorm", "InstanceNorm2d")


def _weight_slices(mod: nn.Module, m: Member) -> list[tuple[torch.Tensor, int]]:
    """(tensor, dim) pairs whose index ``dim`` runs over the member's positions."""
    kind = m.kind
    if m.role == "split":
        return []
    if m.role == "param":
        return [(getattr(mod, m.tensor), m.dim)]
    if kind in ("MultiheadAttention", "MultiheadSelfAttention"):
        if kind == "MultiheadAttention":
            e = mod.embed_dim
            w = mod.in_proj_weight
            q, k, v, o = w[:e], w[e : 2 * e], w[2 * e :], mod.out_proj.weight
        else:
            q, k, v = mod.q_proj.weight, mod.k_proj.weight, mod.v_proj.weight
            o = mod.out_proj.weight
        if m.role == "in":
            return [(q, 1), (k, 1), (v, 1)]
        if m.role == "out":
            return [(o, 0)]
        # heads: rows of q/k/v and columns of out, reshaped to one index per head below
        return [(q, 0), (k, 0), (v, 0), (o, 1)]
    w = getattr(mod, "weight", None)
    if w is None:
        return []
    if m.role == "out":
        dim = 1 if kind.startswith("ConvTranspose") else 0
        if kind == "Embedding":
            dim = 1
        return [(w, dim)]
    if m.role == "in":
        dim = 0 if kind.startswith("ConvTranspose") else 1
        if m.segments > 1:
            return [(w, -1)]  # grouped conv input, handled by _grouped_in
        return [(w, dim)]
    return [(w, 0)]  # norm, depthwise, PReLU


def _reduce(t: torch.Tensor, dim: int, how: str) -> np.ndarray:
    t = t.detach().float().transpose(0, dim).reshape(t.shape[dim], -1)
    if how == "l2":
        return t.pow(2).sum(1).numpy()
    return t.abs().sum(1).numpy()


def _grouped_in(w: torch.Tensor, groups: int, how: str, grad: torch.Tensor | None) -> np.ndarray:
    """Score per input channel of a grouped conv (weight [O, I/g, ...]): its group's rows."""
    o, ipg = w.shape[0], w.shape[1]
    rows = o // groups
    out = np.zeros(groups * ipg)
    for gi in range(groups):
        blk = w[gi * rows : (gi + 1) * rows].detach().float()
        if grad is not None:
            blk = (blk * grad[gi * rows : (gi + 1) * rows].float()).abs()
        s = _reduce(blk, 1, how if grad is None else "l1")
        out[gi * ipg : (gi + 1) * ipg] = s
    return out


def member_scores(model: nn.Module, m: Member, how: str, head_dim: int = 0) -> np.ndarray | None:
    """Score per position of ``m`` (None when the member has no weight to judge by)."""
    mod = model.get_submodule(m.module) if m.module else model
    pairs = _weight_slices(mod, m)
    if not pairs:
        return None
    total = None
    for t, dim in pairs:
        if t is None:
            continue
        grad = None
        if how == "taylor":
            grad = t.grad
            if grad is None:
                raise ValueError(
                    f"prune_channels_: importance 'taylor' needs gradients, but "
                    f"`{m.module}` has none; run loss.backward() on a few batches first"
                )
        if dim == -1:
            s = _grouped_in(t, m.segments, how, grad)
        elif grad is not None:
            s = _reduce((t.detach() * grad).abs(), dim, "l1")
        else:
            s = _reduce(t, dim, how)
        if m.role == "heads":
            s = s.reshape(-1, head_dim).sum(1)
        total = s if total is None else total + s
    return total


def group_scores(model: nn.Module, g: Group, how: str, rng: np.random.Generator) -> np.ndarray:
    """One importance per unit of ``g``; each member is normalised by its mean, then summed."""
    if how not in IMPORTANCES:
        raise ValueError(
            f"prune_channels_: unknown importance {how!r}; expected one of {IMPORTANCES}"
        )
    n = len(g.units)
    if how == "random":
        return rng.random(n)
    use = list(range(len(g.members)))
    base = "l1" if how == "bn_scale" else how
    if how == "bn_scale":
        norms = [i for i, m in enumerate(g.members) if m.kind in _NORMS and m.role == "norm"]
        if norms:
            use = norms
    score = np.zeros(n)
    for i in use:
        m = g.members[i]
        s = member_scores(model, m, base, g.head_dim)
        if s is None:
            continue
        per_unit = np.array([s[idx].sum() if len(idx) else 0.0 for idx in g.unit_index[i]])
        mean = per_unit[per_unit > 0].mean() if (per_unit > 0).any() else 1.0
        score += per_unit / mean
    return score
