"""One-dimensional clustering of weights in numpy: k-means (k-means++, linear, density init) and the
exact optimum by dynamic programming.

Weights are scalars, so every cluster of an optimal (or Lloyd-converged) k-means solution is a
contiguous run of the sorted values. The functions here exploit that: they sort once, keep prefix
sums of the (weighted) values, and then a Lloyd iteration costs O(k log n) (the cluster bounds are
binary searches for the midpoints between neighbouring centres) and the exact optimum costs
O(k n log n) (the dynamic programme over split points with the divide-and-conquer optimisation
of Grønlund et al., "Fast exact k-means, k-medians and Bregman divergence clustering in 1D", the
idea behind Ckmeans.1d.dp; the cost of a run is Monge, so the best split point is monotone).

Everything works on a batch of rows at once (one row per layer or per output channel), with
optional per-point weights (counts of repeated values), and is pure: arrays in, arrays out.

Example::

    import numpy as np
    from optimizer.share import cluster

    x = np.random.default_rng(0).normal(size=10_000)
    km = cluster.kmeans_1d(x, 16, init="kmeans++", seed=0)
    opt = cluster.optimal_kmeans_1d(x, 16)
    assert cluster.sse(x, opt.centres, opt.labels) <= cluster.sse(x, km.centres, km.labels)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

INITS = ("kmeans++", "linear", "density")
METHODS = (*INITS, "optimal")
#: Above this many points per row the optimal method runs the exact programme on the means of
#: this many equal-width bins of values, then refines with Lloyd on every point.
DEFAULT_MAX_POINTS = 1 << 16


class Clusters(NamedTuple):
    """Result of a 1-D clustering: sorted, distinct centres and each point's index into them."""

    centres: np.ndarray  # float64 [c], ascending, c <= k (fewer when the data has fewer values)
    labels: np.ndarray  # int64 [n], index into centres


# --- Checking inputs ------------------------------------------------------------------------------


def _check_k(api: str, k: object) -> int:
    try:
        if isinstance(k, bool):
            raise TypeError
        value = operator.index(k)
    except TypeError:
        raise TypeError(f"`{api}`: k must be an int; expected k >= 1, got {k!r}") from None
    if value < 1:
        raise ValueError(f"`{api}`: k is out of range; expected k >= 1, got {value}")
    return value


def _check_1d(api: str, x: object, weights: object) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"`{api}`: x must be a non-empty 1-D array; expected shape (n,), got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"`{api}`: x must be finite; expected no NaN/Inf, got x[{bad}]={arr[bad]}")
    if weights is None:
        return arr, np.ones_like(arr)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != arr.shape:
        raise ValueError(
            f"`{api}`: weights must match x; expected shape {arr.shape}, got {w.shape}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(
            f"`{api}`: weights must be finite and >= 0 with at least one > 0; got "
            f"min={w.min()}, max={w.max()}"
        )
    return arr, w


# --- Sorted batches -------------------------------------------------------------------------------


class _Sorted:
    """Rows sorted ascending with their weights; invalid points moved to the end with weight 0.

    ``xs`` [G, n], ``ws`` [G, n], ``order`` [G, n] (original position of each sorted point),
    ``count`` [G] (valid points per row), prefix sums ``W``, ``S1`` [G, n + 1] of the weights
    and weighted values, taken after subtracting each row's mean ``shift`` (fewer cancellations).
    """

    def __init__(self, x: np.ndarray, w: np.ndarray, valid: np.ndarray) -> None:
        key = np.where(valid, x, np.inf)
        self.order = np.argsort(key, axis=1, kind="stable")
        xs = np.take_along_axis(key, self.order, axis=1)
        ws = np.take_along_axis(np.where(valid, w, 0.0), self.order, axis=1)
        self.count = valid.sum(axis=1)
        g, n = xs.shape
        rows = np.arange(g)
        top = xs[rows, np.maximum(self.count - 1, 0)]
        top = np.where(self.count > 0, top, 0.0)
        # Padding repeats the row's largest value (weight 0): rows stay sorted and finite.
        xs = np.where(np.isfinite(xs), xs, top[:, None])
        total = ws.sum(axis=1)
        self.shift = np.where(total > 0, (ws * xs).sum(axis=1) / np.maximum(total, 1e-300), 0.0)
        self.xs = xs - self.shift[:, None]
        self.ws = ws
        zeros = np.zeros((g, 1))
        self.W = np.concatenate([zeros, np.cumsum(ws, axis=1)], axis=1)
        self.S1 = np.concatenate([zeros, np.cumsum(ws * self.xs, axis=1)], axis=1)
        self.S2 = np.concatenate([zeros, np.cumsum(ws * self.xs * self.xs, axis=1)], axis=1)
        # Distinct valid values per row (the most clusters that can be non-empty).
        step = np.concatenate([np.ones((g, 1), bool), self.xs[:, 1:] != self.xs[:, :-1]], axis=1)
        self.distinct = (step & (np.arange(n)[None, :] < self.count[:, None])).sum(axis=1)


def _searchsorted_rows(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per row r: the number of a[r] <= t[r, j] (a sorted ascending per row), vectorized."""
    g, n = a.shape
    if g == 1:
        return np.searchsorted(a[0], t[0], side="right")[None, :]
    rows = np.arange(g)[:, None]
    lo = np.zeros(t.shape, np.int64)
    hi = np.full(t.shape, n, np.int64)
    for _ in range(max(1, math.ceil(math.log2(n + 1)))):
        active = lo < hi
        mid = (lo + hi) // 2
        go = active & (a[rows, np.minimum(mid, n - 1)] <= t)
        lo = np.where(go, mid + 1, lo)
        hi = np.where(active & ~go, mid, hi)
    return lo


def _labels_from_starts(starts: np.ndarray, n: int) -> np.ndarray:
    """Sorted-order labels [G, n] from the first position of clusters 1..c-1 [G, c - 1]."""
    g = starts.shape[0]
    marks = np.zeros((g, n + 1), np.int64)
    rows = np.repeat(np.arange(g), starts.shape[1])
    np.add.at(marks, (rows, starts.ravel()), 1)
    return np.cumsum(marks, axis=1)[:, :n]


def _run_sums(s: _Sorted, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight and weighted sum of each run [bounds[:, j], bounds[:, j + 1])."""
    rows = np.arange(s.xs.shape[0])[:, None]
    w = s.W[rows, bounds[:, 1:]] - s.W[rows, bounds[:, :-1]]
    s1 = s.S1[rows, bounds[:, 1:]] - s.S1[rows, bounds[:, :-1]]
    return w, s1


# --- Initialisations ------------------------------------------------------------------------------


def _init_linear(s: _Sorted, k: int) -> np.ndarray:
    rows = np.arange(s.xs.shape[0])
    lo = s.xs[:, 0]
    hi = s.xs[rows, np.maximum(s.count - 1, 0)]
    return lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, k)[None, :]


def _init_density(s: _Sorted, k: int) -> np.ndarray:
    # Evenly spaced levels (j + 1/2) / k of the weighted CDF, read back on the value axis.
    total = s.W[:, -1:]
    levels = (np.arange(k) + 0.5)[None, :] / k * total
    idx = _searchsorted_rows(s.W[:, 1:], levels)
    return np.take_along_axis(s.xs, np.minimum(idx, s.xs.shape[1] - 1), axis=1)


def _init_kmeans_pp(s: _Sorted, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii; 2 + log k trials per centre, as scikit-learn)."""
    g, n = s.xs.shape
    trials = 2 + int(math.log(k))
    rows = np.arange(g)
    centres = np.empty((g, k))
    first = _searchsorted_rows(s.W[:, 1:], rng.random((g, 1)) * s.W[:, -1:])
    first = np.minimum(first[:, 0], n - 1)
    centres[:, 0] = s.xs[rows, first]
    d2 = (s.xs - centres[:, :1]) ** 2
    for c in range(1, k):
        cum = np.cumsum(s.ws * d2, axis=1)
        pick = _searchsorted_rows(cum, rng.random((g, trials)) * cum[:, -1:])
        cand = s.xs[rows[:, None], np.minimum(pick, n - 1)]  # [G, T]
        new = np.minimum(d2[:, None, :], (s.xs[:, None, :] - cand[:, :, None]) ** 2)
        best = np.argmin((new * s.ws[:, None, :]).sum(axis=2), axis=1)
        centres[:, c] = cand[rows, best]
        d2 = new[rows, best]
    return np.sort(centres, axis=1)


def _initial(s: _Sorted, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    if init == "linear":
        return _init_linear(s, k)
    if init == "density":
        return _init_density(s, k)
    return _init_kmeans_pp(s, k, rng)


# --- Lloyd ----------------------------------------------------------------------------------------


def _lloyd(s: _Sorted, centres: np.ndarray, max_iter: int) -> np.ndarray:
    """Lloyd iterations on sorted rows; returns the run starts [G, k + 1] (0 ... n).

    Each iteration assigns every point to its nearest centre (runs between midpoints), moves
    each centre to its run's weighted mean and re-seeds an empty cluster at the point farthest
    from its centre (while a row has more distinct values than non-empty clusters).
    """
    g, n = s.xs.shape
    k = centres.shape[1]
    edges = (np.zeros((g, 1), np.int64), np.full((g, 1), n, np.int64))
    previous = None
    bounds = np.concatenate([edges[0], np.full((g, k - 1), n, np.int64), edges[1]], axis=1)
    for _ in range(max_iter):
        centres = np.sort(centres, axis=1)
        cut = _searchsorted_rows(s.xs, (centres[:, :-1] + centres[:, 1:]) / 2)
        bounds = np.concatenate([edges[0], cut, edges[1]], axis=1)
        w, s1 = _run_sums(s, bounds)
        empty = w <= 0
        centres = np.where(empty, centres, s1 / np.where(empty, 1.0, w))
        reseed = empty.any(axis=1) & (s.distinct > (~empty).sum(axis=1))
        if reseed.any():
            r = np.flatnonzero(reseed)
            labels = _labels_from_starts(bounds[r, 1:-1], n)
            d2 = s.ws[r] * (s.xs[r] - np.take_along_axis(centres[r], labels, axis=1)) ** 2
            far = np.argmax(d2, axis=1)
            slot = np.argmax(empty[r], axis=1)
            centres[r, slot] = s.xs[r, far]
        elif previous is not None and np.array_equal(cut, previous):
            break
        previous = cut
    return bounds


# --- Exact optimum --------------------------------------------------------------------------------


def _run_cost(s: _Sorted, flat_row: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Weighted SSE of the run of positions i..j (inclusive) of each row, from prefix sums."""
    stride = s.W.shape[1]
    a = flat_row * stride + i
    b = flat_row * stride + j + 1
    W, S1, S2 = s.W.ravel(), s.S1.ravel(), s.S2.ravel()
    w = W[b] - W[a]
    s1 = S1[b] - S1[a]
    cost = S2[b] - S2[a] - s1 * s1 / np.where(w > 0, w, 1.0)
    return np.where(w > 0, np.maximum(cost, 0.0), 0.0)


def _dp_layer(
    s: _Sorted, prev: np.ndarray, prev_arg: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One layer of the programme: D[r, j] = min over i <= j of prev[r, i - 1] + cost(i, j).

    ``prev[r, -1]`` counts as 0 (the earlier clusters may be empty). Divide and conquer over j,
    run level by level so every subproblem of a level across all rows is one set of array ops:
    the best i of the middle j bounds the search of the left and right halves (monotone opt).
    The previous layer's best start ``prev_arg`` is a lower bound too (with one cluster more,
    the last cluster starts no earlier, as Ckmeans.1d.dp uses), which shortens the top levels.
    """
    g, n = prev.shape
    stride = n + 1
    # A candidate start i of row r reads the prefix sums and prev (shifted by one, 0 before the
    # row) at one flat index r * stride + i; the end j's sums are gathered once per segment.
    W, S1, S2 = s.W.ravel(), s.S1.ravel(), s.S2.ravel()
    before = np.zeros((g, stride))
    before[:, 1:] = prev
    before = before.ravel()
    out = np.empty((g, n))
    arg = np.empty((g, n), np.int64)
    r = np.arange(g)
    jl = np.zeros(g, np.int64)
    jr = np.full(g, n - 1, np.int64)
    ol = np.zeros(g, np.int64)
    orr = np.full(g, n - 1, np.int64)
    while r.size:
        mid = (jl + jr) // 2
        hi = np.minimum(mid, orr)
        lo = ol if prev_arg is None else np.minimum(np.maximum(ol, prev_arg[r, mid]), hi)
        lens = hi - lo + 1
        offs = np.cumsum(lens) - lens
        seg = np.repeat(np.arange(r.size), lens)
        base = r * stride
        a = np.arange(seg.size) + (base + lo - offs)[seg]  # flat prefix index of each start i
        b = base + mid + 1
        w_b, s1_b, s2_b = W[b][seg], S1[b][seg], S2[b][seg]  # prefix sums after j
        w = w_b - W.take(a)
        s1 = s1_b - S1.take(a)
        has = w > 0
        cost = s2_b - S2.take(a) - s1 * s1 / np.where(has, w, 1.0)
        val = before.take(a) + np.where(has, np.maximum(cost, 0.0), 0.0)
        best = np.minimum.reduceat(val, offs)
        hit = np.flatnonzero(val == best[seg])
        first = hit[np.concatenate([[True], seg[hit][1:] != seg[hit][:-1]])]
        opt = a[first] - base
        out[r, mid] = best
        arg[r, mid] = opt
        left = mid - 1 >= jl
        right = mid + 1 <= jr
        r = np.concatenate([r[left], r[right]])
        jl, jr = (
            np.concatenate([jl[left], mid[right] + 1]),
            np.concatenate([mid[left] - 1, jr[right]]),
        )
        ol, orr = np.concatenate([ol[left], opt[right]]), np.concatenate([opt[left], orr[right]])
    return out, arg


def _optimal_starts(s: _Sorted, k: int) -> np.ndarray:
    """Run starts [G, k + 1] of the exact optimal k-clustering of each sorted row."""
    g, n = s.xs.shape
    rows = np.repeat(np.arange(g), n)
    cols = np.tile(np.arange(n), g)
    d = _run_cost(s, rows, np.zeros_like(cols), cols).reshape(g, n)
    args: list[np.ndarray] = []
    for _ in range(1, k):
        d, arg = _dp_layer(s, d, args[-1] if args else None)
        args.append(arg)
    bounds = np.zeros((g, k + 1), np.int64)
    bounds[:, k] = n
    end = np.full(g, n - 1, np.int64)  # last position of the current cluster (-1: none left)
    r = np.arange(g)
    for m in range(k - 1, 0, -1):
        start = np.where(end >= 0, args[m - 1][r, np.maximum(end, 0)], 0)
        bounds[:, m] = start
        end = start - 1
    return bounds


def _coarsen(s: _Sorted, points: int) -> _Sorted:
    """Very long rows as at most ``points`` weighted points: the runs of sorted values that fall
    in one of ``points`` equal-width bins between the row's min and max.

    Equal width (not equal count) keeps sparse tails at full resolution, where a lone outlier
    can be worth a cluster of its own; a run is at most (max - min) / points wide, so the
    restriction of split points to run edges costs little, and Lloyd refines the result.
    """
    g, n = s.xs.shape
    rows = np.arange(g)
    lo = s.xs[:, :1]
    span = s.xs[rows, np.maximum(s.count - 1, 0)][:, None] - lo
    span = np.where(span > 0, span, 1.0)
    bins = np.minimum(((s.xs - lo) / span * points).astype(np.int64), points - 1)
    inside = np.arange(n)[None, :] < s.count[:, None]
    new_run = np.concatenate([np.ones((g, 1), bool), bins[:, 1:] != bins[:, :-1]], axis=1)
    new_run &= inside
    runs = new_run.sum(axis=1)
    width = int(runs.max())
    edges = np.full((g, width + 1), n, np.int64)
    rr, cc = np.nonzero(new_run)
    slot = np.cumsum(new_run, axis=1) - 1
    edges[rr, slot[rr, cc]] = cc
    edges[rows, runs] = s.count  # the last run ends at the last valid point
    w, s1 = _run_sums(s, edges)
    valid = w > 0
    mean = np.where(valid, s1 / np.where(valid, w, 1.0), 0.0) + s.shift[:, None]
    return _Sorted(mean, np.where(valid, w, 1.0), valid)


# --- Batched entry point --------------------------------------------------------------------------


def cluster_rows(
    x: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    method: str = "kmeans++",
    max_iter: int = 300,
    seed: int | Sequence[int] = 0,
    max_points: int = DEFAULT_MAX_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Clusters each row of ``x`` [G, n] into at most ``k`` values.

    Args:
        x: float array [G, n]; each row is clustered on its own.
        k: clusters per row (>= 1).
        valid: bool [G, n]; only True points take part (default: all).
        weights: float [G, n] >= 0, the multiplicity of each point (default: 1).
        method: ``"kmeans++"``, ``"linear"`` or ``"density"`` (Lloyd from that initialisation)
            or ``"optimal"`` (the exact minimum of the sum of squared errors).
        max_iter: most Lloyd iterations (Lloyd stops earlier once assignments are stable).
        seed: seed of the k-means++ sampling (anything ``np.random.default_rng`` takes).
        max_points: rows with more points than this, under ``"optimal"``, are solved exactly
            on their bin means in ``max_points`` equal-width bins, then refined by Lloyd.

    Returns:
        ``(centres, labels)``: float64 [G, k], ascending, NaN where a row has fewer non-empty
        clusters than k; int64 [G, n], each valid point's index into its row's centres
        (-1 for invalid points).

    Example::

        centres, labels = cluster_rows(w.reshape(64, -1), 16, valid=w.reshape(64, -1) != 0)
    """
    api = "cluster_rows"
    k = _check_k(api, k)
    if method not in METHODS:
        raise ValueError(f"`{api}`: unknown method; expected one of {METHODS}, got {method!r}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"`{api}`: x must be 2-D [G, n] with n >= 1, got shape {x.shape}")
    valid = np.ones(x.shape, bool) if valid is None else np.asarray(valid, bool)
    w = np.ones(x.shape) if weights is None else np.asarray(weights, np.float64)
    if valid.shape != x.shape or w.shape != x.shape:
        raise ValueError(
            f"`{api}`: valid and weights must match x; expected {x.shape}, got "
            f"{valid.shape} and {w.shape}"
        )
    valid = valid & (w > 0)
    if np.any(valid & ~np.isfinite(x)):
        raise ValueError(f"`{api}`: x must be finite where valid; expected no NaN/Inf")
    g, n = x.shape
    s = _Sorted(x, w, valid)
    if method == "optimal":
        if n > max_points:
            coarse = _coarsen(s, max_points)
            cb = _optimal_starts(coarse, k)
            w_c, s1_c = _run_sums(coarse, cb)
            start = np.where(w_c > 0, s1_c / np.where(w_c > 0, w_c, 1.0), np.nan)
            start = start + (coarse.shift - s.shift)[:, None]
            start = _fill_empty(start)
            bounds = _lloyd(s, start, max_iter)
        else:
            bounds = _optimal_starts(s, k)
    else:
        bounds = _lloyd(s, _initial(s, k, method, np.random.default_rng(seed)), max_iter)
    # A last assignment to the nearest centre (never raises the SSE): equal values cannot end up
    # split between two clusters by rounding in the prefix sums, and equal centres merge.
    weight, s1 = _run_sums(s, bounds)
    centres = _fill_empty(np.where(weight > 0, s1 / np.where(weight > 0, weight, 1.0), np.nan))
    cut = _searchsorted_rows(s.xs, (centres[:, :-1] + centres[:, 1:]) / 2)
    bounds = np.concatenate([bounds[:, :1], cut, bounds[:, -1:]], axis=1)
    weight, s1 = _run_sums(s, bounds)
    centres = np.where(weight > 0, s1 / np.where(weight > 0, weight, 1.0), np.nan)
    centres = centres + s.shift[:, None]
    sorted_labels = _labels_from_starts(bounds[:, 1:-1], n)
    # Compact: drop empty clusters so labels index the non-empty centres in ascending order.
    nonempty = weight > 0
    rank = np.cumsum(nonempty, axis=1) - 1
    compact = np.full((g, k), np.nan)
    rr, cc = np.nonzero(nonempty)
    compact[rr, rank[rr, cc]] = centres[rr, cc]
    sorted_labels = np.take_along_axis(rank, sorted_labels, axis=1)
    labels = np.empty((g, n), np.int64)
    np.put_along_axis(labels, s.order, sorted_labels, axis=1)
    labels[~valid] = -1
    return compact, labels


def _fill_empty(centres: np.ndarray) -> np.ndarray:
    """NaN centres take a neighbour's value (an empty cluster stays empty and sorted)."""
    out = centres.copy()
    for j in range(1, out.shape[1]):
        out[:, j] = np.where(np.isnan(out[:, j]), out[:, j - 1], out[:, j])
    for j in range(out.shape[1] - 2, -1, -1):
        out[:, j] = np.where(np.isnan(out[:, j]), out[:, j + 1], out[:, j])
    return np.nan_to_num(out)


# --- 1-D public functions -------------------------------------------------------------------------


def _one(api: str, x: object, k: object, weights: object, **kwargs: object) -> Clusters:
    arr, w = _check_1d(api, x, weights)
    k = _check_k(api, k)
    centres, labels = cluster_rows(arr[None, :], k, weights=w[None, :], **kwargs)
    c = centres[0]
    used = int(np.count_nonzero(~np.isnan(c)))
    lab = labels[0]
    # Points of weight 0 take no part; give them their nearest centre so labels stay valid.
    if np.any(lab < 0):
        lab = np.where(lab < 0, assign(arr, c[:used]), lab)
    return Clusters(c[:used], lab)


def kmeans_1d(
    x: np.ndarray,
    k: int,
    *,
    weights: np.ndarray | None = None,
    init: str = "kmeans++",
    max_iter: int = 300,
    seed: int = 0,
) -> Clusters:
    """Lloyd's k-means on scalars from a k-means++, linear or density initialisation.

    ``"linear"`` spaces the initial centres evenly between min and max and ``"density"`` puts
    them at evenly spaced levels of the cumulative distribution (both as in Han et al., Deep
    Compression, 2016); ``"kmeans++"`` samples them by squared distance (greedy variant).

    Args:
        x: the values [n].
        k: number of clusters (fewer come back when ``x`` has fewer distinct values).
        weights: multiplicity of each value (e.g. counts from ``np.unique``), >= 0.
        init: ``"kmeans++"``, ``"linear"`` or ``"density"``.
        max_iter: the most Lloyd iterations.
        seed: seed of the k-means++ sampling.

    Example::

        c = kmeans_1d(np.array([0.0, 0.1, 5.0, 5.2]), 2)
        c.centres          # array([0.05, 5.1])
    """
    if init not in INITS:
        raise ValueError(f"`kmeans_1d`: unknown init; expected one of {INITS}, got {init!r}")
    return _one("kmeans_1d", x, k, weights, method=init, max_iter=max_iter, seed=seed)


def optimal_kmeans_1d(
    x: np.ndarray,
    k: int,
    *,
    weights: np.ndarray | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> Clusters:
    """The exact minimum-SSE clustering of scalars into at most ``k`` clusters.

    Dynamic programming over split points of the sorted values in O(k n log n) (see the module
    docstring). Exact for up to ``max_points`` points; longer inputs are first reduced to the
    means of their values in ``max_points`` equal-width bins (exact on those, so split points
    fall between bins at most (max - min) / max_points wide), then refined with Lloyd
    iterations on every point. Pass ``np.unique(x, return_counts=True)`` as ``x`` and
    ``weights`` to keep repeated values from counting towards ``max_points``.

    Example::

        opt = optimal_kmeans_1d(np.random.default_rng(0).normal(size=1000), 8)
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"`optimal_kmeans_1d`: max_points must be an int >= 2, got {max_points!r}")
    return _one("optimal_kmeans_1d", x, k, weights, method="optimal", max_points=max_points)


def init_centres(
    x: np.ndarray,
    k: int,
    init: str = "kmeans++",
    *,
    weights: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The initial centres [k] (ascending, may repeat) that :func:`kmeans_1d` starts from."""
    if init not in INITS:
        raise ValueError(f"`init_centres`: unknown init; expected one of {INITS}, got {init!r}")
    arr, w = _check_1d("init_centres", x, weights)
    k = _check_k("init_centres", k)
    s = _Sorted(arr[None, :], w[None, :], (w > 0)[None, :])
    return _initial(s, k, init, np.random.default_rng(seed))[0] + s.shift[0]


def assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest of the ascending ``centres`` for each value (ties go to the lower)."""
    x = np.asarray(x, np.float64)
    c = np.asarray(centres, np.float64)
    if c.ndim != 1 or c.size == 0 or np.any(np.diff(c) < 0):
        raise ValueError(f"`assign`: centres must be a non-empty ascending 1-D array, got {c}")
    return np.searchsorted((c[:-1] + c[1:]) / 2, x, side="left").astype(np.int64)


def sse(
    x: np.ndarray, centres: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Sum of (weighted) squared distances of the values to their assigned centres."""
    x = np.asarray(x, np.float64)
    d2 = (x - np.asarray(centres, np.float64)[np.asarray(labels)]) ** 2
    return float(d2.sum() if weights is None else (np.asarray(weights, np.float64) * d2).sum())


__all__ = [
    "DEFAULT_MAX_POINTS",
    "INITS",
    "METHODS",
    "Clusters",
    "assign",
    "cluster_rows",
    "init_centres",
    "kmeans_1d",
    "optimal_kmeans_1d",
    "sse",
]
