"""Low-rank factorization: SVD optimality, exact full-rank factors, rank rules, MAC budgets,
pruning/save/load of factorized zoo models, errors, and accuracy recovered by distillation."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import optimizer
from optimizer.graph.dependency import DependencyGraph
from optimizer.graph.record import get_record
from optimizer.lowrank import (
    LowRankConfig,
    LowRankReport,
    factorize_,
    svd_conv2d,
    svd_linear,
    tucker2_conv2d,
)
from tests.zoo import ZOO

ROOT = Path(__file__).resolve().parents[1]


def _matrix(singular: list[float], out_f: int, in_f: int, seed: int = 0) -> torch.Tensor:
    """``U diag(s) V^T`` with random orthonormal ``U``, ``V``: a weight with known spectrum."""
    g = torch.Generator().manual_seed(seed)
    r = len(singular)
    u = torch.linalg.qr(torch.randn(out_f, r, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(in_f, r, generator=g, dtype=torch.float64))[0]
    return (u * torch.tensor(singular, dtype=torch.float64)) @ v.T


def _linear_with(weight: torch.Tensor, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias).double()
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin


def _product(seq: nn.Sequential) -> torch.Tensor:
    return seq[1].weight.detach() @ seq[0].weight.detach()


# --------------------------------------------------------------------------- the maths


@pytest.mark.parametrize("rank", [1, 3, 10, 23])
def test_svd_linear_error_is_the_discarded_singular_values(rank):
    torch.manual_seed(0)
    lin = nn.Linear(40, 24).double()
    s = torch.linalg.svdvals(lin.weight.detach())
    approx = _product(svd_linear(lin, rank))
    err = lin.weight.detach() - approx
    # Eckart-Young: the Frobenius error is the norm of the dropped singular values, the spectral
    # error the largest dropped one.
    assert torch.allclose(err.norm() ** 2, (s[rank:] ** 2).sum(), rtol=1e-9, atol=1e-12)
    assert torch.allclose(torch.linalg.matrix_norm(err, 2), s[rank], rtol=1e-9)


def test_svd_splits_singular_values_evenly_between_the_factors():
    lin = _linear_with(_matrix([8.0, 2.0, 0.5], 16, 12))
    seq = svd_linear(lin, 3)
    first = seq[0].weight.detach().norm(dim=1)
    second = seq[1].weight.detach().norm(dim=0)
    assert torch.allclose(first, second, rtol=1e-9)
    assert torch.allclose(first**2, torch.tensor([8.0, 2.0, 0.5], dtype=torch.float64))


def test_full_rank_linear_reproduces_the_layer():
    torch.manual_seed(1)
    lin = nn.Linear(20, 12)
    x = torch.randn(5, 7, 20)
    seq = svd_linear(lin, 12)
    assert [type(m) for m in seq] == [nn.Linear, nn.Linear] and seq[0].bias is None
    assert torch.allclose(seq(x), lin(x), atol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        dict(in_channels=6, out_channels=10, kernel_size=3, padding=1),
        dict(in_channels=5, out_channels=4, kernel_size=(3, 2), stride=2, padding=(1, 0)),
        dict(in_channels=4, out_channels=8, kernel_size=3, dilation=2, padding=2, bias=False),
        dict(in_channels=3, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect"),
    ],
    ids=["same", "strided", "dilated", "reflect"],
)
def test_full_rank_conv_factorizations_reproduce_the_conv(conv):
    torch.manual_seed(2)
    layer = nn.Conv2d(**conv)
    x = torch.randn(2, conv["in_channels"], 9, 9)
    ref = layer(x)
    o, i = layer.weight.shape[:2]
    k = layer.weight[0, 0].numel()
    chan = svd_conv2d(layer, min(o, i * k))
    tucker = tucker2_conv2d(layer, (min(i, o * k), min(o, i * k)))
    assert torch.allclose(chan(x), ref, atol=1e-5)
    assert torch.allclose(tucker(x), ref, atol=1e-5)
    assert chan[0].stride == layer.stride and chan[0].dilation == layer.dilation


def test_tucker2_at_the_kernels_multilinear_ranks_reproduces_the_conv():
    torch.manual_seed(8)
    layer = nn.Conv2d(12, 16, 3, stride=2, padding=1)
    u_out = torch.linalg.qr(torch.randn(16, 4))[0]
    u_in = torch.linalg.qr(torch.randn(12, 3))[0]
    with torch.no_grad():  # multilinear ranks (in 3, out 4)
        layer.weight.copy_(torch.einsum("or,rskl,is->oikl", u_out, torch.randn(4, 3, 3, 3), u_in))
    x = torch.randn(2, 12, 9, 9)
    tucker = tucker2_conv2d(layer, (3, 4))
    assert [tuple(m.weight.shape) for m in tucker] == [(3, 12, 1, 1), (4, 3, 3, 3), (16, 4, 1, 1)]
    assert tucker[1].stride == (2, 2) and tucker[2].bias is not None
    assert torch.allclose(tucker(x), layer(x), atol=1e-5)


def test_tucker2_folds_a_full_width_mode_into_the_core():
    torch.manual_seed(9)
    wide_in = nn.Conv2d(20, 2, 3, padding=1)  # the input mode has rank <= 2 * 9 = 18 < 20
    x = torch.randn(1, 20, 6, 6)
    seq = tucker2_conv2d(wide_in, (18, 2))
    assert [tuple(m.weight.shape) for m in seq] == [(18, 20, 1, 1), (2, 18, 3, 3)]
    assert torch.allclose(seq(x), wide_in(x), atol=1e-5)
    layer = nn.Conv2d(3, 16, 3, padding=1)
    seq = tucker2_conv2d(layer, (3, 5))  # full input mode: the channel-SVD structure
    assert [tuple(m.weight.shape) for m in seq] == [(5, 3, 3, 3), (16, 5, 1, 1)]
    chan = svd_conv2d(layer, 5)
    y = torch.randn(1, 3, 6, 6)
    assert torch.allclose(seq(y), chan(y), atol=1e-5), "the same best rank-5 approximation"


def test_tucker2_truncation_error_matches_its_reported_energy():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1))
    w = model[0].weight.detach().double().clone()
    rep = factorize_(model, LowRankConfig(rank=6, method="tucker2"), torch.randn(1, 16, 6, 6))
    (row,) = rep.factorized
    assert row.replacement == "Tucker2Conv2d" and row.rank == (6, 6)
    a, core, b = (m.weight.detach().double() for m in model[0])
    approx = torch.einsum("or,rskl,si->oikl", b[:, :, 0, 0], core, a[:, :, 0, 0])
    kept = 1 - float(((w - approx) ** 2).sum() / (w**2).sum())
    assert math.isclose(row.energy, kept, rel_tol=1e-4)


# --------------------------------------------------------------------------- rank rules


@settings(max_examples=40, deadline=None)
@given(
    spectrum=st.lists(st.floats(0.01, 10.0), min_size=2, max_size=24),
    energy=st.floats(0.05, 1.0),
)
def test_energy_rule_picks_the_smallest_rank_reaching_the_energy(spectrum, energy):
    s = sorted(spectrum, reverse=True)
    w = _matrix(s, 48, 40)
    model = nn.Sequential(_linear_with(w))
    rep = factorize_(model, LowRankConfig(energy=energy))
    frac = np.cumsum(np.square(s)) / np.sum(np.square(s))
    want = int(np.argmax(frac >= energy - 1e-12)) + 1
    (row,) = rep.rows
    if want * (48 + 40) >= 48 * 40:
        assert row.replacement is None and "would not reduce" in row.reason
        return
    assert row.rank == want, (frac, energy)
    assert row.energy >= energy - 1e-9 and (want == 1 or frac[want - 2] < energy)
    kept = 1 - float((w - _product(model[0])).norm() ** 2 / w.norm() ** 2)
    assert math.isclose(row.energy, kept, rel_tol=1e-6, abs_tol=1e-9)


def test_default_rule_is_ninety_percent_energy():
    w = _matrix([10.0, 3.0, 1.0, 0.5, 0.1], 32, 32)
    model = nn.Sequential(_linear_with(w))
    rep = factorize_(model)
    # 100 / 110.26 = 0.907 >= 0.9 at rank 1.
    assert rep.rule == "energy" and rep.rows[0].rank == 1


def test_fixed_rank_is_rounded_up_and_kept_above_min_rank():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 48))
    rep = factorize_(model, LowRankConfig(rank=5, round_to=8))
    assert [r.rank for r in rep.factorized] == [8, 8]
    assert model[0][0].out_features == 8 and model[2][1].in_features == 8
    model = nn.Sequential(nn.Linear(64, 64))
    rep = factorize_(model, LowRankConfig(energy=0.01, min_rank=12, round_to=8))
    assert rep.factorized[0].rank == 16


def test_layers_that_would_not_shrink_are_skipped_with_the_reason():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 64), nn.Conv2d(8, 8, 3, groups=8))
    rep = factorize_(model, LowRankConfig(rank=3, method="channel_svd"))
    reasons = {r.path: r.reason for r in rep.skipped}
    assert "r*(in+out) = 24 >= in*out = 16" in reasons["0"]
    assert "depthwise conv (groups=8)" in reasons["2"]
    assert [r.path for r in rep.factorized] == ["1"]
    assert isinstance(model[0], nn.Linear) and isinstance(model[2], nn.Conv2d)


def test_method_svd_leaves_convolutions_and_attention_projections_alone():
    model, x = ZOO["transformer"]()
    rep = factorize_(model, LowRankConfig(rank=4), x)
    reasons = {r.path: r.reason for r in rep.skipped}
    assert "attention `layers.0.attn`" in reasons["layers.0.attn.out_proj"]
    assert {r.path for r in rep.factorized} >= {"layers.0.fc1", "layers.1.fc2"}
    model, x = ZOO["vgg"]()
    rep = factorize_(model, LowRankConfig(rank=4), x)
    assert "method='svd'" in {r.path: r.reason for r in rep.skipped}["features.0"]
    assert all(r.kind == "Linear" for r in rep.factorized)


def test_ignore_and_filter_fn_choose_the_layers():
    torch.manual_seed(6)

    def make():
        return nn.Sequential(nn.Linear(64, 64), nn.Sequential(nn.Linear(64, 64)), nn.Linear(64, 64))

    model = make()
    rep = factorize_(model, LowRankConfig(rank=4, ignore=("1",)))
    assert [r.path for r in rep.rows] == ["0", "2"]
    model = make()
    rep = factorize_(model, LowRankConfig(rank=4, filter_fn=lambda m, path: path == "1.0"))
    assert [r.path for r in rep.factorized] == ["1.0"]


def test_factorizing_twice_leaves_the_factors_alone():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(64, 64))
    factorize_(model, LowRankConfig(rank=8))
    rep = factorize_(model, LowRankConfig(rank=2))
    assert all("already a low-rank factor" in r.reason for r in rep.rows)
    assert model[0][0].out_features == 8


def test_factors_keep_dtype_mode_and_requires_grad():
    lin = nn.Linear(32, 32).double().train()
    lin.bias.requires_grad_(False)
    model = nn.Sequential(lin)
    factorize_(model, LowRankConfig(rank=4))
    assert model[0][0].weight.dtype == torch.float64 and model[0].training
    assert model[0][1].bias.requires_grad is False and model[0][1].weight.requires_grad


# --------------------------------------------------------------------------- MAC budget

_BUDGETS = [
    ("mlp", "svd", 2.0),
    ("transformer", "svd", 1.5),
    ("vgg", "channel_svd", 2.0),
    ("vgg", "tucker2", 3.0),
    ("resnet_basic", "tucker2", 2.0),
    ("resnet_bottleneck", "channel_svd", 2.0),
    ("mobilenetv2", "tucker2", 2.0),
    ("efficientnet", "channel_svd", 2.0),
    ("densenet", "tucker2", 2.0),
    ("yolo_c2f", "channel_svd", 2.0),
]


@pytest.mark.parametrize("name,method,target", _BUDGETS)
def test_mac_budget_is_met_and_not_overshot(name, method, target):
    model, x = ZOO[name]()
    ref = model(*x)
    macs0 = optimizer.count_macs(model, x)
    rep = factorize_(model, LowRankConfig(macs_reduction=target, method=method), x)
    macs1 = optimizer.count_macs(model, x)
    assert rep.macs_before == macs0 and rep.macs_after == macs1
    assert target <= macs0 / macs1 <= target * 1.1, (macs0, macs1)
    assert sum(r.macs_before - r.macs_after for r in rep.factorized) == macs0 - macs1
    assert model(*x).shape == ref.shape


def test_mac_budget_spends_on_the_cheapest_energy():
    # Layer "0" is almost rank 2, layer "2" has a flat spectrum: the budget must cut "0".
    flat = _matrix([1.0] * 64, 64, 64, seed=1)
    steep = _matrix([10.0, 9.0] + [1e-3] * 62, 64, 64, seed=2)
    model = nn.Sequential(_linear_with(steep), nn.ReLU(), _linear_with(flat))
    rep = factorize_(model, LowRankConfig(macs_reduction=1.8), torch.randn(1, 64).double())
    assert [r.path for r in rep.factorized] == ["0"] and rep.factorized[0].rank <= 8
    assert rep.macs_ratio >= 1.8


def test_unreachable_budget_raises_before_changing_the_model():
    model, x = ZOO["vgg"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"cannot reach 2.0x fewer MACs.*channel_svd"):
        factorize_(model, LowRankConfig(macs_reduction=2.0), x)  # Linear layers only
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert get_record(model)["plan"] == []


# ---------------------------------------------------------------- the rest of the pipeline


@pytest.mark.parametrize(
    "name,method", [("mlp", "svd"), ("vgg", "tucker2"), ("resnet_basic", "channel_svd")]
)
def test_factorized_zoo_model_prunes_saves_and_reloads(name, method, tmp_path):
    model, x = ZOO[name]()
    rep = factorize_(model, LowRankConfig(macs_reduction=1.5, method=method), x)
    first = rep.factorized[0]
    rank = first.rank if isinstance(first.rank, int) else first.rank[0]
    groups = {g.root: len(g) for g in DependencyGraph(model, x).groups(prunable_only=True)}
    assert groups[f"{first.path}.0"] == rank, "the rank dim is a prunable channel group"

    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    after = {g.root: len(g) for g in DependencyGraph(model, x).groups()}
    assert after[f"{first.path}.0"] < rank
    rec = get_record(model)
    assert [p["pass"] for p in rec["passes"]] == ["factorize", "prune_channels"]
    replaced = [op for op in rec["plan"] if op["op"] == "replace"]
    assert {op["module"] for op in replaced} == {r.path for r in rep.factorized}
    assert all(op["with"] == r.replacement for op, r in zip(replaced, rep.factorized))

    optimizer.save(model, tmp_path / "m.pt")
    again = optimizer.load(tmp_path / "m.pt", lambda: ZOO[name]()[0]).eval()
    assert torch.equal(again(*x), model.eval()(*x))


def test_factorized_model_reloads_in_a_fresh_process(tmp_path):
    for name, method in (("transformer", "svd"), ("yolo_c2f", "tucker2")):
        model, x = ZOO[name]()
        factorize_(model, LowRankConfig(macs_reduction=1.5, method=method), x)
        optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.3))
        optimizer.save(model, tmp_path / f"{name}.pt")
        torch.save(model(*x).detach(), tmp_path / f"{name}.out")
    # load() alone must find the low-rank replacements: the script never imports them.
    script = f"""
import json, sys, torch
torch.set_num_threads(1)  # as in this process, so the float sums run in the same order
sys.path.insert(0, {str(ROOT)!r})
import optimizer
from tests.zoo import ZOO
res = {{}}
for name in ("transformer", "yolo_c2f"):
    m = optimizer.load({str(tmp_path)!r} + f"/{{name}}.pt", lambda: ZOO[name]()[0]).eval()
    ref = torch.load({str(tmp_path)!r} + f"/{{name}}.out")
    res[name] = bool(torch.equal(m(*ZOO[name]()[1]), ref))
print(json.dumps(res))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "transformer": True,
        "yolo_c2f": True,
    }


def test_pass_is_recorded_and_report_reads():
    model, x = ZOO["vgg"]()
    rep = factorize_(model, LowRankConfig(energy=0.8, method="tucker2", round_to=2), x)
    assert isinstance(rep, LowRankReport)
    entry = get_record(model)["passes"][-1]
    assert entry["pass"] == "factorize" and entry["rule"] == "energy" and entry["value"] == 0.8
    assert entry["layers"]["features.3"]["with"] == "Tucker2Conv2d"
    json.dumps(get_record(model))
    json.dumps(rep.to_dict())
    md = rep.to_markdown()
    assert "`features.3` | Conv2d -> Tucker2Conv2d" in md and "energy kept" in md
    ranks = {row.path: row.rank for row in rep.factorized}
    assert ranks["features.0"][0] == 3, "rounding up to 2 stops at the 3 input channels"
    ranks["features.0"] = ranks["features.0"][1]
    assert all(r % 2 == 0 for rank in ranks.values() for r in np.atleast_1d(rank)), ranks
    assert rep.params_after == optimizer.count_params(model) < rep.params_before
    no_inputs = factorize_(ZOO["mlp"]()[0], LowRankConfig(rank=4))
    assert no_inputs.macs_ratio is None and "not measured" in str(no_inputs)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rank=0), "rank >= 1, got 0"),
        (dict(rank=2.5), "rank >= 1, got 2.5"),
        (dict(energy=0.0), "0 < energy <= 1, got 0.0"),
        (dict(energy=1.5), "0 < energy <= 1, got 1.5"),
        (dict(macs_reduction=0.5), "macs_reduction >= 1"),
        (dict(macs_reduction=float("nan")), "macs_reduction >= 1"),
        (dict(rank=4, energy=0.9), "exactly one rank rule.*rank=4, energy=0.9"),
        (dict(energy=0.5, macs_reduction=2.0), "exactly one rank rule"),
        (dict(method="cp"), "unknown method.*'cp'"),
        (dict(min_rank=0), "min_rank >= 1"),
        (dict(round_to=-8), "round_to >= 1"),
    ],
)
def test_bad_config_raises_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LowRankConfig(**kwargs)


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="filter_fn must be callable"):
        LowRankConfig(filter_fn="0")
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        factorize_("model")
    with pytest.raises(ValueError, match="macs_reduction needs example_inputs"):
        factorize_(nn.Linear(8, 8), LowRankConfig(macs_reduction=2.0))
    with pytest.raises(ValueError, match="expected 1 <= rank <= 4"):
        svd_linear(nn.Linear(4, 8), 5)
    with pytest.raises(ValueError, match="groups=2"):
        tucker2_conv2d(nn.Conv2d(4, 4, 3, groups=2), (2, 2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_name_the_layer_and_value(bad):
    model = nn.Sequential(nn.Linear(16, 16), nn.Sequential(nn.Linear(16, 16)))
    with torch.no_grad():
        model[1][0].weight[3, 4] = bad
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(
        ValueError, match=rf"`1\.0\.weight` has 1 non-finite values \(e\.g\. {bad}\)"
    ):
        factorize_(model, LowRankConfig(rank=2))
    assert isinstance(model[0], nn.Linear), "nothing changes before the error"
    assert all(
        torch.allclose(v, model.state_dict()[k], rtol=0, atol=0, equal_nan=True)
        for k, v in before.items()
    )


# --------------------------------------------------------------------------- accuracy


def test_distillation_recovers_the_accuracy_of_a_factorized_mlp():
    from optimizer.examples import digits

    torch.manual_seed(0)
    train_loader, test_loader = digits.loaders(batch_size=64, seed=0)
    teacher = digits.train(digits.mlp_digits(), train_loader, epochs=5)
    acc_teacher = digits.evaluate(teacher, test_loader)
    assert acc_teacher > 90.0
    x = torch.zeros(1, 1, 8, 8)
    cfg = optimizer.DistillConfig(epochs=5, lr=3e-3, progress=False)
    results = {}
    for reduction in (2.0, 8.0):
        student = copy.deepcopy(teacher)
        rep = factorize_(student, LowRankConfig(macs_reduction=reduction), x)
        assert rep.macs_ratio >= reduction
        acc_cut = digits.evaluate(student, test_loader)
        optimizer.distill_(student, teacher, train_loader, cfg)
        results[reduction] = (acc_cut, digits.evaluate(student, test_loader))
    # Half the MACs: within a point of the teacher after distillation (the target).
    assert results[2.0][1] >= acc_teacher - 1.0, (acc_teacher, results)
    # 8x fewer MACs loses accuracy; distillation wins back more than half of it.
    cut, final = results[8.0]
    assert cut < acc_teacher - 3.0 and final - cut > 0.5 * (acc_teacher - cut), (
        acc_teacher,
        results,
    )
