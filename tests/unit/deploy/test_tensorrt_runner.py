"""TensorRTRunner and run_engine_checks wiring, driven through the recording fake with host (CPU) buffers.

Proves: I/O discovery by name and mode, set_input_shape per batch, set_tensor_address with real buffer addresses
(the fake reads and writes through them), execute_async_v3, outputs keyed by name, and the check pipeline on top.
Does not prove anything about real TensorRT or CUDA streams: device="cpu" exists only for this test double.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.engine_check import CheckSettings, ReferenceData, run_engine_checks, torch_cuda_latency
from deploy.runners import TensorRTRunner, get_runner
from pipeline.errors import BackendUnavailable, MissingArtifactError, PipelineError
from tests.fakes import fake_tensorrt

H, W = 8, 10


@pytest.fixture
def trt(monkeypatch):
    fake = fake_tensorrt.make_fake_tensorrt("10.13.0.35")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


@pytest.fixture
def engine(tmp_path) -> Path:
    path = tmp_path / "dense.engine"
    path.write_bytes(fake_tensorrt.fake_engine_bytes({"image": (3, H, W)}, {"seg": 4, "depth": 1}, (1, 4, 8)))
    return path


def expected(x: np.ndarray) -> dict[str, np.ndarray]:
    base = x.mean(axis=1, keepdims=True)
    return {"seg": np.concatenate([(k + 1) * base for k in range(4)], axis=1), "depth": base}


def test_runner_wiring(trt, engine):
    x = np.random.default_rng(0).random((3, 3, H, W), dtype=np.float32)
    with TensorRTRunner(engine, device="cpu") as r:
        assert r.input_names == ["image"] and r.output_names == ["seg", "depth"]
        out = r.infer({"image": x})
    ref = expected(x)
    assert sorted(out) == ["depth", "seg"]
    for k in ref:
        assert out[k].dtype == np.float32 and out[k].shape == ref[k].shape
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-6)
    assert ("context.set_input_shape", "image", (3, 3, H, W)) in trt.calls
    assert [c[1] for c in trt.calls if c[0] == "context.set_tensor_address"] == ["image", "seg", "depth"]
    assert ("context.execute_async_v3", 0) in trt.calls


def test_runner_errors(trt, engine, tmp_path):
    with TensorRTRunner(engine, device="cpu") as r:
        with pytest.raises(PipelineError, match=r"outside \(1, 3, 8, 10\)\.\.\(8, 3, 8, 10\)"):
            r.infer({"image": np.zeros((9, 3, H, W), np.float32)})
        with pytest.raises(PipelineError, match="lacks engine input"):
            r.infer({"img": np.zeros((1, 3, H, W), np.float32)})
    with pytest.raises(PipelineError, match="outside its 'with' block"):
        r.infer({"image": np.zeros((1, 3, H, W), np.float32)})
    with pytest.raises(MissingArtifactError):
        TensorRTRunner(tmp_path / "none.engine", device="cpu").__enter__()
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"not an engine")
    with pytest.raises(PipelineError, match="could not deserialize"):
        TensorRTRunner(bad, device="cpu").__enter__()


def test_runner_needs_cuda_for_cuda_device(trt, engine, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        TensorRTRunner(engine).__enter__()


def test_registry_builds_it(trt, engine):
    with get_runner("tensorrt", engine, device="cpu") as r:
        assert "seg" in r.infer({"image": np.ones((1, 3, H, W), np.float32)})


def test_run_engine_checks_end_to_end_on_fake(trt, engine):
    rng = np.random.default_rng(1)
    x = rng.random((6, 3, H, W), dtype=np.float32)
    ref = expected(x)
    ref_noisy = {"seg": ref["seg"], "depth": ref["depth"] + 0.1}  # depth fails elementwise at atol 1e-3
    targets = {"seg": ref["seg"].argmax(1).astype(np.int64), "depth": ref["depth"].astype(np.float32) + 0.5}
    reference = ReferenceData({"image": x}, ref_noisy, targets, ("seg", "depth"), 4, (), "outputs_torch.npz")
    settings = CheckSettings(atol={"default": 1e-3}, rtol=0.0, miou_tol=0.5, batch_size=4, latency_batches=(1, 8),
                             warmup=1, iters=3)
    res = run_engine_checks(engine, reference, settings, lambda p: TensorRTRunner(p, device="cpu"))
    assert res["heads"]["seg"]["passed"] and not res["heads"]["depth"]["passed"]
    assert res["heads_passed"] is False and res["passed"] is False and res["samples"] == 6
    assert res["agreement"]["seg"]["argmax_agreement_pct"] == 100.0
    assert res["parity"]["seg"]["delta"]["miou"] == 0.0 and res["metrics_agree"] is True
    assert set(res["latency"]) == {"1", "8"} and res["latency"]["8"]["end_to_end"]["batch"] == 8
    assert res["latency"]["1"]["device"] is None  # no CUDA here: device-resident timing skipped
    # batch chunks of 4 over 6 samples, then latency feeds of 1 and 8 (8 samples tiled from 6)
    shapes = [c[2][0] for c in trt.calls if c[0] == "context.set_input_shape"]
    assert shapes[:2] == [4, 2] and set(shapes[2:]) == {1, 8}


def test_torch_cuda_latency_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="needs a GPU: no CUDA device"):
        torch_cuda_latency(torch.nn.Conv2d(3, 4, 1), [1], "fp16", 1, 1, hw=(8, 8))
