"""int8's task-metric cost in the quality benchmark: the paired aggregation, and the path end to end on `tiny`."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.aggregate import write_results
from benchmarks.int8_quality import aggregate_int8, write_int8_results
from benchmarks.quality import parse_args, run_one


def _metrics(miou: float) -> dict[str, dict[str, float]]:
    """Every metric ΔT reads; only mIoU varies."""
    return {
        "seg": {"miou": miou, "pix_acc": 80.0},
        "depth": {"abs_err": 0.5, "rel_err": 0.2, "delta1": 70.0, "delta2": 90.0, "delta3": 97.0},
        "normal": {"mean": 20.0, "median": 15.0, "within_11_25": 40.0, "within_22_5": 70.0, "within_30": 80.0},
    }


def _pruned(seed: int, fp32_miou: float, int8_miou: float) -> dict:
    gate = {"seg_argmax_agreement_pct": 99.0, "seg_miou_drop": fp32_miou - int8_miou,
            "depth_abs_err_increase_m": 0.0, "normal_mean_angle_increase_deg": 0.1}
    return {"method": "adapmtl", "target": 0.9, "seed": seed, "metrics": _metrics(fp32_miou),
            "int8": {"fp32_metrics": _metrics(fp32_miou), "int8_metrics": _metrics(int8_miou), "gate": gate,
                     "gate_passed": True, "quantize": {"excluded": []},
                     "sizes": {"pruned_fp32": {"raw_bytes": 400}, "pruned_int8": {"raw_bytes": 100}}}}


def test_paired_int8_minus_fp32_interval_against_a_hand_computed_answer():
    # Dense mIoU differs per seed (50, 40, 80): ΔT must use the SAME seed's dense model. fp32 equals its dense
    # (ΔT 0); int8 loses 3, 6, 9 % of the seed's mIoU on seg alone -> ΔT = -1, -2, -3 (mean over 3 tasks).
    dense = {0: 50.0, 1: 40.0, 2: 80.0}
    runs = [{"method": "dense", "target": 0.0, "seed": s, "metrics": _metrics(m)} for s, m in dense.items()]
    runs += [_pruned(s, dense[s], dense[s] * (1 - loss / 100)) for s, loss in zip(dense, (3.0, 6.0, 9.0))]
    runs.append({"method": "dense", "target": 0.0, "seed": 7, "metrics": _metrics(10.0)})  # unpaired: ignored
    (row,) = aggregate_int8(runs)["rows"]
    assert [p["int8_minus_fp32"] for p in row["per_seed"]] == pytest.approx([-1.0, -2.0, -3.0])
    assert row["delta_t_fp32"]["mean"] == pytest.approx(0.0, abs=1e-12)
    # mean -2, sd 1, n 3: half-width t_{0.975, 2} * 1 / sqrt(3), t_{0.975, 2} = 4.302653 (a t table)
    half = 4.302653 / math.sqrt(3)
    assert row["int8_minus_fp32"] == pytest.approx(-2.0)
    assert row["int8_minus_fp32_ci95"] == pytest.approx([-2.0 - half, -2.0 + half], abs=1e-3)
    assert row["gate"]["seg_miou_drop"]["mean"] == pytest.approx((1.5 + 2.4 + 7.2) / 3)
    assert row["size_ratio_raw"] == pytest.approx(0.25)


def test_runs_without_int8_or_without_their_dense_seed_are_left_out():
    runs = [{"method": "dense", "target": 0.0, "seed": 0, "metrics": _metrics(50.0)}, _pruned(1, 50.0, 49.0)]
    no_int8 = _pruned(0, 50.0, 49.0)
    del no_int8["int8"]
    assert aggregate_int8(runs + [no_int8])["rows"] == []


def test_int8_flag_defaults():
    args = parse_args(["--int8"])
    assert args.methods == ["dense", "adapmtl"] and args.sparsities == [0.9] and args.seeds == 3
    assert args.out == "benchmarks/results/int8_quality"


@pytest.mark.slow
def test_int8_quality_end_to_end_on_tiny(tmp_path, monkeypatch):
    """Train (2 steps), harden, export, quantize, gate on VAL, aggregate and write: the real path, small."""
    monkeypatch.chdir(tmp_path)
    # min/max: two training steps leave activations too narrow for the histogram calibrators
    common = ["train.steps=2", "dense_reference=null", "quantize.calibration_method=minmax", "train.seed=0"]
    job = {"target": 0.9, "seed": 0, "preset": "tiny"}
    dense = run_one({**job, "method": "dense", "target": 0.0, "dir": str(tmp_path / "runs" / "dense_s0"),
                     "overrides": common + ["sparsity.method=dense"]})
    pruned = run_one({**job, "method": "adapmtl", "dir": str(tmp_path / "runs" / "adapmtl_0.9_s0"),
                      "overrides": common + ["sparsity.method=adapmtl", "sparsity.target=0.9"], "int8": True})
    run_dir = tmp_path / "runs" / "adapmtl_0.9_s0"
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "int8_work").exists()
    q = pruned["int8"]
    assert set(q["int8_metrics"]) == {"seg", "depth", "normal"}
    assert set(q["gate"]) == {"seg_argmax_agreement_pct", "seg_miou_drop", "depth_abs_err_increase_m",
                              "normal_mean_angle_increase_deg"}
    assert all(math.isfinite(v) for v in q["gate"].values())
    assert q["quantize"]["calibration_split"] == "train" and q["exported_sparsity_survived"]
    assert q["sizes"]["pruned_int8"]["raw_bytes"] < q["sizes"]["pruned_fp32"]["raw_bytes"]
    # cached: a second call reads the summary instead of training again
    again = run_one({**job, "method": "adapmtl", "dir": str(run_dir), "overrides": [], "int8": True})
    assert again == json.loads((run_dir / "summary.json").read_text())

    meta = {"command": "x", "date": "d", "machine": "m", "python": "3", "torch": "t", "steps": 2, "preset": "tiny",
            "seeds": 1, "run_seconds_total": 1.0, "jobs": 1, "git_commit": "abc", "git_dirty_files": []}
    results = [dense, pruned]
    write_results(results, meta, tmp_path)
    write_int8_results(results, meta, tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["rows"] and data["int8"]["rows"][0]["seeds"] == [0]
    assert "## int8 (QDQ) cost in task metrics" in (tmp_path / "results.md").read_text()
