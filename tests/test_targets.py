"""Target profiles: lookup, host detection, and consistency with the kernels they name."""

from __future__ import annotations

import pytest

from optimizer import kernels, targets


def test_every_profile_names_known_paths_and_a_native_block():
    for t in targets.PROFILES.values():
        assert set(t.paths) <= set(kernels.ALL_PATHS), t.name
        assert t.bsr_block == kernels.NATIVE_BSR_BLOCK[t.paths[0]], t.name
        assert t.channel_multiple in (8, 16) and t.threads >= 1
        if t.toolchain is not None:
            assert t.toolchain_path.is_file(), t.toolchain


def test_host_profile_matches_this_cpu():
    t = targets.get("host")
    assert t.paths[0] in kernels.available_paths()


def test_unknown_target_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="rpi5"):
        targets.get("rpi9")


def test_profile_rounds_pruned_channels():
    import optimizer
    from tests.zoo import ZOO

    model, x = ZOO["vgg"]()
    t = targets.get("rpi4")
    optimizer.prune_channels_(
        model, x, optimizer.ChannelPruneConfig(ratio=0.4, round_to=t.channel_multiple)
    )
    dg = optimizer.DependencyGraph(model, x)
    assert all(len(g) % 8 == 0 for g in dg.groups(prunable_only=True))
