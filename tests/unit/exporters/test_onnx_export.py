"""export_onnx: names, dynamic batch, parity with torch, metadata, fallback, atomic write."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporters.metadata import PRODUCER, read_metadata
from exporters.onnx_export import export_onnx
from pipeline.errors import PipelineError

TASKS = ("seg", "depth", "normal")


def _ort_vs_torch(path, net, batch: int, hw: tuple[int, int] = (32, 32)) -> dict[str, float]:
    x = np.random.default_rng(batch).random((batch, 3, *hw), dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x}), strict=True))
    with torch.no_grad():
        ref = net(torch.from_numpy(x))
    return {t: float(np.abs(outs[t] - ref[t].numpy()).max()) for t in TASKS}


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_matches_torch_at_other_batch_sizes(exported, exporter):
    path, net, info = exported(exporter, "unstructured")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == list(TASKS)
    assert info.input_shape == ["batch", 3, 32, 32]
    assert info.output_shapes["seg"] == ["batch", 5, 32, 32]
    assert info.dynamic_axes == {"image": [0], "seg": [0], "depth": [0], "normal": [0]}
    for batch in (1, 4):  # exported at batch 2
        diffs = _ort_vs_torch(path, net, batch)
        assert all(d <= 1e-4 for d in diffs.values()), (batch, diffs)


@pytest.mark.parametrize("exporter, ir", [("dynamo", 10), ("torchscript", 8)])
def test_export_info_records_what_was_written(exported, exporter, ir):
    path, _, info = exported(exporter, "unstructured")
    model = onnx.load(str(path))
    assert info.exporter == exporter and info.fallback_reason is None
    assert info.opset == 18 and info.ir_version == ir == model.ir_version
    assert not info.external_data and not path.with_name(path.name + ".data").exists()
    assert info.file_bytes == path.stat().st_size
    json.dumps(info.to_dict())  # io_spec.json must serialise


def test_metadata_written(exported):
    path, _, info = exported("dynamo", "unstructured")
    meta = read_metadata(path)
    assert meta == info.metadata
    assert meta["producer"] == PRODUCER
    assert json.loads(meta["tasks"]) == list(TASKS)
    assert meta["input_format"] == "RGB float32 [0,1] NCHW"
    assert meta["exporter"] == "dynamo" and meta["opset"] == "18"
    assert meta["torch_version"] == torch.__version__
    assert json.loads(meta["class_names"]) == ["c0", "c1", "c2", "c3", "c4"]
    assert json.loads(meta["sparsity"]) == {"pattern": "unstructured"}
    assert meta["source_run"] == "runs/test"


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dynamic_hw(make_net, example_image, tmp_path, exporter):
    net = make_net("dense")
    info = export_onnx(
        net,
        tmp_path / "m.onnx",
        task_names=TASKS,
        example_input=example_image,
        exporter=exporter,
        dynamic_hw=True,
    )
    assert info.exporter == exporter
    assert info.input_shape == ["batch", 3, "height", "width"]
    assert info.output_shapes["seg"] == ["batch", 5, "height", "width"]
    diffs = _ort_vs_torch(info.path, net, 3, hw=(40, 48))
    assert all(d <= 1e-4 for d in diffs.values()), diffs


def test_falls_back_to_torchscript_when_dynamo_raises(make_net, example_image, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def flaky_export(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("unsupported op: aten::imaginary\nsecond line")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", flaky_export)
    info = export_onnx(make_net(), tmp_path / "m.onnx", task_names=TASKS, example_input=example_image[:1])
    assert info.requested_exporter == "dynamo" and info.exporter == "torchscript"
    assert info.fallback_reason == "RuntimeError: unsupported op: aten::imaginary"
    assert read_metadata(info.path)["exporter"] == "torchscript"
    assert info.input_shape[0] == "batch"  # a batch-1 example still yields a dynamic batch axis
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no staging leftovers


def test_export_restores_training_mode_and_subset_of_tasks(make_net, example_image, tmp_path):
    net = make_net().train()
    info = export_onnx(
        net,
        tmp_path / "m.onnx",
        task_names=["depth", "seg"],
        example_input=example_image,
        exporter="torchscript",
    )
    assert net.training
    assert info.output_names == ["depth", "seg"]


def test_export_errors(make_net, example_image, tmp_path):
    net = make_net()
    with pytest.raises(PipelineError, match="lack the tasks"):
        export_onnx(
            net,
            tmp_path / "a.onnx",
            task_names=["seg", "edges"],
            example_input=example_image,
            exporter="torchscript",
        )
    with pytest.raises(PipelineError, match="Unknown exporter 'tflite'. Available: dynamo, torchscript"):
        export_onnx(
            net, tmp_path / "a.onnx", task_names=TASKS, example_input=example_image, exporter="tflite"
        )
    with pytest.raises(ValueError, match="written by the exporter"):
        export_onnx(
            net,
            tmp_path / "a.onnx",
            task_names=TASKS,
            example_input=example_image,
            exporter="torchscript",
            metadata={"opset": "99"},
        )
    assert not list(tmp_path.iterdir())  # failed exports leave nothing behind


def test_large_model_goes_to_external_data(make_net, example_image, tmp_path, monkeypatch):
    """Above the 1.8 GB limit weights go to `<name>.data`; the limit is lowered so a tiny net crosses it."""
    import exporters.fileio
    import exporters.onnx_export
    from exporters.simplify import simplify_onnx

    monkeypatch.setattr(exporters.onnx_export, "LARGE_MODEL_BYTES", 1000)
    monkeypatch.setattr(exporters.fileio, "LARGE_MODEL_BYTES", 1000)
    net = make_net("unstructured")
    info = export_onnx(net, tmp_path / "big.onnx", task_names=TASKS, example_input=example_image)
    assert info.external_data and info.exporter == "dynamo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "big.onnx").stat().st_size < 0.5 * info.file_bytes
    assert read_metadata(info.path)["producer"] == PRODUCER
    assert max(_ort_vs_torch(info.path, net, 3).values()) <= 1e-4

    out = tmp_path / "simple" / "big.onnx"
    simplify_onnx(info.path, out, "onnxslim")
    assert sorted(p.name for p in out.parent.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert max(_ort_vs_torch(out, net, 2).values()) <= 1e-4
