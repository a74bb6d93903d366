"""Run configuration: the schema (`pipeline.config.schema`) and the strict loader (`pipeline.config.loader`).

A leaf of the project: nothing here imports a registry, a stage or a trainer. Registry names are checked
where the registries live (see `check_registered_names`).
"""

from __future__ import annotations

from pipeline.config.loader import (
    PRESET_DIR,
    apply_overrides,
    config_from_dict,
    deep_merge,
    list_presets,
    load_config,
    resolve_config_source,
    yaml_load,
)
from pipeline.config.schema import (
    DATASET_NAMES,
    TASK_KINDS,
    BuildConfig,
    DataConfig,
    DatasetName,
    ExportConfig,
    HardenConfig,
    ModelConfig,
    QuantizeConfig,
    RunConfig,
    SparsityConfig,
    TrainConfig,
    ValidateConfig,
    WeightingConfig,
    check_registered_names,
    check_values,
    config_to_dict,
)
from pipeline.config.tasks import KIND_CHANNELS, TaskSpec, as_task_kinds, task_record

__all__ = [
    "DATASET_NAMES",
    "KIND_CHANNELS",
    "TaskSpec",
    "as_task_kinds",
    "task_record",
    "PRESET_DIR",
    "TASK_KINDS",
    "BuildConfig",
    "DataConfig",
    "DatasetName",
    "ExportConfig",
    "HardenConfig",
    "ModelConfig",
    "QuantizeConfig",
    "RunConfig",
    "SparsityConfig",
    "TrainConfig",
    "ValidateConfig",
    "WeightingConfig",
    "apply_overrides",
    "check_registered_names",
    "check_values",
    "config_from_dict",
    "config_to_dict",
    "deep_merge",
    "list_presets",
    "load_config",
    "resolve_config_source",
    "yaml_load",
]
