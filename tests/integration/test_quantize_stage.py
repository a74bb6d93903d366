"""The quantize stage end to end on a copy of the tiny run (issue #16): `run all` with quantize.mode=int8,
the report keys and console lines, the int8 gate in validate (exit 3 when impossible), and bad inputs
(one line, exit 1 or 2, no traceback)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from pipeline.cli import main

pytestmark = pytest.mark.timeout(900)  # a full tiny run all (dense reference included) on a busy machine

INT8 = ["--config", "tiny", "--no-progress", "--set", "quantize.mode=int8"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def run_copy(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_run.work)  # its scene cache
    monkeypatch.setattr("pipeline.report.markdown.write_markdown_report", lambda run, report: run.root / "report.md")
    dst = tmp_path / "run"
    shutil.copytree(tiny_run.run, dst)
    return dst


def _one_line_error(result, codes=(1, 2)):
    assert result.exit_code in codes, result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error")]) <= 1, result.output


def test_int8_run_all_reports_gate_and_latency_then_catches_a_modified_model(run_copy):
    result = invoke("run", "all", "--run-dir", str(run_copy), *INT8)
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_copy / "manifest.json").read_text())
    assert manifest["stages"]["quantize"]["status"] == "ok"
    assert manifest["stages"]["train"]["status"] == "ok"  # upstream stages were not re-run
    assert "quantize/model_int8.onnx" in [i["path"] for i in manifest["stages"]["validate"]["inputs"]]
    report = json.loads((run_copy / "report.json").read_text())
    q, lat = report["quantize"], report["latency"]
    assert q["calibration_split"] == "train" and q["calibration_samples"] == 16
    assert q["gate"]["split"] == "val" and q["gate"]["passed"] is True
    assert q["gate"]["delta_t_vs_dense"]["int8"] is not None  # the tiny preset trains a dense reference
    assert {r["model"] for r in lat["rows"]} == {"dense_fp32", "pruned_fp32", "pruned_int8"}
    assert {(r["batch"], r["threads"]) for r in lat["rows"]} == {(1, 1), (2, 1)}
    assert lat["sizes"]["pruned_int8"]["raw_bytes"] < lat["sizes"]["pruned_fp32"]["raw_bytes"]
    assert manifest["stages"]["validate"]["summary"]["int8_gate"] is True
    assert "int8 accuracy gate passed" in result.output and "| pruned_int8 | 1 | 1 |" in result.output

    int8 = run_copy / "quantize" / "model_int8.onnx"
    int8.write_bytes(int8.read_bytes() + b"\0")
    result = invoke("validate", "--run-dir", str(run_copy), "--no-progress")
    _one_line_error(result)
    assert "quantize/model_int8.onnx" in result.output and "modified" in result.output


def test_impossible_gate_tolerance_fails_validate_with_exit_3(run_copy):
    result = invoke(
        "run", "all", "--run-dir", str(run_copy), *INT8, "--set", "quantize.auto_exclude=false",
        "--set", "quantize.gate.seg_agreement_min_pct=100.5",
    )
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert "int8 accuracy gate failed: seg argmax_agreement_pct" in result.output


@pytest.mark.parametrize(
    "override, words",
    [
        ("quantize.calibration_samples=0", "must be positive"),
        ("quantize.calibration_samples=1000", "has only 64 images"),
        ("quantize.calibration_method=kmeans", "calibration_method"),
    ],
)
def test_bad_calibration_settings_are_one_line(run_copy, override, words):
    result = invoke("run", "all", "--run-dir", str(run_copy), *INT8, "--set", override)
    _one_line_error(result)
    assert words in result.output


def test_quantize_without_export_is_one_line(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_run.work)
    run = tiny_run.copy_until(tmp_path / "run", "harden")
    result = invoke("quantize", "--run-dir", str(run), *INT8, "--force")
    _one_line_error(result)
    assert "export" in result.output
