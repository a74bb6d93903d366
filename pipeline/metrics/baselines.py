"""A constant predictor: the floor any trained model must clear on a dataset.

seg: the most frequent training class everywhere; depth: the median training depth; normal: the mean training
normal (normalised). Computed with the same metric code as the models.

Both splits are streamed in batches of `batch_size` samples (`pipeline.data.batching.iter_batches`), so memory is
bounded by one batch plus fixed-size accumulators, whatever the split size:
- class counts: an exact integer bincount;
- depth median: exact, by a two-pass radix selection on the float32 bit patterns (histograms of 2^15 and 2^16
  bins); it is the same value `torch.median` gives over all valid pixels (the lower median for an even count);
- mean normal: float64 running sums, so the result does not depend on the batch size (it may differ from a float32
  whole-split mean in the last float32 bit).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.config import TaskSpec, as_task_kinds
from pipeline.data.batching import iter_batches
from pipeline.errors import DataError
from pipeline.metrics.evaluate import make_metrics

BATCH_SIZE = 16
_HI_BINS = 1 << 15  # positive float32 bit patterns are < 2^31: top 15 bits after the sign
_LO_BINS = 1 << 16


def _positive_bits(depth: Tensor) -> Tensor:
    """int32 bit patterns of the valid (> 0) depths; for positive floats they sort like the values."""
    d = depth.float()
    return d[d > 0].contiguous().view(torch.int32)


def _select(counts: Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th smallest (0-based) value of a histogram, and k's rank inside that bin."""
    cum = torch.cumsum(counts, 0)
    b = int(torch.searchsorted(cum, torch.tensor(k, dtype=cum.dtype), right=True))
    return b, k - (int(cum[b - 1]) if b > 0 else 0)


def _median_depth(train_set, key: str, batch_size: int, hi_counts: Tensor) -> float:
    """The lower median of all valid training depths, given the pass-1 histogram of the top bits."""
    n = int(hi_counts.sum())
    if n == 0:
        return float("nan")  # what torch.median of no values gives
    hi, rank = _select(hi_counts, (n - 1) // 2)
    lo_counts = torch.zeros(_LO_BINS, dtype=torch.int64)
    for batch in iter_batches(train_set, batch_size):
        bits = _positive_bits(batch[key])
        lo_counts += torch.bincount(bits[(bits >> 16) == hi] & 0xFFFF, minlength=_LO_BINS)
    lo, _ = _select(lo_counts, rank)
    return float(torch.tensor([(hi << 16) | lo], dtype=torch.int32).view(torch.float32))


def constant_predictions(train_set, tasks: TaskSpec, batch_size: int = BATCH_SIZE) -> dict[str, Tensor]:
    """The constants per task from one streamed pass over the training split (two when depth is asked).

    Args:
        tasks: name -> kind (`RunConfig.task_kinds`), or a list of kinds; each task's constant is computed from its
            own target (two tasks of one kind may have different targets).

    Returns:
        task name -> constant: seg a 0-d int64 class, depth a 0-d float32 in metres, normal a `[3]` unit float32
        vector.

    Raises:
        DataError: a segmentation label is >= the dataset's `num_classes`.
    """
    kinds = as_task_kinds(tasks)
    num_classes = train_set.num_classes
    class_counts = {t: torch.zeros(num_classes, dtype=torch.int64) for t, k in kinds.items() if k == "seg"}
    hi_counts = {t: torch.zeros(_HI_BINS, dtype=torch.int64) for t, k in kinds.items() if k == "depth"}
    normal_sum = {t: torch.zeros(3, dtype=torch.float64) for t, k in kinds.items() if k == "normal"}
    normal_count = dict.fromkeys(normal_sum, 0)
    for batch in iter_batches(train_set, batch_size):
        for t in class_counts:
            counts = torch.bincount(batch[t][batch[t] >= 0], minlength=num_classes)
            if counts.numel() > num_classes:
                raise DataError(
                    f"training labels of '{t}' reach class {counts.numel() - 1} but the dataset has "
                    f"num_classes={num_classes}; labels must be -1 (ignore) or 0..{num_classes - 1}"
                )
            class_counts[t] += counts
        for t in hi_counts:
            hi_counts[t] += torch.bincount(_positive_bits(batch[t]) >> 16, minlength=_HI_BINS)
        for t in normal_sum:
            nrm = batch[t]
            vectors = nrm.permute(0, 2, 3, 1)[nrm.abs().sum(1) > 0]
            normal_sum[t] += vectors.double().sum(0)
            normal_count[t] += vectors.shape[0]
    out: dict[str, Tensor] = {}
    for t, kind in kinds.items():
        if kind == "seg":
            out[t] = class_counts[t].argmax()
        elif kind == "depth":
            out[t] = torch.tensor(_median_depth(train_set, t, batch_size, hi_counts[t]), dtype=torch.float32)
        else:
            mean = (normal_sum[t] / normal_count[t]).float() if normal_count[t] else torch.full((3,), float("nan"))
            out[t] = mean / mean.norm()
    return out


def _constant_output(kind: str, value: Tensor, n: int, h: int, w: int, num_classes: int) -> Tensor:
    if kind == "seg":
        logits = torch.zeros(n, num_classes, h, w)
        logits[:, int(value)] = 1.0
        return logits
    if kind == "depth":
        return torch.full((n, 1, h, w), float(value))
    return value.view(1, 3, 1, 1).expand(n, 3, h, w).clone()


@torch.no_grad()
def constant_predictor_metrics(
    train_set, val_set, tasks: TaskSpec, batch_size: int = BATCH_SIZE
) -> dict[str, dict[str, float]]:
    """Metrics of the constant predictor of `train_set` on `val_set`, both streamed `batch_size` samples at a time.

    `tasks`: name -> kind, or a list of kinds."""
    kinds = as_task_kinds(tasks)
    constants = constant_predictions(train_set, kinds, batch_size)
    metrics = make_metrics(kinds, train_set.num_classes)
    for batch in iter_batches(val_set, batch_size):
        n, _, h, w = batch["image"].shape
        for t, kind in kinds.items():
            metrics[t].update(_constant_output(kind, constants[t], n, h, w, train_set.num_classes), batch[t])
    return {t: metrics[t].compute() for t in kinds}
