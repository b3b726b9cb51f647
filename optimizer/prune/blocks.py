"""Block sparsity for the block-sparse kernels: magnitude masks over R x C blocks of each weight.

``prune_blocks_`` zeroes whole ``block = (R, C)`` tiles of the [N, K] weight matrix that the
native kernels multiply (N output channels, K inputs; for a convolution K runs over kh, kw and the
input channels in the order the NHWC runtime lays them out), so that after :meth:`remove` the weight
packs into ``optimizer.kernels.PackedBsrS8`` / ``PackedBsrF32`` with that block and the kernels skip
the zero blocks. During fine-tuning the masks live on the modules as buffers, a forward pre-hook
keeps pruned blocks at exactly zero and a gradient hook keeps their gradients at zero; a schedule
(``optimizer.prune.schedules``) raises the sparsity step by step. Example::

    from optimizer.prune.blocks import BlockPruneConfig, prune_blocks_
    from optimizer.prune.schedules import PolynomialDecay

    sched = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000, frequency=100)
    sparsifier = prune_blocks_(model, BlockPruneConfig(block=(16, 4), sparsity=0.9, schedule=sched))
    for x, y in data:
        loss_fn(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        sparsifier.step()            # next schedule step; masks are recomputed when it says so
    sparsifier.remove()              # zeros made permanent, hooks and masks gone, record written
"""

from __future__ import annotations

import difflib
import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from optimizer._util import module_under
from optimizer.graph.record import get_record

#: Name of the mask buffer on each pruned module (bool, the weight's shape; True = kept).
MASK_BUFFER = "weight_block_mask"
IMPORTANCES = ("l1", "l2")
CONV_LAYOUTS = ("ohwi", "oihw")
#: The block-sparse kernels accept blocks with 1 <= R, C <= 256 (kernels/dispatch/sparse.cc).
MAX_BLOCK = 256
# floor(sparsity * blocks) with slack for 0.7 * 10 == 7.000000000000001 and 0.29 * 100 == 28.99...
_EPS = 1e-6


@dataclass
class BlockPruneConfig:
    """Settings of :func:`prune_blocks_`.

    Args:
        block: (R, C): R rows of the output dimension N by C columns of the input dimension K, as
            ``optimizer.kernels.PackedBsrS8(w, block=(R, C))`` takes it; pick the target's native
            block (``optimizer.kernels.native_bsr_block(path)``) so the sparsity pays off there.
        sparsity: target fraction of blocks that are zero, in [0, 1). With a schedule, the
            schedule's final sparsity must equal it.
        schedule: a callable ``step -> sparsity`` such as
            :class:`optimizer.prune.schedules.PolynomialDecay`; masks are recomputed at the steps
            where ``schedule.should_update(step)`` is true (every step for a plain callable).
            None prunes to ``sparsity`` at once.
        importance: block magnitude, ``"l1"`` (mean |w|) or ``"l2"`` (root mean square). Means
            over the block, so partial blocks at the matrix edges are ranked fairly.
        filter_fn: ``filter_fn(module, path) -> bool`` called on every ``nn.Linear`` and
            ``nn.Conv2d``; the default takes those (convolutions with ``groups == 1``) whose
            matrix holds at least one whole block (N >= R and K >= C).
        ignore: module paths to leave dense (and everything under them), e.g. the classifier.
        conv_layout: the K order of a convolution's matrix: ``"ohwi"`` (the NHWC runtime:
            ``weight.permute(0, 2, 3, 1).reshape(O, kh * kw * I)``) or ``"oihw"``
            (``weight.reshape(O, I * kh * kw)``, NCHW im2col).
        global_ranking: rank blocks over all layers (each layer's scores divided by its mean
            block magnitude) instead of pruning every layer to the target.
        max_layer_sparsity: with ``global_ranking``, no layer is pruned beyond this fraction.
        min_weights: layers with fewer weights stay dense (the default filter only; ``filter_fn``
            decides alone). Small layers, such as a first conv on one input channel or a
            10-class head, save few bytes when pruned and cost the most accuracy.

    Example::

        BlockPruneConfig(block=(8, 4), sparsity=0.8, ignore=("classifier",))
    """

    block: tuple[int, int] = (16, 4)
    sparsity: float = 0.9
    schedule: Callable[[int], float] | None = None
    importance: str = "l1"
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    ignore: tuple[str, ...] = ()
    conv_layout: str = "ohwi"
    global_ranking: bool = False
    max_layer_sparsity: float = 0.98
    min_weights: int = 0

    def __post_init__(self) -> None:
        api = "BlockPruneConfig"
        block = self.block
        try:
            r, c = (operator.index(v) for v in block)
            valid = not any(isinstance(v, bool) for v in block) and 1 <= min(r, c)
            valid = valid and max(r, c) <= MAX_BLOCK
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(
                f"`{api}`: block must be (rows, cols) of ints; expected 1 <= rows, cols <= "
                f"{MAX_BLOCK} (what the block-sparse kernels accept), got {block!r}. Use the "
                "target's native block, e.g. optimizer.kernels.native_bsr_block()"
            )
        self.block = (r, c)
        self.sparsity = _check_fraction(api, "sparsity", self.sparsity)
        self.max_layer_sparsity = _check_fraction(
            api, "max_layer_sparsity", self.max_layer_sparsity
        )
        if self.schedule is not None:
            if not callable(self.schedule):
                raise TypeError(
                    f"`{api}`: schedule must be callable; expected step -> sparsity such as "
                    f"PolynomialDecay, got {self.schedule!r}"
                )
            final = getattr(self.schedule, "final_sparsity", None)
            if isinstance(final, numbers.Real) and abs(final - self.sparsity) > 1e-12:
                raise ValueError(
                    f"`{api}`: the schedule ends at sparsity {final} but sparsity is "
                    f"{self.sparsity}; expected them equal. Pass sparsity={final} (the schedule "
                    "sets the steps, `sparsity` the final target)"
                )
        if self.importance not in IMPORTANCES:
            raise ValueError(
                f"`{api}`: unknown importance; expected one of {IMPORTANCES}, "
                f"got {self.importance!r}"
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
        if isinstance(self.min_weights, bool) or not isinstance(self.min_weights, int):
            raise TypeError(f"`{api}`: min_weights must be an int, got {self.min_weights!r}")
        if self.min_weights < 0:
            raise ValueError(f"`{api}`: min_weights must be >= 0, got {self.min_weights}")
        if self.conv_layout not in CONV_LAYOUTS:
            raise ValueError(
                f"`{api}`: unknown conv_layout; expected one of {CONV_LAYOUTS}, "
                f"got {self.conv_layout!r}"
            )
        if self.global_ranking and self.sparsity > self.max_layer_sparsity:
            raise ValueError(
                f"`{api}`: sparsity {self.sparsity} is above max_layer_sparsity; expected "
                f"sparsity <= {self.max_layer_sparsity} with global_ranking, got "
                f"{self.sparsity}. Raise max_layer_sparsity"
            )


def _check_fraction(api: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{api}`: {name} must be a number; expected 0 <= {name} < 1, got {value!r}"
        )
    if not 0.0 <= value < 1.0:  # also refuses NaN
        hint = " A sparsity of 1 would remove every block" if value >= 1.0 else ""
        raise ValueError(
            f"`{api}`: {name} is out of range; expected 0 <= {name} < 1, got {value}.{hint}"
        )
    return float(value)


class BlockSparsityRow(NamedTuple):
    """One row of :meth:`BlockSparsifier.report`."""

    path: str
    shape: tuple[int, int]  # [N, K] as the kernels see it
    block: tuple[int, int]
    sparsity: float  # fraction of blocks that are all zero
    nonzero_blocks: int
    blocks: int


# --- The [N, K] matrix of a weight and its blocks -------------------------------------------------


def _layout(module: nn.Module, conv_layout: str) -> str:
    return "oi" if isinstance(module, nn.Linear) else conv_layout


def weight_matrix(module: nn.Module, conv_layout: str = "ohwi") -> torch.Tensor:
    """The weight of a Linear or Conv2d as the [N, K] matrix the kernels multiply (a view or copy).

    For a convolution, ``conv_layout`` orders K: ``"ohwi"`` (kh, kw, then input channels, as the
    NHWC runtime reads its input) or ``"oihw"`` (input channels, then kh, kw).

    Example::

        w = weight_matrix(model.conv1).detach().numpy()
        packed = optimizer.kernels.PackedBsrF32(w, block=(16, 4))
    """
    return _to_matrix(module.weight, _layout(module, conv_layout))


def _to_matrix(w: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "oi":
        return w
    if layout == "ohwi":
        return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    return w.reshape(w.shape[0], -1)


def _from_matrix(m: torch.Tensor, shape: torch.Size, layout: str) -> torch.Tensor:
    if layout == "oi":
        return m
    if layout == "ohwi":
        o, i, kh, kw = shape
        return m.reshape(o, kh, kw, i).permute(0, 3, 1, 2).contiguous()
    return m.reshape(shape)


def _grid(n: int, k: int, block: tuple[int, int]) -> tuple[int, int]:
    return -(-n // block[0]), -(-k // block[1])


def _block_sums(values: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Sum over each R x C block of an [N, K] matrix (edge blocks partial) -> [N/R, K/C]."""
    r, c = block
    n, k = values.shape
    br, bc = _grid(n, k, block)
    if n % r or k % c:
        values = F.pad(values, (0, bc * c - k, 0, br * r - n))
    return values.reshape(br, r, bc, c).sum(dim=(1, 3))


def _block_scores(mat: torch.Tensor, block: tuple[int, int], importance: str) -> torch.Tensor:
    # Means, not sums: a partial edge block must not look small just for having fewer values.
    mat = mat.detach().float()
    r, c = block
    n, k = mat.shape
    br, bc = _grid(n, k, block)
    rows = (n - torch.arange(br) * r).clamp(max=r)
    cols = (k - torch.arange(bc) * c).clamp(max=c)
    counts = (rows[:, None] * cols[None, :]).float()
    if importance == "l1":
        return _block_sums(mat.abs(), block) / counts
    return (_block_sums(mat * mat, block) / counts).sqrt()


def _expand(block_keep: torch.Tensor, n: int, k: int, block: tuple[int, int]) -> torch.Tensor:
    r, c = block
    return block_keep.repeat_interleave(r, 0).repeat_interleave(c, 1)[:n, :k]


def _zero_blocks(mat: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Bool [N/R, K/C]: True where every value of the block is zero."""
    return _block_sums((mat.detach() != 0).to(torch.int32), block) == 0


# --- Hooks ----------------------------------------------------------------------------------------


class _ApplyMask:
    """Forward pre-hook: zeroes the pruned blocks of the weight in place before the forward.

    It writes only when the weight changed since it last wrote (an optimizer step, a load): a
    write per forward would cost as much as the layer itself at batch 1, and an in-place write
    between two forwards of one backward would invalidate the tensors autograd saved.
    """

    def __init__(self) -> None:
        self.seen: tuple[int, int] | None = None

    def apply(self, module: nn.Module, force: bool = False) -> None:
        w = module.weight
        key = (w.data_ptr(), w._version)
        if force or key != self.seen:
            with torch.no_grad():
                # masked_fill, not a product with the mask: 0 * NaN would stay NaN.
                w.masked_fill_(~getattr(module, MASK_BUFFER), 0)
            self.seen = (w.data_ptr(), w._version)

    def __call__(self, module: nn.Module, args: Any) -> None:
        self.apply(module)


class _MaskGrad:
    """Gradient hook: pruned weights get zero gradient, so no optimizer moves them."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(~getattr(self.module, MASK_BUFFER), 0)


class _Layer:
    """A pruned module and its handles."""

    def __init__(self, path: str, module: nn.Module, layout: str, block: tuple[int, int]):
        self.path, self.module, self.layout = path, module, layout
        self.n, self.k = _to_matrix(module.weight, layout).shape
        self.grid = _grid(self.n, self.k, block)
        self.blocks = self.grid[0] * self.grid[1]
        self.hook = _ApplyMask()
        self.handles: list[Any] = []


# --- The sparsifier -------------------------------------------------------------------------------


class BlockSparsifier:
    """Holds the block masks of a model while it fine-tunes; made by :func:`prune_blocks_`.

    ``step()`` once per training step; ``remove()`` at the end. Masks only ever gain zeros
    (a pruned block never comes back) and change only at the schedule's update steps.

    Example::

        sparsifier = prune_blocks_(model, BlockPruneConfig(sparsity=0.8))
        sparsifier.sparsity()     # {"fc1": 0.8, "fc2": 0.8}
        print(sparsifier.summary())
        sparsifier.remove()
    """

    def __init__(self, model: nn.Module, config: BlockPruneConfig, layers: list[_Layer]):
        self.model = model
        self.config = config
        self.step_count = 0
        self.target = 0.0  # the sparsity of the last mask update
        self._layers = layers
        self._removed = False
        for layer in layers:
            m = layer.module
            mask = torch.ones(m.weight.shape, dtype=torch.bool, device=m.weight.device)
            m.register_buffer(MASK_BUFFER, mask)
            layer.handles.append(m.register_forward_pre_hook(layer.hook))
            if m.weight.requires_grad:  # a frozen weight has no gradient to mask
                layer.handles.append(m.weight.register_hook(_MaskGrad(m)))
        try:
            self._maybe_update()
        except Exception:
            self._detach()  # a bad schedule value: leave the model as it was
            raise
        self.apply_masks_()

    @property
    def paths(self) -> list[str]:
        """Module paths of the pruned modules, in model order."""
        return [layer.path for layer in self._layers]

    def _check_live(self, api: str) -> None:
        if self._removed:
            raise RuntimeError(
                f"`BlockSparsifier.{api}`: the masks were removed; prune again with prune_blocks_"
            )

    # -- schedule --------------------------------------------------------------------------------

    def _maybe_update(self) -> None:
        schedule, step = self.config.schedule, self.step_count
        if schedule is None:
            if step == 0:
                self._update(self.config.sparsity)
            return
        should = getattr(schedule, "should_update", None)
        if should is not None and not should(step):
            return
        value = schedule(step)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            api = "BlockSparsifier.step" if step else "prune_blocks_"
            raise ValueError(
                f"`{api}`: schedule({step}) returned {value!r}; expected a "
                f"sparsity 0 <= s < 1. Check the schedule {schedule!r}"
            )
        self._update(float(value))

    def step(self) -> None:
        """Advances the schedule by one step, recomputes the masks when it says so, and zeroes
        the pruned blocks (so weights are exact zeros after every ``optimizer.step()``)."""
        self._check_live("step")
        self.step_count += 1
        self._maybe_update()
        self.apply_masks_()

    def apply_masks_(self) -> None:
        """Zeroes the pruned blocks of every weight now (the pre-hook does it before forwards)."""
        self._check_live("apply_masks_")
        for layer in self._layers:
            layer.hook.apply(layer.module, force=True)

    # -- masks -----------------------------------------------------------------------------------

    def _keep(self, layer: _Layer) -> torch.Tensor:
        """Bool [N/R, K/C] block mask (True = kept), read from the module's buffer."""
        r, c = self.config.block
        mat = _to_matrix(getattr(layer.module, MASK_BUFFER), layer.layout)
        return mat[::r, ::c].cpu()

    def _set_keep(self, layer: _Layer, keep: torch.Tensor) -> None:
        m = layer.module
        full = _from_matrix(
            _expand(keep, layer.n, layer.k, self.config.block), m.weight.shape, layer.layout
        )
        getattr(m, MASK_BUFFER).copy_(full)

    def _update(self, target: float) -> None:
        cfg = self.config
        keeps = [self._keep(layer) for layer in self._layers]
        scores = []
        for layer, keep in zip(self._layers, keeps):
            mat = _to_matrix(layer.module.weight, layer.layout).detach().cpu()
            s = _block_scores(mat, cfg.block, cfg.importance).flatten()
            scores.append(s.masked_fill(~keep.flatten(), -math.inf))  # pruned ones go first
        if cfg.global_ranking:
            prune = self._global_selection(target, keeps, scores)
        else:
            prune = []
            for layer, s in zip(self._layers, scores):
                count = min(math.floor(target * layer.blocks + _EPS), layer.blocks - 1)
                chosen = torch.zeros(layer.blocks, dtype=torch.bool)
                chosen[torch.argsort(s, stable=True)[: max(count, 0)]] = True
                prune.append(chosen)
        for layer, keep, chosen in zip(self._layers, keeps, prune):
            new_keep = keep & ~chosen.reshape(layer.grid)  # monotone: pruned stays pruned
            if not torch.equal(new_keep, keep):
                self._set_keep(layer, new_keep)
        self.target = max(self.target, target)

    def _global_selection(
        self, target: float, keeps: list[torch.Tensor], scores: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        cap_fraction = self.config.max_layer_sparsity
        normalised, eligible = [], []
        for layer, keep, s in zip(self._layers, keeps, scores):
            alive = s[keep.flatten()]
            mean = alive.mean() if alive.numel() else torch.tensor(0.0, dtype=s.dtype)
            normalised.append(s / mean if mean > 0 else s.clone())
            # The capped greedy (take blocks in ascending global order, skipping a layer once it
            # reaches its cap) takes, within a layer, exactly the blocks of lowest in-layer rank.
            cap = min(math.floor(cap_fraction * layer.blocks + _EPS), layer.blocks - 1)
            rank = torch.empty(layer.blocks, dtype=torch.long)
            rank[torch.argsort(s, stable=True)] = torch.arange(layer.blocks)
            eligible.append(rank < cap)
        flat = torch.cat(normalised)
        ok = torch.cat(eligible)
        total = math.floor(target * flat.numel() + _EPS)
        candidates = torch.nonzero(ok).flatten()
        order = candidates[torch.argsort(flat[candidates], stable=True)][:total]
        chosen = torch.zeros(flat.numel(), dtype=torch.bool)
        chosen[order] = True
        return list(torch.split(chosen, [layer.blocks for layer in self._layers]))

    # -- reports ---------------------------------------------------------------------------------

    def _effective(self, layer: _Layer) -> torch.Tensor:
        w = layer.module.weight.detach()
        mask = getattr(layer.module, MASK_BUFFER, None)
        if mask is not None:
            w = w.masked_fill(~mask, 0)
        return _to_matrix(w, layer.layout)

    def report(self) -> list[BlockSparsityRow]:
        """One row per pruned module: path, [N, K], block, fraction of zero blocks, counts.

        Measured on the weights (as the next forward sees them), so it also holds after
        :meth:`remove`.
        """
        rows = []
        for layer in self._layers:
            zero = int(_zero_blocks(self._effective(layer), self.config.block).sum())
            rows.append(
                BlockSparsityRow(
                    layer.path,
                    (layer.n, layer.k),
                    self.config.block,
                    zero / layer.blocks,
                    layer.blocks - zero,
                    layer.blocks,
                )
            )
        return rows

    def sparsity(self) -> dict[str, float]:
        """Actual fraction of all-zero blocks per module path."""
        return {row.path: row.sparsity for row in self.report()}

    def summary(self) -> str:
        """The report as a plain-text table, with the total over all pruned modules."""
        rows = self.report()
        width = max([len(r.path) for r in rows] + [6])
        lines = [f"{'module':<{width}}  {'[N, K]':>12}  {'block':>7}  {'sparsity':>8}  nnz/blocks"]
        for r in rows:
            shape = f"{r.shape[0]}x{r.shape[1]}"
            block = f"{r.block[0]}x{r.block[1]}"
            lines.append(
                f"{r.path:<{width}}  {shape:>12}  {block:>7}  {r.sparsity:>8.3f}  "
                f"{r.nonzero_blocks}/{r.blocks}"
            )
        nnz = sum(r.nonzero_blocks for r in rows)
        blocks = sum(r.blocks for r in rows)
        total = 1 - nnz / blocks if blocks else 0.0
        lines.append(f"{'total':<{width}}  {'':>12}  {'':>7}  {total:>8.3f}  {nnz}/{blocks}")
        return "\n".join(lines)

    # -- checkpointing and the end ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The schedule position (the masks themselves are buffers in the model's state dict)."""
        return {"step": self.step_count, "target": self.target}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the schedule position saved by :meth:`state_dict`."""
        self.step_count = int(state["step"])
        self.target = float(state["target"])

    def _detach(self) -> None:
        for layer in self._layers:
            for handle in layer.handles:
                handle.remove()
            layer.handles.clear()
            layer.module._buffers.pop(MASK_BUFFER, None)

    def remove(self) -> None:
        """Makes the zeros permanent, removes hooks and mask buffers, and writes the record.

        The record of the root module gets ``block_sparsity[path] = {"block": [R, C],
        "sparsity": s, "layout": "oi" | "ohwi" | "oihw"}`` per module and a ``prune_blocks``
        entry in ``passes``. The model's state dict keys are then those it had before pruning.
        """
        self._check_live("remove")
        self.apply_masks_()
        rows = {row.path: row for row in self.report()}
        record = get_record(self.model)
        self._detach()
        for layer in self._layers:
            record["block_sparsity"][layer.path] = {
                "block": list(self.config.block),
                "sparsity": rows[layer.path].sparsity,
                "layout": layer.layout,
            }
        cfg = self.config
        schedule = cfg.schedule
        if schedule is None:
            schedule_desc: Any = None
        elif hasattr(schedule, "get_config"):
            schedule_desc = schedule.get_config()
        else:
            schedule_desc = getattr(schedule, "__name__", type(schedule).__name__)
        record["passes"].append(
            {
                "pass": "prune_blocks",
                "block": list(cfg.block),
                "sparsity": cfg.sparsity,
                "importance": cfg.importance,
                "global_ranking": cfg.global_ranking,
                "conv_layout": cfg.conv_layout,
                "schedule": schedule_desc,
                "steps": self.step_count,
                "modules": self.paths,
            }
        )
        self._removed = True

    def __repr__(self) -> str:
        state = "removed" if self._removed else f"step={self.step_count}, target={self.target:g}"
        return f"BlockSparsifier({len(self._layers)} modules, block={self.config.block}, {state})"


# --- Entry point ----------------------------------------------------------------------------------


def _select(model: nn.Module, cfg: BlockPruneConfig) -> list[_Layer]:
    api = "prune_blocks_"
    names = {name for name, _ in model.named_modules()}
    for path in cfg.ignore:
        if path not in names:
            close = difflib.get_close_matches(path, sorted(names), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"`{api}`: ignore path {path!r} is not a module of the model; expected a path "
                f"from model.named_modules(), got {path!r}.{hint}"
            )
    r, c = cfg.block
    layers: list[_Layer] = []
    owners: dict[int, str] = {}
    for path, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        if any(module_under(path, p) for p in cfg.ignore):
            continue
        w = getattr(m, "weight", None)
        if isinstance(w, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"`{api}`: cannot prune `{path}`: its weight is not initialised yet (a lazy "
                "module); expected a materialised weight. Run one forward pass first"
            )
        if not isinstance(w, torch.Tensor) or not w.is_floating_point():
            continue
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            if cfg.filter_fn is not None and cfg.filter_fn(m, path):
                raise ValueError(
                    f"`{api}`: cannot prune `{path}`: grouped conv with {m.groups} groups; "
                    f"expected groups == 1 (the block-sparse kernels multiply one [N, K] matrix). "
                    f"Pass it in `ignore` or leave it out of filter_fn"
                )
            continue
        n, k = _to_matrix(w, _layout(m, cfg.conv_layout)).shape
        if cfg.filter_fn is not None:
            chosen = cfg.filter_fn(m, path)
        else:
            chosen = n >= r and k >= c and n * k >= cfg.min_weights
        if not chosen:
            continue
        if hasattr(m, "parametrizations") and "weight" in m.parametrizations:
            raise ValueError(
                f"`{api}`: cannot prune `{path}`: its weight is parametrized; expected a plain "
                "weight Parameter. Remove the parametrization or pass the module in `ignore`"
            )
        if getattr(m, MASK_BUFFER, None) is not None:
            raise ValueError(
                f"`{api}`: `{path}` already has block masks; expected a module without them. "
                "Call .remove() on the earlier BlockSparsifier first"
            )
        if id(w) in owners:
            raise ValueError(
                f"`{api}`: `{path}` shares its weight with `{owners[id(w)]}`; expected one owner "
                "per weight (their masks would fight). Pass one of them in `ignore`"
            )
        owners[id(w)] = path
        layers.append(_Layer(path, m, _layout(m, cfg.conv_layout), cfg.block))
    if not layers:
        raise ValueError(
            f"`{api}`: no module to prune; expected at least one nn.Linear or nn.Conv2d "
            f"(groups=1) with N >= {r}, K >= {c} and N * K >= min_weights ({cfg.min_weights}) "
            f"that filter_fn accepts and ignore keeps, got none. Use a smaller block or check "
            f"filter_fn / ignore / min_weights"
        )
    return layers


def prune_blocks_(model: nn.Module, config: BlockPruneConfig | None = None) -> BlockSparsifier:
    """Block-prunes the Linear and Conv2d weights of ``model`` in place; returns the sparsifier.

    Without a schedule the masks reach ``config.sparsity`` at once; with one they follow it as
    :meth:`BlockSparsifier.step` is called. Until :meth:`BlockSparsifier.remove`, the modules
    carry a ``weight_block_mask`` buffer and two hooks.

    Args:
        model: the model; changed in place.
        config: what to prune and how (defaults: 16x4 blocks, 90 % sparsity, one-shot).

    Returns:
        The :class:`BlockSparsifier` that holds the masks.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: an ``ignore`` path that does not exist, a selected module that cannot be
            pruned (grouped conv, lazy, parametrized, already masked, shared weight), or no
            module to prune.

    Example::

        sparsifier = prune_blocks_(model, BlockPruneConfig(block=(16, 4), sparsity=0.9))
        sparsifier.remove()
        get_record(model)["block_sparsity"]   # {"fc1": {"block": [16, 4], ...}, ...}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`prune_blocks_`: model must be a torch.nn.Module; expected an nn.Module, "
            f"got {type(model).__name__}"
        )
    config = BlockPruneConfig() if config is None else config
    if not isinstance(config, BlockPruneConfig):
        raise TypeError(
            f"`prune_blocks_`: config must be a BlockPruneConfig; expected BlockPruneConfig(...), "
            f"got {type(config).__name__}"
        )
    return BlockSparsifier(model, config, _select(model, config))


__all__ = [
    "BlockPruneConfig",
    "BlockSparsifier",
    "BlockSparsityRow",
    "prune_blocks_",
    "weight_matrix",
]
