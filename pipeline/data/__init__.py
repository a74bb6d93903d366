"""Datasets: procedural scenes (default), NYUv2 in the MTAN `.npy` layout, the real 50-image PNG sample, and
a user's own dataset through `data.factory` (`pipeline.data.factory`).

`build_dataset(cfg, split, tasks)` is the one entry point; every dataset yields dict samples and has `num_classes`,
`class_names` and `name`. `pipeline.data.batching` states the per-sample contract, and its `gather` / `iter_batches`
are the only way batches are drawn. Use `dataset.num_classes`, not `cfg.num_classes`, when sizing a model: the NYUv2
datasets always have 13 classes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.config import DataConfig, TaskSpec, as_task_kinds, task_record
from pipeline.data import scenes
from pipeline.data.base import (
    NYU13_CLASS_NAMES,
    TASKS,
    MultiTaskTensorDataset,
    NamedTasks,
    check_tasks,
    nhwc_to_tensor,
    renormalise,
)
from pipeline.data.batching import gather, iter_batches
from pipeline.data.factory import build_factory_dataset
from pipeline.data.nyuv2_mtan import NYUv2MTAN
from pipeline.data.nyuv2_png import INDEX_COLUMNS, find_realdata, load_nyuv2_png, read_index
from pipeline.errors import DataError

__all__ = [
    "NYU13_CLASS_NAMES",
    "TASKS",
    "MultiTaskTensorDataset",
    "build_dataset",
    "build_scenes",
    "builtin_kinds",
    "dataset_fingerprint",
    "find_realdata",
    "gather",
    "iter_batches",
    "with_task_names",
]

SPLITS = ("train", "val")


def build_scenes(cfg: DataConfig, split: str, tasks: Iterable[str]) -> MultiTaskTensorDataset:
    """The procedural scenes split, loaded from the cache or rendered (and cached) on first use."""
    tasks = check_tasks(tasks)
    arrays, from_cache = scenes.load_or_generate(cfg, split)
    normal = None
    if "normal" in tasks:
        # float16 storage is not exactly unit length: renormalise once here rather than per item.
        normal = renormalise(nhwc_to_tensor(arrays["normal"]).float(), dim=1)
    return MultiTaskTensorDataset(
        name="scenes",
        class_names=scenes.object_class_names(cfg.num_classes),
        tasks=tasks,
        image=nhwc_to_tensor(arrays["image"]),
        seg=torch.from_numpy(arrays["seg"]) if "seg" in tasks else None,  # int16, widened per item
        depth=torch.from_numpy(arrays["depth"].astype(np.float32))[:, None] if "depth" in tasks else None,
        normal=normal,
        meta={"cache_dir": str(scenes.cache_dir(cfg)), "from_cache": from_cache, "split": split},
    )


def build_dataset(cfg: DataConfig, split: str, tasks: TaskSpec) -> Dataset:
    """Build the dataset named by `cfg.name` for one split.

    Args:
        cfg: data settings; `height`/`width` set the output size of every dataset (real data is resized).
        split: "train" or "val".
        tasks: the run's tasks (`RunConfig.task_kinds`, or a list of kinds): samples carry `image` plus one target
            per task name, in the format of its kind. Built-in datasets produce kinds; they are renamed here.

    Returns:
        A map-style dataset of dict samples with attributes `num_classes`, `class_names` and `name`.

    Raises:
        DataError: the data is missing or malformed, or the real sample is asked for its (non-existent) train split.
        ValueError: an unknown split or task name (a programming error; configs are validated before this).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    task_kinds = as_task_kinds(tasks)
    if cfg.factory is not None:
        return build_factory_dataset(cfg, split, task_record(task_kinds))
    return with_task_names(_build_builtin(cfg, split, builtin_kinds(task_kinds)), task_kinds)


def builtin_kinds(tasks: TaskSpec) -> list[str]:
    """The kinds a built-in dataset is asked for: each once, in task order, even when two tasks share one."""
    return list(dict.fromkeys(as_task_kinds(tasks).values()))


def with_task_names(dataset: Dataset, tasks: TaskSpec) -> Dataset:
    """A built-in dataset (samples keyed by kind) with samples keyed by the task names (itself when names are
    kinds)."""
    kinds = as_task_kinds(tasks)
    return dataset if all(n == k for n, k in kinds.items()) else NamedTasks(dataset, kinds)


def _build_builtin(cfg: DataConfig, split: str, tasks: list[str]) -> Dataset:
    tasks = check_tasks(tasks)
    if cfg.name == "scenes":
        return build_scenes(cfg, split, tasks)
    if cfg.name == "nyuv2_mtan":
        if cfg.root is None:
            raise DataError("'data.root' is required for nyuv2_mtan: the folder holding train/ and val/")
        return NYUv2MTAN(cfg.root, split, tasks, cfg.height, cfg.width)
    if cfg.name == "nyuv2_png":
        if split == "train":
            raise DataError(
                "the real NYUv2 sample (nyuv2_png) is evaluation-only: it has no train split; "
                "train on scenes or nyuv2_mtan and use nyuv2_png for split 'val'"
            )
        return load_nyuv2_png(cfg.root, tasks, cfg.height, cfg.width)
    raise DataError(f"unknown dataset '{cfg.name}' (available: scenes, nyuv2_mtan, nyuv2_png)")


def _hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def dataset_fingerprint(cfg: DataConfig) -> str:
    """Stable short string identifying the data a config yields, for the run manifest.

    Paths are left out on purpose, so the same data gives the same fingerprint on another machine or clone:
    - scenes: the generation parameters, generator version and split sizes;
    - nyuv2_mtan: output size plus the name and byte size of every `.npy` file of both splits;
    - nyuv2_png: output size plus the content of `index.csv` and the byte size of every file it lists.

    Raises:
        DataError: a real dataset's folder cannot be found.
    """
    size = {"height": cfg.height, "width": cfg.width}
    if cfg.factory is not None:  # the content is the user's: the factory path and its arguments identify it
        return f"factory-{_hash({**size, 'factory': cfg.factory, 'kwargs': cfg.kwargs})}"
    if cfg.name == "scenes":
        desc = {**scenes.generation_params(cfg), "num_train": cfg.num_train, "num_val": cfg.num_val}
        return f"scenes-v{scenes.GENERATOR_VERSION}-{_hash(desc)}"
    if cfg.name == "nyuv2_mtan":
        if cfg.root is None:
            raise DataError("'data.root' is required for nyuv2_mtan: the folder holding train/ and val/")
        root = Path(cfg.root)
        if not root.is_dir():
            raise DataError(f"{root}: dataset directory does not exist; expected root/{{train,val}}/...")
        files = sorted(
            (p.relative_to(root).as_posix(), p.stat().st_size)
            for p in root.glob("*/*/*.npy")
            if p.parts[-3] in SPLITS
        )
        return f"nyuv2_mtan-{_hash({**size, 'files': files})}"
    if cfg.name == "nyuv2_png":
        root = Path(cfg.root) if cfg.root not in (None, "auto") else find_realdata()
        if root is None or not (root / "index.csv").is_file():
            raise DataError(f"real NYUv2 sample not found at {root}; expected a folder holding index.csv")
        rows = read_index(root)
        sizes = []
        for row in rows:
            for col in INDEX_COLUMNS[1:]:
                p = root / row[col]
                sizes.append((row[col], p.stat().st_size if p.is_file() else -1))
        index_hash = hashlib.sha256((root / "index.csv").read_bytes()).hexdigest()
        return f"nyuv2_png-{_hash({**size, 'index': index_hash, 'files': sizes})}"
    raise DataError(f"unknown dataset '{cfg.name}' (available: scenes, nyuv2_mtan, nyuv2_png)")
