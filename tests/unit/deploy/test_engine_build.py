"""`deploy.engine_build.build_and_check_engines` (the build stage's and gpu_check's one implementation) on the
TensorRT test double: which keys it reads from the build sidecar, the profile it plans, the tolerances it applies.

The test double proves our wiring only; nothing here ran real TensorRT.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deploy.engine_build import build_and_check_engines
from deploy.engine_check import check_settings_from_config, load_reference
from deploy.environment import probe_gpu_environment
from deploy.io import save_npz
from deploy.runners import TensorRTRunner
from pipeline.checkpoint import HardenedCheckpoint, write_checkpoint
from pipeline.config import load_config
from tests.fakes import fake_tensorrt

H, W, C = 32, 40, 6
TASKS = ["seg", "depth", "normal"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)
        )
        self.seg, self.depth, self.normal = nn.Conv2d(16, C, 1), nn.Conv2d(16, 1, 1), nn.Conv2d(16, 3, 1)

    def forward(self, x):
        f = self.backbone(x)
        return {"seg": self.seg(f), "depth": self.depth(f), "normal": self.normal(f)}


def _export(path: Path, dynamic_hw: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Net().eval(),
            (torch.rand(1, 3, H, W),),
            str(path),
            input_names=["image"],
            output_names=TASKS,
            dynamic_axes={"image": axes},
            dynamo=False,
            opset_version=18,
        )


def _run(tmp: Path, dynamic_hw: bool) -> Path:
    """A run folder as export, validate and harden leave it; references follow the test double's formula."""
    (tmp / "export").mkdir(parents=True)
    _export(tmp / "export" / "model.onnx", dynamic_hw)
    x = np.random.default_rng(0).random((6, 3, H, W), dtype=np.float32)
    base = x.mean(axis=1, keepdims=True)
    ref = {
        "seg": np.concatenate([(k + 1) * base for k in range(C)], 1),
        "depth": base,
        "normal": np.concatenate([(k + 1) * base for k in range(3)], 1),
    }
    save_npz(tmp / "validate" / "inputs.npz", {"image": x})
    save_npz(tmp / "validate" / "outputs_torch.npz", ref)
    save_npz(
        tmp / "validate" / "targets.npz",
        {"seg": ref["seg"].argmax(1).astype(np.int64), "depth": ref["depth"] + 0.5, "normal": ref["normal"]},
    )
    write_checkpoint(tmp / "harden" / "model.pt", _hardened(TASKS, C, ["backbone.0", "backbone.2"]))
    return tmp


def _hardened(tasks, num_classes: int, two_four_layers: list[str]) -> HardenedCheckpoint:
    """A hardened checkpoint with only what the build path reads (tasks, classes, the 2:4 layers)."""
    return HardenedCheckpoint(
        model={}, state_dict={}, bn_folded=[], tasks=list(tasks), num_classes=num_classes, class_names=[], data={},
        pattern="2:4", two_four_layers=two_four_layers, sparsity={}, source={},
    )


@pytest.fixture
def trt(monkeypatch):
    fake = fake_tensorrt.make_fake_tensorrt("10.13.0.35")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return fake


def _build(run: Path, overrides: list[str]) -> dict:
    cfg = load_config("tiny", overrides + ["build.latency_batches=[1, 2]", "build.warmup=0", "build.iters=2"])
    return build_and_check_engines(
        cfg,
        run / "export" / "model.onnx",
        run / "build",
        load_reference(run / "validate", run / "harden" / "model.pt"),
        probe_gpu_environment(),
        runner_factory=lambda p: TensorRTRunner(p, device="cpu"),
    )


def test_sparse_layer_report_lists_what_the_builder_logged(trt, tmp_path):
    trt.settings["picked"] = ["/backbone/backbone.0/Conv"]
    res = _build(_run(tmp_path, dynamic_hw=False), [])
    assert res["status"] == "ok", res["reason"]
    logged = res["engines"]["sparse"]["build"]["sparsity"]
    assert len(logged["eligible"]) >= 2 and logged["picked"] == ["/backbone/backbone.0/Conv"]
    layers = res["sparse_layers"]
    # The stage used to read "sparse_eligible"/"sparse_picked" from the sidecar: always empty, all False here.
    assert layers["per_layer"]["backbone.0"] == {
        **layers["per_layer"]["backbone.0"],
        "eligible": True,
        "picked": True,
    }
    assert (
        layers["per_layer"]["backbone.2"]["eligible"] is True
        and layers["per_layer"]["backbone.2"]["picked"] is False
    )
    assert (layers["hardened_2to4"], layers["hardened_eligible"], layers["hardened_picked"]) == (2, 2, 1)
    assert set(res["engines"]["dense"]["checks"]["latency"]) == {"1", "2"}
    assert res["sparse_speedup"] is not None  # latency keys are strings; an int lookup used to give None


def test_dynamic_hw_plans_with_data_height_width(trt, tmp_path):
    res = _build(_run(tmp_path, dynamic_hw=True), ["export.dynamic_hw=true"])
    assert res["status"] == "ok", res["reason"]
    for kind in ("dense", "sparse"):
        assert res["engines"][kind]["build"]["profile"] == [
            {"input": "image", "min": [1, 3, H, W], "opt": [8, 3, H, W], "max": [16, 3, H, W]}
        ]


def test_rtol_and_batch_size_come_from_config(trt, tmp_path):
    res = _build(_run(tmp_path, dynamic_hw=False), ["validate.rtol=0.25", "validate.batch_size=3"])
    heads = res["engines"]["dense"]["checks"]["heads"]
    assert {h["rtol"] for h in heads.values()} == {0.25}
    assert res["settings"]["rtol"] == 0.25 and res["settings"]["batch_size"] == 3
    shapes = [c[2][0] for c in trt.calls if c[0] == "context.set_input_shape"]
    assert shapes[:2] == [3, 3]  # the accuracy pass runs in validate.batch_size chunks (6 samples)


def test_settings_from_config():
    cfg = load_config("tiny", ["validate.rtol=0.125", "validate.batch_size=64"])
    s = check_settings_from_config(cfg, latency_batches=[2], iters=7)
    assert (s.rtol, s.batch_size, s.latency_batches, s.iters) == (0.125, cfg.build.max_batch, (2,), 7)
    assert s.warmup == cfg.build.warmup and s.tolerances.metric_atol["miou"] == cfg.build.miou_tol
