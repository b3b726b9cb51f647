"""Every zoo model prunes at 30 % and 70 %, runs, shrinks as expected, saves smaller and reloads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import optimizer
from optimizer.graph.dependency import DependencyGraph
from optimizer.prune.channels import _floor, _round_keep
from tests.zoo import ZOO

ROOT = Path(__file__).resolve().parents[1]


def _expected_sizes(model, x, cfg) -> dict[str, int]:
    """Channel count each prunable group must end with under uniform pruning."""
    out = {}
    for g in DependencyGraph(model, x, cfg.ignore).groups(prunable_only=True):
        n = len(g)
        rt = 1 if g.heads else cfg.round_to
        out[g.root] = _round_keep(n, n * (1 - cfg.ratio), rt, g.segments, _floor(g, n, cfg))
    return out


@pytest.mark.parametrize("ratio", [0.3, 0.7])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_prunes_runs_shrinks_saves_and_reloads(name, ratio, tmp_path):
    model, x = ZOO[name]()
    x_before = [t.clone() for t in x]
    ref = model(*x)
    params0 = optimizer.count_params(model)
    macs0 = optimizer.count_macs(model, x)
    size0 = optimizer.save(model, tmp_path / "orig.pt")
    cfg = optimizer.ChannelPruneConfig(ratio=ratio)
    want = _expected_sizes(model, x, cfg)
    assert want, f"{name}: no prunable group"

    report = optimizer.prune_channels_(model, x, cfg)

    assert all(torch.equal(a, b) for a, b in zip(x, x_before)), "example inputs were modified"
    y = model(*x)
    assert y.shape == ref.shape
    got = {g.root: len(g) for g in DependencyGraph(model, x).groups()}
    for root, n in want.items():
        assert got[root] == n, f"{name}: group `{root}` has {got[root]} channels, expected {n}"
    params1 = optimizer.count_params(model)
    macs1 = optimizer.count_macs(model, x)
    # Removing a fraction r of the channels of both sides of a layer leaves about (1-r)^2.
    assert params1 <= params0 * (1 - 0.8 * ratio), (params0, params1)
    assert macs1 <= macs0 * (1 - 0.8 * ratio), (macs0, macs1)
    assert report.params_after == params1 and report.macs_after == macs1
    assert "->" in report.to_markdown()

    size1 = optimizer.save(model, tmp_path / "pruned.pt")
    assert size1 < size0
    reloaded = optimizer.load(tmp_path / "pruned.pt", lambda: ZOO[name]()[0])
    reloaded.eval()
    model.eval()
    assert torch.equal(reloaded(*x), model(*x))


def test_reload_in_a_fresh_process_gives_identical_outputs(tmp_path):
    for name in ("resnet_bottleneck", "transformer", "yolo_c2f"):
        model, x = ZOO[name]()
        optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
        optimizer.save(model, tmp_path / f"{name}.pt")
        torch.save(model(*x).detach(), tmp_path / f"{name}.out")
    script = f"""
import sys, json, torch
torch.set_num_threads(1)  # the parent computed its outputs on one thread: same float sums
sys.path.insert(0, {str(ROOT)!r})
import optimizer
from tests.zoo import ZOO
res = {{}}
for name in ("resnet_bottleneck", "transformer", "yolo_c2f"):
    m = optimizer.load({str(tmp_path)!r} + f"/{{name}}.pt", lambda: ZOO[name]()[0]).eval()
    x = ZOO[name]()[1]
    res[name] = bool(torch.equal(m(*x), torch.load({str(tmp_path)!r} + f"/{{name}}.out")))
print(json.dumps(res))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "resnet_bottleneck": True,
        "transformer": True,
        "yolo_c2f": True,
    }
