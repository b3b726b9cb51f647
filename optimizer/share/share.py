"""Weight sharing: each layer's (or output channel's) weights clustered into at most k values, kept
shared through fine-tuning, and exposed as indices + table for the codebook kernels.

``share_weights_`` replaces the weights of every selected ``nn.Linear`` / ``nn.Conv{1,2,3}d`` by
their cluster centres (Han et al., Deep Compression: k-means with linear, density or k-means++
initialisation, or the exact 1-D optimum). With ``keep_zeros`` (the default) exact zeros, e.g.
from channel or block pruning, stay exactly zero: zero is one of the k values of a layer (or
channel) that has zeros, and the other values are clustered into k - 1 centres, so every layer
(channel) holds **at most k distinct values including 0** and the table fits ``bits`` =
2 (k <= 4), 4 (k <= 16) or 8 (k <= 256) bit indices.

Until :meth:`ShareReport.remove`, two hooks keep the weights shared while the model fine-tunes:
a gradient hook pools each cluster's gradient (every member gets the mean, or the sum, of its
cluster's gradients, so the centroid moves as in Deep Compression and zeros get none) and a
forward pre-hook snaps every member back to its cluster's value if an optimizer drifted them by
rounding. Nothing is added to the state dict at any time. Example::

    report = share_weights_(model, WeightShareConfig(clusters=16))
    fine_tune_(model, ...)                    # weights stay shared, zeros stay zero
    report.remove()                           # hooks gone; plain shared weights
    indices, table = codebook(model.fc1)      # uint8 [N, K], float32 [16]
"""

from __future__ import annotations

import difflib
import numbers
import operator
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from optimizer._util import module_under
from optimizer.graph.record import get_record
from optimizer.quantize import arithmetic
from optimizer.share.cluster import DEFAULT_MAX_POINTS, METHODS, cluster_rows

#: Module types whose weight is shared (and which the codebook kernels run as a [N, K] GEMM).
SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
GRAD_POOLING = ("mean", "sum")
MIN_CLUSTERS, MAX_CLUSTERS = 2, 256
#: Plain attribute (not a buffer: the state dict never changes) set on each shared module.
ATTR = "_edgeopt_share"
_LIVE = "_edgeopt_share_live"
#: The record key (``get_record(model)[RECORD_KEY][path]``).
RECORD_KEY = "weight_sharing"


def bits_for(clusters: int) -> int:
    """Index width of a ``clusters``-entry codebook: 2 (<= 4), 4 (<= 16) or 8 (<= 256)."""
    if clusters <= 4:
        return 2
    if clusters <= 16:
        return 4
    return 8


@dataclass
class WeightShareConfig:
    """Settings of :func:`share_weights_`.

    Args:
        clusters: k, the most distinct values per layer (or per output channel), zero included
            when the layer has zeros and ``keep_zeros``; 2 <= k <= 256. k <= 16 gives 4-bit
            indices (k <= 4: 2-bit), anything larger 8-bit.
        per_channel: one codebook per output channel (row of the [N, K] matrix) instead of one
            per layer; better accuracy, N tables to store.
        method: ``"kmeans++"``, ``"linear"`` (centres evenly spaced between min and max, as in
            Deep Compression), ``"density"`` (evenly spaced levels of the CDF) or ``"optimal"``
            (the exact minimum squared error, by dynamic programming; see
            :func:`optimizer.share.cluster.optimal_kmeans_1d`).
        keep_zeros: exact zeros stay exactly zero (sparsity preserving); zero then takes one of
            the k values of each layer (channel) that has zeros.
        filter_fn: ``filter_fn(module, path) -> bool`` called on every module that owns a
            floating-point ``weight``; the default takes every ``nn.Linear`` and
            ``nn.Conv1d/2d/3d``. Returning True for another type raises ``ValueError``.
        ignore: module paths to leave alone (and everything under them).
        seed: seed of the k-means++ sampling (each layer draws from (seed, its path)).
        max_iter: the most Lloyd iterations per layer (it stops once assignments are stable).
        grad_pooling: while fine-tuning, each member of a cluster gets the ``"mean"`` of its
            cluster's gradients (the scale of an ordinary weight's gradient, so the usual
            learning rate works) or their ``"sum"`` (the exact gradient of the centroid, as
            Deep Compression writes it).
        max_points: with ``"optimal"``, a layer (channel) with more distinct values than this
            is solved exactly on the means of ``max_points`` equal-width bins, then refined by
            Lloyd (within ~1e-6 of the optimum in practice).

    Example::

        WeightShareConfig(clusters=16, per_channel=True, method="optimal", ignore=("fc",))
    """

    clusters: int = 16
    per_channel: bool = False
    method: str = "kmeans++"
    keep_zeros: bool = True
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    ignore: tuple[str, ...] = ()
    seed: int = 0
    max_iter: int = 300
    grad_pooling: str = "mean"
    max_points: int = DEFAULT_MAX_POINTS

    def __post_init__(self) -> None:
        api = "WeightShareConfig"
        k = self.clusters
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(
                f"`{api}`: clusters must be an int; expected {MIN_CLUSTERS} <= clusters <= "
                f"{MAX_CLUSTERS}, got {k!r}"
            )
        if not MIN_CLUSTERS <= k <= MAX_CLUSTERS:
            raise ValueError(
                f"`{api}`: clusters is out of range; expected {MIN_CLUSTERS} <= clusters <= "
                f"{MAX_CLUSTERS} (8-bit indices at most), got {k}. 16 gives 4-bit indices"
            )
        self.clusters = int(k)
        for name in ("per_channel", "keep_zeros"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"`{api}`: {name} must be a bool; expected True or False, "
                    f"got {getattr(self, name)!r}"
                )
        if self.method not in METHODS:
            raise ValueError(
                f"`{api}`: unknown method; expected one of {METHODS}, got {self.method!r}"
            )
        if self.grad_pooling not in GRAD_POOLING:
            raise ValueError(
                f"`{api}`: unknown grad_pooling; expected one of {GRAD_POOLING}, "
                f"got {self.grad_pooling!r}"
            )
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise TypeError(
                f"`{api}`: filter_fn must be callable; expected filter_fn(module, path) -> bool, "
                f"got {self.filter_fn!r}"
            )
        if isinstance(self.ignore, str) or not all(isinstance(p, str) for p in self.ignore):
            raise TypeError(
                f"`{api}`: ignore must be a tuple of module paths; expected e.g. "
                f"('classifier',), got {self.ignore!r}"
            )
        self.ignore = tuple(self.ignore)
        self.seed = _int(api, "seed", self.seed, 0)
        self.max_iter = _int(api, "max_iter", self.max_iter, 1)
        self.max_points = _int(api, "max_points", self.max_points, 2)

    @property
    def bits(self) -> int:
        """Index width of the codebook: 2, 4 or 8."""
        return bits_for(self.clusters)


def _int(api: str, name: str, value: object, low: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"`{api}`: {name} must be an int >= {low}, got {value!r}") from None
    if v < low:
        raise ValueError(f"`{api}`: {name} is out of range; expected >= {low}, got {v}")
    return v


class ShareRow(NamedTuple):
    """One row of :attr:`ShareReport.rows`."""

    path: str
    shape: tuple[int, int]  # [N, K] as the kernels multiply it
    clusters: int
    bits: int
    per_channel: bool
    distinct: int  # most distinct values in the layer (per_channel: in any channel)
    zeros: float  # fraction of weights that are exactly zero
    rel_error: float  # ||w_shared - w||^2 / ||w||^2


# --- The [N, K] matrix ----------------------------------------------------------------------------


def kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A Linear or conv weight as the [N, K] matrix the kernels multiply.

    Linear: ``[out, in]``; convolution: output channels by (kernel positions, then input
    channels), i.e. ``weight.permute(0, 2, 3, 1).reshape(O, -1)`` for Conv2d (the NHWC "ohwi"
    order of the native runtime).
    """
    if weight.ndim <= 2:
        return weight.reshape(weight.shape[0], -1)
    return weight.permute(0, *range(2, weight.ndim), 1).reshape(weight.shape[0], -1)


def _layout(module: nn.Module) -> str:
    return {1: "oi", 2: "oi", 3: "ohi", 4: "ohwi", 5: "odhwi"}[module.weight.ndim]


# --- Hooks ----------------------------------------------------------------------------------------


class _Shared:
    """A shared module: its cluster of every weight element, and the hooks that keep it so.

    ``label[e]`` is the cluster of element e of ``weight.reshape(-1)`` (per channel, clusters of
    different channels are different); zeros kept by ``keep_zeros`` form the extra last cluster,
    whose value and gradient are pinned at 0. ``source[e]`` is the element whose value e takes
    when the weights are snapped (the first member of its cluster; ``numel`` = zero).
    """

    def __init__(
        self,
        path: str,
        module: nn.Module,
        label: np.ndarray,
        slots: int,
        config: WeightShareConfig,
    ) -> None:
        self.path, self.module = path, module
        w = module.weight
        self.slots = slots  # clusters + 1 (the zero cluster is slot `slots - 1`)
        label_t = torch.as_tensor(label, dtype=torch.long, device=w.device)
        self.label = label_t
        counts = torch.bincount(label_t, minlength=slots).to(w.dtype)
        self.scale = (1.0 / counts.clamp(min=1)) if config.grad_pooling == "mean" else None
        first = torch.full((slots,), w.numel(), dtype=torch.long, device=w.device)
        order = torch.arange(w.numel(), device=w.device)
        first.scatter_reduce_(0, label_t, order, reduce="amin")  # each cluster's first member
        first[slots - 1] = w.numel()
        self.source = first[label_t]
        self.seen: tuple[int, int] | None = None
        self.handles: list[Any] = []

    def pool(self, grad: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(self.slots, dtype=grad.dtype, device=grad.device)
        sums.index_add_(0, self.label, grad.reshape(-1))
        if self.scale is not None:
            sums = sums * self.scale.to(grad.dtype)
        sums[self.slots - 1] = 0
        return sums[self.label].view_as(grad)

    def snap(self, force: bool = False) -> None:
        w = self.module.weight
        key = (w.data_ptr(), w._version)
        if force or key != self.seen:
            with torch.no_grad():
                flat = torch.cat([w.detach().reshape(-1), w.new_zeros(1)])
                w.copy_(flat[self.source].view_as(w))
            self.seen = (w.data_ptr(), w._version)

    def __call__(self, module: nn.Module, args: Any) -> None:
        self.snap()


# --- The report and controller --------------------------------------------------------------------


class ShareReport:
    """What :func:`share_weights_` did, and the hooks that keep the weights shared.

    ``rows`` has one :class:`ShareRow` per shared module; ``seconds`` is the clustering time.
    While fine-tuning, the hooks pool gradients per cluster; call :meth:`remove` at the end
    (or right away when there is no fine-tuning) to leave plain shared weights.

    Example::

        report = share_weights_(model, WeightShareConfig(clusters=16))
        print(report.summary())
        report.remove()
    """

    def __init__(
        self, model: nn.Module, config: WeightShareConfig, layers: list[_Shared], rows: list
    ) -> None:
        self.model = model
        self.config = config
        self.rows: list[ShareRow] = rows
        self.seconds = 0.0
        self._layers = layers
        self._removed = False

    @property
    def paths(self) -> list[str]:
        """Module paths of the shared modules, in model order."""
        return [row.path for row in self.rows]

    @property
    def removed(self) -> bool:
        """True once :meth:`remove` ran (the hooks are gone)."""
        return self._removed

    def apply_(self) -> None:
        """Snaps every member back to its cluster's value now (the pre-hook does it before each
        forward); useful after an optimizer step when the weights are read without a forward."""
        self._check_live("apply_")
        for layer in self._layers:
            layer.snap(force=True)

    def _check_live(self, api: str) -> None:
        if self._removed:
            raise RuntimeError(
                f"`ShareReport.{api}`: the hooks were removed; share again with share_weights_"
            )

    def distinct(self) -> dict[str, int]:
        """Most distinct weight values per module path (per channel: in any channel), now."""
        out = {}
        for layer in self._layers:
            w = kernel_matrix(layer.module.weight.detach()).cpu().numpy()
            out[layer.path] = _max_distinct(w, self.config.per_channel)
        return out

    def summary(self) -> str:
        """The rows as a plain-text table."""
        width = max([len(r.path) for r in self.rows] + [6])
        lines = [
            f"{'module':<{width}}  {'[N, K]':>12}  {'k':>3}  {'bits':>4}  {'distinct':>8}  "
            f"{'zeros':>6}  rel.err"
        ]
        for r in self.rows:
            shape = f"{r.shape[0]}x{r.shape[1]}"
            lines.append(
                f"{r.path:<{width}}  {shape:>12}  {r.clusters:>3}  {r.bits:>4}  "
                f"{r.distinct:>8}  {r.zeros:>6.3f}  {r.rel_error:.2e}"
            )
        lines.append(f"({len(self.rows)} modules, {self.seconds:.2f} s)")
        return "\n".join(lines)

    def remove(self) -> None:
        """Snaps the weights a last time and removes the hooks; the model keeps plain, shared
        weights (its state dict keys never changed). The record stays."""
        self._check_live("remove")
        for layer in self._layers:
            layer.snap(force=True)
            for handle in layer.handles:
                handle.remove()
            layer.handles.clear()
            layer.module.__dict__.pop(_LIVE, None)
        self._removed = True

    def __repr__(self) -> str:
        state = "removed" if self._removed else "hooks live"
        cfg = self.config
        return (
            f"ShareReport({len(self.rows)} modules, clusters={cfg.clusters}, "
            f"per_channel={cfg.per_channel}, method={cfg.method!r}, {state})"
        )


# --- Clustering one module ------------------------------------------------------------------------


def _check_finite(api: str, path: str, w: torch.Tensor) -> None:
    bad = ~torch.isfinite(w)
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(
            f"`{api}`: `{path}.weight` has a non-finite value {w[idx].item()} at index "
            f"{list(idx)}; expected finite weights. Fix the training run (or reload the "
            "checkpoint) before sharing"
        )


def _cluster_module(
    module: nn.Module, path: str, cfg: WeightShareConfig
) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns (shared weight values [numel], cluster label [numel], slots) for one module."""
    w = module.weight.detach().reshape(module.weight.shape[0], -1).cpu().double().numpy()
    n = w.shape[0]
    zero = (w == 0) if cfg.keep_zeros else np.zeros(w.shape, bool)
    k = cfg.clusters
    seed = [cfg.seed, zlib.crc32(path.encode())]
    kwargs = dict(method=cfg.method, max_iter=cfg.max_iter, seed=seed, max_points=cfg.max_points)
    label = np.empty(w.shape, np.int64)
    values = np.zeros(w.shape)
    if not cfg.per_channel:
        slots = k + 1
        nz = ~zero
        label[zero] = slots - 1
        if nz.any():
            # Repeated values (an already shared or quantized layer) cluster as one weighted
            # point each: the same solution, fewer points.
            uniq, inverse, counts = np.unique(w[nz], return_inverse=True, return_counts=True)
            groups = k - 1 if zero.any() else k
            centres, lab = cluster_rows(
                uniq[None, :], groups, weights=counts[None, :].astype(np.float64), **kwargs
            )
            lab = lab[0][inverse.reshape(-1)]
            label[nz] = lab
            values[nz] = centres[0][lab]
    else:
        slots = n * k + 1
        label[zero] = slots - 1
        has_zero = zero.any(axis=1)
        for flag in (False, True):
            rows = np.flatnonzero(has_zero == flag)
            if rows.size == 0:
                continue
            groups = k - 1 if flag else k
            valid = ~zero[rows]
            centres, lab = cluster_rows(w[rows], groups, valid=valid, **kwargs)
            got = lab >= 0
            label[rows] = np.where(got, rows[:, None] * k + lab, slots - 1)
            values[rows] = np.where(got, np.take_along_axis(centres, np.maximum(lab, 0), 1), 0)
    return values.reshape(-1), label.reshape(-1), slots


def _max_distinct(mat: np.ndarray, per_channel: bool) -> int:
    if not per_channel or mat.shape[0] == 0:
        return int(np.unique(mat).size)
    s = np.sort(mat, axis=1)
    return int(((s[:, 1:] != s[:, :-1]).sum(axis=1) + 1).max()) if s.shape[1] else 0


# --- Selection ------------------------------------------------------------------------------------


def _select(model: nn.Module, cfg: WeightShareConfig, api: str) -> list[tuple[str, nn.Module]]:
    names = {name for name, _ in model.named_modules()}
    for path in cfg.ignore:
        if path not in names:
            close = difflib.get_close_matches(path, sorted(names), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"`{api}`: ignore path {path!r} is not a module of the model; expected a path "
                f"from model.named_modules(), got {path!r}.{hint}"
            )
    chosen: list[tuple[str, nn.Module]] = []
    owners: dict[int, str] = {}
    for path, m in model.named_modules():
        if any(module_under(path, p) for p in cfg.ignore):
            continue
        w = m.__dict__.get("_parameters", {}).get("weight")
        parametrized = hasattr(m, "parametrizations") and "weight" in m.parametrizations
        if w is None and not parametrized:
            continue
        if isinstance(w, nn.parameter.UninitializedParameter):
            if isinstance(m, SUPPORTED) and (cfg.filter_fn is None or cfg.filter_fn(m, path)):
                raise ValueError(
                    f"`{api}`: cannot share `{path}`: its weight is not initialised yet (a "
                    "lazy module); expected a materialised weight. Run one forward pass first"
                )
            continue
        if w is not None and not w.is_floating_point():
            continue
        if cfg.filter_fn is not None:
            take = bool(cfg.filter_fn(m, path))
        else:
            take = isinstance(m, SUPPORTED)
        if not take:
            continue
        if not isinstance(m, SUPPORTED):
            names_ok = ", ".join(t.__name__ for t in SUPPORTED)
            raise ValueError(
                f"`{api}`: cannot share `{path}`: unsupported module type "
                f"{type(m).__name__}; expected one of {names_ok}. Return False for it from "
                "filter_fn (e.g. isinstance(m, (nn.Linear, nn.Conv2d))) or pass it in `ignore`"
            )
        if parametrized:
            raise ValueError(
                f"`{api}`: cannot share `{path}`: its weight is parametrized; expected a plain "
                "weight Parameter. Remove the parametrization or pass the module in `ignore`"
            )
        if "weight_block_mask" in m._buffers:
            raise ValueError(
                f"`{api}`: `{path}` still has block-pruning masks; expected plain weights. Call "
                ".remove() on the BlockSparsifier first (its zeros are then kept)"
            )
        if m.__dict__.get(_LIVE):
            raise ValueError(
                f"`{api}`: `{path}` is already shared with live hooks; expected a module "
                "without them. Call .remove() on the earlier ShareReport first"
            )
        if id(w) in owners:
            raise ValueError(
                f"`{api}`: `{path}` shares its weight with `{owners[id(w)]}`; expected one owner "
                "per weight. Pass one of them in `ignore`"
            )
        owners[id(w)] = path
        chosen.append((path, m))
    if not chosen:
        raise ValueError(
            f"`{api}`: no module to share; expected at least one nn.Linear or nn.Conv1d/2d/3d "
            "that filter_fn accepts and ignore keeps, got none"
        )
    return chosen


# --- Entry point ----------------------------------------------------------------------------------


def share_weights_(model: nn.Module, config: WeightShareConfig | None = None) -> ShareReport:
    """Clusters the weights of ``model``'s Linear and conv layers in place (weight sharing).

    Every selected layer (or, with ``per_channel``, every output channel) ends with at most
    ``config.clusters`` distinct values, zero included; with ``keep_zeros`` exact zeros stay
    zero. The record gets ``weight_sharing[path] = {"clusters": k, "per_channel": bool,
    "bits": 2 | 4 | 8, "method": str, "keep_zeros": bool, "layout": "oi" | "ohwi" | ...}`` and
    a ``share_weights`` entry in ``passes``; :func:`codebook` gives each layer's indices and
    table. The returned report's hooks keep the weights shared while fine-tuning.

    Args:
        model: the model; changed in place.
        config: what to share and how (default: 16 clusters per layer, k-means++).

    Returns:
        The :class:`ShareReport` (rows per module, and ``.remove()``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``config`` not a WeightShareConfig.
        ValueError: a non-finite weight (naming path, index and value), a module type that
            cannot be shared selected by ``filter_fn``, an ``ignore`` path that does not exist,
            a lazy, parametrized, masked or already-shared module, or nothing to share.

    Example::

        report = share_weights_(model, WeightShareConfig(clusters=16, ignore=("classifier",)))
        report.remove()
        get_record(model)["weight_sharing"]["features.0"]   # {"clusters": 16, "bits": 4, ...}
    """
    api = "share_weights_"
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`{api}`: model must be a torch.nn.Module; expected an nn.Module, "
            f"got {type(model).__name__}"
        )
    cfg = WeightShareConfig() if config is None else config
    if not isinstance(cfg, WeightShareConfig):
        raise TypeError(
            f"`{api}`: config must be a WeightShareConfig; expected WeightShareConfig(...), "
            f"got {type(cfg).__name__}"
        )
    t0 = time.perf_counter()
    chosen = _select(model, cfg, api)
    for path, m in chosen:  # check everything before changing anything
        _check_finite(api, path, m.weight.detach())
    results = [(path, m, *_cluster_module(m, path, cfg)) for path, m in chosen]
    layers, rows = [], []
    record = get_record(model)
    sharing = record.setdefault(RECORD_KEY, {})
    for path, m, values, label, slots in results:
        w = m.weight
        old = w.detach().double()
        new = torch.as_tensor(values, device=w.device).reshape(w.shape)
        with torch.no_grad():
            w.copy_(new.to(w.dtype))
        shared = w.detach()
        err = float(((shared.double() - old) ** 2).sum() / (old**2).sum().clamp(min=1e-300))
        mat = kernel_matrix(shared).cpu().numpy()
        layer = _Shared(path, m, label, slots, cfg)
        layer.seen = (w.data_ptr(), w._version)
        layer.handles.append(m.register_forward_pre_hook(layer))
        if w.requires_grad:  # a frozen weight has no gradient to pool
            layer.handles.append(w.register_hook(layer.pool))
        entry = {
            "clusters": cfg.clusters,
            "per_channel": cfg.per_channel,
            "bits": cfg.bits,
            "method": cfg.method,
            "keep_zeros": cfg.keep_zeros,
            "layout": _layout(m),
        }
        m.__dict__[ATTR] = dict(entry)
        m.__dict__[_LIVE] = True
        sharing[path] = entry
        layers.append(layer)
        rows.append(
            ShareRow(
                path,
                tuple(mat.shape),
                cfg.clusters,
                cfg.bits,
                cfg.per_channel,
                _max_distinct(mat, cfg.per_channel),
                float((mat == 0).mean()) if mat.size else 0.0,
                err,
            )
        )
    record["passes"].append(
        {
            "pass": "share_weights",
            "clusters": cfg.clusters,
            "per_channel": cfg.per_channel,
            "method": cfg.method,
            "keep_zeros": cfg.keep_zeros,
            "bits": cfg.bits,
            "modules": [row.path for row in rows],
        }
    )
    report = ShareReport(model, cfg, layers, rows)
    report.seconds = time.perf_counter() - t0
    return report


# --- Codebooks for the kernels --------------------------------------------------------------------


def codebook_of(
    matrix: np.ndarray | torch.Tensor, *, per_channel: bool = False, entries: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and table of a [N, K] matrix with few distinct values (float or int8).

    The table holds the distinct values in ascending order, padded with zeros to ``entries``
    (default: as many as there are values; per channel, the most of any row).

    Returns:
        ``(indices, table)``: uint8 [N, K] and the matrix's dtype, [entries] (one table) or
        [N, entries] (``per_channel``), with ``table[indices[n, k]] == matrix[n, k]``
        (per channel ``table[n, indices[n, k]]``).

    Raises:
        ValueError: not 2-D, non-finite values, or more distinct values than ``entries`` (or
            than 256).

    Example::

        idx, table = codebook_of(w_int8, per_channel=True, entries=16)
        packed = optimizer.kernels.PackedCodebookS8(idx, table, bits=4)
    """
    api = "codebook_of"
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"`{api}`: matrix must be 2-D [N, K]; expected 2 dims, got {m.shape}")
    if m.dtype.kind == "f" and not np.all(np.isfinite(m)):
        raise ValueError(f"`{api}`: matrix has non-finite values; expected finite values")
    n, k = m.shape
    if not per_channel:
        uniq, inverse = np.unique(m, return_inverse=True)
        count = uniq.size
        rank = inverse.reshape(n, k)
    else:
        order = np.argsort(m, axis=1, kind="stable")
        s = np.take_along_axis(m, order, axis=1)
        step = np.concatenate([np.zeros((n, 1), np.int64), (s[:, 1:] != s[:, :-1])], axis=1)
        ranks_sorted = np.cumsum(step, axis=1)
        rank = np.empty((n, k), np.int64)
        np.put_along_axis(rank, order, ranks_sorted, axis=1)
        count = int(ranks_sorted[:, -1].max()) + 1 if k else 0
    limit = MAX_CLUSTERS if entries is None else min(entries, MAX_CLUSTERS)
    if count > limit:
        where = "in a row" if per_channel else "in the matrix"
        raise ValueError(
            f"`{api}`: {count} distinct values {where}; expected at most {limit}. Share the "
            "weights first (share_weights_) or pass a larger `entries`"
        )
    width = count if entries is None else entries
    if not per_channel:
        table = np.zeros(width, m.dtype)
        table[:count] = uniq
    else:
        table = np.zeros((n, width), m.dtype)
        rows = np.repeat(np.arange(n), k)
        table[rows, ranks_sorted.ravel()] = s.ravel()
    return rank.astype(np.uint8), table


def _entry(
    module: nn.Module, clusters: int | None, per_channel: bool | None
) -> tuple[int | None, bool]:
    info = module.__dict__.get(ATTR, {})
    pc = per_channel if per_channel is not None else bool(info.get("per_channel", False))
    k = clusters if clusters is not None else info.get("clusters")
    return k, pc


def codebook(
    module: nn.Module, *, clusters: int | None = None, per_channel: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The shared weight of ``module`` as codebook indices and a float table.

    The K order is that of the matrix the kernels multiply (see :func:`kernel_matrix`: Linear
    ``[out, in]``, Conv2d ``weight.permute(0, 2, 3, 1).reshape(O, -1)``). ``clusters`` and
    ``per_channel`` default to what :func:`share_weights_` used on the module; for a model
    rebuilt by ``optimizer.load`` pass them from ``get_record(model)["weight_sharing"][path]``
    (or use :func:`codebooks`).

    Returns:
        ``(indices, table)``: uint8 [N, K]; float32 [k] or, per channel, [N, k], ascending,
        padded with zeros. The kernels take a table of exactly 2**bits entries: see
        :func:`codebook_s8` or pad with ``np.pad``.

    Example::

        idx, table = codebook(model.fc1)
        w = table[idx]                                      # == model.fc1.weight (Linear)
        packed = optimizer.kernels.PackedCodebookF32(idx, np.pad(table, (0, 16 - table.size)))
    """
    if not isinstance(module, SUPPORTED):
        raise ValueError(
            f"`codebook`: unsupported module type {type(module).__name__}; expected one of "
            f"{', '.join(t.__name__ for t in SUPPORTED)}"
        )
    k, pc = _entry(module, clusters, per_channel)
    mat = kernel_matrix(module.weight.detach()).cpu().float()
    return codebook_of(mat, per_channel=pc, entries=k)


def codebook_s8(
    module: nn.Module,
    scale: float | np.ndarray | torch.Tensor,
    *,
    clusters: int | None = None,
    per_channel: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Indices and int8 table of ``module``'s shared weight under symmetric int8 quantization,
    ready for ``optimizer.kernels.PackedCodebookS8(indices, table, bits=bits)``.

    Each table entry is ``arithmetic.quantize(value / scale, 0)``, so the decoded int8 weight
    equals the reference quantization of the shared float weight element by element. With a
    per-output-channel ``scale`` [N] the table is per channel [N, 2**bits] even when the float
    table is per layer; a scalar scale keeps a per-layer table [2**bits].

    Example::

        scale = w.abs().amax(dim=1) / 127                   # per channel, w = [N, K] matrix
        idx, table, bits = codebook_s8(model.fc1, scale.numpy())
        packed = optimizer.kernels.PackedCodebookS8(idx, table, bits=bits)
    """
    idx, table = codebook(module, clusters=clusters, per_channel=per_channel)
    n = idx.shape[0]
    sc = scale.detach().cpu().numpy() if isinstance(scale, torch.Tensor) else scale
    sc = np.asarray(sc, np.float64)
    if sc.ndim == 1 and sc.size == 1:
        sc = sc.reshape(())
    if sc.ndim not in (0, 1) or (sc.ndim == 1 and sc.shape[0] != n):
        raise ValueError(
            f"`codebook_s8`: scale must be a scalar or one per output channel; expected shape "
            f"() or ({n},), got {sc.shape}"
        )
    if not np.all(np.isfinite(sc)) or np.any(sc <= 0):
        raise ValueError(f"`codebook_s8`: scale must be finite and > 0, got {sc}")
    if sc.ndim == 1 and table.ndim == 1:
        table = np.broadcast_to(table, (n, table.size))
    q = arithmetic.quantize(table, sc[:, None] if sc.ndim == 1 else float(sc), 0)
    bits = bits_for(table.shape[-1])
    pad = (1 << bits) - table.shape[-1]
    q = np.pad(q, [(0, 0)] * (q.ndim - 1) + [(0, pad)])
    return idx, np.ascontiguousarray(q), bits


def codebooks(model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{path: codebook(module)}`` for every module of the record's ``weight_sharing``; works
    on a model rebuilt by ``optimizer.load`` (the record carries clusters and per_channel)."""
    out = {}
    for path, entry in get_record(model).get(RECORD_KEY, {}).items():
        module = model.get_submodule(path)
        out[path] = codebook(
            module, clusters=int(entry["clusters"]), per_channel=bool(entry["per_channel"])
        )
    return out


__all__ = [
    "GRAD_POOLING",
    "RECORD_KEY",
    "SUPPORTED",
    "ShareReport",
    "ShareRow",
    "WeightShareConfig",
    "bits_for",
    "codebook",
    "codebook_of",
    "codebook_s8",
    "codebooks",
    "kernel_matrix",
    "share_weights_",
]
