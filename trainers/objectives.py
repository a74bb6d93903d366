"""Per-task losses for dense multitask prediction (all computed at the label resolution, on valid pixels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.config import TaskSpec, as_task_kinds


def seg_loss(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target, ignore_index=-1)


def depth_loss(pred: Tensor, target: Tensor, kind: str = "log_l1") -> Tensor:
    valid = target > 0
    if not valid.any():
        return pred.sum() * 0.0
    p, g = pred[valid], target[valid]
    if kind == "log_l1":
        # L1 on log-depth: errors are relative, so near and far pixels count alike (findings.md)
        return (torch.log(p.clamp_min(1e-3)) - torch.log(g)).abs().mean()
    return (p - g).abs().mean()


def normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    valid = target.abs().sum(dim=1) > 0
    if not valid.any():
        return pred.sum() * 0.0
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-6)
    return 1.0 - cos[valid].mean()


class MultiTaskLoss:
    """Returns unweighted per-task losses (keyed by task name, chosen by kind); weighting is the trainer's concern.

    `tasks`: name -> kind (`RunConfig.task_kinds`), or a list of kinds.
    """

    def __init__(self, tasks: TaskSpec, depth_kind: str = "log_l1"):
        self.kinds = as_task_kinds(tasks)
        self.tasks = list(self.kinds)
        self.depth_kind = depth_kind

    def __call__(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        losses = {}
        for t, kind in self.kinds.items():
            if kind == "seg":
                losses[t] = seg_loss(outputs[t], batch[t])
            elif kind == "depth":
                losses[t] = depth_loss(outputs[t], batch[t], self.depth_kind)
            else:
                losses[t] = normal_loss(outputs[t], batch[t])
        return losses
