"""Compression recipes: an ordered, validated plan of passes, a target and budgets (TOML or code).

A recipe is checked completely before any work starts: unknown stage kinds, unknown keys and bad
values are reported naming the stage (1-based, as a person counts the ``[[stages]]`` of a file)
and the key, and every stage's settings are turned into the pass's own config dataclass here, so
its ``__post_init__`` validation runs up front too. :func:`optimizer.pipeline.compress` runs it.

File format (TOML; ``name``, ``description``, ``target``, ``seed``, ``[budget]`` are optional)::

    target = "rpi5"                 # a profile of optimizer.targets, or "host"
    [budget]
    max_accuracy_drop = 1.0         # points of top-1 below the original
    min_size_reduction = 4.0        # original file size / compressed file size
    [[stages]]
    kind = "prune_channels"         # the pass; the other keys are its config's fields
    macs_reduction = 2.0            # round_to defaults to the target's channel_multiple
    [[stages]]
    kind = "recalibrate_bn"
    [[stages]]
    kind = "distill"
    epochs = 10
    [[stages]]
    kind = "quantize"
    calibration_batches = 8

Stage kinds and their settings (the config fields, callables such as ``filter_fn`` excepted):

- ``prune_channels``: :class:`~optimizer.ChannelPruneConfig`; ``round_to`` from the target.
- ``prune_layers``: :class:`~optimizer.LayerPruneConfig`.
- ``recalibrate_bn``: ``max_batches``.
- ``distill`` / ``fine_tune``: :class:`~optimizer.DistillConfig` (the teacher is the original
  model); ``progress`` follows ``compress(progress=...)`` unless set.
- ``prune_blocks``: :class:`~optimizer.BlockPruneConfig` (``block`` from the target) plus
  ``schedule = {initial_sparsity, begin_step, end_step, power, frequency}`` (a
  :class:`~optimizer.PolynomialDecay` ending at ``sparsity``) and ``train = {method = "distill" |
  "fine_tune", ...DistillConfig}``, the fine-tuning whose steps drive the schedule. With
  ``train`` and no ``schedule`` the sparsity rises over the first two thirds of the steps.
- ``share_weights``: :class:`~optimizer.WeightShareConfig` plus an optional ``train`` table.
- ``factorize``: :class:`~optimizer.LowRankConfig`.
- ``quantize``: :class:`~optimizer.Int8Config` plus ``calibration_batches`` (default 8);
  ``requantization`` from the target (``"fp32"``, XNNPACK's arithmetic, for phones).
- ``qat``: :class:`~optimizer.Int8Config`, ``calibration_batches`` and ``train`` (default
  ``{method = "distill", epochs = 2, lr = 1e-4}``).

``quantize`` / ``qat`` give an int8 model that cannot be trained further: at most one of them,
and last.

Example:
    >>> recipe = Recipe(
    ...     [Stage("prune_channels", {"macs_reduction": 2.0}), Stage("quantize")],
    ...     target="rpi5", budget=Budget(max_accuracy_drop=1.0))
    >>> recipe.stages[0].config.round_to
    16
    >>> recipe = load_recipe("my_recipe.toml")   # or builtin("default", target="host")
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimizer import targets as _targets

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9 / 3.10 only
    import tomli as tomllib

__all__ = [
    "BUILTIN",
    "STAGE_KINDS",
    "Budget",
    "Recipe",
    "RecipeError",
    "Stage",
    "TrainSpec",
    "builtin",
    "builtin_path",
    "load_recipe",
]

_DIR = Path(__file__).resolve().parent
BUILTIN = ("default", "smallest")
"""Names of the recipes shipped as ``optimizer/recipes/<name>.toml``."""

STAGE_KINDS = (
    "prune_channels",
    "prune_layers",
    "recalibrate_bn",
    "distill",
    "fine_tune",
    "prune_blocks",
    "share_weights",
    "factorize",
    "quantize",
    "qat",
)
_TERMINAL = ("quantize", "qat")
_CALLABLES = ("filter_fn", "hard_loss", "augment", "schedule", "_extra_keep")
_SCHEDULE_KEYS = ("initial_sparsity", "begin_step", "end_step", "power", "frequency")


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the stage and the key."""


def _config_class(kind: str) -> type | None:
    import optimizer

    return {
        "prune_channels": optimizer.ChannelPruneConfig,
        "prune_layers": optimizer.LayerPruneConfig,
        "distill": optimizer.DistillConfig,
        "fine_tune": optimizer.DistillConfig,
        "prune_blocks": optimizer.BlockPruneConfig,
        "share_weights": optimizer.WeightShareConfig,
        "factorize": optimizer.LowRankConfig,
        "quantize": optimizer.Int8Config,
        "qat": optimizer.Int8Config,
    }.get(kind)


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in _CALLABLES]


def _extra_keys(kind: str) -> tuple[str, ...]:
    return {
        "recalibrate_bn": ("max_batches",),
        "prune_blocks": ("schedule", "train"),
        "share_weights": ("train",),
        "quantize": ("calibration_batches",),
        "qat": ("calibration_batches", "train"),
    }.get(kind, ())


def _unknown(where: str, key: str, allowed: Sequence[str]) -> RecipeError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return RecipeError(
        f"{where}: unknown key `{key}`; expected one of {sorted(allowed)}, got `{key}`.{hint}"
    )


def _lists_to_tuples(value: Any) -> Any:
    # TOML has arrays only; the configs want tuples (block=(8, 4), ignore=(...)).
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def _build(where: str, cls: type, settings: Mapping[str, Any]) -> Any:
    kwargs = {k: _lists_to_tuples(v) for k, v in settings.items()}
    for pair_key in ("features", "blocks"):  # DistillConfig: lists of (student, teacher) pairs
        if cls.__name__ == "DistillConfig" and pair_key in kwargs:
            kwargs[pair_key] = [tuple(p) for p in kwargs[pair_key]]
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where}: {e}") from e


def _check_int(where: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RecipeError(f"{where}: `{key}` must be an int >= {low}; got {value!r}")
    return value


@dataclass
class TrainSpec:
    """Training inside a stage (``prune_blocks``, ``share_weights``, ``qat``).

    Args:
        method: ``"distill"`` (from the original model) or ``"fine_tune"`` (labels only).
        config: the :class:`~optimizer.DistillConfig` of the run.
    """

    method: str
    config: Any


@dataclass
class Stage:
    """One step of a recipe.

    Args:
        kind: one of :data:`STAGE_KINDS`.
        settings: the pass's config fields (a dict, as in a file), or the config object itself
            (e.g. ``ChannelPruneConfig(..., filter_fn=...)`` for settings a file cannot hold).
        name: a label for reports (default ``kind``).

    After :class:`Recipe` validation, ``config`` holds the pass's config object (None for
    ``recalibrate_bn``), ``train`` a :class:`TrainSpec` or None, and ``extra`` the stage-level
    settings (``max_batches``, ``calibration_batches``, ``schedule``).

    Example:
        >>> Stage("distill", {"epochs": 5, "temperature": 4.0})
    """

    kind: str
    settings: Any = field(default_factory=dict)
    name: str | None = None
    config: Any = field(default=None, init=False, repr=False)
    train: TrainSpec | None = field(default=None, init=False, repr=False)
    extra: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def label(self) -> str:
        """``name`` or ``kind``."""
        return self.name or self.kind


@dataclass
class Budget:
    """What the compressed model must achieve; checked on the last stage's result.

    Args:
        max_accuracy_drop: most accuracy points lost against the original.
        min_accuracy: least accuracy (same units as the eval function, percent by default).
        min_size_reduction: least ``original size / compressed size`` (``optimizer.save`` files).
        max_size_bytes: largest compressed file.
        min_macs_reduction: least ``original MACs / compressed MACs``.

    Example:
        >>> Budget(max_accuracy_drop=1.0, min_size_reduction=10.0)
    """

    max_accuracy_drop: float | None = None
    min_accuracy: float | None = None
    min_size_reduction: float | None = None
    max_size_bytes: int | None = None
    min_macs_reduction: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise RecipeError(
                    f"`Budget`: {f.name} must be a finite number; expected e.g. 1.0, got {v!r}"
                )
            if v < 0:
                raise RecipeError(f"`Budget`: {f.name} must be >= 0; got {v!r}")

    def active(self) -> dict[str, float]:
        """The budgets that are set, by name."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Recipe:
    """An ordered list of stages, the target they are tuned for and the budgets to meet.

    Validated in the constructor (see the module docstring): a bad recipe raises
    :class:`RecipeError` (a ``ValueError``) naming the stage and key before any work.

    Args:
        stages: the :class:`Stage` list (dicts with a ``kind`` key are accepted too).
        target: a profile name of :mod:`optimizer.targets` (``"host"`` detects this machine).
        budget: a :class:`Budget` or a dict of its fields.
        name: for reports.
        description: for reports.
        seed: seeds the passes that draw random numbers, unless a stage sets its own.
        source: the file it came from (named in errors).

    Example:
        >>> Recipe([{"kind": "prune_channels", "ratio": 0.5}, {"kind": "quantize"}])
    """

    stages: list[Any]
    target: str = "host"
    budget: Any = None
    name: str = "custom"
    description: str = ""
    seed: int = 0
    source: str | None = None
    profile: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        src = f" `{self.source}`" if self.source else ""
        api = f"recipe{src}"
        if not isinstance(self.target, str):
            raise RecipeError(f"{api}: target must be a profile name; got {self.target!r}")
        try:
            self.profile = _targets.get(self.target)
        except ValueError as e:
            raise RecipeError(f"{api}: {e}") from None
        _check_int(api, "seed", self.seed, 0)
        if self.budget is None:
            self.budget = Budget()
        elif isinstance(self.budget, Mapping):
            allowed = [f.name for f in dataclasses.fields(Budget)]
            for k in self.budget:
                if k not in allowed:
                    raise _unknown(f"{api} [budget]", k, allowed)
            self.budget = Budget(**self.budget)
        elif not isinstance(self.budget, Budget):
            raise RecipeError(f"{api}: budget must be a Budget or a table; got {self.budget!r}")
        if isinstance(self.stages, (str, bytes)) or not isinstance(self.stages, Sequence):
            raise RecipeError(f"{api}: stages must be a list; got {type(self.stages).__name__}")
        if not self.stages:
            raise RecipeError(
                f"{api}: no stages; expected at least one [[stages]] entry with a `kind` of "
                f"{list(STAGE_KINDS)}"
            )
        stages = []
        for i, st in enumerate(self.stages, 1):
            if isinstance(st, Mapping):
                st = dict(st)
                kind = st.pop("kind", None)
                if kind is None:
                    raise RecipeError(
                        f"{api} stage {i}: missing `kind`; expected one of {list(STAGE_KINDS)}"
                    )
                st = Stage(kind, st, st.pop("name", None))
            elif isinstance(st, Stage):
                st = Stage(st.kind, st.settings, st.name)  # resolve a copy: stages are reusable
            else:
                raise RecipeError(
                    f"{api} stage {i}: expected a Stage or a table with `kind`, got "
                    f"{type(st).__name__}"
                )
            self._resolve(f"{api} stage {i}", st)
            stages.append(st)
        self.stages = stages
        for i, st in enumerate(stages, 1):
            if st.kind in _TERMINAL and i != len(stages):
                nxt = stages[i]
                raise RecipeError(
                    f"{api} stage {i + 1} ({nxt.kind}): comes after stage {i} ({st.kind}), "
                    f"whose int8 model cannot be changed further; expected {st.kind} last"
                )

    # -- validation of one stage ------------------------------------------------------------

    def _resolve(self, where: str, st: Stage) -> None:
        if st.kind not in STAGE_KINDS:
            close = difflib.get_close_matches(str(st.kind), STAGE_KINDS, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise RecipeError(
                f"{where}: unknown stage kind `{st.kind}`; expected one of {list(STAGE_KINDS)}, "
                f"got `{st.kind}`.{hint}"
            )
        where = f"{where} ({st.kind})"
        if st.name is not None and not isinstance(st.name, str):
            raise RecipeError(f"{where}: name must be a string; got {st.name!r}")
        cls = _config_class(st.kind)
        if cls is not None and isinstance(st.settings, cls):
            st.config, settings = st.settings, {}
        elif isinstance(st.settings, Mapping):
            settings = dict(st.settings)
        else:
            want = cls.__name__ if cls else "dict"
            raise RecipeError(
                f"{where}: settings must be a dict or a {want}; got {type(st.settings).__name__}"
            )
        extras = _extra_keys(st.kind)
        allowed = ([] if cls is None or st.config is not None else _fields(cls)) + list(extras)
        for k in settings:
            if k not in allowed:
                raise _unknown(where, k, allowed)
        extra = {k: settings.pop(k) for k in extras if k in settings}
        if st.config is None and cls is not None:
            self._defaults(st.kind, settings)
            st.config = _build(where, cls, settings)
        if "max_batches" in extra and extra["max_batches"] is not None:
            _check_int(where, "max_batches", extra["max_batches"], 1)
        if st.kind in ("quantize", "qat"):
            extra["calibration_batches"] = _check_int(
                where, "calibration_batches", extra.get("calibration_batches", 8), 1
            )
        if "schedule" in extra:
            extra["schedule"] = self._schedule(f"{where} [schedule]", extra["schedule"], st)
        train = extra.pop("train", None)
        if train is None and st.kind == "qat":
            train = {"method": "distill", "epochs": 2, "lr": 1e-4}
        if train is not None:
            st.train = self._train(f"{where} [train]", train)
        if st.kind == "prune_blocks" and "schedule" in extra and st.train is None:
            raise RecipeError(
                f"{where}: a `schedule` needs training steps to follow; expected a `train` table "
                '(e.g. train = {method = "distill", epochs = 3}), got none'
            )
        st.extra = extra

    def _defaults(self, kind: str, settings: dict[str, Any]) -> None:
        if kind == "prune_channels":
            settings.setdefault("round_to", self.profile.channel_multiple)
        if kind == "prune_blocks":
            settings.setdefault("block", self.profile.bsr_block)
        if kind in ("quantize", "qat"):
            settings.setdefault("requantization", self.profile.requantization)
        if kind in ("prune_channels", "distill", "fine_tune", "share_weights"):
            settings.setdefault("seed", self.seed)

    def _schedule(self, where: str, sched: Any, st: Stage) -> dict[str, Any]:
        if isinstance(sched, Mapping):
            sched = dict(sched)
            for k in sched:
                if k not in _SCHEDULE_KEYS:
                    raise _unknown(where, k, _SCHEDULE_KEYS)
            from optimizer import PolynomialDecay

            probe = {"initial_sparsity": 0.0, "begin_step": 0, "end_step": 1, **sched}
            try:  # validate now; end_step may be filled in at run time
                PolynomialDecay(final_sparsity=st.config.sparsity, **probe)
            except (ValueError, TypeError) as e:
                raise RecipeError(f"{where}: {e}") from e
            return sched
        raise RecipeError(
            f"{where}: schedule must be a table of {list(_SCHEDULE_KEYS)}; got {sched!r}"
        )

    def _train(self, where: str, train: Any) -> TrainSpec:
        from optimizer import DistillConfig

        if isinstance(train, TrainSpec):
            return train
        if not isinstance(train, Mapping):
            raise RecipeError(f"{where}: train must be a table; got {train!r}")
        train = dict(train)
        method = train.pop("method", "distill")
        if method not in ("distill", "fine_tune"):
            raise RecipeError(
                f"{where}: unknown method; expected 'distill' or 'fine_tune', got {method!r}"
            )
        allowed = _fields(DistillConfig)
        for k in train:
            if k not in allowed:
                raise _unknown(where, k, [*allowed, "method"])
        train.setdefault("seed", self.seed)
        return TrainSpec(method, _build(where, DistillConfig, train))

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: str | None = None, target: str | None = None
    ) -> Recipe:
        """Builds a recipe from the parsed file contents (``target`` overrides the file's).

        Example:
            >>> Recipe.from_dict({"stages": [{"kind": "quantize"}]}, target="rpi4").target
            'rpi4'
        """
        api = f"recipe `{source}`" if source else "recipe"
        if not isinstance(data, Mapping):
            raise RecipeError(f"{api}: expected a table at the top level; got {data!r}")
        allowed = ("name", "description", "target", "seed", "budget", "stages")
        for k in data:
            if k not in allowed:
                raise _unknown(api, k, allowed)
        if "stages" not in data:
            raise RecipeError(f"{api}: no stages; expected [[stages]] tables with a `kind` each")
        kwargs = {k: data[k] for k in allowed if k in data}
        if target is not None:
            kwargs["target"] = target
        return cls(source=source, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: name, target, budget and each stage's kind and settings."""

        def plain(v: Any) -> Any:
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                return {
                    f.name: plain(getattr(v, f.name))
                    for f in dataclasses.fields(v)
                    if f.init and f.name not in _CALLABLES
                }
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)

        stages = []
        for st in self.stages:
            d: dict[str, Any] = {"kind": st.kind, "name": st.label}
            if st.config is not None:
                d["config"] = plain(st.config)
            if st.train is not None:
                d["train"] = {"method": st.train.method, "config": plain(st.train.config)}
            d.update(plain(st.extra))
            stages.append(d)
        return {
            "name": self.name,
            "description": self.description,
            "target": self.profile.name,
            "seed": self.seed,
            "budget": self.budget.active(),
            "stages": stages,
        }


def load_recipe(path: str | Path, target: str | None = None) -> Recipe:
    """Reads and validates a TOML recipe file (``target`` overrides the file's).

    Example:
        >>> recipe = load_recipe("recipes/fast.toml", target="rpi5")
    """
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"load_recipe: `{p}` does not exist or is not a file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe `{p}`: not valid TOML ({e})") from None
    return Recipe.from_dict(data, source=str(p), target=target)


def builtin_path(name: str) -> Path:
    """The file of the shipped recipe ``name`` (one of :data:`BUILTIN`)."""
    if name not in BUILTIN:
        raise RecipeError(f"builtin: unknown recipe; expected one of {list(BUILTIN)}, got {name!r}")
    return _DIR / f"{name}.toml"


def builtin(name: str = "default", target: str = "host") -> Recipe:
    """The shipped recipe ``name`` tuned for ``target`` (channel multiple, block shape).

    ``default``: channel pruning to half the MACs, BatchNorm recalibration, distillation from the
    original, int8 PTQ. ``smallest``: adds block sparsity and 4-bit weight sharing.

    Example:
        >>> builtin("default", target="rpi5").stages[0].config.round_to
        16
    """
    return load_recipe(builtin_path(name), target=target)
