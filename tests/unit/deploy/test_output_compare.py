"""compare_outputs / task_parity on arrays saved to and loaded from disk."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.compare import compare_output, compare_outputs, format_comparisons, task_parity
from deploy.io import load_npz, save_npz

ATOL = {"default": 1e-4, "seg": 1e-2}


@pytest.fixture()
def saved(tmp_path):
    """Reference outputs on disk, as validate writes them, and a loader."""
    rng = np.random.default_rng(0)
    ref = {
        "seg": rng.normal(size=(2, 5, 8, 8)).astype(np.float32),
        "depth": rng.uniform(0.5, 5.0, size=(2, 1, 8, 8)).astype(np.float32),
    }
    save_npz(tmp_path / "outputs_torch.npz", ref)
    return lambda: load_npz(tmp_path / "outputs_torch.npz", keys=["seg", "depth"])


def test_identical_outputs_pass(saved, tmp_path):
    ref = saved()
    save_npz(tmp_path / "outputs_onnxrt.npz", {k: v.copy() for k, v in ref.items()})
    results = compare_outputs(ref, load_npz(tmp_path / "outputs_onnxrt.npz"), ATOL, rtol=1e-3)
    assert [r.name for r in results] == ["seg", "depth"]
    assert all(results) and all(r.max_abs == 0 and r.min_required_atol == 0 for r in results)
    assert results[0].to_dict()["passed"] is True


def test_tolerance_failure_reports_min_required_atol(saved):
    ref = saved()
    test = {k: v.copy() for k, v in ref.items()}
    test["depth"][0, 0, 3, 4] += 0.01
    seg, depth = compare_outputs(ref, test, ATOL, rtol=0.0)
    assert seg and not depth
    assert depth.num_failed == 1 and depth.max_abs == pytest.approx(0.01, rel=1e-3)
    assert depth.min_required_atol == pytest.approx(0.01, rel=1e-3)
    assert depth.max_rel == pytest.approx(0.01 / abs(ref["depth"][0, 0, 3, 4]), rel=1e-3)
    assert "FAILED depth" in format_comparisons([seg, depth])


def test_rule_is_allclose_style():
    ref = np.array([1.0, 100.0])
    # |d| <= atol + rtol*|ref|: 0.1 <= 0.01 + 0.001*100 = 0.11 passes at 100, fails at 1
    c = compare_output("x", ref, ref + 0.1, atol=0.01, rtol=1e-3)
    assert not c and c.num_failed == 1
    assert c.min_required_atol == pytest.approx(0.1 - 1e-3)


def test_per_head_atol_override(saved):
    ref = saved()
    test = {k: v + np.float32(1e-3) for k, v in ref.items()}
    seg, depth = compare_outputs(ref, test, ATOL, rtol=0.0)
    assert seg.atol == 1e-2 and seg.passed
    assert depth.atol == 1e-4 and not depth.passed
    assert all(compare_outputs(ref, test, 2e-3, rtol=0.0))  # one value for every head
    with pytest.raises(KeyError, match="no 'default'"):
        compare_outputs(ref, test, {"seg": 1.0}, rtol=0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_fails_even_when_other_elements_match(saved, bad):
    ref = saved()
    test = {k: v.copy() for k, v in ref.items()}
    test["seg"][1, 2, 3, 4] = bad
    seg, depth = compare_outputs(ref, test, {"default": 1e3}, rtol=1.0)
    assert not seg and seg.has_nonfinite and seg.num_failed == 1 and "NaN/Inf" in seg.detail
    assert seg.max_abs == 0.0  # statistics cover the finite elements
    assert depth


def test_shape_mismatch_and_missing_output(saved):
    ref = saved()
    seg, depth = compare_outputs(ref, {"seg": ref["seg"][:1]}, ATOL, rtol=1e-3)
    assert not seg and not seg.shape_ok and "shape [1, 5, 8, 8]" in seg.detail
    assert not depth and "missing" in depth.detail
    assert seg.to_dict()["max_abs"] is None  # JSON-ready: no NaN in report.json


def test_fp16_test_outputs_are_compared_in_float64(saved):
    ref = saved()
    test = {k: v.astype(np.float16) for k, v in ref.items()}
    seg, depth = compare_outputs(ref, test, {"default": 1e-2}, rtol=1e-3)
    assert seg and depth and 0 < depth.max_abs < 1e-2


# ---------------------------------------------------------------------------------------------------------
# task parity


def _outputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    normal = rng.normal(size=(2, 3, 4, 4))
    return {
        "seg": rng.normal(size=(2, 3, 4, 4)).astype(np.float32),
        "depth": rng.uniform(1, 2, size=(2, 1, 4, 4)).astype(np.float32),
        "normal": (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32),
    }


def test_runtime_agreement_values():
    ref = _outputs(np.random.default_rng(0))
    test = {k: v.copy() for k, v in ref.items()}
    test["seg"][0, :, 0, :] = -ref["seg"][0, :, 0, :]  # flips argmax on (most of) 4 of 32 pixels
    test["depth"] += np.float32(0.25)
    test["normal"] = np.zeros_like(ref["normal"])
    test["normal"][:, 0] = 1.0
    ref["normal"] = np.zeros_like(ref["normal"])
    ref["normal"][:, 1] = 1.0  # orthogonal everywhere: 90 degrees

    def fake_metrics(outputs, targets, tasks, num_classes):
        return {t: {"score": float(np.mean(outputs[t]))} for t in tasks}

    report = task_parity(
        ref,
        test,
        targets={},
        tasks=["seg", "depth", "normal"],
        num_classes=3,
        metrics_fn=fake_metrics,
        metric_atol={"default": 0.3},
    )
    agree = float(100 * np.mean(ref["seg"].argmax(1) == test["seg"].argmax(1)))
    assert report["seg"]["agreement"]["argmax_agreement_pct"] == pytest.approx(agree)
    assert 100 - 100 * 4 / 32 <= agree < 100
    assert report["depth"]["agreement"]["mean_abs_diff"] == pytest.approx(0.25)
    assert report["normal"]["agreement"]["mean_angle_diff_deg"] == pytest.approx(90.0)
    assert report["depth"]["delta"]["score"] == pytest.approx(0.25, abs=1e-6)
    assert report["depth"]["passed"] is True


def test_task_parity_with_pipeline_metrics():
    pytest.importorskip("pipeline.metrics.evaluate")
    rng = np.random.default_rng(1)
    ref = _outputs(rng)
    targets = {
        "seg": rng.integers(0, 3, size=(2, 4, 4)),
        "depth": rng.uniform(1, 2, size=(2, 1, 4, 4)).astype(np.float32),
        "normal": ref["normal"].copy(),
    }
    same = task_parity(
        ref, {k: v.copy() for k, v in ref.items()}, targets, ["seg", "depth", "normal"], 3, metric_atol=1e-6
    )
    assert all(r["passed"] for r in same.values())
    assert all(d == 0 for r in same.values() for d in r["delta"].values())
    assert same["seg"]["agreement"]["argmax_agreement_pct"] == 100.0

    shifted = {k: v.copy() for k, v in ref.items()}
    shifted["depth"] *= 1.5
    diff = task_parity(ref, shifted, targets, ["depth"], 3, metric_atol=1e-6)
    assert diff["depth"]["passed"] is False and diff["depth"]["ref"] != diff["depth"]["test"]
