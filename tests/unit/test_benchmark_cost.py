"""Smoke test of benchmarks/cost.py's functions on tiny sizes (seconds, not the benchmark itself)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import cost
from pipeline.config import load_config


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    return load_config("tiny", ["dense_reference=null", "train.batch_size=2", "data.height=32", "data.width=40"])


def test_training_result_and_report(tiny):
    data = cost.synthetic_dataset(2, 32, 40, 5)
    res = cost.training_result(tiny, data, warmup=2, timed=2, reps=1, data_label="synthetic", start=10, total=30,
                               log=lambda m: None)
    est = res["component_estimate"]
    assert est["total_ms"] > 0 and est["ratio"] > 1
    assert res["setup"]["steps"] == [0, 10, 11, 12]
    results = {
        "command": "python -m benchmarks.cost --quick", "finished": "now",
        "machine": {**cost.machine_info(1), "loadavg_end": [0.0, 0.0, 0.0]},
        "training": {"demo": res}, "cpu_effects": cost.cpu_effects(n=1024, reps=1),
    }
    md = cost.render_markdown(results)
    assert "## Training step: demo preset" in md and "Component estimate" in md and "subnormal" in md
    json.dumps(results, default=str)


def test_interleaved_step_timing_and_components(tiny):
    data = cost.synthetic_dataset(2, 32, 40, 5)
    res, trainers = cost.time_training(
        tiny, data, warmup=2, timed=2, start_step=10, total_steps=30, log=lambda m: None
    )
    assert set(res["variants"]) == {"dense", "adapmtl", "naive"}
    steps = [r["step"] for r in res["variants"]["dense"]["records"]]
    assert steps == [0, 10, 11, 12]  # step 0, jump to the solve step, then timed steps
    ad = res["variants"]["adapmtl"]
    assert ad["records"][1]["solve"] and not ad["records"][2]["solve"]
    assert ad["vs_dense"]["amortized_cpu_ratio"] > 0 and ad["timed_cpu_ms"]["n"] == 2
    assert "forward" in ad["phases_cpu_ms"] and "backward" in ad["phases_cpu_ms"]
    # the naive variant really runs the plain autograd formula, with the same forward values
    naive = trainers["naive"].method.layers
    assert all(type(layer) is cost.NaiveSparseConv2d for layer in naive.values())
    layer = next(iter(trainers["adapmtl"].method.layers.values()))
    with torch.no_grad():
        ref = cost.soft_threshold_reference(layer.weight, layer.tau)
        assert torch.equal(layer.effective_weight(), ref)

    comp = cost.component_timings(trainers, 20, reps=1)
    w = comp["w_eff"]
    assert set(w) == set(cost.IMPLEMENTATIONS)
    # what the custom autograd saves: nothing beyond W_eff (which the conv keeps anyway)
    assert w["current"]["saved_extra_bytes"] == 0
    assert w["naive autograd"]["saved_extra_bytes"] >= 8 * comp["prunable_weights"]
    assert comp["kth_value_ms"]["same_value"]
    prof = cost.profile_attribution(trainers, 13)
    assert prof["adapmtl"]["W_eff forward (_SoftThreshold)"] > 0
    assert prof["dense"]["W_eff forward (_SoftThreshold)"] == 0


def test_v0_implementation_matches_current():
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    tau = torch.tensor(0.5, requires_grad=True)
    g = torch.randn(8, 4, 3, 3)
    outs = []
    for impl in cost.IMPLEMENTATIONS.values():
        y = impl(w, tau)
        y.backward(g)
        outs.append((y.detach(), w.grad.clone(), tau.grad.clone()))
        w.grad = tau.grad = None
    for y, gw, gt in outs[1:]:
        assert torch.equal(y, outs[0][0]) and torch.equal(gw, outs[0][1]) and torch.allclose(gt, outs[0][2])


def test_variants_sizes_and_zero_canonicalisation(tiny, tmp_path):
    from trainers.assembly import build_model

    state = build_model(tiny, 5).state_dict()
    unstructured, info = cost.build_variant(tiny, 5, state, "unstructured")
    assert abs(info["prunable_sparsity"] - tiny.sparsity.target) < 1e-3
    assert info["fold_max_diff"] < 1e-4
    _, info24 = cost.build_variant(tiny, 5, state, "2:4")
    assert info24["decisions"].get("2:4", 0) > 0
    path = tmp_path / "u.onnx"
    cost.export_variant(unstructured, path, tiny, exporter="torchscript", simplifier="none")
    rep = cost.size_report(path, dense_onnx_bytes=path.stat().st_size, extra_codecs=False)
    assert rep["float_zeros"] > 0 and rep["limit_bytes"] < rep["onnx_bytes"]
    assert rep["float_negative_zeros"] > 0  # hardening writes sign(W) * 0 = -0.0
    fixed = tmp_path / "u.pz.onnx"
    canon = cost.canonical_zeros_onnx(path, fixed)
    assert canon["negative_zeros_rewritten"] == rep["float_negative_zeros"] and canon["ort_outputs_identical"]
    rep2 = cost.size_report(fixed, dense_onnx_bytes=path.stat().st_size, extra_codecs=False)
    assert rep2["float_negative_zeros"] == 0 and rep2["gzip9_bytes"] < rep["gzip9_bytes"]


def test_latency_memory_and_report(tiny, tmp_path):
    from trainers.assembly import build_model

    model, _ = cost.build_variant(tiny, 5, build_model(tiny, 5).state_dict(), "dense")
    path = tmp_path / "d.onnx"
    cost.export_variant(model, path, tiny, exporter="torchscript", simplifier="none")
    lat = cost.latency_table({"dense": (path, model)}, [1], 32, 40, threads=1, iters=2, rounds=2, log=lambda m: None)
    assert lat["onnxrt"]["dense"]["1"]["p50_ms"] > 0 and lat["torch"]["dense"]["1"]["p50_vs_dense"] == 1.0
    mem = cost.peak_memory("onnxrt", path, 1, 32, 40, 1)
    assert mem["peak_kib"] >= mem["baseline_kib"] > 0
    assert cost.summarize([1.0, 2.0, 3.0])["median"] == 2.0
    assert 0.46 < cost.entropy_bits(0.1) < 0.47
    info = cost.machine_info(1)
    assert info["logical_cpus"] >= 1 and json.dumps(info)
    assert np.isfinite(cost.parse_size("288x384")).all()
