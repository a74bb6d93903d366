"""Multitask dense-prediction models: registry, `MultiTaskNet`, backbones and heads."""

from pipeline.models.multitask import MultiTaskNet, check_tasks, task_channels
from pipeline.models.registry import create_model, list_models, register_model

__all__ = ["MultiTaskNet", "check_tasks", "create_model", "list_models", "register_model", "task_channels"]
