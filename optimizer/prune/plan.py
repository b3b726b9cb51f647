"""Replayable structural edits, and save/load of pruned models without pickling the module.

A pruned model is the original constructor's model plus a list of edits (the *plan*): slice a
tensor along a dim, gather a grouped conv's input channels per group, set an attribute, replace a
module. :func:`save` writes the plan and the state dict; :func:`load` calls the user's
``build_fn`` (the original constructor), replays the plan on it and loads the weights, so the
file holds only tensors and JSON-like data (``torch.load(weights_only=True)`` reads it).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from optimizer._util import atomic_torch_save
from optimizer.graph.attention import MultiheadSelfAttention
from optimizer.graph.record import get_record, set_record

FORMAT = "edgeopt.pruned"
VERSION = 1

_REPLACEMENTS: dict[str, Callable[[nn.Module, dict[str, Any]], nn.Module]] = {
    "Identity": lambda m, op: nn.Identity(),
    "MultiheadSelfAttention": lambda m, op: MultiheadSelfAttention.from_torch(m),
}


# Kinds whose pass registers them on import; load() in a fresh process imports it on first use.
_PROVIDERS = {k: "optimizer.lowrank" for k in ("LowRankLinear", "LowRankConv2d", "Tucker2Conv2d")}


def register_replacement(
    kind: str, build: Callable[[nn.Module, dict[str, Any]], nn.Module]
) -> None:
    """Lets a pass record ``{"op": "replace", "module": path, "with": kind, ...}`` edits.

    ``build(old_module, op)`` returns the new module (its weights are overwritten by the saved
    state dict on :func:`load`, so only the structure matters); extra keys of ``op`` (a rank, a
    codebook size) carry what the structure needs. Passes register at import time.
    """
    _REPLACEMENTS[kind] = build


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (``""`` is ``model`` itself); ValueError naming it if absent."""
    if not path:
        return model
    try:
        return model.get_submodule(path)
    except AttributeError as e:
        raise ValueError(f"plan: module `{path}` does not exist in {type(model).__name__}") from e


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_module(model, parent), name, new)


def set_tensor(mod: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replaces a parameter or buffer of ``mod`` keeping its kind (and ``requires_grad``)."""
    if name in mod._parameters:
        old = mod._parameters[name]
        rg = old.requires_grad if old is not None else True
        mod._parameters[name] = nn.Parameter(value.contiguous(), requires_grad=rg)
    elif name in mod._buffers:
        mod._buffers[name] = value.contiguous()
    else:
        raise ValueError(f"plan: `{type(mod).__name__}` has no parameter or buffer `{name}`")


def apply_op(model: nn.Module, op: dict[str, Any]) -> None:
    """Applies one plan edit to ``model`` in place."""
    kind = op.get("op")
    mod = get_module(model, op["module"])
    if kind == "slice":
        t = getattr(mod, op["tensor"])
        if t is None:
            return
        keep = torch.as_tensor(op["keep"], dtype=torch.long, device=t.device)
        with torch.no_grad():
            set_tensor(mod, op["tensor"], t.detach().index_select(op["dim"], keep).clone())
    elif kind == "gather_groups":
        # Grouped conv input channels: each output group keeps its own local input indices.
        t = getattr(mod, op["tensor"])
        groups = op["groups"]
        rows = t.shape[0] // groups
        parts = []
        with torch.no_grad():
            for gi, keep in enumerate(op["keep"]):
                idx = torch.as_tensor(keep, dtype=torch.long, device=t.device)
                parts.append(t[gi * rows : (gi + 1) * rows].index_select(1, idx))
            set_tensor(mod, op["tensor"], torch.cat(parts, 0).clone())
    elif kind == "set":
        value = op["value"]
        if op["attr"] in ("normalized_shape", "kernel_size") and isinstance(value, list):
            value = tuple(value)
        setattr(mod, op["attr"], value)
    elif kind == "replace":
        if op["with"] not in _REPLACEMENTS and op["with"] in _PROVIDERS:
            importlib.import_module(_PROVIDERS[op["with"]])
        make = _REPLACEMENTS.get(op["with"])
        if make is None:
            raise ValueError(f"plan: unknown replacement `{op['with']}` for `{op['module']}`")
        _set_module(model, op["module"], make(mod, op))
    else:
        raise ValueError(f"plan: unknown op {kind!r} in {op}")


def replay(model: nn.Module, plan: list[dict[str, Any]]) -> nn.Module:
    """Applies every edit of ``plan`` to ``model`` (in place) and returns it."""
    for i, op in enumerate(plan):
        try:
            apply_op(model, op)
        except (ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise ValueError(
                f"load: plan step {i} ({op.get('op')} on `{op.get('module')}`) does not apply to "
                f"the model from build_fn: {e}. Is build_fn the constructor of the original model?"
            ) from e
    return model


def save(model: nn.Module, path: str | os.PathLike) -> int:
    """Writes ``model``'s plan and weights to ``path`` atomically; returns the file size in bytes.

    The file holds tensors and plain data only (no pickled module), so it loads with
    ``torch.load(weights_only=True)`` and into a fresh process through :func:`load`.

    Example:
        >>> optimizer.save(model, "pruned.pt")
        >>> model2 = optimizer.load("pruned.pt", build_fn=make_resnet)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save: expected a torch.nn.Module, got {type(model).__name__}")
    rec = get_record(model)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    masks = [k for k in sd if k.endswith("_mask") and "edgeopt" in k]
    if masks:
        raise ValueError(
            f"save: `{masks[0]}` is a block-pruning mask still attached; call the sparsifier's "
            ".remove() first so the zeros become part of the weights"
        )
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(model).__qualname__,
        "record": rec,
        "state_dict": sd,
    }
    p = Path(path)
    atomic_torch_save(payload, p)
    return p.stat().st_size


def load(path: str | os.PathLike, build_fn: Callable[[], nn.Module]) -> nn.Module:
    """Rebuilds a model saved by :func:`save`: ``build_fn()``, then the plan, then the weights.

    Args:
        path: file written by :func:`save`.
        build_fn: returns the original, unpruned model (its weights are overwritten).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"load: `{p}` does not exist or is not a file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"load: `{p}` is not a readable edge-optimizer file ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"load: `{p}` is not an edge-optimizer pruned-model file")
    if payload.get("version", 0) > VERSION:
        raise ValueError(
            f"load: `{p}` has format version {payload['version']}; this edge-optimizer reads "
            f"up to {VERSION}. Upgrade edge-optimizer"
        )
    model = build_fn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"load: build_fn must return a torch.nn.Module, got {type(model).__name__}")
    rec = payload["record"]
    replay(model, rec.get("plan", []))
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"load: weights in `{p}` do not match the rebuilt model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); was the file saved from a model built by build_fn?"
        )
    set_record(model, rec)
    return model
