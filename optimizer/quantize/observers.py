"""Range observers for int8 activations, and the scale/zero-point choice of the TFLite spec.

An observer sees the float values of one tensor during calibration and proposes a clipping range
``(lo, hi)`` that always contains 0 (so the real value 0, e.g. padding and ReLU outputs, is exact).
Histogram observers (percentile, MSE) need two passes over the calibration data: the first finds
the exact min/max, the second fills a fixed histogram over it; ``passes`` says how many.

Example::

    obs = make_observer("percentile", percentile=99.9)
    for p in range(obs.passes):
        obs.start_pass(p)
        for x in batches:
            obs.update(x)
    scale, zero_point = activation_qparams(*obs.range())
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "HISTOGRAM_BINS",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageObserver",
    "OBSERVERS",
    "Observer",
    "PercentileObserver",
    "activation_qparams",
    "make_observer",
    "shared_weight_amax",
    "weight_scales",
]

#: Bins of the histogram observers (the second pass).
HISTOGRAM_BINS = 2048
#: Smallest scale handed out (float32 epsilon, as PyTorch's observers).
MIN_SCALE = float(np.finfo(np.float32).eps)


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 ``(scale, zero_point)`` for the range ``[lo, hi]`` (widened to hold 0).

    ``scale = (hi - lo) / 255`` rounded to float32 (what a model file stores, at least
    :data:`MIN_SCALE`); ``zero_point = round(-128 - lo / scale)`` saturated to [-128, 127], so
    0.0 quantizes exactly to the zero point.

    Example:
        >>> activation_qparams(0.0, 2.55)
        (0.009999999776482582, -128)
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"activation_qparams: range must be finite, got [{lo!r}, {hi!r}]")
    scale = float(np.float32(max((hi - lo) / 255.0, MIN_SCALE)))
    zero_point = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
    return scale, zero_point


def weight_scales(
    w: torch.Tensor, per_channel: bool = True, amax: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric int8 weight scales ``max|w| / 127`` (float32), per output channel (dim 0) or one.

    ``amax`` (per channel, only with ``per_channel``) replaces each channel's ``max|w|``: see
    :func:`shared_weight_amax`. A channel (or tensor) that is all zero gets scale 1.0 (its int8
    weights are 0 either way).
    """
    w = w.detach()
    if per_channel and amax is not None:
        amax = amax.detach().to(torch.float32).reshape(-1).expand(w.shape[0])
    elif per_channel:
        amax = w.abs().reshape(w.shape[0], -1).amax(1)
    else:
        amax = w.abs().amax().reshape(1)
    scale = (amax.to(torch.float64) / 127.0).to(torch.float32)
    return torch.where(amax > 0, scale, torch.ones_like(scale))


#: A weight with at most this many distinct values is treated as shared (a codebook).
SHARED_MAX_VALUES = 256


def shared_weight_amax(
    w: torch.Tensor, row_scale: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Per-channel ranges that keep a shared (codebook) weight's int8 values one table.

    For a weight whose layer takes at most ``SHARED_MAX_VALUES`` distinct values, each used 8
    times on average (weight sharing; a small layer's distinct weights do not count), each
    output channel's range is ``|row_scale[c]| * max|w|`` (``row_scale``: the BatchNorm factor
    folded into that channel later, 1 without one) instead of the channel's own maximum: every
    channel then quantizes the layer's codebook to the same int8 values (up to sign), so the
    export stores one table per layer instead of one per channel. None for a weight that is
    not shared.

    Example:
        >>> w = torch.tensor([[0.5, -1.0] * 8, [0.5, 0.5] * 8])
        >>> shared_weight_amax(w).tolist()
        [1.0, 1.0]
    """
    w = w.detach()
    if w.numel() == 0:
        return None
    distinct = torch.unique(w).numel()
    if distinct > SHARED_MAX_VALUES or distinct * 8 > w.numel():
        return None
    top = w.abs().amax().to(torch.float64)
    rows = torch.ones(w.shape[0], dtype=torch.float64) if row_scale is None else row_scale
    return (rows.detach().to(torch.float64).abs() * top).to(torch.float32)


class Observer:
    """Base class: ``update(x)`` on every calibration batch, then ``range()``.

    Subclasses that need a second pass set ``passes = 2``; the caller runs the data again after
    ``start_pass(1)``.
    """

    passes = 1

    def __init__(self) -> None:
        self.min: float | None = None
        self.max: float | None = None
        self.pass_index = 0

    def start_pass(self, index: int) -> None:
        self.pass_index = index

    def _minmax(self, x: torch.Tensor) -> tuple[float, float]:
        x = x.detach()
        return float(x.min()), float(x.max())

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._minmax(x)
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def _raw_range(self) -> tuple[float, float]:
        return self.min, self.max

    def range(self) -> tuple[float, float]:
        """The clipping range, widened to contain 0. Raises ValueError before any update."""
        if self.min is None:
            raise ValueError(f"{type(self).__name__}: no data observed; expected >= 1 batch")
        lo, hi = self._raw_range()
        return min(float(lo), 0.0), max(float(hi), 0.0)


class MinMaxObserver(Observer):
    """The running minimum and maximum over all batches."""


class MovingAverageObserver(Observer):
    """Exponential moving average of each batch's min and max (PyTorch's
    ``MovingAverageMinMaxObserver``): ``r += c * (batch - r)``, starting at the first batch."""

    def __init__(self, averaging_constant: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < averaging_constant <= 1.0:
            raise ValueError(
                "MovingAverageObserver: averaging_constant must be in (0, 1]; got "
                f"{averaging_constant!r}"
            )
        self.c = float(averaging_constant)

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._minmax(x)
        if self.min is None:
            self.min, self.max = lo, hi
        else:
            self.min += self.c * (lo - self.min)
            self.max += self.c * (hi - self.max)


class _HistogramObserver(Observer):
    """Pass 0: exact min/max; pass 1: a histogram of :data:`HISTOGRAM_BINS` bins over it."""

    passes = 2

    def __init__(self) -> None:
        super().__init__()
        self.hist: np.ndarray | None = None

    def update(self, x: torch.Tensor) -> None:
        if self.pass_index == 0:
            super().update(x)
            return
        if self.min is None:
            raise ValueError(f"{type(self).__name__}: pass 1 before pass 0")
        lo, hi = self.min, self.max
        if hi <= lo:
            return
        h = torch.histc(x.detach().to(torch.float32).flatten(), HISTOGRAM_BINS, lo, hi)
        h = h.to(torch.float64).numpy()
        self.hist = h if self.hist is None else self.hist + h

    def _edges(self) -> np.ndarray:
        return np.linspace(self.min, self.max, HISTOGRAM_BINS + 1)


class PercentileObserver(_HistogramObserver):
    """Clips to the ``percentile`` and ``100 - percentile`` quantiles of the values (linear
    interpolation inside the histogram bin)."""

    def __init__(self, percentile: float = 99.99) -> None:
        super().__init__()
        if not 50.0 < percentile <= 100.0:
            raise ValueError(
                f"PercentileObserver: percentile must be in (50, 100]; got {percentile!r}"
            )
        self.percentile = float(percentile)

    def _raw_range(self) -> tuple[float, float]:
        if self.hist is None or self.hist.sum() == 0 or self.percentile == 100.0:
            return self.min, self.max
        cdf = np.cumsum(self.hist) / self.hist.sum()
        edges = self._edges()
        q = self.percentile / 100.0

        def at(p: float) -> float:
            i = int(np.searchsorted(cdf, p))
            i = min(i, HISTOGRAM_BINS - 1)
            prev = cdf[i - 1] if i > 0 else 0.0
            frac = 0.0 if cdf[i] == prev else (p - prev) / (cdf[i] - prev)
            return float(edges[i] + frac * (edges[i + 1] - edges[i]))

        return at(1.0 - q), at(q)


class MSEObserver(_HistogramObserver):
    """Chooses the clipping range that minimizes the expected squared quantization error over
    the histogram (each bin's count at its centre), searching ``grid`` x ``grid`` shrinkings of
    the min and the max."""

    def __init__(self, grid: int = 40) -> None:
        super().__init__()
        self.grid = int(grid)

    def _raw_range(self) -> tuple[float, float]:
        if self.hist is None or self.hist.sum() == 0:
            return self.min, self.max
        edges = self._edges()
        centres = (edges[:-1] + edges[1:]) / 2
        keep = self.hist > 0
        c, n = centres[keep], self.hist[keep]
        lo0, hi0 = min(self.min, 0.0), max(self.max, 0.0)
        fr = np.linspace(1.0 / self.grid, 1.0, self.grid)
        los = np.unique(lo0 * fr) if lo0 < 0 else np.array([0.0])
        his = np.unique(hi0 * fr) if hi0 > 0 else np.array([0.0])
        best, best_err = (lo0, hi0), math.inf
        for lo in los:
            scale = np.maximum((his - lo) / 255.0, MIN_SCALE)[:, None]  # [H, 1]
            zp = np.clip(np.round(-128.0 - lo / scale), -128, 127)
            q = np.clip(np.round(c[None, :] / scale) + zp, -128, 127)
            err = (((q - zp) * scale - c[None, :]) ** 2 * n[None, :]).sum(1)
            j = int(np.argmin(err))
            if err[j] < best_err:
                best_err, best = float(err[j]), (float(lo), float(his[j]))
        return best


OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}
"""Observer name (``Int8Config.observer``) -> class."""


def make_observer(
    name: str, percentile: float = 99.99, averaging_constant: float = 0.01
) -> Observer:
    """A new observer by name (see :data:`OBSERVERS`).

    Example:
        >>> make_observer("mse").passes
        2
    """
    if name not in OBSERVERS:
        raise ValueError(
            f"make_observer: unknown observer; expected one of {sorted(OBSERVERS)}, got {name!r}"
        )
    if name == "percentile":
        return PercentileObserver(percentile)
    if name == "moving_average":
        return MovingAverageObserver(averaging_constant)
    return OBSERVERS[name]()
