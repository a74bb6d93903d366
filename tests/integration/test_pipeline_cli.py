"""The CLI end to end on the tiny preset: run all, per-stage commands, skip/stale logic, 2:4, report keys."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from pipeline.cli import main
from pipeline.nm_sparsity import nm_violations

COMMANDS = ["run", "train", "harden", "export", "validate", "build", "report", "show", "check-config", "list"]


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


@pytest.fixture
def run_copy(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_run.work)
    dst = tmp_path / "run"
    shutil.copytree(tiny_run.run, dst)
    return dst


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_for_every_command(cmd):
    result = invoke(cmd, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_run_all_writes_every_stage_and_stable_report_keys(tiny_run):
    run = tiny_run.run
    for line in ("PASSED  | train", "PASSED  | harden", "PASSED  | export", "PASSED  | validate", "SKIPPED | build"):
        assert line in tiny_run.output
    report = json.loads((run / "report.json").read_text())
    assert {"sparsity", "metrics", "delta_t", "delta_p", "export", "validation", "build"} <= set(report)
    assert abs(report["sparsity"]["overall"] - report["sparsity"]["target"]) <= 0.005
    assert set(report["sparsity"]["components"]) == {"backbone", "seg", "depth", "normal"}
    assert report["sparsity"]["pattern"] == "unstructured"
    assert set(report["metrics"]) >= {"pruned", "dense"} and report["metrics"]["dense"]
    assert isinstance(report["delta_t"], float)
    assert report["export"]["sparsity_survived"] is True
    assert report["export"]["compressed_bytes"] < report["export"]["size_bytes"]
    assert report["validation"]["passed"] is True and report["validation"]["metrics_agree"] is True
    for head in ("seg", "depth", "normal"):
        assert report["validation"]["heads"][head]["max_abs"] <= 1e-4
    assert report["build"]["status"] == "skipped" and "tensorrt" in report["build"]["reason"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["export"]["outputs"][0]["sha256"]
    assert (run / "report.md").exists()


def test_onnx_zero_pattern_equals_hardened_model(tiny_run):
    from exporters.checks import conv_weights_from_onnx
    from pipeline.models.hardened import load_hardened

    run = tiny_run.run
    model, _ = load_hardened(run / "harden" / "model.pt")
    torch_zeros = sorted(int((m.weight == 0).sum()) for m in model.modules() if hasattr(m, "weight") and m.weight is not None and m.weight.dim() == 4)
    onnx_zeros = sorted(int((w == 0).sum()) for w in conv_weights_from_onnx(run / "export" / "model.onnx").values())
    assert torch_zeros == onnx_zeros
    meta = {p.key: p.value for p in onnx.load(str(run / "export" / "model.onnx")).metadata_props}
    assert json.loads(meta["tasks"]) == ["seg", "depth", "normal"]
    assert "sparsity" in meta and "class_names" in meta


def test_real_nyuv2_sample_parity(tiny_run):
    from pipeline.data import find_realdata

    if find_realdata() is None:
        pytest.skip("real NYUv2 sample (shared/realdata/nyuv2_test50) not found beside this checkout")
    report = json.loads((tiny_run.run / "validate" / "report.json").read_text())
    real = report["real_data"]
    assert real is not None and real["passed"] and real["samples"] == 4
    assert real["parity"]["depth"]["passed"] and real["parity"]["normal"]["passed"]


def test_rerun_skips_up_to_date_stages(run_copy):
    result = invoke("run", "all", "--config", "tiny", "--run-dir", str(run_copy), "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.output.count("(up to date)") == 4  # skipped quantize and build are checked again


def test_changed_config_reruns_only_downstream(run_copy):
    before = json.loads((run_copy / "manifest.json").read_text())["stages"]["train"]["started_at"]
    result = invoke("run", "all", "--config", "tiny", "--run-dir", str(run_copy), "--no-progress",
                    "--set", "export.simplifier=onnxslim" if shutil.which("onnxslim") else "export.exporter=torchscript")
    assert result.exit_code == 0, result.output
    assert "SKIPPED | train" in result.output and "SKIPPED | harden" in result.output
    assert "PASSED  | export" in result.output and "PASSED  | validate" in result.output
    assert json.loads((run_copy / "manifest.json").read_text())["stages"]["train"]["started_at"] == before


def test_stage_alone_and_missing_input(run_copy, tmp_path):
    shutil.rmtree(run_copy / "export")
    result = invoke("validate", "--run-dir", str(run_copy))
    assert result.exit_code == 1
    assert "pipeline export --run-dir" in result.output and "Traceback" not in result.output
    assert invoke("export", "--run-dir", str(run_copy), "--no-progress").exit_code == 0
    assert invoke("validate", "--run-dir", str(run_copy), "--no-progress").exit_code == 0
    shown = invoke("show", "--run-dir", str(run_copy))
    assert "validate  ok" in shown.output


def test_stage_command_refuses_a_different_config(run_copy):
    result = invoke("harden", "--run-dir", str(run_copy), "--set", "harden.pattern=2:4")
    assert result.exit_code == 1 and "--force" in result.output


def test_two_four_path_keeps_pattern_through_export(run_copy):
    result = invoke("run", "all", "--config", "tiny", "--run-dir", str(run_copy), "--no-progress",
                    "--set", "harden.pattern=2:4", "--set", "harden.finetune_steps=4")
    assert result.exit_code == 0, result.output
    sp = json.loads((run_copy / "harden" / "sparsity.json").read_text())
    two_four = [layer for layer in sp["layers"] if layer["pattern"] == "2:4"]
    skipped = [layer for layer in sp["layers"] if layer["reason"].startswith("skipped")]
    assert two_four and skipped  # the 3-channel stem is listed as ineligible
    assert all(layer["violations"] == 0 for layer in two_four)
    checks = json.loads((run_copy / "export" / "checks.json").read_text())
    assert checks["two_four_check"]["passed"] and checks["two_four_check"]["layers"] == len(two_four)
    # independent check on the raw ONNX initializers, each 2:4 layer found by its name: every group of 4
    # consecutive input channels holds <= 2 nonzeros
    model = onnx.load(str(run_copy / "export" / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for layer in two_four:
        name = layer["name"]
        key = next((k for k in (f"model.{name}.weight", f"{name}.weight") if k in inits), None)
        assert key is not None, f"2:4 layer {name} has no ONNX initializer of that name"
        w = inits[key]
        assert list(w.shape) == layer["shape"] and w.shape[1] % 4 == 0, (name, w.shape)
        assert nm_violations(w) == 0, f"{name}: a group of 4 input channels holds more than 2 nonzeros in the ONNX"
    assert json.loads((run_copy / "validate" / "report.json").read_text())["passed"]


def test_require_tensorrt_turns_skip_into_error(run_copy):
    result = invoke("build", "--run-dir", str(run_copy), "--require-tensorrt")
    assert result.exit_code == 1
    assert "TensorRT" in result.output and "Traceback" not in result.output


def test_report_regenerates(run_copy):
    (run_copy / "report.json").unlink()
    result = invoke("report", "--run-dir", str(run_copy))
    assert result.exit_code == 0 and (run_copy / "report.json").exists()
    assert "delta_t" in result.output


def test_train_command_shortcuts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--config", "tiny", "--run-dir", str(tmp_path / "r"), "--method", "gmp_global",
                    "--sparsity", "0.8", "--no-progress", "--set", "dense_reference=null")
    assert result.exit_code == 0, result.output
    sp = json.loads((tmp_path / "r" / "train" / "sparsity.json").read_text())
    assert sp["method"] == "gmp_global" and abs(sp["overall"] - 0.8) <= 0.005
    assert "sparsity overall" in result.output
