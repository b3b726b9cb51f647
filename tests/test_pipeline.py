"""Recipes (validation up front, TOML, built-ins) and `compress` (stages, metrics, budgets)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optimizer
from optimizer.examples import digits
from optimizer.pipeline import compress, top1
from optimizer.recipes import (
    BUILTIN,
    STAGE_KINDS,
    Budget,
    Recipe,
    RecipeError,
    Stage,
    builtin,
    load_recipe,
)


@pytest.fixture(scope="module")
def loaders():
    train, test = digits.loaders()
    return list(train)[:8], list(test)  # 512 training images: fast and enough to learn


@pytest.fixture(scope="module")
def resnet(loaders):
    torch.manual_seed(0)
    return digits.train(digits.resnet_digits(), digits.loaders()[0], epochs=2)


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return digits.train(digits.mlp_digits(), digits.loaders()[0], epochs=2)


def _err(data: dict) -> str:
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict(data, source="r.toml")
    return str(e.value)


# --- validation -----------------------------------------------------------------------------------


def test_unknown_key_names_stage_index_kind_and_suggestion():
    msg = _err({"stages": [{"kind": "distill"}, {"kind": "prune_channels", "ratioo": 0.3}]})
    assert "recipe `r.toml` stage 2 (prune_channels): unknown key `ratioo`" in msg
    assert "expected one of" in msg and "Did you mean `ratio`?" in msg


def test_unknown_stage_kind_lists_the_kinds():
    msg = _err({"stages": [{"kind": "prune_channel"}]})
    assert "stage 1: unknown stage kind `prune_channel`" in msg
    assert all(k in msg for k in STAGE_KINDS)


def test_bad_value_reraised_from_config_with_stage_named():
    msg = _err({"stages": [{"kind": "prune_channels"}, {"kind": "distill", "epochs": -1}]})
    assert msg.startswith("recipe `r.toml` stage 2 (distill): DistillConfig: epochs")


def test_bad_block_shape_reraised_from_block_config():
    msg = _err({"stages": [{"kind": "prune_blocks", "block": [0, 4]}]})
    assert "stage 1 (prune_blocks): `BlockPruneConfig`: block must be" in msg


def test_nested_train_table_keys_are_checked():
    msg = _err({"stages": [{"kind": "share_weights", "train": {"epochs": 1, "lrr": 1e-3}}]})
    assert "stage 1 (share_weights) [train]: unknown key `lrr`" in msg


def test_schedule_without_training_is_refused():
    msg = _err({"stages": [{"kind": "prune_blocks", "schedule": {"end_step": 10}}]})
    assert "stage 1 (prune_blocks)" in msg and "`train` table" in msg


def test_quantize_must_be_last():
    msg = _err({"stages": [{"kind": "quantize"}, {"kind": "distill"}]})
    assert "stage 2 (distill): comes after stage 1 (quantize)" in msg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"stages": []}, "no stages"),
        ({"stages": [{"kind": "quantize"}], "target": "pi9"}, "unknown target 'pi9'"),
        ({"stages": [{"kind": "quantize"}], "budget": {"max_acc": 1}}, "[budget]: unknown key"),
        ({"stages": [{"kind": "quantize"}], "budget": {"min_accuracy": -1}}, "must be >= 0"),
        ({"stages": [{"ratio": 0.5}]}, "stage 1: missing `kind`"),
        ({"stage": [{"kind": "quantize"}]}, "unknown key `stage`"),
        ({"stages": [{"kind": "quantize", "calibration_batches": 0}]}, "calibration_batches"),
    ],
)
def test_recipe_level_errors(data, needle):
    assert needle in _err(data)


def test_invalid_toml_names_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[[stages]\nkind = 1\n")
    with pytest.raises(RecipeError, match="bad.toml.*not valid TOML"):
        load_recipe(p)


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_any_unknown_key_is_refused_naming_it(key):
    allowed = {f for f in ("ratio", "macs_reduction", "importance", "global_ranking", "round_to")}
    allowed |= {"ignore", "max_ratio", "prune_heads", "seed"}
    if key in allowed:
        return
    msg = _err({"stages": [{"kind": "prune_channels", key: 1}]})
    assert f"unknown key `{key}`" in msg


def test_target_supplies_round_to_and_block():
    r = Recipe([Stage("prune_channels", {"ratio": 0.5}), Stage("prune_blocks")], target="rpi4")
    assert r.stages[0].config.round_to == optimizer.targets.get("rpi4").channel_multiple
    assert r.stages[1].config.block == optimizer.targets.get("rpi4").bsr_block
    r = Recipe([Stage("prune_channels", {"ratio": 0.5, "round_to": 4})], target="rpi4")
    assert r.stages[0].config.round_to == 4  # an explicit value wins


def test_target_supplies_the_requantization():
    """Phones run LiteRT, whose XNNPACK delegate requantizes in fp32: their recipes quantize
    that way; other targets keep the TFLite spec's arithmetic unless the recipe says otherwise."""
    r = Recipe([Stage("quantize")], target="android-arm64")
    assert r.stages[0].config.requantization == "fp32"
    assert Recipe([Stage("quantize")], target="rpi4").stages[0].config.requantization == (
        "gemmlowp"
    )
    r = Recipe([Stage("quantize", {"requantization": "gemmlowp"})], target="android-arm64")
    assert r.stages[0].config.requantization == "gemmlowp"  # an explicit value wins


def test_config_object_is_accepted_as_stage_settings():
    cfg = optimizer.ChannelPruneConfig(ratio=0.25, filter_fn=lambda m, p: True)
    assert Recipe([Stage("prune_channels", cfg)]).stages[0].config is cfg


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("target", ["rpi5", "x86_64-avx2", "host"])
def test_builtin_recipes_validate_for_every_target(name, target):
    r = builtin(name, target)
    assert r.stages[-1].kind == "quantize" and r.budget.active()
    assert r.to_dict()["stages"][0]["kind"] == "prune_channels"


# --- compress -------------------------------------------------------------------------------------

TOML = """
name = "tiny"
target = "rpi5"
[budget]
max_accuracy_drop = 60.0
min_size_reduction = 2.0
[[stages]]
kind = "prune_channels"
macs_reduction = 2.0
[[stages]]
kind = "recalibrate_bn"
max_batches = 4
[[stages]]
kind = "distill"
epochs = 1
progress = false
[[stages]]
kind = "quantize"
calibration_batches = 2
"""


def test_toml_recipe_runs_prune_distill_quantize_with_metrics_per_stage(tmp_path, resnet, loaders):
    p = tmp_path / "r.toml"
    p.write_text(TOML)
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    res = compress(resnet, p, *loaders, progress=False)
    assert [s.kind for s in res.stages] == [
        "original",
        "prune_channels",
        "recalibrate_bn",
        "distill",
        "quantize",
    ]
    o, pruned, final = res.stages[0], res.stages[1], res.final
    assert pruned.macs * 2 <= o.macs and pruned.params < o.params
    assert pruned.size_bytes < o.size_bytes and final.size_bytes < pruned.size_bytes / 2
    assert final.bits == 8 and final.macs == pruned.macs
    assert res.stages[3].accuracy > res.stages[1].accuracy  # distillation recovers
    assert final.accuracy == pytest.approx(top1(res.model, loaders[1]))
    assert res.ok and {b.name for b in res.budgets} == {"max_accuracy_drop", "min_size_reduction"}
    # the input model is untouched and every stage kept its own model
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())
    assert res.stages[1].model is not res.stages[2].model
    assert res.stages[1].accuracy == pytest.approx(top1(res.stages[1].model, loaders[1]))
    d = res.to_dict()
    assert d["recipe"]["target"] == "rpi5" and len(d["stages"]) == 5
    assert "| 4 | quantize |" in res.to_markdown()


def test_budgets_pass_and_fail(mlp, loaders):
    stages = [Stage("prune_channels", {"ratio": 0.5})]
    ok = compress(
        mlp, Recipe(stages, budget=Budget(min_macs_reduction=1.5)), *loaders, progress=False
    )
    assert ok.ok and ok.failed == []
    bad = compress(
        mlp,
        Recipe(stages, budget=Budget(min_macs_reduction=10.0, max_size_bytes=10, min_accuracy=0)),
        *loaders,
        progress=False,
    )
    assert not bad.ok
    assert {b.name for b in bad.failed} == {"min_macs_reduction", "max_size_bytes"}
    assert "FAILED" in bad.to_markdown()


def test_accuracy_drop_budget_uses_eval_fn(mlp, loaders):
    calls = []

    def fake_eval(model, data):
        calls.append(model)
        return 90.0 if len(calls) == 1 else 80.0  # original 90, compressed 80: a 10-point drop

    r = Recipe([Stage("prune_channels", {"ratio": 0.3})], budget={"max_accuracy_drop": 5.0})
    res = compress(mlp, r, *loaders, eval_fn=fake_eval, progress=False)
    assert [str(b) for b in res.failed] == ["max_accuracy_drop: 10 (limit 5) FAILED"]


def test_block_pruning_training_drives_schedule_to_final_sparsity(mlp, loaders):
    r = Recipe(
        [
            Stage(
                "prune_blocks",
                {"sparsity": 0.5, "train": {"method": "fine_tune", "epochs": 2, "progress": False}},
            )
        ],
        target="rpi5",
    )
    res = compress(mlp, r, *loaders, progress=False)
    info = res.final.info
    assert info["steps"] == 2 * len(loaders[0]) - 1 and info["sparsity"] == pytest.approx(0.5)
    rec = optimizer.graph.record.get_record(res.model)["block_sparsity"]
    assert rec and all(v["block"] == [8, 4] for v in rec.values())


def test_share_and_qat_stages_run(mlp, loaders):
    r = Recipe(
        [
            {"kind": "share_weights", "clusters": 16},
            {"kind": "qat", "calibration_batches": 2, "train": {"epochs": 1, "progress": False}},
        ]
    )
    res = compress(mlp, r, *loaders, progress=False, keep_models=False)
    assert res.stages[1].info["distinct"] <= 16 and res.final.bits == 8
    assert res.stages[0].model is None and res.final.model is not None
    assert res.final.accuracy > 50.0


def test_stage_failure_names_stage(mlp, loaders):
    r = Recipe([{"kind": "prune_channels", "ratio": 0.5, "ignore": ["no.such"]}])
    with pytest.raises(ValueError, match=r"compress: stage 1 \(prune_channels\) failed"):
        compress(mlp, r, *loaders, progress=False)


def test_target_argument_overrides_recipe_target(mlp, loaders):
    r = Recipe([Stage("prune_channels", {"ratio": 0.5})], target="rpi4")
    res = compress(mlp, r, *loaders, target="rpi5", progress=False)
    assert res.recipe.target == "rpi5" and res.recipe.stages[0].config.round_to == 16
    assert copy.deepcopy(r).stages[0].config.round_to == 8  # the caller's recipe is unchanged
