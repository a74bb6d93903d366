"""scripts/gpu_check.py on this CPU machine: a fabricated run dir, everything skipped or faked.

With the real environment here (no CUDA, no TensorRT, CPU onnxruntime) every GPU row must be skipped with a reason
and the script must exit 0; --require-tensorrt must exit 1 with one line. With the recording fake tensorrt (and the
TensorRT skip reason patched away) the TensorRT rows run end to end on host buffers: this checks the script's wiring,
not TensorRT.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from deploy.io import save_npz
from pipeline.checkpoint import HardenedCheckpoint, write_checkpoint
from pipeline.config import config_to_dict, load_config
from tests.fakes import fake_tensorrt

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("scripts_gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("scripts_gpu_check", gpu_check)  # dataclasses look their module up there
_spec.loader.exec_module(gpu_check)

H, W, C = 32, 40, 6


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.seg, self.depth, self.normal = nn.Conv2d(16, C, 1), nn.Conv2d(16, 1, 1), nn.Conv2d(16, 3, 1)

    def forward(self, x):
        f = self.backbone(x)
        return {"seg": self.seg(f), "depth": self.depth(f), "normal": self.normal(f)}


def _hardened(tasks, num_classes: int, two_four_layers: list[str]) -> HardenedCheckpoint:
    """A hardened checkpoint with only what the build path reads (tasks, classes, the 2:4 layers)."""
    return HardenedCheckpoint(
        model={}, state_dict={}, bn_folded=[], tasks=list(tasks), num_classes=num_classes, class_names=[], data={},
        pattern="2:4", two_four_layers=two_four_layers, sparsity={}, source={},
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    cfg = config_to_dict(load_config("tiny"))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "export").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Net().eval(),
            (torch.rand(1, 3, H, W),),
            str(run / "export" / "model.onnx"),
            input_names=["image"],
            output_names=["seg", "depth", "normal"],
            dynamic_axes={"image": {0: "batch"}},
            dynamo=False,
            opset_version=18,
        )
    x = np.random.default_rng(0).random((4, 3, H, W), dtype=np.float32)
    base = x.mean(axis=1, keepdims=True)  # the fake engine's formula, so its outputs match this "reference"
    ref = {
        "seg": np.concatenate([(k + 1) * base for k in range(C)], 1),
        "depth": base,
        "normal": np.concatenate([(k + 1) * base for k in range(3)], 1),
    }
    save_npz(run / "validate" / "inputs.npz", {"image": x})
    save_npz(run / "validate" / "outputs_torch.npz", ref)
    write_checkpoint(run / "harden" / "model.pt", _hardened(["seg", "depth", "normal"], C, ["backbone.0"]))
    return run


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_everything_skipped_here(run_dir, tmp_path, no_gpu, capsys):
    rc = gpu_check.main(["--run-dir", str(run_dir), "--out", str(tmp_path), "--iters", "2", "--warmup", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = {r["check"]: r for r in json.loads((tmp_path / "gpu_check.json").read_text())["rows"]}
    assert set(rows) == {
        "TensorRT dense fp16",
        "TensorRT sparse fp16",
        "PyTorch CUDA fp32",
        "PyTorch CUDA fp16",
        "ORT CUDA EP fp16",
        "ORT TensorRT EP fp16",
    }
    assert all(r["status"] == "skipped" and r["detail"] for r in rows.values())
    assert rows["TensorRT dense fp16"]["detail"].startswith("tensorrt is not installed")
    assert rows["PyTorch CUDA fp32"]["detail"].startswith("no CUDA device")
    assert "skipped" in out and "GPU none" in out


def test_require_tensorrt_exits_1(run_dir, no_gpu, capsys):
    assert gpu_check.main(["--run-dir", str(run_dir), "--require-tensorrt"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: TensorRT is required but cannot run here: tensorrt is not installed")
    assert "\n" not in err


def test_tensorrt_rows_with_fake(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt.make_fake_tensorrt("10.13.0.35"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "tensorrt_skip_reason", lambda probe=None: None)
    rc = gpu_check.main(
        [
            "--run-dir",
            str(run_dir),
            "--out",
            str(tmp_path),
            "--iters",
            "2",
            "--warmup",
            "0",
            "--batches",
            "1,2",
            "--device",
            "cpu",
        ]
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {r["check"]: r for r in report["rows"]}
    assert rc == 0, capsys.readouterr()
    assert rows["TensorRT dense fp16"]["status"] == "ok" and set(rows["TensorRT dense fp16"]["p50_ms"]) == {
        "1",
        "2",
    }
    trt_report = report["tensorrt"]
    assert trt_report["engines"]["sparse"]["build"]["flags"] == ["FP16", "SPARSE_WEIGHTS"]
    assert trt_report["sparse_layers"]["per_layer"]["backbone.0"]["eligible"] is True
    assert "2:4 layers 1, eligible 1, picked 1" in rows["TensorRT sparse fp16"]["detail"]
    assert report["settings"]["rtol"] == load_config("tiny").validate.rtol
    assert (tmp_path / "dense.engine").exists() and (tmp_path / "timing.cache").exists()


def test_fresh_run_is_the_demo_model(monkeypatch, tmp_path):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "", "stopped by the test")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        gpu_check._prepare_run(gpu_check._parse(["--run-dir", str(tmp_path / "fresh")]))
    cmd = seen["cmd"]
    assert cmd[cmd.index("--config") + 1] == "demo"
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert "train.steps=40" in sets and "dense_reference=null" in sets and 'harden.pattern="2:4"' in sets
