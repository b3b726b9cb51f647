"""Quantization-aware training: fake quantization with a straight-through gradient, the same
scales as the int8 model, and conversion to the integer-exact model (after pruning, with
distillation)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from optimizer.distill.core import DistillConfig, distill_
from optimizer.graph.record import get_record
from optimizer.prune.channels import ChannelPruneConfig, prune_channels_
from optimizer.quantize import modules as qm
from optimizer.quantize.observers import activation_qparams
from optimizer.quantize.ptq import Int8Config
from optimizer.quantize.qat import (
    FakeQuantize,
    QATConv2d,
    QATLinear,
    convert_,
    fake_quantize,
    prepare_qat_,
)
from tests.test_quantize_exact import check_exact
from tests.zoo import ZOO


def _data(x: torch.Tensor, n: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(*x.shape, generator=g), torch.randint(0, 10, (x.shape[0],), generator=g))
        for _ in range(n)
    ]


def test_fake_quantize_rounds_like_the_int8_model_and_passes_gradients_inside_the_range():
    scale, zp = activation_qparams(-1.0, 1.0)
    x = torch.tensor([-3.0, -0.5, 0.0, 0.3333, 0.9, 3.0], requires_grad=True)
    y = fake_quantize(x, scale, zp)
    q = torch.clamp(torch.round(x.detach().double() / scale) + zp, -128, 127)
    assert torch.allclose(y.detach().double(), (q - zp) * scale, atol=1e-6)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_prepare_swaps_weights_folds_batchnorm_and_inserts_fake_quant():
    model, inputs = ZOO["resnet_basic"]()
    qat = prepare_qat_(model, Int8Config(), inputs)
    mods = list(qat.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in mods)
    assert any(isinstance(m, QATConv2d) for m in mods) and any(
        isinstance(m, QATLinear) for m in mods
    )
    assert sum(isinstance(m, FakeQuantize) for m in mods) >= 10
    assert all(m.qparams() is not None for m in mods if isinstance(m, FakeQuantize))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # user's model intact


def test_training_updates_ranges_and_weights_and_eval_freezes_ranges():
    model, inputs = ZOO["mobilenetv2"]()
    qat = prepare_qat_(model, Int8Config(), inputs)
    fq = next(m for m in qat.modules() if isinstance(m, FakeQuantize) and m.fixed is None)
    conv = qat.get_submodule("features.0.0")
    w0 = conv.weight.detach().clone()
    qat.train()
    opt = torch.optim.SGD(qat.parameters(), lr=0.1)
    for x, _ in _data(inputs[0]):
        loss = qat(x * 3).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
        opt.step()
    assert not torch.equal(conv.weight.detach(), w0)
    qat.eval()
    before = fq.max_vals.clone()
    qat(inputs[0] * 10)
    assert torch.equal(fq.max_vals, before)


@pytest.mark.parametrize("name", ["vgg", "resnet_basic", "mobilenetv2", "efficientnet", "mlp"])
def test_converted_model_is_integer_exact_and_matches_the_fake_quant_model(name):
    model, inputs = ZOO[name]()
    data = _data(inputs[0])
    qat = prepare_qat_(model, Int8Config(), inputs, calibration=data)
    qat.train()
    opt = torch.optim.Adam(qat.parameters(), lr=1e-3)
    for x, y in data:
        loss = nn.functional.cross_entropy(qat(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    qat.eval()
    q = convert_(qat)
    check_exact(q, inputs)
    with torch.no_grad():
        ys, yq = qat(*inputs), q(*inputs)
    assert float((ys - yq).norm() / ys.norm()) < 0.05
    assert get_record(q)["passes"][-1]["pass"] == "convert_qat"


def test_converted_scales_are_the_fake_quant_scales():
    model, inputs = ZOO["vgg"]()
    qat = prepare_qat_(model, Int8Config(), inputs, calibration=_data(inputs[0]))
    q = convert_(qat)
    # The first conv's output (after its fused ReLU) is fake-quantized by the FakeQuantize
    # whose members include the ReLU node.
    fq = next(
        m
        for m in qat.modules()
        if isinstance(m, FakeQuantize) and any("features_2" in n for n in m.members)
    )
    conv = q.get_submodule("features.0")
    assert (conv.output_scale, conv.output_zero_point) == fq.qparams()


def test_prune_then_qat_with_distillation_converts_to_an_exact_int8_model():
    teacher, inputs = ZOO["resnet_basic"]()
    student = copy.deepcopy(teacher)
    prune_channels_(student, inputs, ChannelPruneConfig(ratio=0.5))
    data = _data(inputs[0])
    qat = prepare_qat_(student, Int8Config(), inputs, calibration=data)
    cfg = DistillConfig(epochs=1, lr=1e-3, progress=False, max_steps_per_epoch=3)
    result = distill_(qat, teacher, data, cfg)
    assert result.steps == 3
    q = convert_(qat)
    counts = check_exact(q, inputs)
    assert counts["conv2d"] >= 5
    widths = [m.out_channels for m in q.modules() if isinstance(m, qm.QConv2d)]
    assert max(widths) < 64  # the pruned widths survive conversion


def test_keep_float_applies_to_qat_and_conversion():
    model, inputs = ZOO["vgg"]()
    qat = prepare_qat_(model, Int8Config(keep_float=["classifier.0"]), inputs)
    assert type(qat.get_submodule("classifier.0")) is nn.Linear
    q = convert_(qat)
    assert type(q.get_submodule("classifier.0")) is nn.Linear
    assert get_record(q)["quantization"]["kept_float"] == ["classifier.0"]


def test_convert_refuses_a_model_that_was_not_prepared():
    model, _ = ZOO["mlp"]()
    with pytest.raises(ValueError, match="expected the GraphModule returned by prepare_qat_"):
        convert_(model)
