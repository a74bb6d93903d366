"""Registered models. Every factory takes `tasks` (task -> channels) plus keyword overrides.

| name | backbone | heads | use |
|---|---|---|---|
| `tiny_mtl` | CompactBackbone (16, 16, 32, 32) | ASPP width 32, d (1, 2), BN | unit tests (32x32 input) |
| `scene_aspp` | CompactBackbone (16, 32, 48, 64) | ASPP width 64, d (1, 2, 3, 4), BN | demo / benchmark, 64x80 |
| `deeplab_resnet18` / `deeplab_resnet34` | dilated ResNet, OS 8 | ASPP width 1024, d (6, 12, 18, 24), no BN, dropout 0.5 | paper scale |
| `mobilenetv2_aspp` | MobileNetV2, OS 8 (configurable) | as above | paper scale |

Weights keep PyTorch's default init; the trainer re-initialises prunable convs (AdapMTL's normal(0, 0.01)).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.backbones import CompactBackbone, MobileNetV2Backbone, resnet18_dilated, resnet34_dilated
from pipeline.models.heads import ASPPHead, LightHead
from pipeline.models.multitask import MultiTaskNet
from pipeline.models.registry import register_model

PAPER_DILATIONS = (6, 12, 18, 24)


def _heads(
    tasks: dict[str, int],
    in_channels: int,
    head: str,
    width: int,
    dilations: Sequence[int],
    batch_norm: bool,
    dropout: float,
) -> dict[str, nn.Module]:
    if head == "aspp":
        return {
            t: ASPPHead(in_channels, c, width, tuple(dilations), batch_norm=batch_norm, dropout=dropout)
            for t, c in tasks.items()
        }
    if head == "light":
        return {t: LightHead(in_channels, c, width) for t, c in tasks.items()}
    raise ConfigError(f"unknown head '{head}' (available: aspp, light)")


@register_model("tiny_mtl")
def tiny_mtl(
    tasks: dict[str, int],
    widths: Sequence[int] = (16, 16, 32, 32),
    blocks: Sequence[int] = (1, 1, 1, 1),
    head: str = "aspp",
    head_width: int = 32,
    dilations: Sequence[int] = (1, 2),
    head_bn: bool = True,
    dropout: float = 0.0,
) -> MultiTaskNet:
    """Test model: every conv has multiples of 16 channels except the 3-channel stem and the classifiers."""
    backbone = CompactBackbone(widths, blocks)
    return MultiTaskNet(
        backbone, _heads(tasks, backbone.out_channels, head, head_width, dilations, head_bn, dropout)
    )


@register_model("scene_aspp")
def scene_aspp(
    tasks: dict[str, int],
    widths: Sequence[int] = (16, 32, 48, 64),
    blocks: Sequence[int] = (1, 1, 1, 1),
    head: str = "aspp",
    head_width: int = 64,
    dilations: Sequence[int] = (1, 2, 3, 4),
    head_bn: bool = True,
    dropout: float = 0.0,
) -> MultiTaskNet:
    """Demo/benchmark model for 64x80 inputs (findings.md, second experiment).

    The stride-8 map is 8x10, so the ASPP dilations are scaled down from the paper's 6..24 (which would read
    only padding) to 1..4. With three tasks the heads hold ~80% of the conv weights, the low end of the paper's
    77-99%. Dropout defaults to 0: short CPU runs (about 1,200 steps) converge better without it.
    """
    backbone = CompactBackbone(widths, blocks)
    return MultiTaskNet(
        backbone, _heads(tasks, backbone.out_channels, head, head_width, dilations, head_bn, dropout)
    )


def _deeplab(
    backbone: nn.Module,
    tasks: dict[str, int],
    head_width: int,
    dilations: Sequence[int],
    head_bn: bool,
    dropout: float,
) -> MultiTaskNet:
    return MultiTaskNet(
        backbone, _heads(tasks, backbone.out_channels, "aspp", head_width, dilations, head_bn, dropout)
    )


@register_model("deeplab_resnet18")
def deeplab_resnet18(
    tasks: dict[str, int],
    head_width: int = 1024,
    dilations: Sequence[int] = PAPER_DILATIONS,
    head_bn: bool = False,
    dropout: float = 0.5,
) -> MultiTaskNet:
    """Dilated ResNet-18 (output stride 8) with DeepLab-v2 ASPP heads."""
    return _deeplab(resnet18_dilated(), tasks, head_width, dilations, head_bn, dropout)


@register_model("deeplab_resnet34")
def deeplab_resnet34(
    tasks: dict[str, int],
    head_width: int = 1024,
    dilations: Sequence[int] = PAPER_DILATIONS,
    head_bn: bool = False,
    dropout: float = 0.5,
) -> MultiTaskNet:
    """AdapMTL's DeepLab-ResNet34 (method.md section 7): 21,267,648 backbone conv weights."""
    return _deeplab(resnet34_dilated(), tasks, head_width, dilations, head_bn, dropout)


@register_model("mobilenetv2_aspp")
def mobilenetv2_aspp(
    tasks: dict[str, int],
    output_stride: int = 8,
    width_mult: float = 1.0,
    head_width: int = 1024,
    dilations: Sequence[int] = PAPER_DILATIONS,
    head_bn: bool = False,
    dropout: float = 0.5,
) -> MultiTaskNet:
    """MobileNetV2 + ASPP heads. AdapMTL ran output stride 32; 8 is the dense-prediction default here."""
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"mobilenetv2_aspp: output_stride must be 8, 16 or 32, got {output_stride}")
    return _deeplab(
        MobileNetV2Backbone(output_stride, width_mult), tasks, head_width, dilations, head_bn, dropout
    )
