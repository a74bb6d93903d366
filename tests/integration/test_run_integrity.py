"""The run directory has one owner, its manifest: user files are never touched, stages never build on a stale
upstream stage, and every file the pipeline trusts (config.yaml included) is checked against its sha256.
Catalogue: docs/bad_inputs.md, section "Run directory ownership and freshness"."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.orchestrate import resolve_run
from tests.integration.test_bad_inputs import FAST, fails, snapshot


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setattr("pipeline.report.markdown.write_markdown_report", lambda run, report: run.root / "report.md")


@pytest.fixture
def run_copy(tiny_run, tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tiny_run.work)  # the scene cache
    dst = tmp_path / "run"
    shutil.copytree(tiny_run.run, dst)
    return dst


def test_a_folder_with_user_files_is_never_taken_over(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "build").mkdir(parents=True)
    (proj / "export").mkdir()
    (proj / "build" / "important.txt").write_text("x")
    monkeypatch.chdir(proj)
    before = snapshot(proj)
    fails(["run", "all", "--config", "tiny", "--set", "train.steps=2", "--run-dir", "."], "is not empty and holds no manifest.json", "choose an empty or new")
    fails(["train", *FAST, "--run-dir", "."], "is not empty and holds no manifest.json")
    assert snapshot(proj) == before and sorted(p.name for p in proj.iterdir()) == ["build", "export"]


def test_a_stage_never_replaces_a_folder_the_manifest_does_not_record(tiny_run, tmp_path, monkeypatch):
    run = tiny_run.copy_until(tmp_path / "run", "validate")  # build not recorded
    (run / "build").mkdir()
    (run / "build" / "mine.txt").write_text("user file")
    monkeypatch.chdir(tiny_run.work)
    fails(["build", "--run-dir", run], "refusing to replace", "records no stage 'build'")
    assert (run / "build" / "mine.txt").read_text() == "user file"


def test_interrupted_retrain_leaves_harden_refusing(run_copy):
    """`train --force --steps 600` interrupted: config.yaml now says 600 steps, train/ is the old run."""
    resolve_run(run_copy, None, ["train.steps=600"], force=True)  # what the interrupted command had written
    before = snapshot(run_copy)
    fails(["harden", "--run-dir", run_copy], "needs stage 'train', which is stale (its config sections changed)",
          "run `pipeline train --run-dir ")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("stage, override", [
    ("export", "tasks=[seg]"),
    ("harden", "data.num_classes=12"),
    ("validate", "data.height=64"),
])
def test_force_with_a_changed_upstream_section_refuses(run_copy, stage, override):
    fails([stage, "--run-dir", run_copy, "--force", "--set", override], "needs stage 'train', which is stale",
          "run `pipeline train --run-dir ")
    show = CliRunner().invoke(main, ["show", "--run-dir", str(run_copy)])
    assert "upstream stage 'train' is stale" in show.output


def test_an_emptied_config_yaml_is_refused_not_read_as_defaults(run_copy):
    for text in ("", "tasks: [seg]\n"):
        (run_copy / "config.yaml").write_text(text)
        fails(["harden", "--run-dir", run_copy], "config.yaml was modified after the pipeline wrote it")
        fails(["show", "--run-dir", run_copy], "config.yaml was modified")
    (run_copy / "config.yaml").write_bytes(b"\xff\xfe")
    fails(["report", "--run-dir", run_copy], "config.yaml was modified")


def test_a_symlinked_stage_folder_is_refused_up_front(run_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run_copy / "harden", elsewhere)
    os.symlink(elsewhere, run_copy / "harden")
    before = snapshot(elsewhere)
    fails(["harden", "--run-dir", run_copy, "--force"], "harden is a symbolic link", "remove the link")
    assert not (run_copy / "harden.old").exists() and not (run_copy / "harden.tmp").exists()
    assert snapshot(elsewhere) == before


def test_a_checkpoint_symlinked_from_outside_may_be_read(run_copy, tmp_path):
    ckpt = run_copy / "train" / "checkpoint.pt"
    shutil.move(ckpt, tmp_path / "ckpt.pt")
    os.symlink(tmp_path / "ckpt.pt", ckpt)
    r = CliRunner().invoke(main, ["harden", "--run-dir", str(run_copy), "--force", "--no-progress"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("manifest", [[], {"schema": "mtl-compress.manifest/1", "stages": []},
                                      "outputs-without-sha"])
def test_a_manifest_of_the_wrong_shape(run_copy, manifest):
    if manifest == "outputs-without-sha":
        manifest = json.loads((run_copy / "manifest.json").read_text())
        del manifest["stages"]["train"]["outputs"][0]["sha256"]
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    fails(["show", "--run-dir", run_copy], "is not a run manifest", "delete it and run `pipeline run all")
    fails(["harden", "--run-dir", run_copy], "is not a run manifest")


def test_report_and_show_refuse_a_folder_that_is_not_a_run(tmp_path):
    fails(["report", "--run-dir", tmp_path], "is it a run directory?")
    fails(["show", "--run-dir", tmp_path], "is it a run directory?")
    assert list(tmp_path.iterdir()) == []


def test_from_after_until_is_refused(run_copy):
    fails(["run", "all", "--run-dir", run_copy, "--from", "validate", "--until", "train"],
          "--from validate comes after --until train")
