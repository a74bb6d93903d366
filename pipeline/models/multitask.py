"""`MultiTaskNet`: one shared backbone, one head per task, outputs at the input resolution.

Output conventions (docs/architecture.md): `seg` logits `[B, C, H, W]`, `depth` metres `[B, 1, H, W]` (> 0),
`normal` unit vectors `[B, 3, H, W]`. The task kind is the task name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TASK_KINDS
from pipeline.errors import ConfigError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LOG_DEPTH_CLAMP", "MultiTaskNet", "check_tasks", "task_channels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# exp(+-6) spans 2.5 mm .. 403 m, far beyond indoor/outdoor depth; it also keeps exp() finite in FP16
# (exp(z) overflows FP16 above z = 11.09), so a TensorRT FP16 engine cannot emit inf for a stray logit.
LOG_DEPTH_CLAMP = 6.0
_FIXED_CHANNELS = {"depth": 1, "normal": 3}


def task_channels(tasks: Iterable[str], num_classes: int) -> dict[str, int]:
    """Map task names to head output channels: seg -> num_classes, depth -> 1, normal -> 3 (order kept)."""
    return {t: num_classes if t == "seg" else _FIXED_CHANNELS.get(t, 0) for t in tasks}


def check_tasks(tasks: Mapping[str, int]) -> dict[str, int]:
    """Validate a task -> channels mapping and return it as a plain dict; raise ConfigError listing problems."""
    problems: list[str] = []
    if not isinstance(tasks, Mapping) or not tasks:
        raise ConfigError(
            f"tasks must be a non-empty mapping task -> channels, e.g. {{'seg': 7}}; got {tasks!r}"
        )
    for name, ch in tasks.items():
        if name not in TASK_KINDS:
            problems.append(f"unknown task '{name}' (available: {', '.join(TASK_KINDS)})")
        elif not isinstance(ch, int) or isinstance(ch, bool) or ch <= 0:
            problems.append(f"task '{name}' needs a positive integer channel count, got {ch!r}")
        elif name in _FIXED_CHANNELS and ch != _FIXED_CHANNELS[name]:
            problems.append(f"task '{name}' has {_FIXED_CHANNELS[name]} output channel(s), got {ch}")
    if problems:
        raise ConfigError(problems)
    return {str(k): int(v) for k, v in tasks.items()}


class MultiTaskNet(nn.Module):
    """Hard-parameter-sharing multitask network.

    Attributes:
        backbone: shared trunk with an `out_channels` attribute.
        heads: `nn.ModuleDict` task -> head, in task order; also the output-dict order.
        mean, std: ImageNet RGB statistics `[1, 3, 1, 1]`; the input is RGB in [0, 1].
        spec: `{"name", "kwargs"}` set by `create_model` (None when built by hand).

    Args:
        backbone: the trunk.
        heads: task name -> head module; keys must be task kinds (seg, depth, normal).
    """

    def __init__(self, backbone: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        unknown = [t for t in heads if t not in TASK_KINDS]
        if unknown or not heads:
            raise ConfigError(f"heads must be named after tasks ({', '.join(TASK_KINDS)}), got {list(heads)}")
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        # Non-persistent: fixed constants of the model definition, not learned state; checkpoints stay minimal
        # and ONNX export still bakes them in as initializers.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.spec: dict[str, Any] | None = None

    @property
    def tasks(self) -> list[str]:
        """Task names in output order."""
        return list(self.heads.keys())

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict every task at the input resolution.

        Args:
            image: float `[B, 3, H, W]`, RGB in [0, 1].

        Returns:
            task -> tensor, each at the input H, W (bilinear, align_corners=False, applied to the raw head
            output before the transforms below so every output pixel satisfies its constraint):

            - `seg`: raw logits.
            - `depth`: metres, exp(clamp(z, -6, 6)). The head predicts log-depth z: depth stays strictly
              positive without a constraint on the weights, and an L1 loss on log-depth is a plain L1 on z
              that weighs a 10% error equally at 1 m and at 10 m (the clamp bounds exp in FP16; gradients
              vanish only beyond 2.5 mm .. 403 m).
            - `normal`: z L2-normalised over channels (eps 1e-6), i.e. unit vectors.
        """
        size = image.shape[-2:]
        feats = self.backbone((image - self.mean) / self.std)
        out: dict[str, torch.Tensor] = {}
        for task, head in self.heads.items():
            z = F.interpolate(head(feats), size=size, mode="bilinear", align_corners=False)
            if task == "depth":
                z = torch.exp(torch.clamp(z, -LOG_DEPTH_CLAMP, LOG_DEPTH_CLAMP))
            elif task == "normal":
                z = F.normalize(z, p=2.0, dim=1, eps=1e-6)
            out[task] = z
        return out

    def example_inputs(self, batch: int = 1, height: int = 64, width: int = 80) -> tuple[torch.Tensor]:
        """Positional arguments for tracing/export: `(image,)`, a seeded uniform RGB batch on the model's device."""
        gen = torch.Generator().manual_seed(0)
        image = torch.rand(batch, 3, height, width, generator=gen)
        return (image.to(self.mean.device),)
