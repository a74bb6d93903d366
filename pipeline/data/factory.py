"""Bring your own data: `data: {factory: "package.module:callable", kwargs: {...}}`.

The callable is called as `fn(split, tasks, **kwargs)`, where `tasks` is the list of task kinds when names equal
kinds (`tasks: [seg, depth]`) and the ordered mapping name -> kind otherwise (`tasks: {semantic: seg}`). It returns
a map-style torch Dataset of per-sample dicts in the contract of `pipeline.data.batching` (`image` plus one target
per task NAME, in its kind's format). It must carry `num_classes` when a task is of kind `seg`; `class_names` and
`name` are filled in when absent. The first sample is checked once, here: keys against the task names, dtypes and
shapes by kind against `data.height` x `data.width`, each problem a one-line DataError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from pipeline.config import DataConfig, TaskSpec, as_task_kinds
from pipeline.errors import DataError
from pipeline.models.factory import call_factory, resolve_factory

__all__ = ["build_factory_dataset", "check_sample"]

# key or task kind -> (dtype, shape given H and W); image first
_SAMPLE_SPEC: dict[str, tuple[torch.dtype, Any]] = {
    "image": (torch.float32, lambda h, w: (3, h, w)),
    "seg": (torch.int64, lambda h, w: (h, w)),
    "depth": (torch.float32, lambda h, w: (1, h, w)),
    "normal": (torch.float32, lambda h, w: (3, h, w)),
}


def check_sample(sample: Any, tasks: TaskSpec, height: int, width: int, where: str) -> None:
    """One sample against the contract: a dict with exactly `image` + the task names, each of its kind's dtype and
    shape."""
    if not isinstance(sample, Mapping):
        raise DataError(f"{where}: samples must be dicts (image plus one entry per task), got {type(sample).__name__}")
    kind_of = {"image": "image", **as_task_kinds(tasks)}
    keys = list(kind_of)
    missing = [k for k in keys if k not in sample]
    extra = [str(k) for k in sample if k not in keys]
    if missing or extra:
        raise DataError(
            f"{where}: sample keys {sorted(map(str, sample))} must be exactly {keys}"
            f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}"
            f"{' (extra ' + ', '.join(extra) + ')' if extra else ''}"
        )
    for key in keys:
        dtype, shape_of = _SAMPLE_SPEC[kind_of[key]]
        value, want = sample[key], shape_of(height, width)
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{where}: sample '{key}' is a {type(value).__name__}; expected a {dtype} tensor {want}")
        if value.dtype != dtype or tuple(value.shape) != want:
            raise DataError(
                f"{where}: sample '{key}' is {value.dtype} {tuple(value.shape)}, expected {dtype} {want}"
                f"{'' if key == kind_of[key] else ' (kind ' + kind_of[key] + ')'} "
                "(data.height x data.width must equal the sample size)"
            )


def build_factory_dataset(cfg: DataConfig, split: str, tasks: list[str] | dict[str, str]) -> Dataset:
    """Call the data factory for one split (`tasks` as it is passed on: a list of kinds or a mapping name -> kind)
    and check what it returns."""
    where = f"data.factory {cfg.factory} ({split})"
    passed = dict(tasks) if isinstance(tasks, Mapping) else list(tasks)  # the factory may keep or change its copy
    dataset = call_factory(resolve_factory(cfg.factory, "data.factory"), "data.factory", split, passed,
                           **cfg.kwargs)
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise DataError(f"{where}: returned a {type(dataset).__name__}; expected a map-style torch Dataset")
    if len(dataset) == 0:
        raise DataError(f"{where}: the dataset is empty")
    num_classes = getattr(dataset, "num_classes", None)
    seg_tasks = [n for n, k in as_task_kinds(tasks).items() if k == "seg"]
    if seg_tasks and not (isinstance(num_classes, int) and num_classes >= 2):
        raise DataError(f"{where}: a dataset with a seg task ({', '.join(seg_tasks)}) needs an int attribute "
                        "'num_classes' >= 2")
    if num_classes is None:
        dataset.num_classes = 1  # no seg task: the value sizes nothing
    if getattr(dataset, "class_names", None) is None:
        dataset.class_names = [f"class_{i}" for i in range(dataset.num_classes)]
    if getattr(dataset, "name", None) is None:
        dataset.name = cfg.factory
    check_sample(call_factory(dataset.__getitem__, f"{where} dataset[0]", 0), tasks, cfg.height, cfg.width, where)
    return dataset
