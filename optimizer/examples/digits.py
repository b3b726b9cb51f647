"""Handwritten digits (sklearn's 8x8 ``load_digits``): data, four reference models, training, cache.

The demo and the benchmarks need a real task that trains in seconds on a laptop CPU, with models
shaped like the ones users deploy. ``load_digits`` (1797 images, 10 classes) is that task; the
models are a VGG-style CNN (about 1.4 MB of fp32 weights, the size of the seed paper's VGG), a
ResNet-style CNN, a MobileNetV2-style CNN and an MLP, all plain ``nn.Module`` code taking
``[N, 1, 8, 8]`` images scaled to [0, 1].

Example:
    >>> train_loader, test_loader = loaders(batch_size=64, seed=0)
    >>> model = train(mlp_digits(), train_loader, epochs=2)
    >>> evaluate(model, test_loader) > 80.0
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optimizer._util import atomic_torch_save

__all__ = [
    "EPOCHS",
    "MODELS",
    "cache_path",
    "evaluate",
    "load_digits_split",
    "loaders",
    "mlp_digits",
    "mobilenetv2_digits",
    "pretrained",
    "resnet_digits",
    "shift_images",
    "shift_views",
    "train",
    "vgg_digits",
]

NUM_CLASSES = 10
# Bump when the training recipe changes in a way the cache key cannot see (e.g. the loss).
_RECIPE_VERSION = 1


# --------------------------------------------------------------------------- data


def load_digits_split(
    seed: int = 0, test_size: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns a stratified split of sklearn's digits as ``(x_train, y_train, x_test, y_test)``.

    Images are float32 ``[N, 1, 8, 8]`` in [0, 1] (pixel values 0..16 divided by 16); labels
    are int64 ``[N]``. The split is ``train_test_split(..., stratify=y, random_state=seed)``, so
    the same arguments always give the same tensors (1347 train / 450 test at the defaults).

    Args:
        seed: ``random_state`` of the split.
        test_size: fraction of the 1797 images held out, in (0, 1).

    Example:
        >>> x_train, y_train, x_test, y_test = load_digits_split()
        >>> tuple(x_train.shape), tuple(x_test.shape)
        ((1347, 1, 8, 8), (450, 1, 8, 8))
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(
            f"load_digits_split: test_size must be a fraction; expected 0 < test_size < 1, "
            f"got {test_size!r}."
        )
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits_split: scikit-learn is required for the digits example; "
            "`pip install scikit-learn`."
        ) from e
    data = load_digits()
    x = torch.from_numpy(data.images.astype("float32") / 16.0).unsqueeze(1)
    y = torch.from_numpy(data.target.astype("int64"))
    idx_train, idx_test = train_test_split(
        list(range(len(y))), test_size=test_size, random_state=seed, stratify=data.target
    )
    idx_train, idx_test = torch.tensor(idx_train), torch.tensor(idx_test)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def loaders(
    batch_size: int = 64, seed: int = 0, test_size: float = 0.25, eval_batch_size: int = 256
) -> tuple[DataLoader, DataLoader]:
    """Returns ``(train_loader, test_loader)`` over :func:`load_digits_split`.

    The train loader shuffles with its own ``torch.Generator`` seeded with ``seed`` (two calls
    give the same batch order); the test loader keeps the split's order.

    Args:
        batch_size: training batch size.
        seed: seed of the split and of the shuffling.
        test_size: fraction held out for testing.
        eval_batch_size: test batch size (evaluation only, so larger is faster).

    Example:
        >>> train_loader, test_loader = loaders(batch_size=32)
        >>> next(iter(train_loader))[0].shape
        torch.Size([32, 1, 8, 8])
    """
    x_train, y_train, x_test, y_test = load_digits_split(seed, test_size)
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True, generator=gen
    )
    test_loader = DataLoader(TensorDataset(x_test, y_test), batch_size=eval_batch_size)
    return train_loader, test_loader


# --------------------------------------------------------------------------- models


class VGGDigits(nn.Module):
    """VGG-style: three stages of two conv-BN-ReLU (32, 64, 128), then a two-layer classifier."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = NUM_CLASSES):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(widths):
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(True)]
                c_in = c
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))  # 8x8 -> 4x4 -> 2x2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 2 * 2, 128),
            nn.ReLU(True),
            nn.Dropout(0.3),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.flatten(1))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1 strided projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNetDigits(nn.Module):
    """ResNet-style: stem, three basic blocks (32, 64 at stride 2, 96 at stride 2), pooled head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32))
        self.layer1 = BasicBlock(32, 32)
        self.layer2 = BasicBlock(32, 64, 2)  # 4x4
        self.layer3 = BasicBlock(64, 96, 2)  # 2x2
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, ReLU6."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden)]
            layers.append(nn.ReLU6(inplace=True))
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Digits(nn.Module):
    """MobileNetV2-style: 32-wide stem, inverted residuals (expand 6), one stride 2, 1x1 head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()),
            InvertedResidual(32, 16, 1, 1),
            InvertedResidual(16, 24, 1, 6),
            InvertedResidual(24, 24, 1, 6),
            InvertedResidual(24, 32, 2, 6),  # 8x8 -> 4x4: digits are too small for more strides
            InvertedResidual(32, 32, 1, 6),
            InvertedResidual(32, 64, 1, 6),
            nn.Sequential(nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6()),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class MLPDigits(nn.Module):
    """MLP on the 64 flattened pixels: 64 -> 256 -> 128 -> 10 with ReLU and dropout."""

    def __init__(self, hidden: tuple[int, ...] = (256, 128), num_classes: int = NUM_CLASSES):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 64
        for h in hidden:
            layers += [nn.Linear(c_in, h), nn.ReLU(inplace=True), nn.Dropout(0.2)]
            c_in = h
        layers.append(nn.Linear(c_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def vgg_digits() -> nn.Module:
    """VGG-style CNN for 8x8 digits: 354k parameters (1.42 MB fp32).

    Example:
        >>> vgg_digits()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return VGGDigits()


def resnet_digits() -> nn.Module:
    """ResNet-style CNN for 8x8 digits: basic blocks with projection shortcuts, 222k parameters.

    Example:
        >>> resnet_digits()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return ResNetDigits()


def mobilenetv2_digits() -> nn.Module:
    """MobileNetV2-style CNN for 8x8 digits (depthwise convs, ReLU6), 71k parameters.

    Example:
        >>> mobilenetv2_digits()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return MobileNetV2Digits()


def mlp_digits() -> nn.Module:
    """MLP on the flattened 8x8 image (accepts ``[N, 1, 8, 8]`` or ``[N, 64]``), 51k parameters.

    Example:
        >>> mlp_digits()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    return MLPDigits()


MODELS: dict[str, Callable[[], nn.Module]] = {
    "vgg": vgg_digits,
    "resnet": resnet_digits,
    "mobilenetv2": mobilenetv2_digits,
    "mlp": mlp_digits,
}
"""Name -> factory of an untrained digits model."""

EPOCHS: dict[str, int] = {"vgg": 45, "resnet": 30, "mobilenetv2": 30, "mlp": 40}
"""Default training epochs of :func:`pretrained`, each reaching >= 97 % test accuracy."""

LR = 3e-3
BATCH_SIZE = 64
AUGMENTED = frozenset({"vgg", "resnet", "mobilenetv2"})
""":func:`pretrained` trains these (the CNNs, whose convolutions share weights across positions)
with random one-pixel shifts: the full training recipe a user's original model would have had.
The MLP has no translation structure to exploit and trains on the plain images."""


# --------------------------------------------------------------------------- training


def shift_images(
    x: torch.Tensor, max_shift: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Moves each image of ``x`` ([N, C, H, W]) by its own random offset of up to ``max_shift``
    pixels in each direction, filling with zeros (the digits' background). Returns a new tensor.

    Example:
        >>> shift_images(torch.ones(2, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """
    if x.dim() != 4:
        raise ValueError(f"shift_images: expected [N, C, H, W] images, got shape {tuple(x.shape)}")
    if max_shift <= 0:
        return x.clone()
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))
    dy = torch.randint(0, 2 * s + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # [N, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # [N, 1, 1, W]
    idx = torch.arange(n)[:, None, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows, cols].squeeze(1).permute(0, 3, 1, 2).contiguous()


def shift_views(x: torch.Tensor, max_shift: int = 1) -> list[torch.Tensor]:
    """Every shift of the images ``x`` ([N, C, H, W]) by up to ``max_shift`` pixels in each
    direction, zero-filled, the unshifted batch first: ``(2 * max_shift + 1) ** 2`` views.

    For ``DistillConfig(teacher_views=shift_views)``: a teacher trained with
    :func:`shift_images` then averages its logits over all the shifts it was trained on.

    Example:
        >>> views = shift_views(torch.ones(2, 1, 8, 8))
        >>> len(views), bool(torch.equal(views[0], torch.ones(2, 1, 8, 8)))
        (9, True)
    """
    if x.dim() != 4:
        raise ValueError(f"shift_views: expected [N, C, H, W] images, got shape {tuple(x.shape)}")
    if max_shift < 0:
        raise ValueError(f"shift_views: max_shift must be >= 0, got {max_shift}")
    s = max_shift
    h, w = x.shape[-2:]
    padded = F.pad(x, (s, s, s, s))
    offsets = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1) if dy or dx]
    return [x] + [padded[..., s + dy : s + dy + h, s + dx : s + dx + w] for dy, dx in offsets]


def train(
    model: nn.Module,
    train_loader: DataLoader,
    epochs: int,
    lr: float = LR,
    seed: int = 0,
    progress: bool = False,
    augment: bool = False,
) -> nn.Module:
    """Trains ``model`` in place with Adam, a per-step cosine schedule and cross-entropy.

    Seeds torch and, when it has one, the loader's generator with ``seed``, so the same call on
    the same loader gives the same weights. Returns the model in eval mode. With ``augment``,
    every training batch is moved by random shifts of up to one pixel (:func:`shift_images`),
    which is what lets the 8x8 digits models generalise beyond ~98.5 %.

    Args:
        model: the module to train.
        train_loader: yields ``(images, labels)``.
        epochs: passes over the data (0 returns the model unchanged).
        lr: initial learning rate, decayed to 0 by a cosine over all steps.
        seed: seed of dropout, shuffling and augmentation.
        progress: show a tqdm progress bar per epoch.
        augment: random one-pixel shifts of the training images.

    Example:
        >>> train_loader, _ = loaders()
        >>> model = train(mlp_digits(), train_loader, epochs=1)
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"train: epochs must be a non-negative int; got {epochs!r}.")
    if epochs == 0:
        return model.eval()
    torch.manual_seed(seed)
    gen = getattr(train_loader, "generator", None)
    if gen is not None:
        gen.manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(train_loader))
    model.train()
    for epoch in range(epochs):
        batches = train_loader
        if progress:
            from tqdm import tqdm

            batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for x, y in batches:
            if augment:
                x = shift_images(x, 1, aug_gen)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Returns the accuracy of ``model`` on ``loader`` in percent (eval mode; mode restored).

    Example:
        >>> _, test_loader = loaders()
        >>> 0.0 <= evaluate(mlp_digits(), test_loader) <= 100.0
        True
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return 100.0 * correct / max(total, 1)


# --------------------------------------------------------------------------- cache


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("EDGEOPT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgeopt"


def cache_path(
    name: str, cache_dir: str | os.PathLike | None = None, epochs: int | None = None
) -> Path:
    """Returns the file :func:`pretrained` uses for ``name`` with these settings.

    The name is ``digits-<name>-<hash>.pt`` where the hash covers the architecture (its
    ``repr``), the epochs, learning rate, batch size, seed, split and a recipe version, so any
    change trains a new model instead of loading a stale one.
    """
    factory = _factory(name, "cache_path")
    epochs = EPOCHS[name] if epochs is None else epochs
    settings = {
        "name": name,
        "arch": repr(factory()),
        "epochs": epochs,
        "lr": LR,
        "batch_size": BATCH_SIZE,
        "seed": 0,
        "test_size": 0.25,
        "recipe": _RECIPE_VERSION,
        "augment": name in AUGMENTED,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return _cache_dir(cache_dir) / f"digits-{name}-{key}.pt"


def _factory(name: str, api: str) -> Callable[[], nn.Module]:
    if name not in MODELS:
        raise ValueError(
            f"{api}: unknown digits model; expected one of {sorted(MODELS)}, got {name!r}."
        )
    return MODELS[name]


def pretrained(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    epochs: int | None = None,
    progress: bool = False,
) -> nn.Module:
    """Returns digits model ``name`` trained on the seed-0 split, training it once and caching it.

    The state dict is cached under ``cache_dir``, else ``$EDGEOPT_CACHE``, else
    ``~/.cache/edgeopt``, written atomically (temporary file then ``os.replace``) so a crash
    never leaves a half-written file. An unreadable cache file is retrained and replaced.

    Args:
        name: a key of :data:`MODELS` (``"vgg"``, ``"resnet"``, ``"mobilenetv2"``, ``"mlp"``).
        cache_dir: directory of the cache.
        epochs: training epochs (default :data:`EPOCHS` ``[name]``).
        progress: show progress bars while training.

    Example:
        >>> model = pretrained("vgg")  # trains on first use (seconds), then loads
        >>> _, test_loader = loaders()
        >>> evaluate(model, test_loader) >= 97.0
        True
    """
    factory = _factory(name, "pretrained")
    path = cache_path(name, cache_dir, epochs)
    epochs = EPOCHS[name] if epochs is None else epochs
    torch.manual_seed(0)
    model = factory()
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            return model.eval()
        except Exception:  # any unreadable cache entry (truncated, foreign) is rebuilt below
            torch.manual_seed(0)
            model = factory()
    train_loader, _ = loaders(BATCH_SIZE, seed=0)
    augment = name in AUGMENTED
    train(model, train_loader, epochs, lr=LR, seed=0, progress=progress, augment=augment)
    _save_atomic(model.state_dict(), path)
    return model.eval()


def _save_atomic(state: dict, path: Path) -> None:
    atomic_torch_save(state, path)


def _main() -> None:  # pragma: no cover - manual report of accuracies and training times
    _, test_loader = loaders()
    for name in MODELS:
        t0 = time.perf_counter()
        model = pretrained(name, cache_dir=tempfile.mkdtemp())
        dt = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters())
        acc = evaluate(model, test_loader)
        print(f"{name:12s} params={params:7d} epochs={EPOCHS[name]:3d} acc={acc:.2f}% {dt:.1f}s")


if __name__ == "__main__":  # pragma: no cover
    _main()
