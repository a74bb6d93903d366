"""`MultiTaskNet`: one shared backbone, one head per task, outputs at the input resolution.

Output conventions by task kind (docs/architecture.md): `seg` logits `[B, C, H, W]`, `depth` metres `[B, 1, H, W]`
(> 0), `normal` unit vectors `[B, 3, H, W]`. Heads are keyed by task name; `task_kinds` gives each name's kind
(a name that is a kind is of that kind).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import KIND_CHANNELS, TASK_KINDS, TaskSpec, as_task_kinds
from pipeline.config.tasks import task_problems
from pipeline.errors import ConfigError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LOG_DEPTH_CLAMP", "MultiTaskNet", "check_tasks", "task_channels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# exp(+-6) spans 2.5 mm .. 403 m, far beyond indoor/outdoor depth; it also keeps exp() finite in FP16
# (exp(z) overflows FP16 above z = 11.09), so a TensorRT FP16 engine cannot emit inf for a stray logit.
LOG_DEPTH_CLAMP = 6.0


def task_channels(tasks: TaskSpec, num_classes: int) -> dict[str, int]:
    """Map task names to head output channels by kind: seg -> num_classes, depth -> 1, normal -> 3 (order kept).

    `tasks`: name -> kind (`RunConfig.task_kinds`), or a list of kinds."""
    return {t: KIND_CHANNELS[k] or num_classes for t, k in as_task_kinds(tasks).items()}


def check_tasks(tasks: Mapping[str, int], kinds: Mapping[str, str] | None = None) -> dict[str, int]:
    """Validate a task name -> channels mapping (with each name's kind; default: names are kinds) and return it
    as a plain dict; raise ConfigError listing problems."""
    problems: list[str] = []
    if not isinstance(tasks, Mapping) or not tasks:
        raise ConfigError(
            f"tasks must be a non-empty mapping task -> channels, e.g. {{'seg': 7}}; got {tasks!r}"
        )
    kinds = dict(kinds) if kinds is not None else {t: t for t in tasks}
    if list(kinds) != list(tasks):
        raise ConfigError(f"task kinds {kinds} do not name the tasks {list(tasks)}, in order")
    for name, ch in tasks.items():
        kind = kinds[name]
        if kind not in TASK_KINDS:
            what = f"task '{name}'" if kind == name else f"kind '{kind}' of task '{name}'"
            problems.append(f"unknown {what} (available: {', '.join(TASK_KINDS)})")
        elif not isinstance(ch, int) or isinstance(ch, bool) or ch <= 0:
            problems.append(f"task '{name}' needs a positive integer channel count, got {ch!r}")
        elif KIND_CHANNELS[kind] is not None and ch != KIND_CHANNELS[kind]:
            what = f"'{name}'" if name == kind else f"'{name}' ({kind})"
            problems.append(f"task {what} has {KIND_CHANNELS[kind]} output channel(s), got {ch}")
    if not problems:
        problems = task_problems(kinds)  # names: plain identifiers, none named after another kind
    if problems:
        raise ConfigError(problems)
    return {str(k): int(v) for k, v in tasks.items()}



class MultiTaskNet(nn.Module):
    """Hard-parameter-sharing multitask network.

    Attributes:
        backbone: shared trunk with an `out_channels` attribute.
        heads: `nn.ModuleDict` task name -> head, in task order; also the output-dict order.
        task_kinds: task name -> kind (`seg`, `depth`, `normal`): what the head's output means.
        mean, std: ImageNet RGB statistics `[1, 3, 1, 1]`; the input is RGB in [0, 1].
        spec: `{"name", "kwargs"}` set by `create_model` (None when built by hand).

    Args:
        backbone: the trunk.
        heads: task name -> head module.
        kinds: task name -> kind; None: every name is a kind (seg, depth, normal). Registered factories build
            with None and `create_model` sets the kinds (`set_task_kinds`).
    """

    def __init__(self, backbone: nn.Module, heads: Mapping[str, nn.Module],
                 kinds: Mapping[str, str] | None = None) -> None:
        super().__init__()
        if not heads:
            raise ConfigError(f"heads must name at least one task ({', '.join(TASK_KINDS)})")
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        # None until set for a name that is not a kind: forward refuses such a head (see set_task_kinds)
        self.task_kinds: dict[str, str | None] = {t: t if t in TASK_KINDS else None for t in heads}
        if kinds is not None:
            self.set_task_kinds(kinds)
        # Non-persistent: fixed constants of the model definition, not learned state; checkpoints stay minimal
        # and ONNX export still bakes them in as initializers.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.spec: dict[str, Any] | None = None

    @property
    def tasks(self) -> list[str]:
        """Task names in output order."""
        return list(self.heads.keys())

    def set_task_kinds(self, kinds: Mapping[str, str]) -> None:
        """Give each head its kind (ConfigError when the names differ from the heads or a kind is unknown)."""
        if list(kinds) != list(self.heads):
            raise ConfigError(f"task kinds {dict(kinds)} must name the heads {list(self.heads)}, in order")
        self.task_kinds = as_task_kinds(kinds)

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
            kind = self.task_kinds[task]
            if kind is None:
                raise ConfigError(f"head '{task}' has no task kind; build the model with kinds={{...}}")
            z = F.interpolate(head(feats), size=size, mode="bilinear", align_corners=False)
            if kind == "depth":
                z = torch.exp(torch.clamp(z, -LOG_DEPTH_CLAMP, LOG_DEPTH_CLAMP))
            elif kind == "normal":
                z = F.normalize(z, p=2.0, dim=1, eps=1e-6)
            out[task] = z
        return out

    def example_inputs(self, batch: int = 1, height: int = 64, width: int = 80) -> tuple[torch.Tensor]:
        """Positional arguments for tracing/export: `(image,)`, a seeded uniform RGB batch on the model's device."""
        gen = torch.Generator().manual_seed(0)
        image = torch.rand(batch, 3, height, width, generator=gen)
        return (image.to(self.mean.device),)
