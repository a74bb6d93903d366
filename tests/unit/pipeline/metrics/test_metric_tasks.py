"""Seg, depth and normal accumulators on hand-computed cases; split accumulation is batch-invariant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.errors import DataError
from pipeline.metrics import DepthMetric, NormalMetric, SegMetric


def approx(expected: dict[str, float], got: dict[str, float], tol: float = 1e-9) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=tol), key


# ---------------------------------------------------------------------------------------------- segmentation


def test_seg_confusion_with_ignore_and_tp0_class() -> None:
    target = torch.tensor([[[0, 0, 1], [1, 2, -1]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 2]]])  # the ignored pixel's prediction must not count
    metric = SegMetric(3)
    metric.update(pred, target)
    assert metric.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    # IoU: class 0 = 1/2, class 1 = 2/4, class 2 = 0/1 (kept: TP = 0 is not dropped as AdapMTL does).
    approx({"miou": 100 / 3, "pix_acc": 60.0}, metric.compute())


def test_seg_class_predicted_but_absent_from_gt_counts_and_absent_class_does_not() -> None:
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 3, 1, 1]])  # class 3 only predicted; class 2 nowhere
    metric = SegMetric(4)
    metric.update(pred, target)
    iou = metric.per_class_iou()
    assert iou[0] == 0.5 and iou[1] == 1.0 and math.isnan(iou[2]) and iou[3] == 0.0
    approx({"miou": 50.0, "pix_acc": 75.0}, metric.compute())


def test_seg_accepts_logits_and_numpy() -> None:
    target = np.array([[[0, 2], [1, -1]]])
    labels = torch.tensor([[[0, 2], [2, 0]]])
    logits = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float().numpy()
    metric = SegMetric(3)
    metric.update(logits, target)
    approx({"miou": 100 * (1 + 0.5 + 0) / 3, "pix_acc": 200 / 3}, metric.compute())


def test_seg_rejects_out_of_range_labels_and_empty_is_nan() -> None:
    metric = SegMetric(3)
    with pytest.raises(DataError, match="label 255 is outside 0..2"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255))
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), -1))
    assert all(math.isnan(v) for v in metric.compute().values())
    with pytest.raises(ValueError, match="differ"):
        metric.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- depth


def test_depth_hand_case_with_invalid_pixels() -> None:
    target = torch.tensor([2.0, 4.0, 0.0, 1.0]).view(1, 1, 2, 2)
    pred = torch.tensor([1.0, 5.0, 7.0, 1.0]).view(1, 1, 2, 2)
    metric = DepthMetric()
    metric.update(pred, target)
    # valid: (1 vs 2), (5 vs 4), (1 vs 1): |err| 1, 1, 0; rel 0.5, 0.25, 0; ratios 2, 1.25, 1.
    # 1.25 is not < 1.25, so delta1 holds only the exact pixel; 2 > 1.25^3 = 1.953.
    approx(
        {"abs_err": 2 / 3, "rel_err": 0.25, "delta1": 100 / 3, "delta2": 200 / 3, "delta3": 200 / 3},
        metric.compute(),
    )


def test_depth_nonpositive_prediction_fails_every_delta() -> None:
    metric = DepthMetric()
    metric.update(torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 2.0]]))  # rel: (2/1 + 2/2) / 2
    approx({"abs_err": 2.0, "rel_err": 1.5, "delta1": 0.0, "delta2": 0.0, "delta3": 0.0}, metric.compute())


def test_depth_empty_is_nan() -> None:
    metric = DepthMetric()
    metric.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert all(math.isnan(v) for v in metric.compute().values())


# ---------------------------------------------------------------------------------------------- normals


def _normals(vectors: list[tuple[float, float, float]]) -> torch.Tensor:
    """`[1, 3, 1, N]` from a list of 3-vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, 3, 1, -1)


def test_normals_known_angles_and_invalid_pixel() -> None:
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    gt = _normals([(0, 0, 1), (1, 0, 0), (0, 0, 0), (0, 1, 0), (0, 0, 1)])
    pred = _normals([(0, 0, 2), (0, 1, 0), (1, 1, 1), (0, 1, 1), (0, s, c)])  # 0, 90, invalid, 45, 20 deg
    metric = NormalMetric()
    metric.update(pred, gt)
    assert metric.count == 4
    got = metric.compute()
    assert got["median"] == pytest.approx((20 + 45) / 2, abs=0.005 + 1e-9)  # half a bin
    del got["median"]
    approx(
        {"mean": (0 + 90 + 45 + 20) / 4, "within_11_25": 25.0, "within_22_5": 50.0, "within_30": 50.0},
        got,
        1e-5,
    )


def test_normals_zero_angle_is_exact() -> None:
    gt = torch.nn.functional.normalize(torch.randn(2, 3, 4, 4), dim=1)
    metric = NormalMetric()
    metric.update(gt * 3.0, gt)  # same direction, different length
    result = metric.compute()
    assert result["mean"] < 1e-5 and result["within_11_25"] == 100.0


def test_normals_median_matches_exact_within_half_a_bin() -> None:
    torch.manual_seed(0)
    pred, gt = torch.randn(3, 3, 7, 9), torch.randn(3, 3, 7, 9)
    metric = NormalMetric()
    metric.update(pred[:2], gt[:2])
    metric.update(pred[2:], gt[2:])
    exact = float(np.median(NormalMetric.angles(pred, gt).numpy()))  # 189 values: odd count
    assert abs(metric.compute()["median"] - exact) <= 0.005 + 1e-9
    coarse = NormalMetric(bins=180)  # 1-degree bins: error bound 0.5 deg
    coarse.update(pred, gt)
    assert abs(coarse.compute()["median"] - exact) <= 0.5


# ---------------------------------------------------------------------------------------------- accumulation


def _random_batch(seed: int, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    seg_t = torch.randint(-1, 5, (n, 6, 8), generator=g)
    depth_t = torch.rand(n, 1, 6, 8, generator=g) * 5
    depth_t[depth_t < 0.5] = 0  # invalid pixels
    normal_t = torch.randn(n, 3, 6, 8, generator=g)
    normal_t[:, :, :2] = 0  # invalid rows
    return {
        "seg": (torch.randn(n, 5, 6, 8, generator=g), seg_t),
        "depth": (torch.rand(n, 1, 6, 8, generator=g) * 5 + 0.1, depth_t),
        "normal": (torch.randn(n, 3, 6, 8, generator=g), normal_t),
    }


@pytest.mark.parametrize("task", ["seg", "depth", "normal"])
def test_two_batches_equal_one_concatenated_batch(task: str) -> None:
    make = {"seg": lambda: SegMetric(5), "depth": DepthMetric, "normal": NormalMetric}[task]
    a, b = _random_batch(1)[task], _random_batch(2, n=3)[task]
    split, whole = make(), make()
    split.update(*a)
    split.update(*b)
    whole.update(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]))
    approx(whole.compute(), split.compute(), tol=1e-10)
    split.reset()
    split.update(*a)
    fresh = make()
    fresh.update(*a)
    approx(fresh.compute(), split.compute(), tol=0)
