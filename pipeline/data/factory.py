"""Bring your own data: `data: {factory: "package.module:callable", kwargs: {...}}`.

The callable is called as `fn(split, tasks, **kwargs)` and returns a map-style torch Dataset of per-sample dicts
in the contract of `pipeline.data.batching` (`image` plus one target per task). It must carry `num_classes` when
`seg` is a task; `class_names` and `name` are filled in when absent. The first sample is checked once, here:
keys, dtypes and shapes against the tasks and `data.height` x `data.width`, each problem a one-line DataError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.models.factory import call_factory, resolve_factory

__all__ = ["build_factory_dataset", "check_sample"]

# task -> (dtype, shape given H and W); image first
_SAMPLE_SPEC: dict[str, tuple[torch.dtype, Any]] = {
    "image": (torch.float32, lambda h, w: (3, h, w)),
    "seg": (torch.int64, lambda h, w: (h, w)),
    "depth": (torch.float32, lambda h, w: (1, h, w)),
    "normal": (torch.float32, lambda h, w: (3, h, w)),
}


def check_sample(sample: Any, tasks: list[str], height: int, width: int, where: str) -> None:
    """One sample against the contract: a dict with exactly `image` + tasks, each of the documented dtype and shape."""
    if not isinstance(sample, Mapping):
        raise DataError(f"{where}: samples must be dicts (image plus one entry per task), got {type(sample).__name__}")
    keys = ["image", *tasks]
    missing = [k for k in keys if k not in sample]
    extra = [str(k) for k in sample if k not in keys]
    if missing or extra:
        raise DataError(
            f"{where}: sample keys {sorted(map(str, sample))} must be exactly {keys}"
            f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}"
            f"{' (extra ' + ', '.join(extra) + ')' if extra else ''}"
        )
    for key in keys:
        dtype, shape_of = _SAMPLE_SPEC[key]
        value, want = sample[key], shape_of(height, width)
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{where}: sample '{key}' is a {type(value).__name__}; expected a {dtype} tensor {want}")
        if value.dtype != dtype or tuple(value.shape) != want:
            raise DataError(
                f"{where}: sample '{key}' is {value.dtype} {tuple(value.shape)}, expected {dtype} {want} "
                "(data.height x data.width must equal the sample size)"
            )


def build_factory_dataset(cfg: DataConfig, split: str, tasks: list[str]) -> Dataset:
    """Call the data factory for one split and check what it returns."""
    where = f"data.factory {cfg.factory} ({split})"
    dataset = call_factory(resolve_factory(cfg.factory, "data.factory"), "data.factory", split, list(tasks),
                           **cfg.kwargs)
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise DataError(f"{where}: returned a {type(dataset).__name__}; expected a map-style torch Dataset")
    if len(dataset) == 0:
        raise DataError(f"{where}: the dataset is empty")
    num_classes = getattr(dataset, "num_classes", None)
    if "seg" in tasks and not (isinstance(num_classes, int) and num_classes >= 2):
        raise DataError(f"{where}: a dataset with a 'seg' task needs an int attribute 'num_classes' >= 2")
    if num_classes is None:
        dataset.num_classes = 1  # no seg task: the value sizes nothing
    if getattr(dataset, "class_names", None) is None:
        dataset.class_names = [f"class_{i}" for i in range(dataset.num_classes)]
    if getattr(dataset, "name", None) is None:
        dataset.name = cfg.factory
    check_sample(call_factory(dataset.__getitem__, f"{where} dataset[0]", 0), list(tasks), cfg.height, cfg.width,
                 where)
    return dataset
