"""The metric rule of task parity: thresholded metrics may differ by k near-tie pixels, nothing else may."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.compare import task_parity
from deploy.onnx_validation import TOLERANCE_RULE, tolerances_from_config
from deploy.runtime_check import Tolerances, judge_outputs
from pipeline.config import ValidateConfig

B, H, W = 2, 16, 20
N = B * H * W  # every pixel valid


def _depth_pair(flipped: int) -> tuple[dict, dict, dict]:
    """Depth outputs whose ratio to the target sits at the 1.25 tie: `flipped` pixels cross it in `test`.

    The two runtimes differ by one float32 ulp (about 1e-7) at those pixels and nowhere else.
    """
    target = np.ones((B, 1, H, W), np.float32)
    ref = np.full_like(target, 1.1)
    just_below = np.nextafter(np.float32(1.25), np.float32(0))
    ref.reshape(-1)[:flipped] = just_below
    test = ref.copy()
    test.reshape(-1)[:flipped] = np.float32(1.25)  # no longer < 1.25: delta1 loses these pixels
    return {"depth": ref}, {"depth": test}, {"depth": target}


def _parity(ref, test, targets, tasks, k, metric_atol=1e-4):
    return task_parity(ref, test, targets, tasks, 3, metric_atol=metric_atol, flip_pixels=k)


def test_one_near_tie_pixel_fails_the_plain_rule_and_passes_with_k():
    ref, test, targets = _depth_pair(flipped=1)
    assert float(np.abs(ref["depth"] - test["depth"]).max()) < 2e-7
    plain = _parity(ref, test, targets, ["depth"], k=0)["depth"]
    assert plain["delta"]["delta1"] == pytest.approx(-100.0 / N)
    assert plain["passed"] is False  # 1/640 * 100 = 0.16 points > metric_atol 1e-4

    tolerant = _parity(ref, test, targets, ["depth"], k=4)["depth"]
    assert tolerant["passed"] is True
    assert tolerant["valid_pixels"] == N and tolerant["flip_pixels"] == 4
    assert tolerant["allowed"]["delta1"] == pytest.approx(100.0 * 4 / N)
    assert tolerant["allowed"]["abs_err"] == 1e-4  # error metrics keep metric_atol


def test_more_flips_than_k_fail():
    ref, test, targets = _depth_pair(flipped=5)
    assert _parity(ref, test, targets, ["depth"], k=4)["depth"]["passed"] is False
    assert _parity(ref, test, targets, ["depth"], k=5)["depth"]["passed"] is True


def test_error_metrics_are_not_widened_by_k():
    ref, _, targets = _depth_pair(flipped=0)
    test = {"depth": ref["depth"] + np.float32(1e-3)}  # no threshold crossed, abs_err moves by 1e-3
    report = _parity(ref, test, targets, ["depth"], k=1000)["depth"]
    assert report["delta"]["delta1"] == 0.0
    assert report["passed"] is False


def _seg_pair(flipped: int) -> tuple[dict, dict, dict]:
    """Seg logits where `flipped` pixels are near ties decided differently by the two runtimes (1e-6 apart)."""
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, size=(B, H, W))
    ref = rng.normal(size=(B, H, W, 3)).astype(np.float32)  # channels last while editing pixels
    test = ref.copy()
    flat_ref, flat_test = ref.reshape(-1, 3), test.reshape(-1, 3)
    for i in range(flipped):
        first, second = np.argsort(flat_ref[i])[::-1][:2]
        flat_test[i, second] = flat_ref[i, first] + np.float32(1e-6)
    to_nchw = (0, 3, 1, 2)
    return {"seg": ref.transpose(to_nchw)}, {"seg": test.transpose(to_nchw)}, {"seg": target}


def test_miou_passes_on_few_argmax_flips_only():
    ref, test, targets = _seg_pair(flipped=2)
    strict = _parity(ref, test, targets, ["seg"], k=0)["seg"]
    assert strict["argmax_flips"] == 2 and strict["passed"] is False
    ok = _parity(ref, test, targets, ["seg"], k=4)["seg"]
    assert ok["passed"] is True and ok["allowed"]["miou"] is None
    ref, test, targets = _seg_pair(flipped=6)
    assert _parity(ref, test, targets, ["seg"], k=4)["seg"]["passed"] is False


def test_the_validate_tolerances_carry_k_and_say_the_rule():
    vcfg = ValidateConfig()
    tol = tolerances_from_config(vcfg)
    assert tol.flip_pixels == vcfg.metric_flip_pixels == 4
    assert "metric_flip_pixels / N * 100" in TOLERANCE_RULE
    ref, test, targets = _depth_pair(flipped=1)
    verdict = judge_outputs(ref, test, targets, ["depth"], 3, tol)
    assert verdict["heads_passed"] and verdict["metrics_agree"] is True and verdict["passed"]
    strict = judge_outputs(ref, test, targets, ["depth"], 3, Tolerances(vcfg.atol, vcfg.rtol, vcfg.metric_atol))
    assert strict["metrics_agree"] is False
