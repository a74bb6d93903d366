"""Dilated CNN backbones for dense prediction, written in-project (no torchvision dependency).

Parameter names mirror torchvision (`conv1`, `bn1`, `layer1..layer4` with BasicBlock `conv1/bn1/conv2/bn2/
downsample.0/downsample.1`; MobileNetV2 `features.N...`) so that ImageNet weights load with
`load_torchvision_weights` when torchvision happens to be installed. Dilation does not change any weight
shape, so the dilated variants take the same checkpoints as the classification networks.

Every backbone maps `[B, 3, H, W]` (already normalised) to one feature map `[B, out_channels, H/s, W/s]` with
`s = output_stride` (for H, W divisible by s; other sizes round up, as strided 3x3 convs with padding do).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.errors import PipelineError

__all__ = [
    "BasicBlock",
    "CompactBackbone",
    "InvertedResidual",
    "MobileNetV2Backbone",
    "ResNetBackbone",
    "load_torchvision_weights",
    "resnet18_dilated",
    "resnet34_dilated",
]


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps H, W unchanged at stride 1 for any dilation.
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs), optionally dilated; torchvision parameter names."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride, dilation)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout, 1, dilation)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _make_layer(cin: int, cout: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    # DeepLab-v2 / AdaShare convention: every block of a dilated stage (its first included) uses the stage's
    # dilation, and the stride (if any) sits in the first block.
    layers = [BasicBlock(cin, cout, stride, dilation)]
    layers += [BasicBlock(cout, cout, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetBackbone(nn.Module):
    """Dilated ResNet (BasicBlock) trunk: 7x7 stem + max-pool, four stages, no pooling or classifier.

    Args:
        blocks: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-34.
        strides: stride of each stage after the stem; the stem contributes 4.
        dilations: dilation of each stage; DeepLab replaces the last two strides with dilations 2 and 4.
        widths: channels of each stage.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        strides: Sequence[int] = (1, 2, 1, 1),
        dilations: Sequence[int] = (1, 1, 2, 4),
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if not (len(blocks) == len(strides) == len(dilations) == len(widths) == 4):
            raise ValueError("blocks, strides, dilations and widths need four entries each")
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = widths[0]
        for i in range(4):
            setattr(self, f"layer{i + 1}", _make_layer(cin, widths[i], blocks[i], strides[i], dilations[i]))
            cin = widths[i]
        self.out_channels = widths[3]
        self.output_stride = 4 * strides[0] * strides[1] * strides[2] * strides[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet18_dilated() -> ResNetBackbone:
    """ResNet-18 trunk at output stride 8 (DeepLab: strides [1, 2, 1, 1], dilations [1, 1, 2, 4])."""
    return ResNetBackbone((2, 2, 2, 2))


def resnet34_dilated() -> ResNetBackbone:
    """ResNet-34 trunk at output stride 8, as AdapMTL's `Deeplab_ResNet34` (method.md section 7)."""
    return ResNetBackbone((3, 4, 6, 3))


class CompactBackbone(nn.Module):
    """Small ResNet-style trunk for CPU presets: 3x3 stride-2 stem, four BasicBlock stages, output stride 8.

    Stages 2 and 3 downsample; the last stage is dilated instead of strided so that the heads see a stride-8
    map (8x10 for a 64x80 input). The stem is the only conv with 3 input channels, which makes it the
    natural layer that 2:4 sparsity cannot apply to.

    Args:
        widths: channels of the four stages (the stem has `widths[0]`).
        blocks: BasicBlocks per stage.
        last_dilation: dilation of the last stage.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 48, 64),
        blocks: Sequence[int] = (1, 1, 1, 1),
        last_dilation: int = 2,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError("widths and blocks need four entries each")
        widths = [int(w) for w in widths]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        strides, dilations = (1, 2, 2, 1), (1, 1, 1, last_dilation)
        cin = widths[0]
        for i in range(4):
            setattr(self, f"layer{i + 1}", _make_layer(cin, widths[i], blocks[i], strides[i], dilations[i]))
            cin = widths[i]
        self.out_channels = widths[3]
        self.output_stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ---------------------------------------------------------------------------------------------------------
# MobileNetV2


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels as torchvision/TF do (never below 90% of v), so widths match their checkpoints."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class _ConvBNReLU6(nn.Sequential):
    # Same child indices as torchvision's Conv2dNormActivation: 0 = conv, 1 = BN, 2 = ReLU6.
    def __init__(
        self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1
    ):
        padding = (kernel - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block; `conv` holds [expand 1x1 (if t > 1), depthwise 3x3, project 1x1, BN] as torchvision."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_ConvBNReLU6(cin, hidden, kernel=1))
        layers += [
            _ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expand ratio t, channels c, repeats n, stride s): the standard MobileNetV2 table.
_MBV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 feature extractor (`features.0..18`, ending in the 1x1 conv to 1280 channels).

    Strides that would take the map below `output_stride` become stride 1, and the following depthwise convs
    are dilated by the accumulated factor (TF DeepLab's rule: the block whose stride is removed keeps the
    previous rate, so its receptive field equals the strided original's).

    Args:
        output_stride: 8, 16 or 32 (32 is the classification network; AdapMTL used 32, we default to 8
            because stride-32 logits are ~11x11 for a 321 input, method.md section 13 #12).
        width_mult: channel multiplier; 1.0 is the standard network (the only one with torchvision weights).
    """

    def __init__(self, output_stride: int = 8, width_mult: float = 1.0) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_ConvBNReLU6(3, cin, stride=2)]
        stride, rate = 2, 1
        for t, c, n, s in _MBV2_SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                block_stride, block_rate = (s if i == 0 else 1), rate
                if block_stride > 1 and stride >= output_stride:
                    rate *= block_stride  # later blocks see the finer grid through a larger dilation
                    block_stride = 1
                elif block_stride > 1:
                    stride *= block_stride
                features.append(InvertedResidual(cin, cout, block_stride, t, dilation=block_rate))
                cin = cout
        features.append(_ConvBNReLU6(cin, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.out_channels = last
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# ---------------------------------------------------------------------------------------------------------
# torchvision weights

_TORCHVISION_ARCHS = {"resnet18": "fc.", "resnet34": "fc.", "mobilenet_v2": "classifier."}


def load_torchvision_weights(backbone: nn.Module, arch: str, weights: str = "DEFAULT") -> None:
    """Copy torchvision ImageNet weights into an in-project backbone (in place; the classifier is dropped).

    torchvision is imported here and only here; it may download the checkpoint on first use.

    Args:
        backbone: a `ResNetBackbone` (resnet18/resnet34) or a width-1.0 `MobileNetV2Backbone`.
        arch: torchvision model name: "resnet18", "resnet34" or "mobilenet_v2".
        weights: torchvision weights enum name, e.g. "IMAGENET1K_V1".

    Raises:
        PipelineError: torchvision is missing, the architecture is unknown, or the shapes do not match.
    """
    if arch not in _TORCHVISION_ARCHS:
        raise PipelineError(
            f"no torchvision weights for '{arch}' (available: {', '.join(_TORCHVISION_ARCHS)})"
        )
    try:
        import torchvision
    except ImportError:
        raise PipelineError(
            "loading ImageNet weights needs torchvision, which is not installed; "
            "`pip install torchvision` matching your torch version, or train from scratch"
        ) from None
    source = torchvision.models.get_model(arch, weights=weights)
    drop = _TORCHVISION_ARCHS[arch]
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(drop)}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise PipelineError(
            f"torchvision '{arch}' weights do not fit {type(backbone).__name__}: {first}"
        ) from None
