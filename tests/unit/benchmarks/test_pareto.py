"""benchmarks.pareto: the job plan (structure per point, one exported seed) and the aggregate (ΔT vs the dense
mean, paired differences, latency ratios against dense fp32, the issue's goal checks)."""

from __future__ import annotations

import pytest

from benchmarks.aggregate import paired_interval
from benchmarks.pareto import parse_args, plan_jobs
from benchmarks.pareto_report import aggregate, markdown
from pipeline.metrics.summary import METRIC_DIRECTIONS, delta_t


def _metrics(miou: float) -> dict:
    return {t: {k: 10.0 for k in names} for t, names in METRIC_DIRECTIONS.items()} | {
        "seg": {k: miou for k in METRIC_DIRECTIONS["seg"]}}


def _run(point: str, seed: int, miou: float, structure: str = "channel", deploy: dict | None = None) -> dict:
    r = {"point": point, "structure": structure, "base_method": point.split("_c")[0], "target": 0.5, "seed": seed,
         "metrics": _metrics(miou), "sparsity": {"overall": 0.5, "param_sparsity": 0.4}}
    if deploy is not None:
        r["deploy"] = deploy
    return r


def test_plan_jobs_sets_the_structure_and_exports_one_seed() -> None:
    args = parse_args(["--seeds", "2", "--points", "dense", "adapmtl_u0.9", "l1_global_c0.5", "--steps", "5"])
    jobs = plan_jobs(args)
    assert [(j["point"], j["seed"]) for j in jobs] == [(p, s) for s in (0, 1)
                                                        for p in ("dense", "adapmtl_u0.9", "l1_global_c0.5")]
    by = {(j["point"], j["seed"]): j for j in jobs}
    assert "sparsity.structure=channel" in by["l1_global_c0.5", 1]["overrides"]
    assert "sparsity.structure=unstructured" in by["adapmtl_u0.9", 0]["overrides"]
    assert not any(o.startswith("sparsity.target") for o in by["dense", 0]["overrides"])
    assert [j["export"] for j in jobs] == [True] * 3 + [False] * 3


def test_aggregate_pairs_seeds_and_reads_latency_against_dense() -> None:
    dep = {"channels": {"mac_fraction_removed": 0.5, "macs_compact": 10}}
    results = [_run("dense", s, 40.0 + s, "unstructured", dep if s == 0 else None) for s in (0, 1, 2)]
    results += [_run("adapmtl_c0.5", s, m, deploy=dep if s == 0 else None) for s, m in zip((0, 1, 2), (39, 40, 41.5))]
    results += [_run("l1_uniform_c0.5", s, m) for s, m in zip((0, 1, 2), (37, 38.5, 39))]
    rows = [{"model": m, "batch": 1, "threads": 1, "p50_ms": v, "p90_ms": v, "p99_ms": v, "ratio_p50": 1.0} for m, v in
            (("dense_fp32", 8.0), ("adapmtl_c0.5_fp32", 3.0), ("dense_int8", 5.0), ("adapmtl_c0.5_int8", 2.0))]
    latency = {"settings": {"batches": [1], "threads": [1], "baseline": "dense_fp32", "input_shape": [3, 8, 8]},
               "machine": {"onnxruntime": "x"}, "sizes": {m["model"]: {"raw_bytes": 100, "gzip_bytes": 50}
                                                          for m in rows}, "rows": rows}
    agg = aggregate(results, latency)
    ref = {t: {k: sum(r["metrics"][t][k] for r in results[:3]) / 3 for k in results[0]["metrics"][t]}
           for t in results[0]["metrics"]}
    want = [delta_t(a["metrics"], ref)["overall"] - delta_t(b["metrics"], ref)["overall"]
            for a, b in zip(results[3:6], results[6:9])]
    pair = next(p for p in agg["paired"] if p["b"] == "l1_uniform_c0.5")
    assert (pair["mean"], pair["lo"], pair["hi"]) == pytest.approx(paired_interval(want))
    row = next(r for r in agg["rows"] if r["point"] == "adapmtl_c0.5")
    assert row["fp32_vs_dense_b1_t1"] == pytest.approx(3.0 / 8.0) and row["int8_p50_b1_t1"] == 2.0
    goal = agg["goals"]["adapmtl_c0.5"]
    assert goal["latency_goal"] is True and goal["delta_t_goal"] is None  # no unstructured 0.9 point here
    assert goal["beats_l1_by_more_than_interval"]["l1_uniform_c0.5"] == (paired_interval(want)[1] > 0)
    text = markdown(agg, latency, None, {"command": "c", "seed_list": [0, 1, 2], "preset": "bench", "steps": 1,
                                         "date": "d", "latency_seed": 0, "machine": "m", "git_commit": None,
                                         "data": {"model": "x", "height": 8, "width": 8}})
    assert "| adapmtl_c0.5 | l1_uniform_c0.5 | 3 |" in text
