"""The one documented place where passes record what they did to a module.

Every pass that changes a model (channel pruning, block pruning, later weight sharing and
quantization) appends to a plain dict kept on the root module as ``model._edgeopt_record``. The
dict holds only JSON-like values (str, int, float, bool, lists, dicts) so that it is saved next to
the state dict without pickling objects, and the exporters read it. Keys:

``plan``
    Ordered structural edits that rebuild the pruned architecture from the original constructor
    (see :mod:`optimizer.prune.plan`): ``{"op": "slice", "module": path, "tensor": name,
    "dim": d, "keep": [...]}``, ``{"op": "set", "module": path, "attr": name, "value": v}``,
    ``{"op": "replace", "module": path, "with": kind, ...}``.
``block_sparsity``
    ``{module_path: {"block": [rows, cols], "sparsity": s, "layout": "oi" | "ohwi" | "oihw"}}``
    written by :func:`optimizer.prune.blocks.prune_blocks_` when its masks are removed.
``weight_sharing``
    ``{module_path: {"clusters": k, "per_channel": bool, "bits": 2 | 4 | 8, "method": ...,
    "keep_zeros": bool, "layout": "oi" | "ohwi" | ...}}`` written by
    :func:`optimizer.share.share.share_weights_`; :func:`optimizer.share.share.codebooks` rebuilds
    the indices and tables from it.
``quantization``
    Written by :func:`optimizer.quantize.ptq.quantize_` / :func:`optimizer.quantize.qat.convert_`
    on the quantized module they return: scheme and observer settings, the scale and zero point
    of every model input and output, and per layer path its scales, zero points, weight scales,
    fused activation/clamp, conv geometry and folded BatchNorm, plus the layers kept in float
    (schema in :mod:`optimizer.quantize.ptq`).
``passes``
    A list of ``{"pass": name, ...settings}`` in the order they ran, for reports.
"""

from __future__ import annotations

from typing import Any

import torch

ATTR = "_edgeopt_record"


def get_record(model: torch.nn.Module) -> dict[str, Any]:
    """Returns the record dict of ``model`` (created empty on first use)."""
    rec = getattr(model, ATTR, None)
    if rec is None:
        rec = {"plan": [], "block_sparsity": {}, "passes": []}
        # object.__setattr__ keeps the dict out of nn.Module's registries (not a buffer/param).
        object.__setattr__(model, ATTR, rec)
    return rec


def set_record(model: torch.nn.Module, rec: dict[str, Any]) -> None:
    """Replaces the record of ``model`` (used by :func:`optimizer.load`)."""
    object.__setattr__(model, ATTR, rec)
