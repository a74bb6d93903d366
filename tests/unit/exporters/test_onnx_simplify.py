"""simplify_onnx: metadata and dynamic batch survive both tools; errors are one-line and actionable."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from exporters import simplify
from exporters.metadata import read_metadata
from exporters.simplify import simplify_onnx
from pipeline.errors import BackendUnavailable, CheckFailed, PipelineError


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("tool", ["onnxsim", "onnxslim"])
def test_metadata_and_dynamic_batch_survive(exported, tmp_path, exporter, tool):
    path, _, _ = exported(exporter, "unstructured")
    before = read_metadata(path)
    out = tmp_path / "simple.onnx"
    report = simplify_onnx(path, out, tool)

    after = read_metadata(out)
    assert {k: after[k] for k in before} == before
    assert after["simplifier"].startswith(f"{tool} ")
    assert not any(k.startswith("onnxsim.") for k in after)  # tool bookkeeping is dropped
    assert report["tool"] == tool and report["version"]
    assert report["nodes_after"] <= report["nodes_before"]
    assert sum(report["ops_after"].values()) == report["nodes_after"] and report["ops_after"]["Conv"] == 8
    assert report["dynamic_batch"] is True

    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    assert all(np.abs(a - b).max() <= 1e-5 for a, b in zip(ref, got, strict=True))


def test_none_copies_and_checks(exported, tmp_path):
    path, _, _ = exported("torchscript", "unstructured")
    report = simplify_onnx(path, tmp_path / "same.onnx", "none")
    assert report["nodes_after"] == report["nodes_before"] and report["version"] is None
    assert read_metadata(tmp_path / "same.onnx") == read_metadata(path)


def test_in_place(exported, tmp_path):
    path, _, _ = exported("torchscript", "unstructured")
    copy = tmp_path / "m.onnx"
    copy.write_bytes(path.read_bytes())
    simplify_onnx(copy, copy, "onnxslim")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    "tool, fix", [("onnxsim", "pip install onnxsim"), ("onnxslim", "pip install onnxslim")]
)
def test_missing_tool_names_the_fix(exported, tmp_path, monkeypatch, tool, fix):
    path, _, _ = exported("torchscript", "unstructured")
    monkeypatch.setitem(sys.modules, tool, None)  # makes `import tool` raise ImportError
    with pytest.raises(BackendUnavailable, match=fix) as err:
        simplify_onnx(path, tmp_path / "x.onnx", tool)
    assert "export.simplifier=" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_tool(exported, tmp_path):
    path, _, _ = exported("torchscript", "unstructured")
    with pytest.raises(
        PipelineError, match="Unknown simplifier 'polish'. Available: none, onnxsim, onnxslim"
    ):
        simplify_onnx(path, tmp_path / "x.onnx", "polish")


def test_frozen_batch_axis_is_caught(exported, tmp_path, monkeypatch):
    path, _, _ = exported("torchscript", "unstructured")

    def freezing_tool(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
        return model, "0"

    monkeypatch.setitem(simplify.SIMPLIFIERS, "onnxslim", freezing_tool)
    with pytest.raises(CheckFailed, match="froze the dynamic batch axis"):
        simplify_onnx(path, tmp_path / "x.onnx", "onnxslim")
    assert not (tmp_path / "x.onnx").exists()
