"""Knowledge distillation: softened-logit KL, feature losses on named layers, block-wise training.

One training loop serves :func:`distill_`, :func:`fine_tune_` (hard labels only, the baseline) and
:func:`distill_blocks_`, so that comparisons between them differ in the loss and nothing else: same
optimizer, schedule, epoch budget, data order and seeding.

Under ``torchrun`` (``WORLD_SIZE > 1``) the loop initialises a gloo process group when none exists
(kept until the process exits), trains through :class:`~torch.nn.parallel.DistributedDataParallel`
and shards the batches by rank (round-robin, unless the loader already uses a
``DistributedSampler``), so a script written for one process runs unchanged on several.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import math
import os
import random
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from optimizer.graph.record import get_record

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = (None, "cosine")


@dataclass
class DistillConfig:
    """Settings of :func:`distill_`, :func:`fine_tune_` and :func:`distill_blocks_`.

    Args:
        epochs: passes over ``data``.
        lr: learning rate (peak of the cosine schedule).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay given to the optimizer.
        lr_schedule: ``"cosine"`` (decay to 0 over the whole run, stepped per batch when
            ``len(data)`` is known, else per epoch) or ``None`` (constant).
        temperature: softmax temperature ``T`` of the logit KL; the KL is scaled by ``T**2``.
        alpha: weight of the logit KL; the hard-label loss gets ``1 - alpha``.
        alpha_schedule: ``None`` (constant ``alpha``) or ``"cosine"``: the KL weight decays from
            ``alpha`` to 0 over the run, so the student first follows the teacher and ends on the
            labels (a student can then overtake a teacher weaker than itself). Needs ``len(data)``.
        features: ``(student_path, teacher_path)`` pairs of module names whose outputs are matched
            by MSE, through a learned adapter where the widths differ.
        feature_weight: weight of the summed feature losses.
        blockwise: :func:`distill_` trains each of ``blocks`` to reproduce its teacher block
            instead of the end-to-end loss (see :func:`distill_blocks_`).
        blocks: ``(student_path, teacher_path)`` pairs for block-wise distillation.
        seed: seeds ``torch``, ``random`` and ``numpy`` at the start, so a run is repeatable.
        progress: tqdm bars on stderr (rank 0 only).
        max_steps_per_epoch: cap on the batches per epoch (per process).
        mixup: when > 0, each batch is replaced by a mixup of itself and a shuffled copy
            (weight ~ Beta(mixup, mixup)). Distillation then matches the teacher on inputs the
            data set does not contain ("function matching"), where its soft outputs carry the
            most information; fine-tuning gets the same inputs with mixed hard labels.
        hard_loss: ``fn(student_logits, targets) -> loss``; default cross-entropy.
        augment: ``fn(inputs) -> inputs`` applied to every training batch (before ``mixup``);
            student and teacher see the same augmented inputs ("consistent teaching"), e.g.
            ``optimizer.examples.digits.shift_images``. Draw randomness from torch's generator so
            ``seed`` makes runs repeatable.
        teacher_views: ``fn(inputs) -> [view, ...]``: the teacher's logits are averaged over
            these views of each (augmented, mixed) batch, e.g. the nine one-pixel shifts of
            ``optimizer.examples.digits.shift_views``. This is test-time augmentation of the
            teacher: a stronger, smoother target at the cost of one teacher pass per view, the
            student's cost unchanged. Averaging logits is averaging log-probabilities, so the
            target is the views' normalised geometric mean at any ``temperature``. Feature
            targets come from the first view (make it the batch itself). :func:`distill_` only.

    Example:
        >>> cfg = DistillConfig(epochs=5, temperature=4.0, alpha=0.9)
        >>> cfg.optimizer
        'adam'
    """

    epochs: int = 5
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str | None = "cosine"
    temperature: float = 4.0
    alpha: float = 0.9
    alpha_schedule: str | None = None
    features: list[tuple[str, str]] = ()
    feature_weight: float = 1.0
    blockwise: bool = False
    blocks: list[tuple[str, str]] = ()
    seed: int = 0
    progress: bool = True
    max_steps_per_epoch: int | None = None
    hard_loss: Callable | None = None
    mixup: float = 0.0
    augment: Callable | None = None
    teacher_views: Callable | None = None

    def __post_init__(self) -> None:
        api = "DistillConfig"
        if self.augment is not None and not callable(self.augment):
            raise TypeError(
                f"{api}: augment must be a callable fn(inputs) -> inputs or None; got "
                f"{type(self.augment).__name__}"
            )
        if self.teacher_views is not None and not callable(self.teacher_views):
            raise TypeError(
                f"{api}: teacher_views must be a callable fn(inputs) -> [view, ...] or None; got "
                f"{type(self.teacher_views).__name__}"
            )
        if self.teacher_views is not None and self.blockwise:
            raise ValueError(
                f"{api}: teacher_views averages the teacher's logits, which blockwise=True does "
                "not use; expected teacher_views=None with blockwise=True"
            )
        _check_int(api, "epochs", self.epochs, 0)
        _check_int(api, "seed", self.seed, 0)
        if not (isinstance(self.mixup, (int, float)) and self.mixup >= 0):
            raise ValueError(
                f"DistillConfig: mixup must be >= 0 (0 = off), got {self.mixup!r}. It is the "
                "Beta(a, a) parameter of the mixing weight"
            )
        if self.max_steps_per_epoch is not None:
            _check_int(api, "max_steps_per_epoch", self.max_steps_per_epoch, 1)
        if not _is_real(self.lr) or not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(
                f"{api}: lr must be a positive number; expected lr > 0, got {self.lr!r}"
            )
        if not _is_real(self.weight_decay) or not 0 <= self.weight_decay < math.inf:
            raise ValueError(
                f"{api}: weight_decay must be finite and non-negative; expected weight_decay >= 0,"
                f" got {self.weight_decay!r}"
            )
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"{api}: unknown optimizer; expected one of {_OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.lr_schedule not in _SCHEDULES:
            raise ValueError(
                f"{api}: unknown lr_schedule; expected one of {_SCHEDULES}, "
                f"got {self.lr_schedule!r}"
            )
        t = self.temperature
        if not _is_real(t) or not t > 0 or not math.isfinite(t):
            raise ValueError(
                f"{api}: temperature must be positive; expected temperature > 0, got {t!r}. "
                "Values of 1 to 8 are usual (4 is Hinton's)"
            )
        if self.alpha_schedule not in (None, "cosine"):
            raise ValueError(
                f"{api}: unknown alpha_schedule; expected None or 'cosine', got "
                f"{self.alpha_schedule!r}"
            )
        if not _is_real(self.alpha) or not 0 <= self.alpha <= 1:
            raise ValueError(
                f"{api}: alpha weighs the logit KL against the hard-label loss; expected "
                f"0 <= alpha <= 1, got {self.alpha!r}"
            )
        fw = self.feature_weight
        if not _is_real(fw) or not 0 <= fw < math.inf:
            raise ValueError(
                f"{api}: feature_weight must be finite and non-negative; expected "
                f"feature_weight >= 0, got {fw!r}"
            )
        if self.hard_loss is not None and not callable(self.hard_loss):
            raise TypeError(
                f"{api}: hard_loss must be callable as fn(logits, targets); got "
                f"{type(self.hard_loss).__name__}"
            )
        self.features = _check_pairs(api, "features", self.features)
        self.blocks = _check_pairs(api, "blocks", self.blocks)
        if self.blockwise and not self.blocks:
            raise ValueError(
                f"{api}: blockwise=True needs blocks; expected at least one (student_path, "
                "teacher_path) pair, got blocks=()"
            )
        if self.blockwise and self.features:
            raise ValueError(
                f"{api}: blockwise=True trains blocks only, so features would be ignored; expected "
                f"features=(), got {list(self.features)}. Run an end-to-end distill_ afterwards "
                "for feature losses"
            )


@dataclass
class DistillResult:
    """What a training run did.

    Attributes:
        epoch_losses: mean total loss of each epoch (over all processes; in block-wise mode the
            mean over blocks of each block's MSE).
        steps: optimizer steps taken by this process (summed over blocks in block-wise mode).
        components: per-epoch means of each loss term that was used: ``"hard"``, ``"kd"``
            (the temperature-scaled KL, before ``alpha``), ``"feature"`` (before
            ``feature_weight``).
        block_losses: block-wise mode: per-epoch mean MSE of each student block, by path.
        adapters: the trained adapters (feature adapters by student path; block adapters as
            ``"<path>:in"`` / ``"<path>:out"``). They are not part of the student; kept here only
            for inspection.
    """

    epoch_losses: list[float]
    steps: int
    components: dict[str, list[float]] = field(default_factory=dict)
    block_losses: dict[str, list[float]] = field(default_factory=dict)
    adapters: dict[str, nn.Module] = field(default_factory=dict, repr=False)


def soft_kl_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """Hinton's distillation loss ``T**2 * KL(softmax(t / T) || softmax(s / T))``.

    The classes are on dim 1 (as for ``F.cross_entropy``); any further dims (pixels, tokens) are
    averaged like the batch. The ``T**2`` factor keeps the gradient's size independent of ``T``.

    Example:
        >>> s, t = torch.zeros(2, 3), torch.zeros(2, 3)
        >>> float(soft_kl_loss(s, t, temperature=2.0))
        0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "soft_kl_loss: student and teacher logits differ in shape; expected equal shapes, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    s, t = student_logits, teacher_logits.to(student_logits.dtype)
    if s.dim() == 1:
        s, t = s.unsqueeze(0), t.unsqueeze(0)
    elif s.dim() > 2:
        s = s.movedim(1, -1).reshape(-1, s.shape[1])
        t = t.movedim(1, -1).reshape(-1, t.shape[1])
    log_p_s = F.log_softmax(s / temperature, dim=-1)
    log_p_t = F.log_softmax(t / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (temperature * temperature)


def distill_(
    student: nn.Module,
    teacher: nn.Module,
    data: Iterable,
    config: DistillConfig | None = None,
) -> DistillResult:
    """Trains ``student`` in place to imitate ``teacher`` on ``data``.

    Loss per batch: ``alpha * soft_kl_loss(s, t, T) + (1 - alpha) * hard_loss(s, y)
    + feature_weight * sum(MSE(adapter(student_feat), teacher_feat))``. The teacher runs in eval
    mode under ``torch.no_grad`` and is not changed; its and the student's train/eval modes are
    restored at the end. Feature adapters (1x1 ``Conv2d`` for ``[N, C, H, W]``, ``Linear`` over
    the last dim otherwise; identity where widths match) train with the student and are not added
    to it. With ``config.blockwise`` this is :func:`distill_blocks_`.

    Under ``torchrun`` the same call trains with DistributedDataParallel (gloo, CPU; a process
    group the caller made, NCCL included, is used as it is). Every process must iterate ``data``
    in the same order (the seed makes a shuffling DataLoader agree); the batches are dealt
    round-robin by rank and an incomplete last round is dropped, unless the loader has a
    ``DistributedSampler``, which already shards. Rank 0 alone shows progress bars, and all ranks
    end with the same weights.

    Args:
        student: the model to train (e.g. a pruned copy of the teacher).
        teacher: the reference model.
        data: re-iterable of ``(inputs, targets)`` batches (a DataLoader or a list); ``inputs`` is a
            tensor, a tuple of positional inputs or a dict of keyword inputs. ``targets`` may be
            ``None`` when ``alpha == 1``.
        config: see :class:`DistillConfig`.

    Returns:
        :class:`DistillResult` with the per-epoch losses.

    Example:
        >>> teacher = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        >>> student = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> data = [(torch.randn(16, 8), torch.randint(0, 3, (16,))) for _ in range(4)]
        >>> cfg = DistillConfig(epochs=2, features=[("0", "0")], progress=False)
        >>> len(distill_(student, teacher, data, cfg).epoch_losses)
        2
    """
    config = DistillConfig() if config is None else config
    _check_models("distill_", student, teacher)
    if config.blockwise:
        return distill_blocks_(student, teacher, data, config)
    return _train_end_to_end("distill_", student, teacher, data, config)


def fine_tune_(
    model: nn.Module, data: Iterable, config: DistillConfig | None = None
) -> DistillResult:
    """Trains ``model`` in place on the hard labels only: the baseline for :func:`distill_`.

    The loop, optimizer, schedule, seeding and epoch budget are those of :func:`distill_`
    (``alpha``, ``temperature``, ``features``, ``blocks`` and ``teacher_views`` are ignored), so
    with the same seed ``distill_(..., alpha=0)`` gives bit-identical weights.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 3))
        >>> data = [(torch.randn(16, 8), torch.randint(0, 3, (16,)))]
        >>> fine_tune_(model, data, DistillConfig(epochs=1, progress=False)).steps
        1
    """
    config = DistillConfig() if config is None else config
    if not isinstance(model, nn.Module):
        raise TypeError(f"fine_tune_: model must be a torch.nn.Module, got {type(model).__name__}")
    cfg = replace(config, alpha=0.0, features=(), blockwise=False, blocks=(), teacher_views=None)
    return _train_end_to_end("fine_tune_", model, None, data, cfg)


def distill_blocks_(
    student: nn.Module,
    teacher: nn.Module,
    data: Iterable,
    config: DistillConfig | None = None,
    blocks: Sequence[tuple[str, str]] | None = None,
    parallel: bool = False,
) -> DistillResult:
    """Block-wise distillation: each student block learns to reproduce its teacher block.

    For every ``(student_path, teacher_path)`` pair the teacher runs on each batch (stopping once
    the blocks it feeds are done); hooks capture the teacher block's input and output, and the
    student block is trained on ``MSE(out_adapter(block(in_adapter(teacher_in))), teacher_out)``.
    Adapters are learned where widths differ (a pruned student block has fewer channels) and are
    not added to the student. Only parameters (and BatchNorm statistics) inside the named student
    blocks change.

    Blocks are independent: each needs only teacher activations, and each is seeded from
    ``config.seed`` and its own paths. A block's result is therefore the same whether it is trained
    alone, after the others (``parallel=False``: one block after another, the least memory) or
    together with them (``parallel=True``: one teacher pass per batch feeds every block), as long
    as the blocks draw no random numbers (dropout). So they can also run in parallel processes:
    give each process its own ``blocks=[pair]`` and load each trained block's ``state_dict`` into
    one student afterwards.

    The student block sees the (adapted) teacher activations here, not its predecessor's; an
    end-to-end :func:`distill_` afterwards closes that gap.

    Args:
        student, teacher, data, config: as for :func:`distill_`; ``lr``, ``optimizer``,
            ``lr_schedule``, ``epochs`` and ``seed`` apply to each block.
        blocks: the pairs to train (default ``config.blocks``).
        parallel: train all blocks in one pass over the data instead of one after another.

    Example:
        >>> teacher = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        >>> student = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> data = [(torch.randn(16, 8), torch.randint(0, 3, (16,))) for _ in range(4)]
        >>> cfg = DistillConfig(epochs=2, progress=False)
        >>> result = distill_blocks_(student, teacher, data, cfg, [("0", "0"), ("2", "2")])
        >>> sorted(result.block_losses)
        ['0', '2']
    """
    api = "distill_blocks_"
    config = DistillConfig() if config is None else config
    _check_models(api, student, teacher)
    pairs = _check_pairs(api, "blocks", config.blocks if blocks is None else blocks)
    if not pairs:
        raise ValueError(
            f"{api}: no blocks to train; expected at least one (student_path, teacher_path) pair "
            "in `blocks` or config.blocks, got none"
        )
    s_blocks = [_module(api, student, s, "student", "blocks") for s, _ in pairs]
    for _, t in pairs:
        _module(api, teacher, t, "teacher", "blocks")
    for i, (a, _) in enumerate(pairs):
        for b, _ in pairs[i + 1 :]:
            if a == b or a.startswith(b + ".") or b.startswith(a + ".") or "" in (a, b):
                raise ValueError(
                    f"{api}: student blocks `{a}` and `{b}` overlap; expected disjoint blocks so "
                    "that each trains independently. Name the inner or the outer block, not both"
                )
    cfg = replace(config, blockwise=True, blocks=pairs, features=())

    rank, world = _process_group(api)
    with _ModeGuard(student, teacher), _loader_rng_restored(data):
        _seed_everything(cfg.seed, data)
        teacher.eval()
        s_dev, t_dev = _device_of(student), _device_of(teacher)
        s_cap = _Capture(student, [s for s, _ in pairs], inputs=True)
        t_cap = _Capture(teacher, [t for _, t in pairs], inputs=True)
        try:
            runs = [(s_cap, student, s_dev, "student"), (t_cap, teacher, t_dev, "teacher")]
            _probe(api, data, 1.0, runs)
            units = []
            for (s, t), block in zip(pairs, s_blocks):
                s_in = _block_input(api, s_cap, s, "student")
                t_in = _block_input(api, t_cap, t, "teacher")
                s_out, t_out = _first_tensor(s_cap.outputs[s]), _first_tensor(t_cap.outputs[t])
                seed = _derived_seed(cfg.seed, "block", s, t)
                a_in = _adapter(api, t_in, s_in, f"block `{s}` input (from teacher `{t}`)", seed)
                a_out = _adapter(
                    api, s_out, t_out, f"block `{s}` output (to teacher `{t}`)", seed + 1
                )
                trainer = _BlockTrainer(block, a_in.to(s_dev), a_out.to(s_dev))
                units.append(_Unit(s, trainer, _block_loss(t, s_dev), world))
            s_cap.remove()
            for block in s_blocks:
                block.train()

            def prepare_for(needed: list[str]) -> Callable[[Any], dict]:
                def prepare(batch: Any) -> dict:
                    x = _split(api, batch, alpha=1.0)[0]
                    with torch.no_grad():
                        t_cap.run(teacher, _to(x, t_dev), stop_after=needed)
                    return {"t_in": t_cap.inputs, "t_out": t_cap.outputs}

                return prepare

            history: dict[str, list[float]] = {}
            steps = 0
            if parallel:
                hist, steps, _ = _fit(
                    api, units, data, cfg, prepare_for([t for _, t in pairs]), rank, world, api
                )
                history = {u.key: h for u, h in zip(units, hist)}
            else:
                for unit, (_, t) in zip(units, pairs):
                    _seed_everything(cfg.seed, data)
                    hist, n, _ = _fit(
                        api, [unit], data, cfg, prepare_for([t]), rank, world, f"block {unit.key}"
                    )
                    history[unit.key] = hist[0]
                    steps += n
        finally:
            s_cap.remove()
            t_cap.remove()
        adapters = {}
        for unit in units:
            for side, a in (("in", unit.module.in_adapter), ("out", unit.module.out_adapter)):
                if not isinstance(a, nn.Identity):
                    adapters[f"{unit.key}:{side}"] = a
    epoch_losses = [sum(h[e] for h in history.values()) / len(history) for e in range(cfg.epochs)]
    get_record(student)["passes"].append(
        {
            "pass": "distill_blocks",
            "blocks": [list(p) for p in pairs],
            "epochs": cfg.epochs,
            "lr": cfg.lr,
            "optimizer": cfg.optimizer,
            "seed": cfg.seed,
            "steps": steps,
            "final_loss": epoch_losses[-1] if epoch_losses else None,
        }
    )
    return DistillResult(epoch_losses, steps, block_losses=history, adapters=adapters)


# --- end-to-end loop -------------------------------------------------------------------------


class _StudentWithAdapters(nn.Module):
    """Student plus feature adapters: the one module DDP wraps, so adapters sync too."""

    def __init__(self, student: nn.Module, adapters: list[nn.Module], capture: _Capture | None):
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleList(adapters)
        self.capture = capture
        self.paths: list[str] = []

    def forward(self, inputs: Any) -> tuple[Any, list[torch.Tensor]]:
        out = _call(self.student, inputs)
        feats = [
            a(_first_tensor(self.capture.outputs[p])) for p, a in zip(self.paths, self.adapters)
        ]
        return out, feats


def _train_end_to_end(
    api: str, student: nn.Module, teacher: nn.Module | None, data: Iterable, cfg: DistillConfig
) -> DistillResult:
    pairs = list(cfg.features)
    for s, t in pairs:
        _module(api, student, s, "student", "features")
        _module(api, teacher, t, "teacher", "features")
    need_teacher = teacher is not None and (cfg.alpha > 0 or bool(pairs))
    hard_fn = cfg.hard_loss or F.cross_entropy

    rank, world = _process_group(api)
    with _ModeGuard(student, teacher), _loader_rng_restored(data):
        _seed_everything(cfg.seed, data)
        s_dev = _device_of(student)
        t_dev = _device_of(teacher) if teacher is not None else s_dev
        if teacher is not None:
            teacher.eval()
        s_cap = _Capture(student, [s for s, _ in pairs])
        t_cap = _Capture(teacher, [t for _, t in pairs])
        try:
            adapters: list[nn.Module] = []
            if pairs:
                runs = [(s_cap, student, s_dev, "student"), (t_cap, teacher, t_dev, "teacher")]
                _probe(api, data, cfg.alpha, runs)
                for s, t in pairs:
                    what = f"feature `{s}` (to teacher `{t}`)"
                    sf, tf = _first_tensor(s_cap.outputs[s]), _first_tensor(t_cap.outputs[t])
                    seed = _derived_seed(cfg.seed, "feature", s, t)
                    adapters.append(_adapter(api, sf, tf, what, seed).to(s_dev))
            container = _StudentWithAdapters(student, adapters, s_cap)
            container.paths = [s for s, _ in pairs]
            student.train()

            total = None
            if cfg.alpha_schedule is not None:
                shard = world > 1 and not _has_distributed_sampler(data)
                per_epoch = _steps_per_epoch(data, world if shard else 1, cfg.max_steps_per_epoch)
                if per_epoch is None:
                    raise ValueError(
                        f"{api}: alpha_schedule needs data with a length (len(data)); got "
                        f"{type(data).__name__}. Pass a DataLoader or a list, or set "
                        "alpha_schedule to None"
                    )
                total = max(1, cfg.epochs * per_epoch)
            seen = [0]

            def prepare(batch: Any) -> dict:
                # A decaying KL weight ends on the labels: they are needed from the start.
                inputs, targets = _split(api, batch, cfg.alpha if total is None else 0.0)
                ctx = {"inputs": _to(inputs, s_dev), "targets": _to(targets, s_dev)}
                ctx["alpha"] = cfg.alpha
                if total is not None:
                    ctx["alpha"] = (
                        cfg.alpha * 0.5 * (1 + math.cos(math.pi * min(seen[0], total) / total))
                    )
                    seen[0] += 1
                if cfg.augment is not None:
                    ctx["inputs"] = inputs = cfg.augment(ctx["inputs"])
                if cfg.mixup > 0:
                    inputs = _mixup(api, ctx, cfg.mixup)
                if need_teacher:
                    views = [inputs] if cfg.teacher_views is None else _views(api, cfg, inputs)
                    with torch.no_grad():
                        t_out = _call(teacher, _to(views[0], t_dev))
                        ctx["t_feats"] = [
                            _to(_first_tensor(t_cap.outputs[t]), s_dev) for _, t in pairs
                        ]
                        t_logits = _logits(api, t_out, "teacher")
                        if len(views) > 1:
                            t_logits = _mean_view_logits(api, teacher, views, t_logits, t_dev)
                    ctx["t_logits"] = _to(t_logits, s_dev)
                return ctx

            def loss_fn(module: nn.Module, ctx: dict) -> tuple[torch.Tensor, dict[str, float]]:
                out, feats = module(ctx["inputs"])
                logits = _logits(api, out, "student")
                terms, parts = [], {}
                alpha = ctx["alpha"]
                if alpha < 1 and "mix" in ctx:
                    lam, perm = ctx["mix"]
                    t = ctx["targets"]
                    hard = lam * hard_fn(logits, t) + (1 - lam) * hard_fn(logits, t[perm])
                    terms.append((1.0 - alpha) * hard)
                    parts["hard"] = hard.detach()
                elif alpha < 1:
                    hard = hard_fn(logits, ctx["targets"])
                    terms.append((1.0 - alpha) * hard)
                    parts["hard"] = hard.detach()
                if cfg.alpha > 0:
                    kd = soft_kl_loss(logits, ctx["t_logits"], cfg.temperature)
                    terms.append(alpha * kd)
                    parts["kd"] = kd.detach()
                if pairs:
                    feat = sum(F.mse_loss(f, tf) for f, tf in zip(feats, ctx["t_feats"]))
                    terms.append(cfg.feature_weight * feat)
                    parts["feature"] = feat.detach()
                return sum(terms), parts

            unit = _Unit("", container, loss_fn, world)
            hist, steps, comps = _fit(api, [unit], data, cfg, prepare, rank, world, api)
        finally:
            s_cap.remove()
            t_cap.remove()
    result = DistillResult(
        hist[0],
        steps,
        components=comps[0],
        adapters={s: a for (s, _), a in zip(pairs, adapters) if not isinstance(a, nn.Identity)},
    )
    entry: dict[str, Any] = {"pass": api.rstrip("_"), "epochs": cfg.epochs, "lr": cfg.lr}
    entry.update(optimizer=cfg.optimizer, seed=cfg.seed, steps=steps)
    if teacher is not None:
        entry.update(temperature=cfg.temperature, alpha=cfg.alpha)
        entry.update(alpha_schedule=cfg.alpha_schedule)
        if cfg.teacher_views is not None:
            fn = cfg.teacher_views
            entry["teacher_views"] = getattr(fn, "__qualname__", type(fn).__name__)
        entry.update(features=[list(p) for p in pairs], feature_weight=cfg.feature_weight)
    entry["final_loss"] = result.epoch_losses[-1] if result.epoch_losses else None
    get_record(student)["passes"].append(entry)
    return result


# --- block-wise pieces -----------------------------------------------------------------------


class _BlockTrainer(nn.Module):
    """``out_adapter(block(in_adapter(x), *rest))``: what one block-wise unit trains."""

    def __init__(self, block: nn.Module, in_adapter: nn.Module, out_adapter: nn.Module):
        super().__init__()
        self.block = block
        self.in_adapter = in_adapter
        self.out_adapter = out_adapter

    def forward(self, x: torch.Tensor, rest: tuple, kwargs: dict) -> torch.Tensor:
        return self.out_adapter(_first_tensor(self.block(self.in_adapter(x), *rest, **kwargs)))


def _block_loss(t_path: str, device: torch.device) -> Callable:
    def loss_fn(module: nn.Module, ctx: dict) -> tuple[torch.Tensor, dict[str, float]]:
        args, kwargs = ctx["t_in"][t_path]
        args, kwargs = _to(args, device), _to(kwargs, device)
        out = module(args[0], tuple(args[1:]), kwargs)
        target = _to(_first_tensor(ctx["t_out"][t_path]), device)
        return F.mse_loss(out, target), {}

    return loss_fn


def _probe(api: str, data: Iterable, alpha: float, runs: list[tuple]) -> None:
    """Runs the first batch through each ``(capture, model, device, who)`` to learn the widths.

    In eval mode, without gradients, and inside ``fork_rng``: the probe must not move the data
    order (a shuffling DataLoader draws from the global generator), BatchNorm statistics or any
    random state, so that runs with and without features see the same batches.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        inputs = _split(api, _first_batch(api, data), alpha)[0]
        for cap, model, device, who in runs:
            model.eval()
            cap.run(model, _to(inputs, device))
            for path in cap.paths:
                if path not in cap.outputs:
                    raise ValueError(
                        f"{api}: {who} module `{path}` did not run in a forward pass; expected a "
                        "module the forward calls. Name one that is used"
                    )


def _block_input(api: str, cap: _Capture, path: str, who: str) -> torch.Tensor:
    args, _ = cap.inputs[path]
    if not args or not isinstance(args[0], torch.Tensor):
        raise TypeError(
            f"{api}: {who} block `{path}` must take a tensor as its first positional input; got "
            f"{type(args[0]).__name__ if args else 'no positional input'}. Name a block whose "
            "input is an activation tensor"
        )
    return args[0]


# --- the shared loop -------------------------------------------------------------------------


class _Unit:
    """One trained module (wrapped in DDP when distributed), its optimizer and its loss."""

    def __init__(self, key: str, module: nn.Module, loss_fn: Callable, world: int):
        self.key = key
        self.module = module
        self.loss_fn = loss_fn
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.runner: nn.Module = module
        if world > 1 and self.params:
            self.runner = nn.parallel.DistributedDataParallel(module)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None


def _make_optimizer(api: str, unit: _Unit, cfg: DistillConfig) -> torch.optim.Optimizer:
    if not unit.params:
        raise ValueError(
            f"{api}: nothing to train in `{unit.key or 'model'}`; expected parameters with "
            "requires_grad=True, got none. Unfreeze the parameters to train"
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(unit.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(unit.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(unit.params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def _fit(
    api: str,
    units: list[_Unit],
    data: Iterable,
    cfg: DistillConfig,
    prepare: Callable[[Any], dict],
    rank: int,
    world: int,
    desc: str,
) -> tuple[list[list[float]], int, list[dict[str, list[float]]]]:
    """Runs ``cfg.epochs`` over ``data``; returns per-unit epoch losses, steps, loss components."""
    shard = world > 1 and not _has_distributed_sampler(data)
    per_epoch = _steps_per_epoch(data, world if shard else 1, cfg.max_steps_per_epoch)
    # Cosine over every optimizer step when the epoch length is known, else over epochs.
    horizon = max(1, cfg.epochs * per_epoch if per_epoch is not None else cfg.epochs)
    for u in units:
        u.optimizer = _make_optimizer(api, u, cfg)
        if cfg.lr_schedule == "cosine":
            u.scheduler = torch.optim.lr_scheduler.LambdaLR(
                u.optimizer, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, horizon) / horizon))
            )
    history: list[list[float]] = [[] for _ in units]
    components: list[dict[str, list[float]]] = [{} for _ in units]
    steps = 0
    show = cfg.progress and rank == 0
    for epoch in range(cfg.epochs):
        _set_epoch(data, epoch)
        sums = [0.0] * len(units)
        part_sums: list[dict[str, float]] = [{} for _ in units]
        count = 0
        bar = tqdm(
            total=per_epoch,
            desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
            file=sys.stderr,
            disable=not show,
            leave=False,
            dynamic_ncols=True,
        )
        for batch in _shard(data, rank, world, shard, cfg.max_steps_per_epoch):
            ctx = prepare(batch)
            for i, u in enumerate(units):
                loss, parts = u.loss_fn(u.runner, ctx)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ValueError(
                        f"{api}: the loss of `{u.key or 'model'}` is {value} at epoch {epoch + 1}"
                        f", step {count + 1}; expected a finite loss. Lower lr (now {cfg.lr}) or "
                        "check the data for NaN/inf"
                    )
                u.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                u.optimizer.step()
                if u.scheduler is not None and per_epoch is not None:
                    u.scheduler.step()
                sums[i] += value
                for k, v in parts.items():
                    part_sums[i][k] = part_sums[i].get(k, 0.0) + float(v)
            count += 1
            steps += len(units)
            bar.update(1)
            bar.set_postfix(loss=f"{sum(sums) / len(units) / count:.4g}")
        bar.close()
        for u in units:
            if u.scheduler is not None and per_epoch is None:
                u.scheduler.step()
        keys = [sorted(p) for p in part_sums]
        flat = [float(count)] + sums + [p[k] for p, ks in zip(part_sums, keys) for k in ks]
        if world > 1:
            t = torch.tensor(flat, dtype=torch.float64)
            torch.distributed.all_reduce(t)
            flat = t.tolist()
        total = flat[0]
        if total == 0:
            raise ValueError(
                f"{api}: data yielded no batches for this process; expected at least "
                f"{world} batch(es) per epoch (one per process), got none"
            )
        pos = 1 + len(units)
        for i in range(len(units)):
            history[i].append(flat[1 + i] / total)
            for k in keys[i]:
                components[i].setdefault(k, []).append(flat[pos] / total)
                pos += 1
        if show:
            tqdm.write(
                f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss "
                f"{sum(h[-1] for h in history) / len(units):.4g}",
                file=sys.stderr,
            )
    return history, steps, components


# --- distributed -----------------------------------------------------------------------------


def _process_group(api: str) -> tuple[int, int]:
    """``(rank, world_size)``; under torchrun, creates a gloo group on first use.

    The group then lives until the process exits (an ``atexit`` hook destroys it). Destroying it
    after each call would be tidier, but a group re-created on torchrun's store reuses the first
    one's keys (torch resets its group counter on destroy), and the second rendezvous can hang.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError(
            f"{api}: WORLD_SIZE={world} asks for distributed training but this torch build has no "
            "torch.distributed; expected a build with it. Run a single process instead"
        )
    dist.init_process_group(backend="gloo")
    atexit.register(_destroy_process_group)
    return dist.get_rank(), dist.get_world_size()


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _has_distributed_sampler(data: Any) -> bool:
    from torch.utils.data.distributed import DistributedSampler

    samplers = [getattr(data, "sampler", None)]
    samplers.append(getattr(getattr(data, "batch_sampler", None), "sampler", None))
    return any(isinstance(s, DistributedSampler) for s in samplers)


def _set_epoch(data: Any, epoch: int) -> None:
    for s in (
        getattr(data, "sampler", None),
        getattr(getattr(data, "batch_sampler", None), "sampler", None),
    ):
        if hasattr(s, "set_epoch"):
            s.set_epoch(epoch)


def _steps_per_epoch(data: Any, world: int, cap: int | None) -> int | None:
    try:
        n = len(data) // world
    except TypeError:  # an iterable without a length: the schedule steps per epoch instead
        return None
    return min(n, cap) if cap is not None else n


def _shard(data: Iterable, rank: int, world: int, shard: bool, cap: int | None) -> Iterator:
    """Batches of this process: every ``world``-th one from ``rank``, whole rounds only."""
    taken = 0
    if not shard:
        for batch in data:
            yield batch
            taken += 1
            if cap is not None and taken >= cap:
                return
        return
    mine = None
    for i, batch in enumerate(data):
        if i % world == rank:
            mine = batch
        if i % world == world - 1:  # a full round: every process gets a batch, so DDP stays in step
            yield mine
            taken += 1
            if cap is not None and taken >= cap:
                return


# --- small helpers ---------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised from a hook to end a teacher pass once the activations needed are captured."""


class _Capture:
    """Forward hooks keeping the latest output (and optionally input) of named modules."""

    def __init__(self, root: nn.Module | None, paths: list[str], inputs: bool = False):
        self.outputs: dict[str, Any] = {}
        self.inputs: dict[str, tuple[tuple, dict]] = {}
        self.handles: list[Any] = []
        self.stop_after: set[str] = set()
        self.paths = list(dict.fromkeys(paths)) if root is not None else []
        for path in self.paths:
            m = root.get_submodule(path)
            self.handles.append(m.register_forward_hook(self._out_hook(path)))
            if inputs:
                self.handles.append(
                    m.register_forward_pre_hook(self._in_hook(path), with_kwargs=True)
                )

    def _out_hook(self, path: str) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[path] = output
            if self.stop_after and self.stop_after.issubset(self.outputs):
                raise _StopForward

        return hook

    def _in_hook(self, path: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.inputs[path] = (args, kwargs)

        return hook

    def run(self, model: nn.Module, inputs: Any, stop_after: list[str] | None = None) -> Any:
        self.outputs, self.inputs = {}, {}
        self.stop_after = set(stop_after or ())
        try:
            return _call(model, inputs)
        except _StopForward:
            return None
        finally:
            self.stop_after = set()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class _ModeGuard:
    """Restores every submodule's train/eval flag on exit."""

    def __init__(self, *models: nn.Module | None):
        self.modes = [
            (m, m.training) for model in models if model is not None for m in model.modules()
        ]

    def __enter__(self) -> _ModeGuard:
        return self

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self.modes:
            m.training = mode


def _adapter(api: str, src: torch.Tensor, dst: torch.Tensor, what: str, seed: int) -> nn.Module:
    """Identity, 1x1 Conv2d ([N, C, H, W]) or Linear (last dim) from src's width to dst's."""
    d = 1 if src.dim() == 4 else src.dim() - 1
    same_rank = src.dim() == dst.dim() and src.dim() >= 1
    if not same_rank or any(a != b for i, (a, b) in enumerate(zip(src.shape, dst.shape)) if i != d):
        raise ValueError(
            f"{api}: {what}: shapes {tuple(src.shape)} and {tuple(dst.shape)} differ in more than "
            f"the width (dim {d}); expected equal shapes apart from it. Pick layers whose outputs "
            "line up (same spatial size / sequence length)"
        )
    if src.shape[d] == dst.shape[d]:
        return nn.Identity()
    if not (src.is_floating_point() and dst.is_floating_point()):
        raise ValueError(
            f"{api}: {what}: widths {src.shape[d]} and {dst.shape[d]} differ but the tensors are "
            f"{src.dtype}/{dst.dtype}; expected floating-point activations to adapt"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = (
            nn.Conv2d(src.shape[1], dst.shape[1], 1)
            if src.dim() == 4
            else nn.Linear(src.shape[-1], dst.shape[-1])
        )
    return layer.to(dtype=src.dtype)


def _derived_seed(seed: int, *names: str) -> int:
    """A stable seed from ``seed`` and names, so a unit's init does not depend on its position."""
    return (seed * 1_000_003 + zlib.crc32(":".join(names).encode())) % (2**31)


def _loader_generators(data: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` objects a DataLoader shuffles with (its own, its sampler's, its
    batch sampler's sampler's), each once; empty for other iterables."""
    found: dict[int, torch.Generator] = {}
    sampler = getattr(data, "sampler", None)
    batch_sampler = getattr(data, "batch_sampler", None)
    for owner in (data, sampler, getattr(batch_sampler, "sampler", None)):
        g = getattr(owner, "generator", None) if owner is not None else None
        if isinstance(g, torch.Generator):
            found[id(g)] = g
    return list(found.values())


@contextlib.contextmanager
def _loader_rng_restored(data: Any) -> Iterator[None]:
    """Restores the data loader's own shuffling generators when training ends: training
    reseeds them (``_seed_everything``), and the caller's loader is left as it was."""
    gens = _loader_generators(data)
    states = [g.get_state() for g in gens]
    try:
        yield
    finally:
        for g, st in zip(gens, states):
            g.set_state(st)


def _seed_everything(seed: int, data: Any = None) -> None:
    """Seeds Python, torch and numpy, and the shuffling generators of ``data`` (a DataLoader
    made with ``generator=`` shuffles with its own, which the global seed does not reach: the
    same seed then gave another data order, and another result, after the loader had been
    iterated)."""
    random.seed(seed)
    torch.manual_seed(seed)
    for g in _loader_generators(data):
        g.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional for this module
        return
    np.random.seed(seed % 2**32)  # noqa: NPY002 (user code draws from the legacy global RNG)


def _check_models(api: str, student: Any, teacher: Any) -> None:
    for who, m in (("student", student), ("teacher", teacher)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{api}: {who} must be a torch.nn.Module, got {type(m).__name__}")
    if student is teacher:
        raise ValueError(
            f"{api}: student and teacher are the same object; expected two modules. Distill from "
            "a copy: teacher = copy.deepcopy(model) before pruning"
        )


def _module(api: str, root: nn.Module, path: str, who: str, where: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in root.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=3)
        some = close or names[:5]
        hint = ("Did you mean " if close else "It has e.g. ") + ", ".join(f"`{n}`" for n in some)
        raise ValueError(
            f"{api}: {who} has no module `{path}` (named in config.{where}); expected a name from "
            f"{who}.named_modules(), got {path!r}. {hint}"
        ) from None


def _check_pairs(api: str, name: str, pairs: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise ValueError(
            f"{api}: {name} must be a list of (student_path, teacher_path) pairs; got {pairs!r}"
        )
    out = []
    for i, p in enumerate(pairs):
        ok = isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) for x in p)
        if not ok:
            raise ValueError(
                f"{api}: {name}[{i}] must be a (student_path, teacher_path) pair of module names; "
                f"expected two strings, got {p!r}"
            )
        out.append((p[0], p[1]))
    return tuple(out)


def _check_int(api: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"{api}: {name} must be an integer >= {low}; expected {name} >= {low}, got {value!r}"
        )


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _first_batch(api: str, data: Iterable) -> Any:
    for batch in data:
        return batch
    raise ValueError(f"{api}: data yielded no batches; expected a re-iterable of (inputs, targets)")


def _mixup(api: str, ctx: dict, a: float) -> torch.Tensor:
    """Mixes ``ctx["inputs"]`` with a shuffled copy in place of the batch; returns the mix."""
    x = ctx["inputs"]
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(
            f"{api}: mixup needs one floating-point input tensor per batch, got "
            f"{type(x).__name__}; set DistillConfig(mixup=0) for this data"
        )
    lam = float(torch.distributions.Beta(a, a).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    mixed = lam * x + (1 - lam) * x[perm]
    ctx["inputs"] = mixed
    ctx["mix"] = (lam, perm)
    return mixed


def _split(api: str, batch: Any, alpha: float) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"{api}: each batch must be an (inputs, targets) pair; got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    inputs, targets = batch
    if targets is None and alpha < 1:
        raise ValueError(
            f"{api}: targets are None but the hard-label loss has weight {1 - alpha:g}; expected "
            "labels, or alpha=1 to learn from the teacher alone"
        )
    return inputs, targets


def _views(api: str, cfg: DistillConfig, inputs: Any) -> list:
    views = cfg.teacher_views(inputs)
    if not isinstance(views, (list, tuple)) or not views:
        raise TypeError(
            f"{api}: teacher_views must return a non-empty list of inputs for the teacher; got "
            f"{type(views).__name__}" + (" of length 0" if isinstance(views, (list, tuple)) else "")
        )
    return list(views)


def _mean_view_logits(
    api: str, teacher: nn.Module, views: list, first: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Mean of the teacher's logits over ``views``, given the first view's ``first``.

    Tensor views shaped like the first go through the teacher as one batch (the teacher is in
    eval mode, so a sample's output does not depend on its batch); other inputs one call each."""
    head, rest = views[0], views[1:]
    if isinstance(head, torch.Tensor) and all(
        isinstance(v, torch.Tensor) and v.shape == head.shape for v in rest
    ):
        out = _logits(api, _call(teacher, _to(torch.cat(rest), device)), "teacher")
        per_view = list(out.split(first.shape[0]))
    else:
        per_view = [_logits(api, _call(teacher, _to(v, device)), "teacher") for v in rest]
    for i, z in enumerate(per_view, start=1):
        if z.shape != first.shape:
            raise ValueError(
                f"{api}: teacher_views: the teacher's logits on view {i} have shape "
                f"{tuple(z.shape)}, on view 0 {tuple(first.shape)}; expected every view to keep "
                "the batch's shape"
            )
    return (first + sum(per_view)) / len(views)


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_to(v, device) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return out


def _logits(api: str, out: Any, who: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    raise TypeError(
        f"{api}: cannot find logits in the {who}'s output; expected a tensor, a tuple whose first "
        f"item is one, or a `logits` field, got {type(out).__name__}"
    )


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
