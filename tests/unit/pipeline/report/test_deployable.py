"""The deployable-artifact box: input spec from io_spec.json, sizes, speed measured or not, latency hook."""

from __future__ import annotations

from pipeline.report.deployable import deployable_section, deployable_summary, latency_table

CHECKS = {"onnx": "export/model.onnx", "compressed": "export/model.onnx.gz", "opset": 18,
          "size_bytes": 2_000_000, "compressed_bytes": 250_000}
IO_SPEC = {
    "input_name": "image", "input_shape": ["batch", 3, 64, 80], "max_batch": 64,
    "dynamic_axes": {"image": [0]}, "output_shapes": {"seg": ["batch", 7, 64, 80]},
    "metadata": {"input_format": "RGB float32 [0,1] NCHW", "dynamic_hw": "false"},
}
SKIPPED = {"status": "skipped", "reason": "tensorrt is not installed"}


def test_input_spec_sizes_and_unmeasured_speed():
    d = deployable_summary(CHECKS, IO_SPEC, SKIPPED)
    assert d["artifact"] == "export/model.onnx"
    assert d["input"] == {"name": "image", "dtype": "float32", "layout": "NCHW", "channels": "RGB",
                          "range": "[0,1]", "shape": ["batch", 3, 64, 80], "batch_range": [1, 64],
                          "dynamic_hw": False}
    assert d["size"] == {"raw_bytes": 2_000_000, "gzip_bytes": 250_000}
    assert d["dense"]["gzip_bytes"] is None and "not measured" in d["dense"]["gzip_note"]
    assert d["speed"]["measured"] is False and "tensorrt is not installed" in d["speed"]["reason"]
    md = deployable_section({"deployable": d, "validation": {"passed": True}})
    assert "## Deployable artifact" in md and "batch 1–64" in md and "8.00× smaller" in md
    assert "**not measured here**" in md and "ONNX Runtime (CPU)" in md


def test_measured_speed_from_build_report():
    lat = {"1": {"end_to_end": {"p50_ms": 1.5}}, "8": {"end_to_end": {"p50_ms": 4.0}}}
    build = {"status": "ok", "environment": {"gpu": {"name": "H200"}}, "sparse_speedup": 1.2,
             "engines": {"dense": {"checks": {"latency": lat}}, "sparse": {"error": "boom"}}}
    speed = deployable_summary(CHECKS, IO_SPEC, build)["speed"]
    assert speed["measured"] and speed["device"] == "H200"
    assert speed["latency"] == [{"runtime": "TensorRT dense engine", "batch": 1, "p50_ms": 1.5},
                                {"runtime": "TensorRT dense engine", "batch": 8, "p50_ms": 4.0}]
    md = deployable_section({"deployable": deployable_summary(CHECKS, IO_SPEC, build)})
    assert "measured here on H200" in md and "| TensorRT dense engine | 8 | 4 |" in md


def test_nothing_exported_and_latency_hook():
    assert deployable_summary(None, None, SKIPPED) is None
    assert "not run" in deployable_section({"stages": {}})
    assert latency_table(None) == ""
    table = latency_table({"int8 ort": {"batch": 1, "p50_ms": 2.0}})
    assert table.splitlines()[0] == "| name | batch | p50_ms |" and "| int8 ort | 1 | 2 |" in table
    md = deployable_section({"deployable": deployable_summary(CHECKS, IO_SPEC, SKIPPED),
                             "latency": [{"runtime": "x", "p50_ms": 3.0}]})
    assert "Latency:" in md and "| x | 3 |" in md
