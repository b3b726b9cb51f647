"""Sparsity schedules (optimizer.prune.schedules): values, update steps, validation, properties."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.prune.schedules import ConstantSparsity, PolynomialDecay


def test_polynomial_decay_starts_at_initial_and_ends_at_final():
    sched = PolynomialDecay(0.2, 0.9, begin_step=10, end_step=110)
    assert sched(0) == 0.2  # before begin_step: initial_sparsity, as tfmot
    assert sched(10) == pytest.approx(0.2)
    assert sched(110) == 0.9
    assert sched(10_000) == 0.9
    # power 3 front-loads the pruning: half way, 7/8 of the way to final.
    assert sched(60) == pytest.approx(0.9 - 0.7 * 0.5**3)


def test_polynomial_decay_power_one_is_linear():
    sched = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, power=1)
    assert [sched(s) for s in (0, 25, 50, 100)] == pytest.approx([0.0, 0.2, 0.4, 0.8])


def test_polynomial_decay_with_equal_begin_and_end_jumps_to_final():
    sched = PolynomialDecay(0.1, 0.5, begin_step=7, end_step=7)
    assert sched(6) == 0.1 and sched(7) == 0.5
    assert sched.update_steps() == [7]


def test_should_update_every_frequency_steps_and_always_at_end_step():
    sched = PolynomialDecay(0.0, 0.9, begin_step=100, end_step=1000, frequency=300)
    updates = [s for s in range(1200) if sched.should_update(s)]
    assert updates == [100, 400, 700, 1000]
    sched = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=10, frequency=4)
    assert sched.update_steps() == [0, 4, 8, 10]  # tfmot would stop at 8 and miss the final 0.9


def test_constant_sparsity_is_constant_and_open_ended():
    sched = ConstantSparsity(0.75, begin_step=10, frequency=10)
    assert {sched(s) for s in range(0, 500, 7)} == {0.75}
    assert sched.final_sparsity == 0.75
    assert not sched.should_update(0) and sched.should_update(10) and sched.should_update(10**6)
    assert not sched.should_update(15)
    assert sched.update_steps(until=35) == [10, 20, 30]
    with pytest.raises(
        ValueError, match=r"ConstantSparsity.update_steps`: the schedule has no end"
    ):
        sched.update_steps()


def test_constant_sparsity_stops_updating_after_end_step():
    sched = ConstantSparsity(0.5, begin_step=2, end_step=8, frequency=3)
    assert [s for s in range(20) if sched.should_update(s)] == [2, 5, 8]


def test_schedule_drives_iterative_pruning_rounds():
    # ChannelPruner(steps=5, schedule=...) asks for rounds 0..4; linear to 50 % as its default.
    rounds = PolynomialDecay(0.1, 0.5, begin_step=0, end_step=4, power=1)
    assert rounds.update_steps() == [0, 1, 2, 3, 4]
    ratios = [rounds(i) for i in range(5)]
    assert ratios == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert ratios[-1] == 0.5


def test_schedules_are_immutable_and_config_round_trips_through_json():
    sched = PolynomialDecay(0.1, 0.6, begin_step=3, end_step=30, power=2, frequency=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.power = 1  # type: ignore[misc]
    config = json.loads(json.dumps(sched.get_config()))
    assert config.pop("schedule") == "PolynomialDecay"
    assert PolynomialDecay(**config) == sched
    const = ConstantSparsity(0.3, end_step=9)
    config = json.loads(json.dumps(const.get_config()))
    assert config.pop("schedule") == "ConstantSparsity"
    assert ConstantSparsity(**config) == const


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: PolynomialDecay(0.0, 1.0, 0, 10), ValueError, r"final_sparsity is out of range"),
        (lambda: PolynomialDecay(-0.1, 0.5, 0, 10), ValueError, r"initial_sparsity is out of"),
        (lambda: PolynomialDecay(0.6, 0.5, 0, 10), ValueError, r"final_sparsity is below initial"),
        (lambda: PolynomialDecay(0.0, 0.5, 10, 5), ValueError, r"end_step is before begin_step"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, -1), ValueError, r"PolynomialDecay needs an end"),
        (lambda: PolynomialDecay(0.0, 0.5, -1, 5), ValueError, r"begin_step is out of range"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, power=0), ValueError, r"power is out of range"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, power=-2), ValueError, r"expected > 0"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, frequency=0), ValueError, r"frequency is out"),
        (lambda: PolynomialDecay(0.0, 0.5, 0.5, 10), TypeError, r"begin_step must be an int"),
        (lambda: PolynomialDecay(0.0, "0.5", 0, 10), TypeError, r"final_sparsity must be a number"),
        (lambda: ConstantSparsity(float("nan")), ValueError, r"sparsity is out of range"),
        (lambda: ConstantSparsity(1.0), ValueError, r"would remove everything"),
        (lambda: ConstantSparsity(0.5, end_step=-2), ValueError, r"end_step=-1 to keep"),
        (lambda: ConstantSparsity(0.5, frequency=True), TypeError, r"frequency must be an int"),
        (lambda: ConstantSparsity(0.5)(-1), ValueError, r"step is out of range"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10)(2.5), TypeError, r"step must be an int"),
    ],
)
def test_bad_schedule_arguments_raise_clear_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


@st.composite
def polynomial_decays(draw):
    initial = draw(st.floats(0.0, 0.95, allow_nan=False))
    final = draw(st.floats(initial, 0.99, allow_nan=False))
    begin = draw(st.integers(0, 50))
    end = draw(st.integers(begin, begin + 200))
    power = draw(st.floats(0.1, 6.0, allow_nan=False))
    frequency = draw(st.integers(1, 40))
    return PolynomialDecay(initial, final, begin, end, power=power, frequency=frequency)


@settings(max_examples=200, deadline=None)
@given(polynomial_decays())
def test_polynomial_decay_is_monotone_bounded_and_hits_final(sched):
    values = [sched(s) for s in range(sched.end_step + 5)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert all(sched.initial_sparsity <= v <= sched.final_sparsity for v in values)
    assert values[sched.end_step] == sched.final_sparsity
    steps = sched.update_steps()
    assert steps == [s for s in range(sched.end_step + 5) if sched.should_update(s)]
    assert steps[0] == sched.begin_step and steps[-1] == sched.end_step
    assert all(b - a <= sched.frequency for a, b in zip(steps, steps[1:]))


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.0, 0.99, allow_nan=False),
    st.integers(0, 30),
    st.integers(1, 10),
    st.integers(0, 100),
)
def test_constant_sparsity_updates_on_its_grid_only(sparsity, begin, frequency, step):
    sched = ConstantSparsity(sparsity, begin_step=begin, frequency=frequency)
    assert sched(step) == sparsity
    assert sched.should_update(step) == (step >= begin and (step - begin) % frequency == 0)
