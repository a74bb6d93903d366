"""The one way batches are drawn from a dataset: training, baselines, evaluation and validation all use it.

Per-sample contract. A dataset is any map-style `torch.utils.data.Dataset` (`len(ds)`, `ds[i]` for an int `i`)
with attributes `num_classes` and `class_names`, whose samples are dicts of tensors:

| key      | dtype, shape          | meaning                                                      |
|----------|-----------------------|--------------------------------------------------------------|
| `image`  | float32 `[3, H, W]`   | RGB in [0, 1]                                                |
| `seg`    | int64 `[H, W]`        | class index `0..C-1`, `-1` = ignore                          |
| `depth`  | float32 `[1, H, W]`   | metres, `0` = invalid                                        |
| `normal` | float32 `[3, H, W]`   | unit, camera frame (x right, y down, z forward), 0 = invalid |

`image` plus one entry per configured task; every sample of a split has the same H x W. A batch is the same dict
with a leading batch dimension B.

Fast path. A dataset that holds its split in memory may also offer `get_batch(indices) -> batch` for a 1-D int64
index tensor (`MultiTaskTensorDataset` does: one slice per key). `gather` uses it when present, so the built-in
datasets give exactly the batches they always gave; otherwise samples are loaded one by one and stacked. Nothing
here ever asks a dataset for a whole split: `iter_batches` streams it in bounded batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from pipeline.errors import DataError

__all__ = ["gather", "iter_batches", "stack_samples"]


def _as_index(indices: Tensor | Sequence[int]) -> Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(idx.shape)}")
    return idx


def stack_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Stack per-sample dicts into one batch dict (leading dim B).

    Raises:
        DataError: a sample is not a dict, the samples disagree on their keys, or their shapes differ.
    """
    if not samples:
        raise ValueError("cannot stack an empty list of samples")
    first = samples[0]
    if not isinstance(first, dict):
        raise DataError(
            f"dataset samples must be dicts of tensors (image plus one entry per task), got {type(first).__name__}"
        )
    keys = list(first)
    out: dict[str, Tensor] = {}
    for key in keys:
        try:
            out[key] = torch.stack([torch.as_tensor(s[key]) for s in samples])
        except KeyError:
            raise DataError(
                f"dataset samples disagree on their keys: one lacks '{key}' (first has {keys})"
            ) from None
        except RuntimeError as e:
            raise DataError(
                f"dataset samples of one batch differ in '{key}' shape ({e}); use one size per split"
            ) from None
    return out


def gather(dataset: Any, indices: Tensor | Sequence[int]) -> dict[str, Tensor]:
    """The batch of samples `indices` (in that order), on the CPU.

    Uses the dataset's `get_batch` when it has one (in-memory datasets: one slice per key), else loads each sample
    with an int index and stacks them.
    """
    idx = _as_index(indices)
    get_batch = getattr(dataset, "get_batch", None)
    if callable(get_batch):
        return get_batch(idx)
    return stack_samples([dataset[int(i)] for i in idx])


def iter_batches(
    dataset: Any,
    batch_size: int,
    limit: int | None = None,
    indices: Tensor | Sequence[int] | None = None,
) -> Iterator[dict[str, Tensor]]:
    """Stream a split (or `indices` of it) in order, `batch_size` samples at a time; the last batch may be short.

    Args:
        dataset: a map-style dataset of dict samples (see the module docstring).
        batch_size: samples per batch (>= 1); bounds the memory of one batch.
        limit: take only the first `limit` of the samples (all when None).
        indices: which samples, in order; default `0..len(dataset)-1`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    idx = torch.arange(len(dataset)) if indices is None else _as_index(indices)
    if limit is not None:
        idx = idx[: max(limit, 0)]
    for start in range(0, len(idx), batch_size):
        yield gather(dataset, idx[start : start + batch_size])
