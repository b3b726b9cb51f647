"""The model zoo for tests: small, deterministic models written as users write PyTorch.

Each entry of :data:`ZOO` is a factory returning ``(model, example_inputs)`` with the model in
eval mode and seeded weights, so two calls give identical models. The models are ordinary
``nn.Module`` code (not written for our tracer) covering the structures that channel pruning has
to reason about: residual adds, downsample shortcuts, grouped and depthwise convolutions,
GroupNorm, squeeze-excitation multiplies, concat growth, chunk/split (YOLOv8's C2f), upsampling,
flatten into a linear layer, multi-head attention with LayerNorm and GELU, and plain MLPs. All
trace with ``torch.fx.symbolic_trace`` and run a forward in milliseconds; channel counts are
multiples of 8.

Example:
    >>> model, inputs = ZOO["resnet_basic"]()
    >>> model(*inputs).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Factory = Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]


def _images(seed: int, shape: tuple[int, ...] = (2, 3, 32, 32)) -> tuple[torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1000)
    return (torch.randn(*shape, generator=g),)


# --------------------------------------------------------------------------- VGG


class VGG(nn.Module):
    """Conv-BN-ReLU stacks with max pooling, then flatten -> MLP classifier."""

    def __init__(self, widths=((16, 16), (32, 32), (64,)), num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for stage in widths:
            for c in stage:
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(True)]
                c_in = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 4 * 4, 64),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs, identity or 1x1-stride-2 downsample shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNetBasic(nn.Module):
    """A small ResNet of BasicBlocks: identity blocks and downsampling blocks."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce, grouped 3x3, 1x1 expand; BatchNorm or GroupNorm."""

    def __init__(
        self,
        c_in: int,
        width: int,
        c_out: int,
        stride: int = 1,
        groups: int = 4,
        group_norm: bool = False,
    ) -> None:
        super().__init__()

        def norm(c: int) -> nn.Module:
            return nn.GroupNorm(4, c) if group_norm else nn.BatchNorm2d(c)

        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu(out)


class ResNetBottleneck(nn.Module):
    """Bottleneck blocks with a grouped 3x3 (groups=4); the middle block uses GroupNorm."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        self.blocks = nn.Sequential(
            Bottleneck(16, 32, 64),
            Bottleneck(64, 32, 64, group_norm=True),
            Bottleneck(64, 32, 64, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        return self.fc(x.flatten(1))


# --------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; residual at stride 1 and equal width."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [
                nn.Conv2d(c_in, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(True),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2-style: inverted residuals, depthwise 3x3, ReLU6, pooled linear classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(True)
            ),
            InvertedResidual(16, 16, 1, 1),
            InvertedResidual(16, 24, 2, 2),
            InvertedResidual(24, 24, 1, 2),
            InvertedResidual(24, 32, 2, 2),
            InvertedResidual(32, 32, 1, 2),
            nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(True)),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------- EfficientNet


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Rounds ``v`` to the nearest multiple of ``divisor`` (never below it), as torchvision."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SqueezeExcitation(nn.Module):
    """Channel gating: ``x * sigmoid(fc2(silu(fc1(avgpool(x)))))`` with 1x1 convs."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(self.avgpool(x))))
        return x * torch.sigmoid(scale)


class MBConv(nn.Module):
    """EfficientNet's MBConv: expand, depthwise, squeeze-excitation, project; SiLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        self.expand = None
        if expand != 1:
            self.expand = nn.Sequential(
                nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU()
            )
        self.dw = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn_dw = nn.BatchNorm2d(hidden)
        self.se = SqueezeExcitation(hidden, _make_divisible(c_in * 0.25))
        self.project = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.bn_project = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = F.silu(self.bn_dw(self.dw(out)))
        out = self.se(out)
        out = self.bn_project(self.project(out))
        if self.use_res:
            out = out + x
        return out


class EfficientNet(nn.Module):
    """EfficientNet-style: MBConv blocks with SE, a Hardswish head conv, pooled classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU(inplace=True)
        )
        self.blocks = nn.Sequential(
            MBConv(16, 16, 1, 1),
            MBConv(16, 24, 2, 4),
            MBConv(24, 24, 1, 4),
        )
        self.head = nn.Sequential(
            nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.Hardswish()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = self.pool(x).flatten(1)
        return self.fc(self.dropout(x))


# --------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-1x1 then BN-ReLU-3x3; returns only the new features."""

    def __init__(self, c_in: int, growth: int, bottleneck: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, bottleneck * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck * growth)
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(out)))


class DenseBlock(nn.Module):
    """Each layer sees the concatenation of the block input and every earlier layer's output."""

    def __init__(self, c_in: int, growth: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(c_in + i * growth, growth) for i in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            new = layer(x)
            x = torch.cat([x, new], 1)
        return x


class Transition(nn.Module):
    """BN-ReLU-1x1 conv then 2x2 average pooling."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.norm(x))))


class DenseNet(nn.Module):
    """Two dense blocks (growth 8) joined by a transition; pooled linear classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        self.block1 = DenseBlock(16, 8, 3)  # 16 -> 40 channels
        self.trans1 = Transition(40, 32)
        self.block2 = DenseBlock(32, 8, 2)  # 32 -> 48 channels
        self.norm = nn.BatchNorm2d(48)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.trans1(self.block1(self.stem(x))))
        x = F.relu(self.norm(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


# --------------------------------------------------------------------------- YOLOv8


class ConvBNSiLU(nn.Module):
    """Ultralytics' ``Conv``: conv (no bias), BatchNorm, SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class YoloBottleneck(nn.Module):
    """Two 3x3 ConvBNSiLU with an optional residual add."""

    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = ConvBNSiLU(c, c, 3)
        self.cv2 = ConvBNSiLU(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's C2f: split cv1's output in two, chain bottlenecks on the last part, concat all."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = ConvBNSiLU(c_in, 2 * self.c, 1)
        self.cv2 = ConvBNSiLU((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Ultralytics writes ``y = list(self.cv1(x).chunk(2, 1))``; torch.fx cannot iterate a
        # Proxy inside ``list()``, so the chunks are unpacked first (as ultralytics' forward_split).
        a, b = self.cv1(x).chunk(2, 1)
        y = [a, b]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max pools concatenated."""

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        c_hidden = c_in // 2
        self.cv1 = ConvBNSiLU(c_in, c_hidden, 1)
        self.cv2 = ConvBNSiLU(c_hidden * 4, c_out, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class YoloC2f(nn.Module):
    """A YOLOv8-style backbone and neck: C2f, SPPF, upsample + concat, a 1x1 detection head."""

    def __init__(self, head_channels: int = 24) -> None:
        super().__init__()
        self.stem = ConvBNSiLU(3, 16, 3, 2)  # 16x16
        self.c2f1 = C2f(16, 32, 1)  # P3
        self.down = ConvBNSiLU(32, 64, 3, 2)  # 8x8
        self.c2f2 = C2f(64, 64, 1)
        self.sppf = SPPF(64, 64)  # P4
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.c2f3 = C2f(64 + 32, 32, 1, shortcut=False)
        self.head = nn.Conv2d(32, head_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.c2f1(self.stem(x))
        p4 = self.sppf(self.c2f2(self.down(p3)))
        x = torch.cat([self.up(p4), p3], 1)
        return self.head(self.c2f3(x))


# --------------------------------------------------------------------------- transformer


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer: attention and a GELU MLP, each inside a residual."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), self.ln1(x), self.ln1(x))[0]
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return x


class Transformer(nn.Module):
    """Token classifier: embedding + learned positions, 2 encoder layers, mean pool, head."""

    def __init__(
        self,
        vocab: int = 100,
        seq_len: int = 16,
        dim: int = 64,
        heads: int = 4,
        hidden: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, hidden) for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x.mean(1))
        return self.head(x)


# --------------------------------------------------------------------------- MLP


class MLP(nn.Module):
    """Linear-ReLU stack on ``[B, 64]`` features."""

    def __init__(self, c_in: int = 64, hidden: tuple[int, ...] = (64, 32), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(c_in, h), nn.ReLU()]
            c_in = h
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


# --------------------------------------------------------------------------- registry


def _build(cls: type, seed: int, inputs: tuple[torch.Tensor, ...]) -> Factory:
    def factory() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        torch.manual_seed(seed)
        model = cls()
        # Non-trivial BN statistics, so eval-mode outputs depend on every channel.
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                    if m.weight is not None:
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.1, 0.1)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        return model.eval(), tuple(t.clone() for t in inputs)

    factory.__name__ = f"make_{cls.__name__.lower()}"
    return factory


def _tokens(seed: int) -> tuple[torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1000)
    return (torch.randint(0, 100, (2, 16), generator=g),)


ZOO: dict[str, Factory] = {
    "vgg": _build(VGG, 0, _images(0)),
    "resnet_basic": _build(ResNetBasic, 1, _images(1)),
    "resnet_bottleneck": _build(ResNetBottleneck, 2, _images(2)),
    "mobilenetv2": _build(MobileNetV2, 3, _images(3)),
    "efficientnet": _build(EfficientNet, 4, _images(4)),
    "densenet": _build(DenseNet, 5, _images(5)),
    "yolo_c2f": _build(YoloC2f, 6, _images(6)),
    "transformer": _build(Transformer, 7, _tokens(7)),
    "mlp": _build(MLP, 8, _images(8, (2, 64))),
}
"""Name -> factory returning ``(model in eval mode, example_inputs)``."""

ZOO_EXPECT: dict[str, dict] = {
    "vgg": {"prunable": True, "features": ("flatten_linear",)},
    "resnet_basic": {"prunable": True, "features": ("residual", "downsample")},
    "resnet_bottleneck": {
        "prunable": True,
        "features": ("residual", "downsample", "grouped_conv", "group_norm"),
    },
    "mobilenetv2": {"prunable": True, "features": ("residual", "depthwise")},
    "efficientnet": {"prunable": True, "features": ("residual", "depthwise", "squeeze_excite")},
    "densenet": {"prunable": True, "features": ("concat",)},
    "yolo_c2f": {"prunable": True, "features": ("residual", "split", "concat", "upsample")},
    "transformer": {
        "prunable": True,
        "features": ("embedding", "attention", "layer_norm", "residual"),
    },
    "mlp": {"prunable": True, "features": ()},
}
"""What each zoo model should show: ``prunable`` (it has channel groups a pruner can shrink)
and the structures it exercises, for test ids and for choosing models by feature."""
