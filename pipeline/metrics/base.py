"""What every split-level metric accumulator provides, and input coercion shared by them."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["Metric", "as_tensor"]


@runtime_checkable
class Metric(Protocol):
    """Accumulate over a whole split: `update` per batch, `compute` once; `reset` to reuse."""

    def update(self, pred: Any, target: Any) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def reset(self) -> None: ...


def as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Torch view of a tensor or numpy array (runtime outputs arrive as numpy), detached."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x.detach()
    raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def check_same_shape(pred: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{what}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ; "
            "predict at the label resolution"
        )
