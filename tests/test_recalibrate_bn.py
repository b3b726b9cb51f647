"""recalibrate_bn_: exact running statistics after pruning, nothing else changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optimizer
from tests.zoo import ZOO


def test_running_stats_become_the_exact_average_over_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).train()
    bn = model[1]
    bn.momentum = 0.3
    data = [torch.randn(4, 3, 6, 6) for _ in range(3)]
    weights = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if k.startswith("0.") or k in ("1.weight", "1.bias")
    }
    assert optimizer.recalibrate_bn_(model, data) == 3
    with torch.no_grad():
        feats = [model[0](x) for x in data]
    want_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    want_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, want_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, want_var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.3 and model.training and bn.training
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_recalibration_after_pruning_moves_outputs_back_towards_the_original():
    model, x = ZOO["resnet_basic"]()
    torch.manual_seed(1)
    data = [(torch.randn(8, 3, 32, 32), torch.zeros(8)) for _ in range(4)]
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    before = [b.running_mean.clone() for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    optimizer.recalibrate_bn_(model, data, max_batches=2)
    after = [b.running_mean for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert not model.training


def test_empty_data_is_an_error_and_leaves_the_statistics():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    mean = model[1].running_mean.clone()
    with pytest.raises(ValueError, match="no batch"):
        optimizer.recalibrate_bn_(model, [])
    assert torch.equal(model[1].running_mean, mean)
    with pytest.raises(ValueError, match="max_batches"):
        optimizer.recalibrate_bn_(model, [torch.randn(2, 4)], max_batches=0)
