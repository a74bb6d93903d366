"""tiny_mtl exports to ONNX with a dynamic batch and matches torch in ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from pipeline.models import create_model

TASKS = {"seg": 7, "depth": 1, "normal": 3}


def test_tiny_mtl_torchscript_export_dynamic_batch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = create_model("tiny_mtl", TASKS).eval()
    (image,) = model.example_inputs(batch=2, height=32, width=32)
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            model,
            (image,),
            str(path),
            input_names=["image"],
            output_names=list(TASKS),
            dynamic_axes={name: {0: "batch"} for name in ["image", *TASKS]},
            opset_version=18,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(TASKS)
    x = torch.rand(3, 3, 32, 32)  # a batch size that was not traced
    outputs = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    for name, value in zip(TASKS, outputs, strict=True):
        torch.testing.assert_close(torch.from_numpy(value), expected[name], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_tiny_mtl_dynamo_export_dynamic_batch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from torch.export import Dim

    model = create_model("tiny_mtl", TASKS).eval()
    (image,) = model.example_inputs(batch=2, height=32, width=32)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        model,
        (image,),
        str(path),
        input_names=["image"],
        output_names=list(TASKS),
        dynamic_shapes={"image": {0: Dim("batch", min=1, max=64)}},
        opset_version=18,
        dynamo=True,
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 3, 32, 32)
    outputs = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    for name, value in zip(TASKS, outputs, strict=True):
        torch.testing.assert_close(torch.from_numpy(value), expected[name], atol=1e-5, rtol=1e-4)
