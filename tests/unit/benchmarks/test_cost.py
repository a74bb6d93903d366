"""Smoke test of the benchmarks.cost package's functions on tiny sizes (seconds, not the benchmark itself)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.cost import (
    cli,
    components,
    exports,
    machine,
    report,
    runtime,
    sizes,
    training,
    training_section,
)
from pipeline.config import load_config
from trainers.assembly import build_model
from trainers.loop import STEP_PHASES
from trainers.sparsity.layers import soft_threshold_reference


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    return load_config("tiny", ["dense_reference=null", "train.batch_size=2", "data.height=32", "data.width=40"])


def test_training_result_and_report(tiny):
    data = training.synthetic_dataset(2, 32, 40, 5)
    res = training_section.training_result(tiny, data, warmup=2, timed=2, reps=1, data_label="synthetic", start=10, total=30,
                               log=lambda m: None)
    est = res["component_estimate"]
    assert est["total_ms"] > 0 and est["ratio"] > 1
    assert res["setup"]["steps"] == [0, 10, 11, 12]
    results = {
        "command": "python -m benchmarks.cost --quick", "finished": "now",
        "machine": {**machine.machine_info(1), "loadavg_end": [0.0, 0.0, 0.0]},
        "training": {"demo": res}, "cpu_effects": machine.cpu_effects(n=1024, reps=1),
    }
    md = report.render_markdown(results)
    assert "## Training step: demo preset" in md and "Component estimate" in md and "subnormal" in md
    json.dumps(results, default=str)


def test_interleaved_step_timing_and_components(tiny):
    data = training.synthetic_dataset(2, 32, 40, 5)
    res, trainers = training.time_training(
        tiny, data, warmup=2, timed=2, start_step=10, total_steps=30, log=lambda m: None
    )
    assert set(res["variants"]) == {"dense", "adapmtl", "naive"}
    steps = [r["step"] for r in res["variants"]["dense"]["records"]]
    assert steps == [0, 10, 11, 12]  # step 0, jump to the solve step, then timed steps
    ad = res["variants"]["adapmtl"]
    assert ad["records"][1]["solve"] and not ad["records"][2]["solve"]
    assert ad["vs_dense"]["amortized_cpu_ratio"] > 0 and ad["timed_cpu_ms"]["n"] == 2
    assert set(STEP_PHASES) <= set(ad["phases_cpu_ms"])  # every phase of the step, read through phase_hook
    assert all(t.phase_hook is None for t in trainers.values())  # the timers are detached afterwards
    # the naive variant really runs the plain autograd formula, with the same forward values
    naive = trainers["naive"].method.layers
    assert all(type(layer) is training.NaiveSparseConv2d for layer in naive.values())
    layer = next(iter(trainers["adapmtl"].method.layers.values()))
    with torch.no_grad():
        ref = soft_threshold_reference(layer.weight, layer.tau)
        assert torch.equal(layer.effective_weight(), ref)

    comp = components.component_timings(trainers, 20, reps=1)
    w = comp["w_eff"]
    assert set(w) == set(components.IMPLEMENTATIONS)
    # what the custom autograd saves: nothing beyond W_eff (which the conv keeps anyway)
    assert w["current"]["saved_extra_bytes"] == 0
    assert w["naive autograd"]["saved_extra_bytes"] >= 8 * comp["prunable_weights"]
    assert comp["kth_value_ms"]["same_value"]
    prof = components.profile_attribution(trainers, 13)
    assert prof["adapmtl"]["W_eff forward (_SoftThreshold)"] > 0
    assert prof["dense"]["W_eff forward (_SoftThreshold)"] == 0


def test_phase_hook_sees_every_phase_in_order_and_changes_nothing(tiny):
    data = training.synthetic_dataset(2, 32, 40, 5)
    plain, hooked = (training.make_trainer(tiny, data, "adapmtl", 30) for _ in range(2))
    seen: list[str] = []
    timer = training.PhaseTimer(hooked)
    inner = hooked.phase_hook

    def recording(name):
        seen.append(name)
        return inner(name)

    hooked.phase_hook = recording
    with timer:
        losses = hooked.train_step(0)
    assert seen == list(STEP_PHASES)
    assert set(timer.current) == set(STEP_PHASES) and all(cpu >= 0 for _, cpu in timer.current.values())
    assert losses == plain.train_step(0)
    for a, b in zip(plain.model.parameters(), hooked.model.parameters()):
        assert torch.equal(a, b)


def test_v0_implementation_matches_current():
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    tau = torch.tensor(0.5, requires_grad=True)
    g = torch.randn(8, 4, 3, 3)
    outs = []
    for impl in components.IMPLEMENTATIONS.values():
        y = impl(w, tau)
        y.backward(g)
        outs.append((y.detach(), w.grad.clone(), tau.grad.clone()))
        w.grad = tau.grad = None
    for y, gw, gt in outs[1:]:
        assert torch.equal(y, outs[0][0]) and torch.equal(gw, outs[0][1]) and torch.allclose(gt, outs[0][2])


def test_variants_sizes_and_zero_canonicalisation(tiny, tmp_path):
    state = build_model(tiny, 5).state_dict()
    unstructured, info = exports.build_variant(tiny, 5, state, "unstructured")
    assert abs(info["prunable_sparsity"] - tiny.sparsity.target) < 1e-3
    assert info["fold_max_diff"] < 1e-4
    _, info24 = exports.build_variant(tiny, 5, state, "2:4")
    assert info24["decisions"].get("2:4", 0) > 0
    path = tmp_path / "u.onnx"
    exports.export_variant(unstructured, path, tiny, exporter="torchscript", simplifier="none")
    rep = sizes.size_report(path, dense_onnx_bytes=path.stat().st_size, extra_codecs=False)
    assert rep["float_zeros"] > 0 and rep["limit_bytes"] < rep["onnx_bytes"]
    assert rep["float_negative_zeros"] > 0  # hardening writes sign(W) * 0 = -0.0
    fixed = tmp_path / "u.pz.onnx"
    canon = sizes.canonical_zeros_onnx(path, fixed)
    assert canon["negative_zeros_rewritten"] == rep["float_negative_zeros"] and canon["ort_outputs_identical"]
    rep2 = sizes.size_report(fixed, dense_onnx_bytes=path.stat().st_size, extra_codecs=False)
    assert rep2["float_negative_zeros"] == 0 and rep2["gzip9_bytes"] < rep["gzip9_bytes"]


def test_latency_memory_and_report(tiny, tmp_path):
    model, _ = exports.build_variant(tiny, 5, build_model(tiny, 5).state_dict(), "dense")
    path = tmp_path / "d.onnx"
    exports.export_variant(model, path, tiny, exporter="torchscript", simplifier="none")
    lat = runtime.latency_table({"dense": (path, model)}, [1], 32, 40, threads=1, iters=2, rounds=2, log=lambda m: None)
    assert lat["onnxrt"]["dense"]["1"]["p50_ms"] > 0 and lat["torch"]["dense"]["1"]["p50_vs_dense"] == 1.0
    mem = runtime.peak_memory("onnxrt", path, 1, 32, 40, 1)
    assert mem["peak_kib"] >= mem["baseline_kib"] > 0
    assert machine.summarize([1.0, 2.0, 3.0])["median"] == 2.0
    assert 0.46 < sizes.entropy_bits(0.1) < 0.47
    info = machine.machine_info(1)
    assert info["logical_cpus"] >= 1 and json.dumps(info)
    assert np.isfinite(cli.parse_size("288x384")).all()
