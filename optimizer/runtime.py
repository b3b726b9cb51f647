"""Python face of the C++ model runtime: load a ``.eom`` file, run it on numpy, time it per layer.

The runtime needs numpy only (no torch): it is the piece of the package that runs on a device.
Files come from :func:`optimizer.export_native`: float models, and int8 models (the GraphModule
of :func:`optimizer.quantize_`, float in and out, int8 kernels inside, bit-exact to it).
Example::

    rt = optimizer.runtime.load("model.eom")
    rt.num_threads = 2
    y = rt.run(x)                       # numpy in (NCHW images, as PyTorch), numpy out
    prof = rt.profile(x, 50)
    print(prof.table())                 # per-layer median time and the kernel that ran it
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    from optimizer import _runtime
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "optimizer._runtime is not built: run `make build` (or `pip install -e .`) first"
    ) from exc

__all__ = ["FORMAT_VERSION", "LayerTime", "Profile", "Runtime", "load", "loads"]

#: (major, minor) of the .eom format this runtime reads.
FORMAT_VERSION: tuple[int, int] = tuple(_runtime.FORMAT_VERSION)


@dataclass
class LayerTime:
    """One operator's timing: ``name`` (PyTorch module path), ``op``, ``kernel`` (kernel and ISA
    path that ran it), ``median_s`` / ``min_s`` over the runs, ``macs``."""

    name: str
    op: str
    kernel: str
    median_s: float
    min_s: float
    macs: int


@dataclass
class Profile:
    """What :meth:`Runtime.profile` measured.

    Attributes:
        runs: timed runs (after one warm-up).
        threads: ``num_threads`` during the runs.
        total_s: time of each whole plain run, timed in C++ like edgeopt-bench (the per-layer
            times come from separate runs that read the clock around every operator).
        layers: per operator, in execution order.
    """

    runs: int
    threads: int
    total_s: list[float]
    layers: list[LayerTime] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.total_s)

    @property
    def min_s(self) -> float:
        return min(self.total_s)

    def table(self, top: int | None = None) -> str:
        """Per-layer median times, slowest first (``top`` rows), with share and kernel."""
        rows = sorted(self.layers, key=lambda r: -r.median_s)[:top]
        total = sum(r.median_s for r in self.layers) or 1.0
        lines = [f"{'layer':<36} {'op':<16} {'ms':>8} {'share':>6}  kernel"]
        for r in rows:
            lines.append(
                f"{r.name[:36]:<36} {r.op:<16} {r.median_s * 1e3:8.3f} "
                f"{r.median_s / total:6.1%}  {r.kernel}"
            )
        lines.append(
            f"total median {self.median_s * 1e3:.3f} ms over {self.runs} runs, "
            f"{self.threads} thread(s)"
        )
        return "\n".join(lines)


class Runtime:
    """A loaded ``.eom`` model. Made by :func:`load`; runs one call at a time."""

    def __init__(self, model: Any, path: Path | None = None) -> None:
        self._m = model
        self.path = path
        # The fast path of run(): one input and one output (the binding checks the array).
        self._fast = len(model.inputs) == 1 and len(model.outputs) == 1 and hasattr(model, "run1")

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """``{"name", "shape", "dtype"}`` per input, as :meth:`run` takes them (images NCHW)."""
        return list(self._m.inputs)

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self._m.outputs)

    @property
    def num_threads(self) -> int:
        """Threads the kernels use (the calling thread is one); 1 by default."""
        return int(self._m.num_threads)

    @num_threads.setter
    def num_threads(self, threads: int) -> None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
            raise TypeError(f"`Runtime.num_threads` must be an int, got {type(threads).__name__}")
        if not 1 <= int(threads) <= 256:
            raise ValueError(f"`Runtime.num_threads` must be in [1, 256], got {threads}")
        self._m.num_threads = int(threads)

    @property
    def layers(self) -> list[dict[str, Any]]:
        """Per operator: ``name``, ``op``, ``kernel`` (after the first run), ``macs``."""
        return list(self._m.layers)

    @property
    def arena_bytes(self) -> int:
        """Activation memory after liveness-based reuse."""
        return int(self._m.arena_bytes)

    @property
    def activation_bytes(self) -> int:
        """Sum of every activation tensor (the arena without reuse)."""
        return int(self._m.activation_bytes)

    @property
    def weight_bytes(self) -> int:
        return int(self._m.weight_bytes)

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._m.metadata)

    def _arrays(self, api: str, xs: tuple) -> list[np.ndarray]:
        specs = self._m.inputs
        if len(xs) != len(specs):
            raise ValueError(
                f"`Runtime.{api}`: the model takes {len(specs)} input(s), got {len(xs)}"
            )
        out = []
        for i, (x, spec) in enumerate(zip(xs, specs)):
            if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor
                x = x.detach().cpu().numpy()
            if not isinstance(x, np.ndarray):
                raise ValueError(
                    f"`Runtime.{api}`: input {i} (`{spec['name']}`) must be a numpy "
                    f"array, got {type(x).__name__}"
                )
            if x.dtype != spec["dtype"]:
                raise ValueError(
                    f"`Runtime.{api}`: input {i} (`{spec['name']}`) must have dtype "
                    f"{spec['dtype']}, got {x.dtype}. Convert with x.astype(np.{spec['dtype']}); "
                    "values are never cast silently"
                )
            if tuple(x.shape) != tuple(spec["shape"]):
                raise ValueError(
                    f"`Runtime.{api}`: input {i} (`{spec['name']}`) must have shape "
                    f"{tuple(spec['shape'])} (fixed at export, batch included), got "
                    f"{tuple(x.shape)}. Export with example inputs of the shape you run"
                )
            out.append(np.ascontiguousarray(x))
        return out

    def run(self, *inputs: Any) -> Any:
        """Runs the model: one numpy array per input; returns one array (or a list for several
        outputs). Wrong dtype, shape or count raises ValueError."""
        if self._fast and len(inputs) == 1 and type(inputs[0]) is np.ndarray:
            y = self._m.run1(inputs[0])  # None unless dtype, shape and C order are the model's
            if y is not None:
                return y
        outs = self._m.run(self._arrays("run", inputs))
        return outs[0] if len(outs) == 1 else outs

    def profile(self, x: Any, runs: int = 20, *, warmup: int = 1) -> Profile:
        """Runs ``warmup`` untimed then ``runs`` timed runs, timing every operator.

        Args:
            x: the input array (a tuple or list of arrays for a model with several inputs).
            runs: timed runs.
            warmup: untimed runs first (caches, weight packing, thread start-up).

        Returns:
            A :class:`Profile`: total and per-layer times, kernel path per layer.

        Example::

            prof = rt.profile(x, 50)
            print(prof.median_s, prof.table(top=5))
        """
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise ValueError(f"`Runtime.profile`: runs must be an int >= 1, got {runs!r}")
        inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        xs = self._arrays("profile", inputs)
        for _ in range(max(0, int(warmup))):
            self._m.run(xs)
        # Totals: plain runs timed in C++ (as edgeopt-bench does), then the per-layer runs.
        totals = list(self._m.run_timed(xs, runs))
        per_layer = [self._m.run_profiled(xs)[1] for _ in range(runs)]
        cols = list(zip(*per_layer))
        layers = [
            LayerTime(
                name=info["name"],
                op=info["op"],
                kernel=info["kernel"],
                median_s=statistics.median(col),
                min_s=min(col),
                macs=int(info["macs"]),
            )
            for info, col in zip(self._m.layers, cols)
        ]
        return Profile(runs=runs, threads=self.num_threads, total_s=totals, layers=layers)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s['name']}{tuple(s['shape'])}" for s in self._m.inputs)
        return f"Runtime({self.path or '<bytes>'}: {ins}; {len(self._m.layers)} operators)"


def load(path: str | os.PathLike) -> Runtime:
    """Loads a ``.eom`` file (memory-mapped) and packs its weights for this CPU.

    Raises:
        ValueError: the file is not a valid .eom model (truncated, corrupted, another format
            version or byte order, or anything out of range); the message says what.
        OSError: the file cannot be read.

    Example::

        rt = load("model.eom")
        y = rt.run(np.zeros(rt.inputs[0]["shape"], np.float32))
    """
    p = Path(path)
    return Runtime(_runtime.Model.load(str(p)), p)


def loads(data: bytes) -> Runtime:
    """Like :func:`load`, from the file's bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"`runtime.loads`: data must be bytes, got {type(data).__name__}")
    return Runtime(_runtime.Model.from_bytes(bytes(data)))
