"""Sparsity schedules: small callables that map a training step to a target sparsity (tfmot style).

A schedule answers two questions at step ``i``: ``schedule(i)`` is the target fraction to prune
(blocks for :func:`optimizer.prune.blocks.prune_blocks_`, channels for iterative channel pruning)
and ``schedule.should_update(i)`` says whether masks are recomputed at that step. Schedules are
immutable and validate their arguments when built, so a bad value fails before training starts.

Example::

    from optimizer.prune.schedules import PolynomialDecay
    sched = PolynomialDecay(0.0, 0.9, begin_step=100, end_step=1000, frequency=50)
    sched(0), sched(1000)                # (0.0, 0.9)
    sched.should_update(150)             # True: every 50 steps from 100 to 1000
    # Iterative pruning in 5 rounds to 50 % (rounds 0..4): [0.1, 0.2, 0.3, 0.4, 0.5]
    rounds = PolynomialDecay(0.1, 0.5, begin_step=0, end_step=4, power=1)
    [rounds(i) for i in rounds.update_steps()]
"""

from __future__ import annotations

import abc
import math
import numbers
import operator
from dataclasses import asdict, dataclass
from typing import Any


def _check_int(api: str, name: str, value: object, minimum: int, hint: str = "") -> int:
    if isinstance(value, bool):
        raise TypeError(
            f"`{api}`: {name} must be an int; expected an int >= {minimum}, got {value!r}"
        )
    try:
        number = operator.index(value)  # accepts numpy integers, refuses floats
    except TypeError:
        raise TypeError(
            f"`{api}`: {name} must be an int; expected an int >= {minimum}, got {value!r}"
        ) from None
    if number < minimum:
        raise ValueError(
            f"`{api}`: {name} is out of range; expected an int >= {minimum}, got {number}.{hint}"
        )
    return number


def _check_sparsity(api: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are Real
        raise TypeError(
            f"`{api}`: {name} must be a number; expected 0 <= {name} < 1, got {value!r}"
        )
    value = float(value)
    if not 0.0 <= value < 1.0:  # also refuses NaN
        hint = " A sparsity of 1 would remove everything" if value >= 1.0 else ""
        raise ValueError(
            f"`{api}`: {name} is out of range; expected 0 <= {name} < 1, got {value}.{hint}"
        )
    return value


def _check_steps(api: str, begin_step: object, end_step: object, allow_open_end: bool):
    begin = _check_int(api, "begin_step", begin_step, 0)
    open_hint = (
        " Use end_step=-1 to keep the target forever"
        if allow_open_end
        else f" {api} needs an end: the step at which the final sparsity is reached"
    )
    end = _check_int(api, "end_step", end_step, -1 if allow_open_end else 0, open_hint)
    if end != -1 and end < begin:
        raise ValueError(
            f"`{api}`: end_step is before begin_step; expected end_step >= begin_step "
            f"({begin}), got {end}"
        )
    return begin, end


class PruningSchedule(abc.ABC):
    """Base class of the schedules: ``__call__(step) -> float`` and ``should_update(step)``.

    Subclasses set ``begin_step``, ``end_step`` (-1: no end) and ``frequency``, and implement
    ``__call__``. Any callable ``step -> float`` can stand in for a schedule where one is taken;
    without ``should_update`` it is consulted at every step.
    """

    # Set by every subclass; ``final_sparsity`` is the target once the schedule is done.
    begin_step: int
    end_step: int
    frequency: int
    final_sparsity: float

    @abc.abstractmethod
    def __call__(self, step: int) -> float:
        """The target sparsity at ``step``."""

    def _step(self, step: object) -> int:
        return _check_int(type(self).__name__, "step", step, 0)

    def should_update(self, step: int) -> bool:
        """True when masks are recomputed at ``step``: every ``frequency`` steps from
        ``begin_step`` up to ``end_step``, and always at ``end_step`` itself (unlike tfmot, whose
        last update can fall short of ``end_step`` so the final sparsity is never applied)."""
        step = self._step(step)
        if step < self.begin_step or (self.end_step != -1 and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def update_steps(self, until: int | None = None) -> list[int]:
        """The steps at which ``should_update`` is true, up to ``end_step`` (or ``until``).

        This is the loop of iterative pruning:
        ``for i in sched.update_steps(): prune_to(sched(i))``.

        Raises:
            ValueError: the schedule has no end (``end_step=-1``) and ``until`` is not given.
        """
        last = self.end_step if until is None else _check_int("update_steps", "until", until, 0)
        if last == -1:
            raise ValueError(
                f"`{type(self).__name__}.update_steps`: the schedule has no end; expected an "
                f"end_step or `until`, got end_step=-1. Pass until=<last step>"
            )
        if self.end_step != -1:
            last = min(last, self.end_step)
        steps = list(range(self.begin_step, last + 1, self.frequency))
        if self.end_step != -1 and last == self.end_step and (not steps or steps[-1] != last):
            steps.append(last)
        return steps

    def get_config(self) -> dict[str, Any]:
        """JSON-like settings, with the class name under ``"schedule"`` (for pass records)."""
        return {"schedule": type(self).__name__, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity`` as a polynomial in time.

    ``s(t) = final + (initial - final) * (1 - p)**power`` with ``p = (t - begin) / (end - begin)``
    clipped to [0, 1], as tfmot's ``PolynomialDecay``: before ``begin_step`` the value is
    ``initial_sparsity`` (nothing is updated then), from ``end_step`` on it is ``final_sparsity``.
    With ``power=3`` (the default, Zhu & Gupta 2017) most pruning happens early, while the network
    can still recover; ``power=1`` is linear.

    Args:
        initial_sparsity: target at ``begin_step``, in [0, 1).
        final_sparsity: target from ``end_step`` on, in [initial_sparsity, 1).
        begin_step: first step that prunes (>= 0).
        end_step: step at which ``final_sparsity`` is reached (>= begin_step).
        power: exponent of the decay, > 0.
        frequency: masks are updated every ``frequency`` steps (>= 1).

    Example::

        sched = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, power=1)
        sched(50)                          # 0.4
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float = 3
    frequency: int = 1

    def __post_init__(self) -> None:
        api = "PolynomialDecay"
        initial = _check_sparsity(api, "initial_sparsity", self.initial_sparsity)
        final = _check_sparsity(api, "final_sparsity", self.final_sparsity)
        if final < initial:
            raise ValueError(
                f"`{api}`: final_sparsity is below initial_sparsity; expected final_sparsity >= "
                f"{initial}, got {final}. Pruned weights never come back, so sparsity only rises"
            )
        begin, end = _check_steps(api, self.begin_step, self.end_step, allow_open_end=False)
        if isinstance(self.power, bool) or not isinstance(self.power, (int, float)):
            raise TypeError(f"`{api}`: power must be a number; expected > 0, got {self.power!r}")
        if not (math.isfinite(self.power) and self.power > 0):
            raise ValueError(f"`{api}`: power is out of range; expected > 0, got {self.power}")
        frequency = _check_int(api, "frequency", self.frequency, 1)
        for name, value in [
            ("initial_sparsity", initial),
            ("final_sparsity", final),
            ("begin_step", begin),
            ("end_step", end),
            ("power", float(self.power)),
            ("frequency", frequency),
        ]:
            object.__setattr__(self, name, value)

    def __call__(self, step: int) -> float:
        step = self._step(step)
        if step >= self.end_step:
            return self.final_sparsity  # exactly, also when end_step == begin_step
        if step <= self.begin_step:
            return self.initial_sparsity
        p = (step - self.begin_step) / (self.end_step - self.begin_step)  # in (0, 1) here
        value = (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power
        )
        return min(max(value, self.initial_sparsity), self.final_sparsity)


@dataclass(frozen=True)
class ConstantSparsity(PruningSchedule):
    """One target sparsity, applied every ``frequency`` steps from ``begin_step`` to ``end_step``.

    As tfmot's ``ConstantSparsity``: the value is ``sparsity`` at every step; ``should_update``
    decides when masks are (re)computed. ``end_step=-1`` keeps updating forever.

    Example::

        sched = ConstantSparsity(0.75, begin_step=10, frequency=10)
        sched(0), sched.should_update(0), sched.should_update(20)   # (0.75, False, True)
    """

    sparsity: float
    begin_step: int = 0
    end_step: int = -1
    frequency: int = 1

    def __post_init__(self) -> None:
        api = "ConstantSparsity"
        sparsity = _check_sparsity(api, "sparsity", self.sparsity)
        begin, end = _check_steps(api, self.begin_step, self.end_step, allow_open_end=True)
        frequency = _check_int(api, "frequency", self.frequency, 1)
        for name, value in [
            ("sparsity", sparsity),
            ("begin_step", begin),
            ("end_step", end),
            ("frequency", frequency),
        ]:
            object.__setattr__(self, name, value)

    @property
    def final_sparsity(self) -> float:  # type: ignore[override]
        """The sparsity the schedule ends at: ``sparsity``."""
        return self.sparsity

    def __call__(self, step: int) -> float:
        self._step(step)
        return self.sparsity


__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule"]
