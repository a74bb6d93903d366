"""TensorRT build: plan purity for both majors, and build_engine call wiring against a recording fake.

The fake (`fake_tensorrt.py`) proves our calls and files, not TensorRT's behaviour; nothing here ran real TensorRT.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

from deploy.tensorrt_build import build_engine
from deploy.tensorrt_plan import plan_build, trt_major_version
from pipeline.config import BuildConfig
from pipeline.errors import BackendUnavailable, MissingArtifactError, PipelineError
from tests.fakes import fake_tensorrt

TRT10, TRT11 = "10.13.0.35", "11.4.0.106"


def _export(path: Path, dynamic_batch: bool = True) -> Path:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)
            )
            self.seg = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return {"seg": self.seg(self.backbone(x))}

    torch.manual_seed(0)
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Net().eval(),
            (torch.rand(1, 3, 24, 32),),
            str(path),
            input_names=["image"],
            output_names=["seg"],
            dynamic_axes={"image": {0: "batch"}} if dynamic_batch else None,
            dynamo=False,
            opset_version=18,
        )
    return path


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture
def fake_trt(request, monkeypatch):
    trt = fake_tensorrt.make_fake_tensorrt(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def _calls(trt, name):
    return [c for c in trt.calls if c[0] == name]


# ---------------------------------------------------------------------------------------------------------
# plan_build (pure)


def test_plan_trt10_fp16_sparse(onnx_path):
    cfg = BuildConfig(min_batch=1, opt_batch=4, max_batch=16, workspace_mb=512)
    plan = plan_build(TRT10, cfg, onnx_path, sparse=True)
    assert plan.trt_major == 10 and plan.strategy == "fp16_builder_flag"
    assert plan.builder_flags == ("FP16", "SPARSE_WEIGHTS")
    assert plan.network_flags == () and not plan.strongly_typed and not plan.convert_to_fp16_onnx
    (p,) = plan.profiles
    assert (p.input_name, p.min_shape, p.opt_shape, p.max_shape) == (
        "image",
        (1, 3, 24, 32),
        (4, 3, 24, 32),
        (16, 3, 24, 32),
    )
    assert plan.workspace_bytes == 512 * 1024 * 1024


def test_plan_trt11_strongly_typed(onnx_path):
    dense = plan_build(TRT11, BuildConfig(), onnx_path, sparse=False)
    assert (
        dense.strategy == "strongly_typed_fp16_onnx" and dense.convert_to_fp16_onnx and dense.strongly_typed
    )
    assert dense.builder_flags == () and dense.network_flags == ("STRONGLY_TYPED",)
    sparse = plan_build(TRT11, BuildConfig(), onnx_path, sparse=True)
    assert sparse.builder_flags == ("SPARSE_WEIGHTS",)
    assert any("unverified" in n for n in sparse.notes)


def test_plan_fp32_routes(onnx_path):
    p10 = plan_build(TRT10, BuildConfig(precision="fp32"), onnx_path, sparse=True)
    assert p10.builder_flags == ("SPARSE_WEIGHTS",) and p10.strategy == "fp32"
    assert any("only used with FP16" in n for n in p10.notes)
    p11 = plan_build(TRT11, BuildConfig(precision="fp32"), onnx_path, sparse=False)
    assert p11.strategy == "strongly_typed_fp32" and not p11.convert_to_fp16_onnx


def test_plan_is_pure(onnx_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # any `import tensorrt` would now raise
    before = sorted(onnx_path.parent.iterdir())
    a = plan_build(TRT10, BuildConfig(), onnx_path, sparse=True)
    b = plan_build(TRT10, BuildConfig(), onnx_path, sparse=True)
    assert a == b and a.to_dict() == b.to_dict()
    assert sorted(onnx_path.parent.iterdir()) == before
    json.dumps(a.to_dict())


def test_plan_errors(onnx_path, tmp_path):
    with pytest.raises(PipelineError, match="not supported"):
        plan_build("8.6.1", BuildConfig(), onnx_path, sparse=False)
    with pytest.raises(PipelineError, match="major version"):
        trt_major_version("latest")
    with pytest.raises(MissingArtifactError):
        plan_build(TRT10, BuildConfig(), tmp_path / "nope.onnx", sparse=False)
    static = _export(tmp_path / "static.onnx", dynamic_batch=False)
    with pytest.raises(PipelineError, match="fixed batch of 1"):
        plan_build(TRT10, BuildConfig(), static, sparse=False)
    ok = plan_build(TRT10, BuildConfig(min_batch=1, opt_batch=1, max_batch=1), static, sparse=False)
    assert ok.profiles[0].max_shape == (1, 3, 24, 32)


# ---------------------------------------------------------------------------------------------------------
# build_engine wiring


@pytest.mark.parametrize("fake_trt", [TRT10], indirect=True)
@pytest.mark.parametrize("sparse", [False, True])
def test_build_trt10_wiring(fake_trt, onnx_path, tmp_path, sparse):
    plan = plan_build(TRT10, BuildConfig(workspace_mb=256), onnx_path, sparse=sparse)
    engine = tmp_path / "build" / "model.engine"
    side = build_engine(
        plan, onnx_path, engine, tmp_path / "build" / "timing.cache", tmp_path / "build" / "b.log"
    )
    flags = [c[1] for c in _calls(fake_trt, "config.set_flag")]
    assert flags == (["FP16", "SPARSE_WEIGHTS"] if sparse else ["FP16"])
    assert _calls(fake_trt, "create_network") == [("create_network", 0)]
    assert _calls(fake_trt, "parse_from_file") == [("parse_from_file", str(onnx_path))]
    assert _calls(fake_trt, "config.set_memory_pool_limit") == [
        ("config.set_memory_pool_limit", "WORKSPACE", 256 * 1024 * 1024)
    ]
    assert _calls(fake_trt, "profile.set_shape") == [
        ("profile.set_shape", "image", (1, 3, 24, 32), (8, 3, 24, 32), (16, 3, 24, 32))
    ]
    assert ("config.profiling_verbosity", "DETAILED") in fake_trt.calls
    assert engine.read_bytes().startswith(fake_tensorrt.ENGINE_MAGIC)
    assert json.loads((tmp_path / "build" / "model.engine.json").read_text()) == side
    assert side["tensorrt_version"] == TRT10 and side["flags"] == flags
    assert side["profile"] == [
        {"input": "image", "min": [1, 3, 24, 32], "opt": [8, 3, 24, 32], "max": [16, 3, 24, 32]}
    ]
    assert len(side["source_onnx_sha256"]) == 64 and side["build_seconds"] >= 0
    assert side["fp16_conversion"] is None and side["parsed_onnx"] == str(onnx_path)
    log_text = (tmp_path / "build" / "b.log").read_text()
    assert "[V] fake builder: timing tactics" in log_text
    if sparse:
        assert side["sparsity"]["eligible"] == [
            "/backbone/backbone.0/Conv",
            "/backbone/backbone.2/Conv",
            "/seg/Conv",
        ]
        assert side["sparsity"]["picked"] == ["/backbone/backbone.0/Conv"]
        assert side["inspector"]["sparse_tactics"] == ["/backbone/backbone.0/Conv"]
    else:
        assert side["sparsity"]["eligible_logged"] is False
    assert not list((tmp_path / "build").glob("*.tmp"))


@pytest.mark.parametrize("fake_trt", [TRT11], indirect=True)
def test_build_trt11_strongly_typed_fp16_onnx(fake_trt, onnx_path, tmp_path):
    plan = plan_build(TRT11, BuildConfig(), onnx_path, sparse=True)
    engine = tmp_path / "sparse.engine"
    side = build_engine(plan, onnx_path, engine, tmp_path / "timing.cache", tmp_path / "b.log")
    assert [c[1] for c in _calls(fake_trt, "config.set_flag")] == ["SPARSE_WEIGHTS"]  # no FP16 on 11.x
    strongly = 1 << int(fake_trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert _calls(fake_trt, "create_network") == [("create_network", strongly)]
    fp16_onnx = tmp_path / "sparse.fp16.onnx"
    assert _calls(fake_trt, "parse_from_file") == [("parse_from_file", str(fp16_onnx))]
    assert fake_trt.last_network.initializer_types == {"FLOAT16"}
    assert side["parsed_onnx"] == str(fp16_onnx) and side["fp16_conversion"]["initializers"] == 6
    assert side["source_onnx_sha256"] != side["parsed_onnx_sha256"]
    assert side["network_flags"] == ["STRONGLY_TYPED"] and side["strategy"] == "strongly_typed_fp16_onnx"


@pytest.mark.parametrize("fake_trt", [TRT10], indirect=True)
def test_timing_cache_loaded_and_saved(fake_trt, onnx_path, tmp_path):
    cache = tmp_path / "run" / "build" / "timing.cache"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"previous")
    plan = plan_build(TRT10, BuildConfig(), onnx_path, sparse=False, timing_cache_path=cache)
    side = build_engine(plan, onnx_path, tmp_path / "e" / "dense.engine")
    assert ("config.create_timing_cache", b"previous") in fake_trt.calls
    assert ("config.set_timing_cache", False) in fake_trt.calls
    assert cache.read_bytes() == b"previous|entry"
    assert side["timing_cache"] == {"path": str(cache), "loaded_bytes": 8, "saved_bytes": 14}
    # default log location beside the engine
    assert (tmp_path / "e" / "dense.engine.build.log").exists()


@pytest.mark.parametrize("fake_trt", [TRT10], indirect=True)
def test_build_failures_are_pipeline_errors(fake_trt, onnx_path, tmp_path):
    plan = plan_build(TRT10, BuildConfig(), onnx_path, sparse=False)
    fake_trt.settings["fail_build"] = True
    with pytest.raises(PipelineError, match="out of workspace"):
        build_engine(plan, onnx_path, tmp_path / "x.engine")
    assert not (tmp_path / "x.engine").exists()
    assert "[E] fake builder: out of workspace" in (tmp_path / "x.engine.build.log").read_text()
    fake_trt.settings.update(fail_build=False, parse_errors=["Unsupported op Foo"])
    with pytest.raises(PipelineError, match="Unsupported op Foo"):
        build_engine(plan, onnx_path, tmp_path / "x.engine")


@pytest.mark.parametrize("fake_trt", [TRT11], indirect=True)
def test_plan_for_other_major_is_refused(fake_trt, onnx_path, tmp_path):
    plan10 = plan_build(TRT10, BuildConfig(), onnx_path, sparse=False)
    with pytest.raises(PipelineError, match="plan was made for TensorRT 10"):
        build_engine(plan10, onnx_path, tmp_path / "x.engine")


def test_build_without_tensorrt_is_backend_unavailable(onnx_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan = plan_build(TRT10, BuildConfig(), onnx_path, sparse=False)
    with pytest.raises(BackendUnavailable, match="tensorrt is not installed"):
        build_engine(plan, onnx_path, tmp_path / "x.engine")
