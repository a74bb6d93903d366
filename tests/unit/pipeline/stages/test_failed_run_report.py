"""A failed stage still leaves report.json, with the failing stage's verdict and reason."""

from __future__ import annotations

import json

import pytest

from pipeline import orchestrate
from pipeline.artifacts import RunDir
from pipeline.config import load_config
from pipeline.errors import CheckFailed, DataError


def _run(tmp_path, monkeypatch, error):
    run = RunDir(tmp_path / "run")
    cfg = load_config("tiny")

    def failing_stage(run_, cfg_, name, options):
        if isinstance(error, CheckFailed):  # the engine records a failed check before raising
            run_.update_manifest(stages={name: {"status": "failed", "reason": "task metrics differ between runtimes"}})
        raise error

    monkeypatch.setattr(orchestrate, "execute_stage", failing_stage)
    with pytest.raises(type(error)):
        orchestrate.run_pipeline(run, cfg, start="validate", until="validate")
    assert run.report_path.is_file(), "no report.json after a failed stage"
    return json.loads(run.report_path.read_text())


def test_a_failed_check_writes_the_report_with_its_verdict(tmp_path, monkeypatch):
    report = _run(tmp_path, monkeypatch, CheckFailed("stage 'validate' failed: task metrics differ between runtimes"))
    assert report["stages"]["validate"]["status"] == "failed"
    assert "task metrics differ" in report["stages"]["validate"]["reason"]
    assert report["failed_stage"] == {
        "stage": "validate",
        "reason": "stage 'validate' failed: task metrics differ between runtimes",
        "error": "CheckFailed",
    }


def test_an_error_inside_a_stage_writes_the_report_too(tmp_path, monkeypatch):
    report = _run(tmp_path, monkeypatch, DataError("data/x.npy: not a depth map"))
    assert report["stages"]["validate"] == {"status": "failed", "reason": "data/x.npy: not a depth map"}
    assert report["failed_stage"]["error"] == "DataError"


def test_report_md_names_the_failed_stage_too(tmp_path, monkeypatch):
    _run(tmp_path, monkeypatch, DataError("data/x.npy: not a depth map"))
    md = (tmp_path / "run" / "report.md").read_text()
    assert "the run stopped at `validate`" in md and "not a depth map" in md
