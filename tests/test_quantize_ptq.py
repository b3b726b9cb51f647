"""Post-training int8 quantization: folding and fusion, observers, mixed graphs, records, the
per-layer report and automatic fallback."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optimizer.graph.record import ATTR, get_record
from optimizer.quantize import modules as qm
from optimizer.quantize.diagnose import QuantReport, quant_report
from optimizer.quantize.ptq import Int8Config, quantize_
from tests.zoo import ZOO


def _calib(x: torch.Tensor, n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*x.shape, generator=g) for _ in range(n)]


def _rel_err(model, q, inputs) -> float:
    with torch.no_grad():
        yf, yq = model(*inputs), q(*inputs)
    return float((yf - yq).norm() / yf.norm())


def test_batchnorm_is_folded_and_relu_fused_into_the_conv():
    model, inputs = ZOO["vgg"]()
    q = quantize_(model, Int8Config(), calibration=_calib(inputs[0]))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in q.modules())
    layer = get_record(q)["quantization"]["layers"]["features.0"]
    assert layer["fused"] == ["features.1", "features.2"]
    conv = q.get_submodule("features.0")
    assert conv.activation == "relu" and conv.clamp[0] == max(-128, conv.output_zero_point)


def test_int8_model_passes_int8_tensors_between_layers():
    model, inputs = ZOO["resnet_basic"]()
    q = quantize_(model, Int8Config(), calibration=_calib(inputs[0]))
    dtypes = set()
    hooks = [
        m.register_forward_hook(lambda mod, i, o: dtypes.update({i[0].dtype, o.dtype}))
        for m in q.modules()
        if isinstance(m, (qm.QConv2d, qm.QAdd, qm.QLinear))
    ]
    y = q(*inputs)
    for h in hooks:
        h.remove()
    assert dtypes == {torch.int8} and y.dtype == torch.float32


def test_per_tensor_weights_have_one_scale_per_layer():
    model, inputs = ZOO["mobilenetv2"]()
    q = quantize_(model, Int8Config(per_channel=False), calibration=_calib(inputs[0]))
    layers = [m for m in q.modules() if isinstance(m, (qm.QConv2d, qm.QLinear))]
    assert layers and all(m.weight_scale.numel() == 1 for m in layers)
    assert all(m.multiplier.numel() == m.weight_int8.shape[0] for m in layers)
    assert get_record(q)["quantization"]["per_channel"] is False


def test_per_channel_beats_per_tensor_on_a_depthwise_network():
    model, inputs = ZOO["mobilenetv2"]()
    with torch.no_grad():  # spread the depthwise filters' magnitudes, as trained ones are
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                m.weight.mul_(torch.logspace(-2, 0, m.weight.shape[0]).reshape(-1, 1, 1, 1))
    data = _calib(inputs[0])
    per_channel = quantize_(model, Int8Config(per_channel=True), calibration=data)
    per_tensor = quantize_(model, Int8Config(per_channel=False), calibration=data)
    assert _rel_err(model, per_channel, inputs) < _rel_err(model, per_tensor, inputs)


@pytest.mark.parametrize("observer", ["minmax", "moving_average", "percentile", "mse"])
def test_every_observer_gives_a_close_int8_model(observer):
    model, inputs = ZOO["efficientnet"]()
    q = quantize_(model, Int8Config(observer=observer), calibration=_calib(inputs[0]))
    assert _rel_err(model, q, inputs) < 0.1
    assert get_record(q)["quantization"]["observer"] == observer


def test_bias_correction_moves_biases_and_keeps_the_model_close():
    model, inputs = ZOO["mobilenetv2"]()
    data = _calib(inputs[0])
    plain = quantize_(model, Int8Config(), calibration=data)
    corrected = quantize_(model, Int8Config(bias_correction=True), calibration=data)
    b0 = plain.get_submodule("features.1.conv.0").bias_int32
    b1 = corrected.get_submodule("features.1.conv.0").bias_int32
    assert not torch.equal(b0, b1)
    assert _rel_err(model, corrected, inputs) < 0.1
    assert get_record(corrected)["quantization"]["bias_correction"] is True


def test_keep_float_runs_the_layer_in_float_between_stubs():
    model, inputs = ZOO["vgg"]()
    q = quantize_(model, Int8Config(keep_float=["features.3"]), calibration=_calib(inputs[0]))
    assert type(q.get_submodule("features.3")) is nn.Conv2d
    kinds = [
        type(q.get_submodule(n.target)).__name__ for n in q.graph.nodes if n.op == "call_module"
    ]
    i = kinds.index("Conv2d")
    assert kinds[i - 1] == "DeQuantStub" and kinds[i + 1] in ("ReLU", "QuantStub")
    rec = get_record(q)["quantization"]
    assert rec["kept_float"] == ["features.3"] and "features.3" not in rec["layers"]
    assert _rel_err(model, q, inputs) < 0.1


def test_keep_float_by_enclosing_module_covers_its_functions():
    model, inputs = ZOO["resnet_basic"]()
    q = quantize_(model, Int8Config(keep_float=["layer1.0"]), calibration=_calib(inputs[0]))
    rec = get_record(q)["quantization"]
    assert "layer1.0.add" in rec["kept_float"] and "layer1.0.conv1" in rec["kept_float"]
    assert "layer1.1.add" in rec["layers"]


def test_filter_fn_keeps_refused_modules_float():
    model, inputs = ZOO["vgg"]()
    cfg = Int8Config(filter_fn=lambda m, path: not isinstance(m, nn.Linear))
    q = quantize_(model, cfg, calibration=_calib(inputs[0]))
    assert not any(isinstance(m, qm.QLinear) for m in q.modules())
    assert any(isinstance(m, qm.QConv2d) for m in q.modules())


def test_quant_report_lists_int8_layers_worst_first():
    model, inputs = ZOO["resnet_basic"]()
    data = _calib(inputs[0])
    q = quantize_(model, Int8Config(), calibration=data)
    report = quant_report(model, q, data)
    assert isinstance(report, QuantReport)
    n_layers = sum(
        isinstance(m, (qm.QConv2d, qm.QLinear, qm.QAdd, qm.QAvgPool2d)) for m in q.modules()
    )
    assert len(report) == n_layers
    sqnr = [r.sqnr_db for r in report]
    assert sqnr == sorted(sqnr) and all(s > 10 for s in sqnr)
    assert all(r.max_abs_error >= 0 for r in report)
    md = report.to_markdown()
    assert md.splitlines()[0].startswith("| layer | op | SQNR dB")
    assert f"| {report[0].path} |" in md.splitlines()[2]


def test_auto_keep_float_leaves_the_worst_layers_in_float():
    model, inputs = ZOO["resnet_basic"]()
    data = _calib(inputs[0])
    full = quantize_(model, Int8Config(), calibration=data)

    worst = [r.path for r in quant_report(model, full, data) if r.op in ("conv2d", "linear", "add")]
    q = quantize_(model, Int8Config(auto_keep_float=2), calibration=data)
    rec = get_record(q)["quantization"]
    assert rec["auto_kept_float"] == worst[:2]
    assert set(worst[:2]) <= set(rec["kept_float"])
    assert _rel_err(model, q, inputs) <= _rel_err(model, full, inputs) * 1.05


def test_concat_inputs_share_the_output_quantization():
    model, inputs = ZOO["densenet"]()
    q = quantize_(model, Int8Config(), calibration=_calib(inputs[0]))
    layers = get_record(q)["quantization"]["layers"]
    # The stem's output and each dense layer's new features are concatenated: one scale.
    outs = {
        (layers[p]["output_scale"], layers[p]["output_zero_point"])
        for p in ("stem.0", "block1.layers.0.conv2", "block1.layers.1.conv2")
    }
    assert len(outs) == 1


def test_sigmoid_uses_tflite_fixed_output_quantization():
    model, inputs = ZOO["efficientnet"]()
    q = quantize_(model, Int8Config(), calibration=_calib(inputs[0]))
    sig = q.get_submodule("blocks.0.se.sigmoid")
    assert isinstance(sig, qm.QLookupTable)
    assert (sig.output_scale, sig.output_zero_point) == (1 / 256, -128)


def test_record_is_json_and_keeps_the_models_earlier_record():
    model, inputs = ZOO["mlp"]()
    get_record(model)["plan"].append({"op": "set", "module": "out", "attr": "x", "value": 1})
    q = quantize_(model, Int8Config(), calibration=_calib(inputs[0]))
    rec = get_record(q)
    json.dumps(rec)
    assert rec["plan"] == get_record(model)["plan"]
    assert rec["passes"][-1]["pass"] == "quantize_int8"
    assert rec["passes"][-1]["requantization"] == "gemmlowp"
    quant = rec["quantization"]
    assert set(quant["inputs"]) == {"x"} and quant["outputs"][0]["scale"] > 0
    assert quant["layers"]["body.0"]["fused"] == ["body.1"]


def test_users_model_is_not_changed():
    model, inputs = ZOO["resnet_basic"]()
    before = copy.deepcopy(model.state_dict())
    quantize_(model, Int8Config(bias_correction=True), calibration=_calib(inputs[0]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(model, ATTR)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_calibration_accepts_a_loader_of_pairs_and_limits_batches():
    model, _ = ZOO["mlp"]()
    loader = DataLoader(TensorDataset(torch.randn(64, 64), torch.zeros(64)), batch_size=8)
    q = quantize_(model, Int8Config(max_calibration_batches=2), calibration=loader)
    assert q(torch.randn(3, 64)).shape == (3, 10)


def test_models_with_several_outputs_are_dequantized_each():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 4)
            self.b = nn.Linear(8, 3)

        def forward(self, x):
            return self.a(x), torch.relu(self.b(x))

    model = Two().eval()
    q = quantize_(model, Int8Config(), calibration=[torch.randn(16, 8)])
    ya, yb = q(torch.randn(2, 8))
    assert ya.dtype == yb.dtype == torch.float32 and (yb >= 0).all()


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="unknown observer"):
        Int8Config(observer="kl")
    with pytest.raises(ValueError, match="percentile"):
        Int8Config(percentile=20)
    with pytest.raises(ValueError, match="auto_keep_float"):
        Int8Config(auto_keep_float=-1)
    model, inputs = ZOO["vgg"]()
    with pytest.raises(ValueError, match=r"`features\.33`.*Did you mean"):
        quantize_(model, Int8Config(keep_float=["features.33"]), calibration=[inputs[0]])


class _Functional(nn.Module):
    """Ops written as functions and methods, as users write them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(16, 5)
        self.bn = nn.BatchNorm1d(5)

    def forward(self, x):
        x = F.relu6(self.conv(x))
        x = F.max_pool2d(x, 3, 2, padding=1)
        a, b = torch.chunk(self.conv2(x), 2, dim=1)
        y = torch.cat([F.hardswish(a), b * 0.5], 1)
        y = F.avg_pool2d(y, 3, 1, padding=1, count_include_pad=False)
        y = y.mean((2, 3))
        y = torch.cat([y, torch.sigmoid(y)], 1)
        return self.bn(self.fc(y)).clamp(min=0)


def test_functional_ops_are_quantized_exactly():
    from tests.test_quantize_exact import check_exact

    torch.manual_seed(0)
    model = _Functional().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 9, 9)
    q = quantize_(model, Int8Config(), calibration=[x, torch.randn(4, 3, 9, 9)])
    counts = check_exact(q, (x,))
    assert counts["max_pool2d"] == 1 and counts["avg_pool2d"] == 2 and counts["lut"] == 3
    layers = get_record(q)["quantization"]["layers"]
    assert layers["conv"]["activation"] == "relu6"
    assert layers["fc"]["fused"] == ["bn", "clamp"]  # Linear + BatchNorm1d folded, ReLU fused
    assert layers["quantize_x"]["op"] == "quantize"
    assert _rel_err(model, q, (x,)) < 0.1
