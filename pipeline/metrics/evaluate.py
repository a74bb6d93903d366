"""Run metrics over a split: from a model and a loader, or from saved runtime outputs (ORT / TensorRT)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import TaskSpec, as_task_kinds
from pipeline.metrics.base import Metric, as_tensor
from pipeline.metrics.depth import DepthMetric
from pipeline.metrics.normals import NormalMetric
from pipeline.metrics.seg import SegMetric

__all__ = ["evaluate", "make_metrics", "metrics_from_outputs"]

ArrayLike = torch.Tensor | np.ndarray


def make_metrics(tasks: TaskSpec, num_classes: int) -> dict[str, Metric]:
    """One fresh accumulator per task name, of its kind's metric, in task order.

    Args:
        tasks: a mapping task name -> kind (`RunConfig.task_kinds`), or a list of kinds (names equal kinds).

    Raises:
        ValueError: a task that is not of kind seg, depth or normal.
    """
    factories = {"seg": lambda: SegMetric(num_classes), "depth": DepthMetric, "normal": NormalMetric}
    if not isinstance(tasks, Mapping):
        tasks = list(tasks)
        unknown = [t for t in tasks if t not in factories]
        if unknown:
            raise ValueError(f"no metric for task '{unknown[0]}' (known: {', '.join(factories)})")
    return {task: factories[kind]() for task, kind in as_task_kinds(tasks).items()}


def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    tasks: TaskSpec,
    num_classes: int,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Metrics of `model` over every batch of `loader` (batches are dicts: `image` plus one target per task).

    The model runs in eval mode under `torch.no_grad()`; its previous training mode is restored afterwards,
    even on error. `tasks`: name -> kind, or a list of kinds. Returns task name -> metric -> value.
    """
    metrics = make_metrics(tasks, num_classes)
    tasks = list(metrics)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                outputs = model(batch["image"].to(device))
                for task in tasks:
                    metrics[task].update(outputs[task], batch[task].to(device))
    finally:
        model.train(was_training)
    return {task: m.compute() for task, m in metrics.items()}


def metrics_from_outputs(
    outputs: Mapping[str, ArrayLike],
    targets: Mapping[str, ArrayLike],
    tasks: TaskSpec,
    num_classes: int,
    chunk: int = 16,
) -> dict[str, dict[str, float]]:
    """Metrics from whole-split outputs saved by a runtime, so different runtimes can be compared by task metric.

    Args:
        outputs: task -> `[N, ...]` array as the model emits it (seg logits, depth metres, unit normals);
            FP16 arrays are promoted to float32.
        targets: task -> `[N, ...]` ground truth in the dataset batch format.
        tasks: tasks to score: name -> kind, or a list of kinds.
        num_classes: segmentation classes.
        chunk: samples per update, bounding the temporary float64 memory.
    """
    metrics = make_metrics(tasks, num_classes)
    tasks = list(metrics)
    for task in tasks:
        if task not in outputs or task not in targets:
            raise ValueError(
                f"task '{task}' is missing from the {'outputs' if task not in outputs else 'targets'}"
            )
        pred, target = as_tensor(outputs[task]), as_tensor(targets[task])
        if pred.shape[0] != target.shape[0]:
            raise ValueError(f"{task}: {pred.shape[0]} outputs but {target.shape[0]} targets")
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred = pred.float()
        for start in range(0, pred.shape[0], chunk):
            metrics[task].update(pred[start : start + chunk], target[start : start + chunk])
    return {task: m.compute() for task, m in metrics.items()}
