"""A user's own multitask encoder-decoder: plain torch, nothing imported from mtl-compress.

The pipeline calls `build_model(**model.kwargs)`; `forward(image)` returns one tensor per task name, at the input
resolution, in the format of the task's kind: `seg` logits `[B, C, H, W]`, `depth` metres `[B, 1, H, W]`
(positive), `normal` unit vectors `[B, 3, H, W]`. Its output names (`semantic`, `z`, `surface` in config.yaml) and
module names (`encoder`, `bridge`, `decoders.<name>`) differ from the project's own models; the config's
`tasks` map each name to its kind and its `sparsity.rules` map the modules to components.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EncoderDecoder(nn.Module):
    """Shared encoder (stride 4) + shared bridge + one small decoder per task."""

    def __init__(self, outputs: dict[str, int], width: int = 16, kinds: dict[str, str] | None = None) -> None:
        super().__init__()
        self.kinds = {name: (kinds or {}).get(name, name) for name in outputs}
        self.encoder = nn.Sequential(conv_block(3, width, 2), conv_block(width, 2 * width, 2), conv_block(2 * width, 2 * width))
        self.bridge = conv_block(2 * width, 2 * width)
        self.decoders = nn.ModuleDict(
            {task: nn.Sequential(conv_block(2 * width, width), nn.Conv2d(width, ch, 1)) for task, ch in outputs.items()}
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.bridge(self.encoder(image - 0.5))
        out = {}
        for task, decoder in self.decoders.items():
            z = F.interpolate(decoder(feats), size=image.shape[-2:], mode="bilinear", align_corners=False)
            if self.kinds[task] == "depth":
                z = torch.exp(z.clamp(-6, 6))
            elif self.kinds[task] == "normal":
                z = F.normalize(z, dim=1, eps=1e-6)
            out[task] = z
        return out


def build_model(outputs: dict[str, int], width: int = 16, kinds: dict[str, str] | None = None) -> EncoderDecoder:
    """The factory `model.factory` names: called with `model.kwargs` only.

    Args:
        outputs: output name -> channels.
        width: base channel width.
        kinds: output name -> what it predicts (`seg`, `depth`, `normal`); a name missing here is its own kind.
    """
    return EncoderDecoder(outputs, width, kinds)
