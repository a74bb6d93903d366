"""Metric depth: absolute and relative error and δ accuracies over valid pixels of the whole split."""

from __future__ import annotations

import torch

from pipeline.metrics.base import as_tensor, check_same_shape

__all__ = ["DepthMetric"]


class DepthMetric:
    """Depth errors over pixels with ground truth > 0, accumulated as float64 sums and counts.

    Split-level means (every valid pixel weighs the same), not means of per-batch means as in AdapMTL.

    `compute()` returns abs_err (metres), rel_err (fraction), delta1/2/3 (% of pixels with
    max(p/g, g/p) < 1.25^k). A prediction <= 0 or non-finite fails every δ threshold.
    """

    THRESHOLDS = (1.25, 1.25**2, 1.25**3)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.count = 0
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.delta_counts = [0, 0, 0]

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: `pred` and `target` in metres with equal shapes (`[B, 1, H, W]` or `[B, H, W]`)."""
        pred, target = as_tensor(pred), as_tensor(target)
        check_same_shape(pred, target, "depth")
        valid = (target > 0) & torch.isfinite(target)
        p, g = pred[valid].double(), target[valid].double()
        if g.numel() == 0:
            return
        err = (p - g).abs()
        self.count += g.numel()
        self.abs_sum += float(err.sum())
        self.rel_sum += float((err / g).sum())
        ok = (p > 0) & torch.isfinite(p)
        ratio = torch.where(
            ok, torch.maximum(p / g, g / p.clamp(min=1e-300)), torch.full_like(p, float("inf"))
        )
        for k, thr in enumerate(self.THRESHOLDS):
            self.delta_counts[k] += int((ratio < thr).sum())

    def compute(self) -> dict[str, float]:
        """The five depth metrics; NaN when no valid pixel was seen."""
        if self.count == 0:
            return dict.fromkeys(("abs_err", "rel_err", "delta1", "delta2", "delta3"), float("nan"))
        n = self.count
        return {
            "abs_err": self.abs_sum / n,
            "rel_err": self.rel_sum / n,
            **{f"delta{k + 1}": 100.0 * c / n for k, c in enumerate(self.delta_counts)},
        }
