"""A model and a dataset defined outside the project run through `pipeline run all` by config alone
(examples/custom_model), pruned from a user's trained state_dict; bad factories fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

from examples.custom_model.model import build_model
from pipeline.cli import main
from tests.helpers import cli_fails_in_one_line

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "examples" / "custom_model" / "config.yaml")
TINY = ["--config", CONFIG, "--no-progress", "--set", "train.steps=3", "--set", "data.kwargs.train_size=16",
        "--set", "validate.samples=4"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setattr("pipeline.report.markdown.write_markdown_report", lambda run, report: run.root / "report.md")


fails = cli_fails_in_one_line


def test_example_runs_all_stages_pruned_from_a_trained_state_dict(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the example's factory paths resolve from the repository root
    trained = build_model(outputs={"semantic": 5, "z": 1, "surface": 3}, width=16)
    torch.save(trained.state_dict(), tmp_path / "trained.pt")
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", "all", *TINY, "--set", f"train.dense_init={tmp_path / 'trained.pt'}",
                                  "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    report = json.loads((run / "report.json").read_text())
    assert report["validation"]["passed"] is True
    # the config names its tasks semantic/z/surface (kinds seg/depth/normal): one ONNX output per task name
    proto = onnx.load(run / "export" / "model.onnx")
    assert [o.name for o in proto.graph.output] == ["semantic", "z", "surface"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["task_kinds"]) == {"semantic": "seg", "z": "depth", "surface": "normal"}
    ckpt = torch.load(run / "train" / "checkpoint.pt", weights_only=True)
    assert ckpt["model"]["factory"] == "examples.custom_model.model:build_model"
    assert ckpt["tasks"] == {"semantic": "seg", "z": "depth", "surface": "normal"}
    assert set(report["metrics"]["pruned"]) == {"semantic", "z", "surface"}
    assert "miou" in report["metrics"]["pruned"]["semantic"] and "delta1" in report["metrics"]["pruned"]["z"]
    assert set(report["metrics"]["constant_predictor"]["surface"]) >= {"mean", "within_11_25"}
    layers = json.loads((run / "train" / "sparsity.json").read_text())["layers"]
    assert {layer["name"]: layer["component"] for layer in layers}["bridge.0"] == "encoder"
    assert {layer["name"] for layer in layers if layer["component"] is None} == {
        f"decoders.{t}.1" for t in ("semantic", "z", "surface")
    }


def test_unimportable_model_factory(tmp_path):
    fails(["train", *TINY, "--set", "model.factory=no_such_pkg_xyz:build", "--run-dir", tmp_path / "r"],
          "cannot import module 'no_such_pkg_xyz'")
    assert not (tmp_path / "r" / "train").exists()


def test_rules_that_match_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    fails(["train", *TINY, "--set", 'sparsity.rules=[{match: "backbone.*", component: backbone}]',
           "--run-dir", tmp_path / "r"], "sparsity.rules[0] match 'backbone.*' matches no conv layer")


def test_state_dict_of_another_architecture(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    torch.save(build_model(outputs={"semantic": 5}, width=8).state_dict(), tmp_path / "other.pt")
    fails(["train", *TINY, "--set", f"train.dense_init={tmp_path / 'other.pt'}", "--run-dir", tmp_path / "r"],
          "does not fit this model", "missing keys", "shape mismatches")
