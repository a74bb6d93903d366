"""Assembling a Trainer (model + sparsity method + task weighting + objective + optimizer) from a RunConfig.

This is the one place that wiring lives: the training entry point (`trainers.training_run`), the masked 2:4
fine-tune (`trainers.hardening`) and the cost benchmark all build their trainers here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.config import RunConfig, TrainConfig
from pipeline.models.factory import build_factory_model, check_model_outputs, example_image
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from trainers.loop import Trainer
from trainers.objectives import MultiTaskLoss
from trainers.sparsity.base import SparsityMethod
from trainers.sparsity.methods import build_method
from trainers.weighting import build_weighting

__all__ = ["assemble_trainer", "attach_method", "build_model", "init_conv_weights_"]


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The configured architecture with one head per configured task (weights from the global torch RNG).

    A `model.factory` model is called with `model.kwargs` only; its outputs are checked once here against the
    configured tasks and the data size (one-line ConfigError when they do not match).
    """
    channels = task_channels(cfg.task_kinds, num_classes)
    if cfg.model.factory is None:
        return create_model(cfg.model.name, channels, kinds=cfg.task_kinds, **cfg.model.kwargs)
    model = build_factory_model(cfg.model.factory, cfg.model.kwargs)
    check_model_outputs(model, channels, cfg.data.height, cfg.data.width)
    return model


def init_conv_weights_(model: nn.Module, kind: str, seed: int) -> None:
    """`normal001`: every conv weight ~ N(0, 0.01) as in the official AdapMTL code (uniform scale)."""
    if kind != "normal001":
        return
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.01)


def attach_method(method: SparsityMethod, model: nn.Module, cfg: RunConfig) -> None:
    """`method.attach(model, cfg.task_names)`; a channel method also gets an input at the run's size, so its MAC
    counts (controller budget and sparsity.json) are those of the configured input, not a fallback size."""
    if getattr(method, "structure", "unstructured") == "channel":
        method.attach(model, cfg.task_names, example=example_image(model, 1, cfg.data.height, cfg.data.width))
    else:
        method.attach(model, cfg.task_names)


def assemble_trainer(
    cfg: RunConfig,
    model: nn.Module,
    dataset: Any,
    *,
    method: SparsityMethod | None = None,
    weighting: str | None = None,
    train: TrainConfig | None = None,
    lr: float | None = None,
    steps: int | None = None,
) -> Trainer:
    """Attach a sparsity method to `model` and build the Trainer that trains it on `dataset`.

    - `method`: None builds `cfg.sparsity.method` for the run's step count; a given (unattached) method is used
      as it is (e.g. fixed masks for fine-tuning).
    - `weighting`: "static" | "adaptive"; None takes `cfg.train.weighting.kind`, where "auto" means the one the
      method prescribes (static for a given method, which prescribes none). `trainer.weighting.kind` tells
      which was used.
    - `train`, `lr`, `steps`: override `cfg.train`, its learning rate and its step count (fine-tuning).
    The objective is `MultiTaskLoss(cfg.task_kinds, cfg.train.depth_loss)`; the optimizer is the Trainer's Adam.
    """
    train = train if train is not None else cfg.train
    prescribed = "static"
    if method is None:
        method, spec = build_method(cfg.sparsity, steps if steps is not None else train.steps)
        prescribed = spec.weighting
    attach_method(method, model, cfg)
    kind = weighting if weighting is not None else cfg.train.weighting.kind
    if kind == "auto":
        kind = prescribed
    task_weighting = build_weighting(kind, cfg.task_names, cfg.train.weighting)
    objective = MultiTaskLoss(cfg.task_kinds, cfg.train.depth_loss)
    return Trainer(model, method, task_weighting, objective, dataset, train, lr=lr, steps=steps)
