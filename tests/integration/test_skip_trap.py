"""A skipped stage never counts as up to date (issue #15's skip trap): a run carried to a machine where the
reason no longer holds (TensorRT installed) must build on a plain `run all`, without --require-tensorrt."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main


def test_run_all_reruns_a_skipped_build_but_not_an_ok_stage(tiny_run, tmp_path, monkeypatch):
    run = tiny_run.copy_until(tmp_path / "run", "build")
    before = json.loads((run / "manifest.json").read_text())["stages"]
    assert before["build"]["status"] == "skipped"
    calls = []
    import pipeline.stages.build as build_stage

    real = build_stage.run
    monkeypatch.setattr(build_stage, "run", lambda ctx: calls.append(ctx) or real(ctx))
    monkeypatch.setattr("pipeline.report.markdown.write_markdown_report", lambda run, report: run.root / "report.md")
    monkeypatch.chdir(tiny_run.work)
    r = CliRunner().invoke(main, ["run", "all", "--config", "tiny", "--run-dir", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert len(calls) == 1, "the skipped build stage was treated as up to date"
    after = json.loads((run / "manifest.json").read_text())["stages"]
    for name in ("train", "harden", "export", "validate"):
        assert after[name]["started_at"] == before[name]["started_at"], f"{name} was re-run although it was ok"


@pytest.mark.parametrize("flag", [[], ["--require-tensorrt"]])
def test_build_command_probes_again(tiny_run, tmp_path, monkeypatch, flag):
    run = tiny_run.copy_until(tmp_path / "run", "build")
    monkeypatch.chdir(tiny_run.work)
    r = CliRunner().invoke(main, ["build", "--run-dir", str(run), *flag])
    assert r.exit_code == (1 if flag else 0), r.output
    assert "Traceback" not in r.output
