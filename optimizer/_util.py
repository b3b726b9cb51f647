"""Small helpers the passes share: atomic file writes and a train/eval-mode guard."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Calls ``write(f)`` on a temporary file beside ``path``, fsyncs it, then renames it over
    ``path``; on any error the temporary file is removed and ``path`` is left as it was.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask), or keeps
    the mode of the file it replaces; ``mkstemp``'s private 0600 never leaks to the result.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = p.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """Puts every submodule of ``model`` in eval mode and restores each one's own flag after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, t in modes.items():
            m.training = t


def module_under(path: str, prefix: str) -> bool:
    """Whether module ``path`` is ``prefix`` or inside it (``"a.b"`` is under ``"a"``, ``"ab"``
    is not). Example: ``module_under("features.3.conv", "features.3") -> True``."""
    return path == prefix or path.startswith(prefix + ".")
