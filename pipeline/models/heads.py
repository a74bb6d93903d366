"""Task heads. Each head's last conv(s) are named `classifier`, which the default sparsity rules leave dense.

Heads map a backbone feature map `[B, in_channels, h, w]` to raw task outputs `[B, out_channels, h, w]` at the
same (feature) resolution; `MultiTaskNet` upsamples and applies the per-task output transform.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ASPPBranch", "ASPPHead", "LightHead"]


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _drop(p: float) -> nn.Module:
    # Identity rather than Dropout(0): the eval graph is the same, the training graph is simpler.
    return nn.Dropout(p) if p > 0 else nn.Identity()


class ASPPBranch(nn.Sequential):
    """One DeepLab-v2 ASPP branch: dilated 3x3 -> [BN] -> ReLU -> Dropout -> 1x1 -> [BN] -> ReLU -> Dropout -> 1x1.

    Children are named `conv1, bn1, relu1, drop1, conv2, bn2, relu2, drop2, classifier`; `bn*` and `drop*` are
    `nn.Identity` (no parameters) when disabled, so the state_dict only holds real layers. Convs followed by BN
    carry no bias (BN's shift replaces it); without BN they keep one, as in DeepLab-v2.
    """

    def __init__(
        self, cin: int, width: int, cout: int, dilation: int, batch_norm: bool = False, dropout: float = 0.5
    ) -> None:
        bias = not batch_norm
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(cin, width, 3, padding=dilation, dilation=dilation, bias=bias),
                bn1=_norm(width, batch_norm),
                relu1=nn.ReLU(inplace=True),
                drop1=_drop(dropout),
                conv2=nn.Conv2d(width, width, 1, bias=bias),
                bn2=_norm(width, batch_norm),
                relu2=nn.ReLU(inplace=True),
                drop2=_drop(dropout),
                classifier=nn.Conv2d(width, cout, 1),
            )
        )


class ASPPHead(nn.Module):
    """DeepLab-v2 ASPP head: parallel dilated branches (`branches.i`) whose outputs are summed.

    Args:
        in_channels: backbone feature channels.
        out_channels: task output channels.
        width: hidden channels of every branch (1024 in DeepLab-v2 / AdapMTL).
        dilations: one branch per dilation; (6, 12, 18, 24) for stride-8 maps of ~41x41. Scale them to the
            feature map: a 3x3 tap further than the map's size only ever reads padding.
        batch_norm: BN after the two hidden convs (AdapMTL has none).
        dropout: dropout probability after each hidden ReLU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 1024,
        dilations: Sequence[int] = (6, 12, 18, 24),
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if not dilations:
            raise ValueError("ASPPHead needs at least one dilation")
        self.branches = nn.ModuleList(
            ASPPBranch(in_channels, width, out_channels, int(d), batch_norm, dropout) for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class LightHead(nn.Module):
    """Small head: conv3x3-BN-ReLU -> conv3x3-BN-ReLU -> 1x1 `classifier`."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.classifier(x)
