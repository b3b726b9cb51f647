"""prune_channels_: importance, ratios, rounding, schedules, MAC targets, layer pruning, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import optimizer
from optimizer.graph.dependency import DependencyGraph
from optimizer.graph.record import get_record
from tests.zoo import ZOO


def _sizes(model, x) -> dict[str, int]:
    return {g.root: len(g) for g in DependencyGraph(model, x).groups(prunable_only=True)}


@settings(max_examples=6, deadline=None)
@given(name=st.sampled_from(["vgg", "mlp", "mobilenetv2", "transformer"]))
def test_ratio_zero_is_noop(name):
    model, x = ZOO[name]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.0))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert get_record(model)["plan"] == []


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "random"])
def test_every_importance_prunes_to_the_same_sizes(importance):
    model, x = ZOO["resnet_basic"]()
    optimizer.prune_channels_(
        model, x, optimizer.ChannelPruneConfig(ratio=0.5, importance=importance)
    )
    assert set(_sizes(model, x).values()) <= {8, 16, 32}
    model(*x)


def test_l1_removes_the_smallest_filters():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(8.0).repeat(4, 1).T + 1)  # row i has |w| = 4(i+1)
        model[0].weight[[1, 6]] = 100.0
    optimizer.prune_channels_(model, torch.randn(1, 4), optimizer.ChannelPruneConfig(ratio=0.5))
    assert model[0].out_features == 4
    kept = model[0].weight[:, 0].tolist()
    assert sorted(kept) == [8.0, 100.0, 100.0, 100.0] or 100.0 in kept


def test_taylor_needs_gradients_and_uses_them():
    model, x = ZOO["mlp"]()
    with pytest.raises(ValueError, match="taylor.*backward"):
        optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(importance="taylor"))
    model(*x).pow(2).sum().backward()
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(importance="taylor"))
    model(*x)


def test_random_importance_is_repeatable_with_a_seed():
    outs = []
    for _ in range(2):
        model, x = ZOO["vgg"]()
        optimizer.prune_channels_(
            model, x, optimizer.ChannelPruneConfig(ratio=0.4, importance="random", seed=3)
        )
        outs.append(model(*x))
    assert torch.equal(outs[0], outs[1])


def test_round_to_keeps_channel_counts_on_the_multiple():
    model, x = ZOO["resnet_basic"]()
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.3, round_to=8))
    for n in _sizes(model, x).values():
        assert n % 8 == 0


def test_global_ranking_prunes_groups_unevenly_but_hits_the_total():
    model, x = ZOO["vgg"]()
    before = _sizes(model, x)
    optimizer.prune_channels_(
        model, x, optimizer.ChannelPruneConfig(ratio=0.5, global_ranking=True)
    )
    after = _sizes(model, x)
    kept = sum(after.values()) / sum(before.values())
    assert 0.4 <= kept <= 0.6
    assert len({after[k] / before[k] for k in before}) > 1


def test_macs_reduction_target_is_met_closely():
    model, x = ZOO["resnet_basic"]()
    macs0 = optimizer.count_macs(model, x)
    rep = optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(macs_reduction=2.0))
    macs1 = optimizer.count_macs(model, x)
    assert 2.0 <= macs0 / macs1 <= 2.4
    assert rep.macs_reduction == pytest.approx(macs0 / macs1)


def test_iterative_pruner_follows_its_schedule():
    model, x = ZOO["mobilenetv2"]()
    base = _sizes(model, x)
    pruner = optimizer.ChannelPruner(model, x, optimizer.ChannelPruneConfig(ratio=0.6), steps=3)
    fractions = []
    for _ in range(3):
        pruner.step()
        now = _sizes(model, x)
        fractions.append(sum(now.values()) / sum(base.values()))
    assert fractions[0] > fractions[1] > fractions[2]
    assert fractions[2] == pytest.approx(0.4, abs=0.08)
    with pytest.raises(ValueError, match="steps are done"):
        pruner.step()


def test_iterative_pruner_accepts_a_polynomial_schedule():
    from optimizer.prune.schedules import PolynomialDecay

    model, x = ZOO["mlp"]()
    sched = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=1)
    pruner = optimizer.ChannelPruner(
        model, x, optimizer.ChannelPruneConfig(ratio=0.5), steps=2, schedule=sched
    )
    pruner.step()
    pruner.step()
    model(*x)


def test_filter_fn_limits_pruning_to_selected_producers():
    model, x = ZOO["vgg"]()
    cfg = optimizer.ChannelPruneConfig(ratio=0.5, filter_fn=lambda m, p: p.startswith("classifier"))
    optimizer.prune_channels_(model, x, cfg)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 16 == 0 and c.out_channels >= 16 for c in convs)
    first_fc = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first_fc.out_features < 64


def test_report_lists_layers_with_before_and_after():
    model, x = ZOO["vgg"]()
    rep = optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    md = rep.to_markdown()
    assert "| layer |" in md and "->" in md
    assert rep.params_after < rep.params_before and rep.macs_reduction > 2
    assert all("Group" in g for g in rep.groups)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ratio": 1.0}, "ratio must be in"),
        ({"ratio": -0.1}, "ratio must be in"),
        ({"importance": "fisher"}, "unknown importance"),
        ({"round_to": 0}, "round_to"),
        ({"macs_reduction": 0.5}, "macs_reduction"),
        ({"max_ratio": 1.0}, "max_ratio"),
    ],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimizer.ChannelPruneConfig(**kwargs)


def test_layer_pruning_removes_the_least_influential_residual_blocks():
    model, x = ZOO["resnet_basic"]()
    from optimizer.prune.layers import residual_blocks

    cands = residual_blocks(model, x)
    assert cands and all("layer" in p for p in cands)
    removed = optimizer.prune_layers_(model, x, optimizer.LayerPruneConfig(num_blocks=2))
    assert len(removed) == 2
    assert all(isinstance(model.get_submodule(p), nn.Identity) for p in removed)
    model(*x)
    with pytest.raises(ValueError, match="only"):
        optimizer.prune_layers_(model, x, optimizer.LayerPruneConfig(num_blocks=10))


def test_plain_layer_pruning_removes_shape_preserving_convs_of_a_vgg(tmp_path):
    """VGG-style: only the convs with as many outputs as inputs between two ReLUs can go (with
    their BatchNorm); the result runs, saves and reloads identically, and channel pruning still
    works on it."""
    from optimizer.prune.layers import plain_layers

    model, x = ZOO["vgg"]()
    units = plain_layers(model, x)
    assert units == {
        "features.3": ["features.3", "features.4"],
        "features.10": ["features.10", "features.11"],
    }
    before = optimizer.count_params(model)
    with pytest.raises(ValueError, match="residual blocks can go"):  # off by default
        optimizer.prune_layers_(model, x, optimizer.LayerPruneConfig(num_blocks=1))
    cfg = optimizer.LayerPruneConfig(num_blocks=1, plain_layers=True)
    (removed,) = optimizer.prune_layers_(model, x, cfg)
    assert removed in units
    assert all(isinstance(model.get_submodule(p), nn.Identity) for p in units[removed])
    assert optimizer.count_params(model) < before
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    optimizer.save(model, tmp_path / "m.pt")
    again = optimizer.load(tmp_path / "m.pt", lambda: ZOO["vgg"]()[0])
    assert torch.equal(again.eval()(*x), model.eval()(*x))
    # A conv that changes the channel count, or one not between ReLUs, is no candidate.
    odd = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    assert plain_layers(odd, (torch.randn(1, 3, 6, 6),)) == {}


def test_layer_and_channel_pruning_save_and_reload(tmp_path):
    model, x = ZOO["transformer"]()
    optimizer.prune_layers_(model, x, optimizer.LayerPruneConfig(num_blocks=1))
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    optimizer.save(model, tmp_path / "m.pt")
    again = optimizer.load(tmp_path / "m.pt", lambda: ZOO["transformer"]()[0])
    assert torch.equal(again.eval()(*x), model.eval()(*x))


def test_load_refuses_bad_files_with_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        optimizer.load(tmp_path / "missing.pt", lambda: nn.Linear(2, 2))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable"):
        optimizer.load(bad, lambda: nn.Linear(2, 2))
    model, x = ZOO["mlp"]()
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    optimizer.save(model, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable"):
        optimizer.load(tmp_path / "cut.pt", lambda: ZOO["mlp"]()[0])
    with pytest.raises(ValueError, match="build_fn"):
        optimizer.load(tmp_path / "m.pt", lambda: ZOO["vgg"]()[0])


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    model, _ = ZOO["mlp"]()
    optimizer.save(model, tmp_path / "m.pt")
    optimizer.save(model, tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_per_layer_ratios_override_the_uniform_ratio():
    model, x = ZOO["vgg"]()
    before = _sizes(model, x)
    first = next(k for k in before if k.startswith("features"))
    cfg = optimizer.ChannelPruneConfig(ratio=0.5, ratios={first: 0.75})
    optimizer.prune_channels_(model, x, cfg)
    after = _sizes(model, x)
    assert after[first] == before[first] // 4
    others = [k for k in before if k != first]
    assert others and all(after[k] == before[k] // 2 for k in others)
    assert get_record(model)["passes"][-1]["ratios"] == {first: 0.75}
    model(*x)


def test_per_layer_ratios_take_the_longest_matching_path_and_keep_round_to():
    model, x = ZOO["vgg"]()
    before = _sizes(model, x)
    convs = [k for k in before if k.startswith("features")]
    cfg = optimizer.ChannelPruneConfig(
        ratio=0.0, round_to=8, ratios={"features": 0.5, convs[-1]: 0.9}
    )
    optimizer.prune_channels_(model, x, cfg)
    after = _sizes(model, x)
    for k in convs[:-1]:
        assert after[k] == before[k] // 2
    assert after[convs[-1]] % 8 == 0 and after[convs[-1]] < before[convs[-1]] // 2
    assert all(after[k] == before[k] for k in before if not k.startswith("features"))


def test_per_layer_ratios_with_global_ranking_and_iterative_steps():
    model, x = ZOO["vgg"]()
    before = _sizes(model, x)
    first = next(k for k in before if k.startswith("features"))
    cfg = optimizer.ChannelPruneConfig(ratio=0.4, global_ranking=True, ratios={first: 0.5})
    pruner = optimizer.ChannelPruner(model, x, cfg, steps=2)
    pruner.step()
    assert _sizes(model, x)[first] == before[first] * 3 // 4  # half way: 0.25
    pruner.step()
    after = _sizes(model, x)
    assert after[first] == before[first] // 2
    rest = [k for k in before if k != first]
    kept = sum(after[k] for k in rest) / sum(before[k] for k in rest)
    assert 0.5 <= kept <= 0.7


@pytest.mark.parametrize(
    "ratios, match",
    [
        ({"features.0": 1.0}, r"ratios\['features.0'\] must be in"),
        ({"features.0": True}, "must be in"),
        ({"": 0.5, 3: 0.5}, "bad module path"),
        ([("features.0", 0.5)], "must map module paths"),
    ],
)
def test_bad_per_layer_ratios_are_refused(ratios, match):
    with pytest.raises((ValueError, TypeError), match=match):
        optimizer.ChannelPruneConfig(ratios=ratios)


def test_a_misspelt_ratio_path_raises_before_any_change():
    model, x = ZOO["vgg"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"ratios\['feature.0'\] names no prunable layer"):
        optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratios={"feature.0": 0.5}))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
