"""Task names that differ from their kinds, end to end: `tasks: {semantic: seg, z: depth, z_aux: depth}` on the
built-in scenes through train, harden, export and validate (two tasks of one kind included)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main

TASKS = {"semantic": "seg", "z": "depth", "z_aux": "depth"}
FAST = ["--config", "tiny", "--no-progress", "--set", "tasks={semantic: seg, z: depth, z_aux: depth}",
        "--set", "train.steps=4", "--set", "dense_reference=null", "--set", "validate.samples=4"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setattr("pipeline.report.markdown.write_markdown_report", lambda run, report: run.root / "report.md")


def test_renamed_tasks_run_all_on_scenes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the scene cache goes to ./.cache
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", "all", *FAST, "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    report = json.loads((run / "report.json").read_text())
    pruned, const = report["metrics"]["pruned"], report["metrics"]["constant_predictor"]
    assert list(pruned) == list(TASKS) and list(const) == list(TASKS)
    assert "miou" in pruned["semantic"] and "delta1" in pruned["z"] and "delta1" in pruned["z_aux"]
    # one head per name: the two depth heads are trained apart, so their predictions differ
    assert pruned["z"]["abs_err"] != pruned["z_aux"]["abs_err"]
    assert const["z"] == const["z_aux"]  # both read the one depth target of the scenes
    assert report["validation"]["passed"] is True
    assert set(json.loads((run / "validate" / "report.json").read_text())["heads"]) == set(TASKS)

    proto = onnx.load(run / "export" / "model.onnx")
    assert [o.name for o in proto.graph.output] == list(TASKS)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["tasks"]) == list(TASKS) and json.loads(meta["task_kinds"]) == TASKS
    for stage, name in (("train", "checkpoint.pt"), ("harden", "model.pt")):
        ckpt = torch.load(run / stage / name, weights_only=True)
        assert ckpt["tasks"] == TASKS
        assert ckpt["model"]["kwargs"]["kinds"] == TASKS
    components = json.loads((run / "train" / "sparsity.json").read_text())["components"]
    assert {"backbone", "semantic", "z", "z_aux"} <= set(components)  # `{task}` rules expand over names
