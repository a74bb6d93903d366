"""`deploy.engine_build.build_int8_engine` on the TensorRT test double: plan flags and the task-level gate.

The test double (`tests/fakes/fake_tensorrt.py`) proves the wiring only; nothing here ran real TensorRT.
The "engine" runner is a test double too: ONNX Runtime on the int8 model itself (gate passes), or the same
outputs with the seg logits shuffled (gate fails, naming the head).
"""

from __future__ import annotations

import numpy as np
import pytest

from deploy.engine_build import build_int8_engine
from deploy.engine_check import load_reference
from deploy.environment import probe_gpu_environment
from deploy.runners import OnnxrtRunner
from deploy.tensorrt_plan import plan_build
from exporters.quantize import quantize_int8
from pipeline.config import load_config
from tests.unit.deploy.test_engine_build import _run, trt  # noqa: F401 - the fixture is used by name


class _ShuffledSeg(OnnxrtRunner):
    """Test double of a broken engine: ONNX Runtime's outputs with the seg channels reversed."""

    def _infer(self, feeds):
        out = dict(super()._infer(feeds))
        out["seg"] = out["seg"][:, ::-1].copy()
        return out


@pytest.fixture
def int8_run(tmp_path):
    run = _run(tmp_path, dynamic_hw=False)
    images = np.random.default_rng(1).random((8, 3, 32, 40), dtype=np.float32)
    quantize_int8(run / "export" / "model.onnx", run / "quantize" / "model_int8.onnx", images, method="minmax")
    return run


def _build(run, factory):
    cfg = load_config("tiny", ["build.latency_batches=[1]", "build.warmup=0", "build.iters=1"])
    return build_int8_engine(
        cfg, run / "quantize" / "model_int8.onnx", run / "build",
        load_reference(run / "validate", run / "harden" / "model.pt"), probe_gpu_environment(),
        runner_factory=factory,
    )


def test_int8_plan_is_explicit_quantization_with_fp16_fallback_and_sparse_weights(int8_run):
    plan = plan_build("10.13.0.35", load_config("tiny").build, int8_run / "quantize" / "model_int8.onnx",
                      True, int8=True)
    assert plan.builder_flags == ("INT8", "FP16", "SPARSE_WEIGHTS") and plan.precision == "int8"
    plan11 = plan_build("11.0.0.1", load_config("tiny").build, int8_run / "quantize" / "model_int8.onnx",
                        False, int8=True)
    assert plan11.network_flags == ("STRONGLY_TYPED",) and not plan11.convert_to_fp16_onnx


def test_int8_engine_gate_passes_against_ort_int8(trt, int8_run):  # noqa: F811
    int8 = int8_run / "quantize" / "model_int8.onnx"
    res = _build(int8_run, lambda p: OnnxrtRunner(int8, providers=["CPUExecutionProvider"]))
    assert res["status"] == "ok", res["reason"]
    assert set(res["build"]["flags"]) == {"INT8", "FP16", "SPARSE_WEIGHTS"}  # hardened 2:4 layers present
    assert (int8_run / "build" / "int8.engine").exists() and res["gate"]["passed"]


def test_int8_engine_gate_fails_naming_the_head(trt, int8_run):  # noqa: F811
    int8 = int8_run / "quantize" / "model_int8.onnx"
    res = _build(int8_run, lambda p: _ShuffledSeg(int8, providers=["CPUExecutionProvider"]))
    assert res["status"] == "failed"
    assert "seg argmax_agreement_pct" in res["reason"], res["reason"]
