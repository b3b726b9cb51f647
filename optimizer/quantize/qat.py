"""Quantization-aware training: fake-quant modules, ``prepare_qat_`` and ``convert_``.

:func:`prepare_qat_` traces the model like :func:`optimizer.quantize.ptq.quantize_` (BatchNorm
folded into the conv/linear before it, with its running statistics frozen: the folded weights are
what trains), swaps every int8 conv/linear for a :class:`QATConv2d` / :class:`QATLinear` whose
weight is fake-quantized (symmetric int8, per channel or per tensor, as ``quantize_``), and
inserts a :class:`FakeQuantize` after every value that the int8 model quantizes (outputs of
conv/linear/add/mul after their fused ReLU, lookup-table activations, pooling, float values that
enter the int8 graph). Values that share quantization parameters in the int8 model (concat inputs,
pooling and reshapes) share one ``FakeQuantize``. Fake quantization uses the same scale and
zero-point choice (:func:`optimizer.quantize.observers.activation_qparams`) and the same rounding
(half to even) as the int8 model; gradients pass straight through inside the clipping range
(straight-through estimator) and are zero outside it. Ranges are observed: an exponential moving
average of each batch's min/max in training mode, frozen in eval mode.

:func:`convert_` turns the trained model into the integer-exact int8 ``GraphModule`` of
``quantize_``, with the observed ranges and trained weights (no calibration pass).

Like ``quantize_``, both return a new ``GraphModule`` (the user's Python ``forward`` is traced,
not edited); train and run the returned module. It works after channel pruning and with
:func:`optimizer.distill_` (a GraphModule is an ordinary ``nn.Module``; module paths of the layers
are kept, so feature distillation by path works).

Example::

    qat = prepare_qat_(model, Int8Config(), example_inputs=(x,), calibration=calib)
    optimizer.distill_(qat, teacher, train_loader, optimizer.DistillConfig(epochs=2))
    qmodel = convert_(qat)                    # integer-exact, as quantize_ returns
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from optimizer.quantize.fold import float_graph, set_submodule
from optimizer.quantize.observers import activation_qparams, weight_scales
from optimizer.quantize.ptq import (
    Int8Config,
    _Analysis,
    build_quantized,
    check_parameters,
    input_batches,
    record_of,
)

__all__ = ["FakeQuantize", "QATConv2d", "QATLinear", "convert_", "fake_quantize", "prepare_qat_"]

_INFO = "_edgeopt_qat"


def fake_quantize(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Asymmetric int8 fake quantization with a straight-through gradient inside the range.

    Forward: ``(clamp(round(x / scale) + zp, -128, 127) - zp) * scale`` (round half to even).
    Backward: identity where ``x`` lies inside the representable range, zero outside.

    Example:
        >>> fake_quantize(torch.tensor([0.004, 0.006, 3.0]), 0.01, -128).tolist()
        [0.0, 0.009999999776482582, 2.549999952316284]
    """
    q = torch.clamp(torch.round(x / scale) + zero_point, -128, 127)
    y = (q - zero_point) * scale
    lo = (-128 - zero_point) * scale
    hi = (127 - zero_point) * scale
    xc = torch.clamp(x, lo, hi)
    return xc + (y - xc).detach()


def fake_quantize_weight(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Symmetric int8 fake quantization of a weight (scales as ``QConv2d``/``QLinear``), with a
    straight-through gradient."""
    s = weight_scales(w, per_channel).to(w.dtype)
    s = s.reshape((-1,) + (1,) * (w.dim() - 1)) if s.numel() > 1 else s
    q = torch.clamp(torch.round(w.detach() / s), -127, 127) * s
    return w + (q - w).detach()


class FakeQuantize(nn.Module):
    """Per-tensor int8 fake quantization shared by the ``members`` (value names) of one group.

    Each member keeps an exponential moving average of its batch min/max (``averaging_constant``;
    the first batch initializes it); the group's range is the union of its members' ranges and
    gives ``(scale, zero_point)`` by :func:`activation_qparams`. ``fixed`` parameters (sigmoid,
    tanh outputs, as TFLite) are never observed. Observation runs in training mode, or in any
    mode while ``calibrating`` is True.
    """

    def __init__(
        self,
        members: list[str],
        averaging_constant: float = 0.01,
        fixed: tuple[float, int] | None = None,
    ) -> None:
        super().__init__()
        self.members = list(members)
        self.averaging_constant = float(averaging_constant)
        self.fixed = fixed
        self.calibrating = False
        self.observe = True
        m = len(self.members)
        self.register_buffer("min_vals", torch.zeros(m, dtype=torch.float64))
        self.register_buffer("max_vals", torch.zeros(m, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(m, dtype=torch.bool))

    def member_range(self, i: int) -> tuple[float, float] | None:
        if not bool(self.seen[i]):
            return None
        return float(self.min_vals[i]), float(self.max_vals[i])

    def qparams(self) -> tuple[float, int] | None:
        """The group's (scale, zero_point), or None before any observation."""
        if self.fixed is not None:
            return float(np.float32(self.fixed[0])), int(self.fixed[1])
        if not bool(self.seen.any()):
            return None
        lo = float(self.min_vals[self.seen].min())
        hi = float(self.max_vals[self.seen].max())
        return activation_qparams(lo, hi)

    def forward(self, x: torch.Tensor, member: int = 0) -> torch.Tensor:
        if self.fixed is None and self.observe and (self.training or self.calibrating):
            with torch.no_grad():
                lo = float(x.detach().min())
                hi = float(x.detach().max())
                if not bool(self.seen[member]):
                    self.min_vals[member] = lo
                    self.max_vals[member] = hi
                    self.seen[member] = True
                else:
                    c = self.averaging_constant
                    self.min_vals[member] += c * (lo - self.min_vals[member])
                    self.max_vals[member] += c * (hi - self.max_vals[member])
        qp = self.qparams()
        if qp is None:
            return x
        return fake_quantize(x, qp[0], qp[1])

    def extra_repr(self) -> str:
        return f"members={self.members}, qparams={self.qparams()}"


class QATConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is fake-quantized to int8 in the forward pass."""

    per_channel = True

    @classmethod
    def from_float(cls, mod: nn.Conv2d, per_channel: bool) -> QATConv2d:
        new = copy.deepcopy(mod)
        new.__class__ = cls
        new.per_channel = per_channel
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quantize_weight(self.weight, self.per_channel), self.bias)


class QATLinear(nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized to int8 in the forward pass."""

    per_channel = True

    @classmethod
    def from_float(cls, mod: nn.Linear, per_channel: bool) -> QATLinear:
        new = copy.deepcopy(mod)
        new.__class__ = cls
        new.per_channel = per_channel
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quantize_weight(self.weight, self.per_channel)
        return nn.functional.linear(x, w, self.bias)


def _set_calibrating(gm: nn.Module, on: bool) -> None:
    for m in gm.modules():
        if isinstance(m, FakeQuantize):
            m.calibrating = on


def prepare_qat_(
    model: nn.Module,
    config: Int8Config | None = None,
    example_inputs: Any = None,
    calibration: Any = None,
) -> fx.GraphModule:
    """Returns a fake-quantized copy of ``model`` to train; :func:`convert_` makes it int8.

    ``model`` is not changed (its ``forward`` is traced; train the returned ``GraphModule``).
    The observers are initialized by one pass over ``example_inputs`` (and over ``calibration``
    if given, which is better: EMA ranges then start from representative data). The returned
    module is in ``model``'s train/eval mode.

    Args:
        model: float model (pruned or not).
        config: :class:`Int8Config` (``per_channel``, ``requantization``, ``keep_float``,
            ``filter_fn``, ``averaging_constant`` apply; ranges are always EMA-observed).
        example_inputs: inputs for tracing (tuple or tensor); default the first calibration batch.
        calibration: optional batches to initialize the ranges.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> qat = prepare_qat_(model, Int8Config(), (torch.randn(4, 8),))
        >>> qat(torch.randn(2, 8)).shape
        torch.Size([2, 3])
    """
    api = "prepare_qat_"
    config = Int8Config() if config is None else config
    if not isinstance(config, Int8Config):
        raise TypeError(f"{api}: config must be an Int8Config, got {type(config).__name__}")
    batches = input_batches(api, calibration) if calibration is not None else []
    if example_inputs is None:
        if not batches:
            raise ValueError(
                f"{api}: example_inputs is missing; expected a tuple of inputs (or calibration "
                "data), got None"
            )
        example_inputs = batches[0]
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    check_parameters(api, model)
    fg = float_graph(model, example_inputs)
    an = _Analysis(fg, config, api)
    swapped: set[str] = set()
    for n in an.nodes:
        kind = an.infos[n.name].kind
        if kind in ("conv", "linear") and n.target not in swapped:
            mod = fg.get_submodule(n.target)
            cls = QATConv2d if kind == "conv" else QATLinear
            set_submodule(fg, n.target, cls.from_float(mod, config.per_channel))
            swapped.add(n.target)
    groups: dict[str, list[str]] = {}
    for name in an.quant_points():
        groups.setdefault(an.group[name], []).append(name)
    fq_of: dict[str, tuple[str, int]] = {}
    for i, (root, members) in enumerate(sorted(groups.items())):
        target = f"fake_quant_{i}"
        fg.add_submodule(
            target, FakeQuantize(members, config.averaging_constant, an.fixed.get(root))
        )
        for j, m in enumerate(members):
            fq_of[m] = (target, j)
    for name, (target, j) in fq_of.items():
        node = an.by_name[name]
        entering = an.dom[name] == "f"
        users = [u for u in node.users if not entering or an._consumes_q(u, node)]
        with fg.graph.inserting_after(node):
            fq = fg.graph.call_module(target, (node, j))
        for u in users:
            u.replace_input_with(node, fq)
    fg.graph.lint()
    fg.recompile()
    object.__setattr__(
        fg,
        _INFO,
        {"config": config, "record": record_of(model), "class_name": type(model).__name__},
    )
    _set_calibrating(fg, True)
    try:
        with torch.no_grad():
            fg.eval()
            fg(*example_inputs)
            for inputs in batches:
                fg(*inputs)
    finally:
        _set_calibrating(fg, False)
    fg.train(model.training)
    return fg


def convert_(model: fx.GraphModule) -> fx.GraphModule:
    """Converts a model from :func:`prepare_qat_` (after training) to the integer-exact int8
    ``GraphModule`` that :func:`optimizer.quantize.ptq.quantize_` returns, using the trained
    weights and the fake-quant ranges; ``model`` is not changed.

    Raises:
        ValueError: ``model`` did not come from ``prepare_qat_``; a NaN/Inf weight (naming it).

    Example::

        qmodel = convert_(qat)
        qmodel(x)   # float in, float out, int8 inside
    """
    api = "convert_"
    info = getattr(model, _INFO, None)
    if info is None or not isinstance(model, fx.GraphModule):
        raise ValueError(
            f"{api}: expected the GraphModule returned by prepare_qat_, got "
            f"{type(model).__name__}. Call prepare_qat_(model, config, example_inputs) and train "
            "the module it returns"
        )
    check_parameters(api, model)
    work = copy.deepcopy(model)
    ranges: dict[str, tuple[float, float]] = {}
    for n in list(work.graph.nodes):
        if n.op != "call_module":
            continue
        mod = work.get_submodule(n.target)
        if not isinstance(mod, FakeQuantize):
            continue
        member = n.args[1] if len(n.args) > 1 else 0
        r = mod.member_range(member)
        if r is not None:
            if not all(np.isfinite(r)):
                raise ValueError(
                    f"{api}: the observed range of `{mod.members[member]}` is {r}; expected "
                    "finite values. Training diverged (NaN/Inf activations); lower the learning "
                    "rate or check the data"
                )
            ranges[mod.members[member]] = r
        n.replace_all_uses_with(n.args[0])
        work.graph.erase_node(n)
    work.graph.lint()
    work.delete_all_unused_submodules()
    work.recompile()
    work.eval()
    an = _Analysis(work, info["config"], api)
    return build_quantized(
        an, ranges, info["record"], info["class_name"], extra={"pass": "convert_qat"}
    )
