"""edge-optimizer: make a PyTorch model as small and fast as an edge device allows.

Public names live here (as tfmot keeps its public API in one place). ``optimizer.kernels``
(native int8/fp32 GEMM) and ``optimizer.quantize.arithmetic`` (the reference int8 maths) need
only numpy; the passes below need torch and are imported on first use, so the native runtime
installs on a device without torch.

Passes (in place, trailing underscore, as torchao names them):
``prune_channels_`` / ``ChannelPruneConfig`` / ``ChannelPruner`` (structured pruning),
``prune_layers_`` / ``LayerPruneConfig`` (residual blocks), ``prune_blocks_`` /
``BlockPruneConfig`` (block sparsity for the BSR kernels), ``distill_`` / ``fine_tune_`` /
``DistillConfig`` (knowledge distillation), ``save`` / ``load`` (pruned models without pickling).
"""

from __future__ import annotations

import importlib
from typing import Any

from optimizer import kernels, targets
from optimizer.quantize import arithmetic

_LAZY = {
    "DependencyGraph": "optimizer.graph.dependency",
    "UnsupportedOpError": "optimizer.graph.dependency",
    "MultiheadSelfAttention": "optimizer.graph.attention",
    "ChannelPruneConfig": "optimizer.prune.channels",
    "ChannelPruner": "optimizer.prune.channels",
    "PruneReport": "optimizer.prune.channels",
    "prune_channels_": "optimizer.prune.channels",
    "LayerPruneConfig": "optimizer.prune.layers",
    "prune_layers_": "optimizer.prune.layers",
    "recalibrate_bn_": "optimizer.prune.bn",
    "BlockPruneConfig": "optimizer.prune.blocks",
    "BlockSparsifier": "optimizer.prune.blocks",
    "prune_blocks_": "optimizer.prune.blocks",
    "PolynomialDecay": "optimizer.prune.schedules",
    "ConstantSparsity": "optimizer.prune.schedules",
    "DistillConfig": "optimizer.distill.core",
    "DistillResult": "optimizer.distill.core",
    "distill_": "optimizer.distill.core",
    "distill_blocks_": "optimizer.distill.core",
    "fine_tune_": "optimizer.distill.core",
    "soft_kl_loss": "optimizer.distill.core",
    "LowRankConfig": "optimizer.lowrank",
    "LowRankReport": "optimizer.lowrank",
    "factorize_": "optimizer.lowrank",
    "WeightShareConfig": "optimizer.share.share",
    "ShareReport": "optimizer.share.share",
    "share_weights_": "optimizer.share.share",
    "codebook": "optimizer.share.share",
    "Int8Config": "optimizer.quantize.ptq",
    "quantize_": "optimizer.quantize.ptq",
    "prepare_qat_": "optimizer.quantize.qat",
    "convert_": "optimizer.quantize.qat",
    "quant_report": "optimizer.quantize.diagnose",
    "QuantReport": "optimizer.quantize.diagnose",
    "export_tflite": "optimizer.export.tflite",
    "TfliteReport": "optimizer.export.tflite",
    "compress": "optimizer.pipeline",
    "CompressResult": "optimizer.pipeline",
    "Recipe": "optimizer.recipes",
    "Stage": "optimizer.recipes",
    "Budget": "optimizer.recipes",
    "RecipeError": "optimizer.recipes",
    "load_recipe": "optimizer.recipes",
    "export_native": "optimizer.export.native",
    "NativeExportReport": "optimizer.export.native",
    "save": "optimizer.prune.plan",
    "load": "optimizer.prune.plan",
    "count_macs": "optimizer.graph.profile",
    "count_params": "optimizer.graph.profile",
    "layer_stats": "optimizer.graph.profile",
    "compare": "optimizer.graph.profile",
    "LayerStats": "optimizer.graph.profile",
    "LayerReport": "optimizer.graph.profile",
    "write_report": "optimizer.report",
    "ReportPaths": "optimizer.report",
    "run_demo": "optimizer.demo",
}

# Submodules reachable as attributes without an import of their own (`optimizer.runtime.load`);
# each is imported on first use (runtime, deploy and measure need no torch).
_SUBMODULES = ("runtime", "deploy", "report", "demo", "measure", "pipeline", "recipes", "cli")

__all__ = ["arithmetic", "kernels", "targets", *sorted(_LAZY)]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"optimizer.{name}")
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'optimizer' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
