"""Range observers and the choice of int8 scales and zero points."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.quantize.observers import (
    OBSERVERS,
    MovingAverageObserver,
    activation_qparams,
    make_observer,
    weight_scales,
)


def _observe(name: str, batches: list[torch.Tensor], **kw):
    obs = make_observer(name, **kw)
    for p in range(obs.passes):
        obs.start_pass(p)
        for b in batches:
            obs.update(b)
    return obs.range()


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(OBSERVERS)),
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=64),
    st.floats(-100.0, 100.0),
)
def test_observer_range_contains_zero(name, values, offset):
    x = torch.tensor(values, dtype=torch.float32) + offset
    lo, hi = _observe(name, [x, x * 0.5])
    assert lo <= 0.0 <= hi


def test_minmax_observer_spans_all_batches():
    lo, hi = _observe("minmax", [torch.tensor([-1.0, 2.0]), torch.tensor([-3.0, 0.5])])
    assert (lo, hi) == (-3.0, 2.0)


def test_moving_average_follows_the_ema_formula():
    obs = MovingAverageObserver(averaging_constant=0.5)
    obs.update(torch.tensor([-2.0, 4.0]))
    obs.update(torch.tensor([0.0, 8.0]))
    assert obs.range() == (-1.0, 6.0)


def test_percentile_clips_outliers_that_minmax_keeps():
    torch.manual_seed(0)
    x = torch.randn(100_000)
    x[0] = 1000.0
    _, hi_minmax = _observe("minmax", [x])
    _, hi_pct = _observe("percentile", [x], percentile=99.9)
    assert hi_minmax == 1000.0
    assert 2.5 < hi_pct < 4.0  # the 99.9th percentile of a standard normal is 3.09


def test_mse_range_beats_minmax_error_with_an_outlier():
    torch.manual_seed(0)
    x = torch.randn(50_000)
    x[0] = 200.0

    def mse(lo, hi):
        s, z = activation_qparams(lo, hi)
        q = torch.clamp(torch.round(x.double() / s) + z, -128, 127)
        return float((((q - z) * s - x.double()) ** 2).mean())

    r_mse = _observe("mse", [x])
    r_minmax = _observe("minmax", [x])
    assert r_mse[1] < r_minmax[1]
    assert mse(*r_mse) < mse(*r_minmax)


def test_observer_without_data_is_an_error():
    with pytest.raises(ValueError, match="no data observed"):
        make_observer("minmax").range()


def test_unknown_observer_is_named():
    with pytest.raises(ValueError, match=r"unknown observer.*'kl'"):
        make_observer("kl")


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4))
def test_activation_qparams_are_valid_int8_parameters(a, b):
    scale, zp = activation_qparams(min(a, b), max(a, b))
    assert scale > 0 and np.float32(scale) == scale
    assert -128 <= zp <= 127


def test_weight_scales_per_channel_and_per_tensor():
    w = torch.tensor([[1.27, -2.54], [0.0, 0.0], [0.127, 0.0]])
    s = weight_scales(w, per_channel=True)
    assert s.dtype == torch.float32
    assert torch.allclose(s, torch.tensor([0.02, 1.0, 0.001]))  # all-zero channel -> 1.0
    assert torch.allclose(weight_scales(w, per_channel=False), torch.tensor([0.02]))
