"""Semantic segmentation: mIoU and pixel accuracy from a confusion matrix accumulated over the split."""

from __future__ import annotations

import torch

from pipeline.errors import DataError
from pipeline.metrics.base import as_tensor, check_same_shape

__all__ = ["SegMetric"]


class SegMetric:
    """Confusion matrix over a split; standard mIoU and pixel accuracy, in percent.

    mIoU averages TP / (TP + FP + FN) over the classes that occur in the ground truth or the prediction
    (TP + FP + FN > 0). Classes with TP = 0 stay in the mean (AdapMTL drops them, method.md section 13 #12).

    Args:
        num_classes: number of classes C; labels are 0..C-1.
        ignore_index: label of pixels that count nowhere.
    """

    def __init__(self, num_classes: int, ignore_index: int = -1) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        # Rows: ground truth, columns: prediction. int64 cannot overflow for any realistic split.
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            pred: logits/scores `[B, C, H, W]` (arg-maxed over C) or class indices `[B, H, W]`.
            target: int labels `[B, H, W]`, `ignore_index` for unlabelled pixels.

        Raises:
            DataError: a label outside 0..C-1 that is not the ignore index (usually a wrong num_classes).
        """
        pred, target = as_tensor(pred), as_tensor(target).long()
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"seg logits have {pred.shape[1]} channels, expected {self.num_classes}")
            pred = pred.float().argmax(dim=1)
        pred = pred.long()
        check_same_shape(pred, target, "seg")
        valid = target != self.ignore_index
        gt, pr = target[valid], pred[valid]
        if gt.numel() and (gt.min() < 0 or gt.max() >= self.num_classes):
            bad = gt[(gt < 0) | (gt >= self.num_classes)][0].item()
            raise DataError(
                f"segmentation label {bad} is outside 0..{self.num_classes - 1} "
                f"(ignore index {self.ignore_index}); check num_classes and the label encoding"
            )
        if pr.numel() and (pr.min() < 0 or pr.max() >= self.num_classes):
            raise ValueError(f"predicted class outside 0..{self.num_classes - 1}")
        counts = torch.bincount(gt * self.num_classes + pr, minlength=self.num_classes**2)
        self.confusion += counts.view(self.num_classes, self.num_classes).cpu()

    def per_class_iou(self) -> torch.Tensor:
        """IoU per class as float64 in [0, 1]; NaN for classes absent from both GT and prediction."""
        cm = self.confusion.double()
        tp = cm.diag()
        denom = cm.sum(0) + cm.sum(1) - tp  # TP + FP + FN
        return torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))

    def compute(self) -> dict[str, float]:
        """`{"miou": %, "pix_acc": %}`; NaN for both when no valid pixel was seen."""
        total = self.confusion.sum()
        if total == 0:
            return {"miou": float("nan"), "pix_acc": float("nan")}
        iou = self.per_class_iou()
        present = ~torch.isnan(iou)
        return {
            "miou": float(iou[present].mean() * 100),
            "pix_acc": float(self.confusion.diag().sum().double() / total.double() * 100),
        }
