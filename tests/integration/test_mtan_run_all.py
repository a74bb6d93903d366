"""`pipeline run all` end to end on real-data-shaped input: an MTAN-layout folder of per-sample `.npy` files.

The fixture is written inside the test at 48 x 64, a size no preset uses, so every stage (train with its dense
reference, the constant baseline, harden's evaluation, export, validate) must take its size from the config and
draw batches from a per-sample dataset through `pipeline.data.batching`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests.mtan_layout import write_mtan_split

H, W = 48, 64


@pytest.fixture
def mtan_root(tmp_path: Path) -> Path:
    root = tmp_path / "nyuv2_mtan"
    write_mtan_split(root, "train", 10, H, W, seed=0)
    write_mtan_split(root, "val", 5, H, W, seed=1)
    return root


def _finite_metrics(metrics: dict) -> bool:
    return bool(metrics) and all(math.isfinite(v) for task in metrics.values() for v in task.values())


def test_run_all_on_an_mtan_layout_folder(mtan_root: Path, tmp_path: Path, monkeypatch) -> None:
    # report.md's plots cost seconds and are covered by the tiny-run CLI tests.
    monkeypatch.setattr(
        "pipeline.report.markdown.write_markdown_report", lambda run, _report: run.root / "report.md"
    )
    run_dir = tmp_path / "run"
    args = [
        "run", "all", "--config", "tiny", "--run-dir", str(run_dir), "--no-progress", "--set", "train.steps=6",
        "--set", "data.name=nyuv2_mtan", "--set", f"data.root={mtan_root}",
        "--set", f"data.height={H}", "--set", f"data.width={W}", "--set", "data.num_classes=13",
        "--set", "validate.real_data=null",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for stage in ("train", "harden", "export", "validate"):
        assert f"PASSED  | {stage}" in result.output, result.output
    assert "SKIPPED | build" in result.output, result.output

    report = json.loads((run_dir / "report.json").read_text())
    metrics = report["metrics"]
    for kind in ("pruned", "dense", "constant_predictor"):
        assert set(metrics[kind]) == {"seg", "depth", "normal"}, kind
        assert _finite_metrics(metrics[kind]), (kind, metrics[kind])
    assert report["validation"]["passed"] is True and report["validation"]["metrics_agree"] is True
    validate_doc = json.loads((run_dir / "validate" / "report.json").read_text())
    assert validate_doc["samples"] == 5  # the whole (small) val split, drawn one sample at a time
    train_doc = json.loads((run_dir / "train" / "metrics.json").read_text())
    assert train_doc["constant_predictor"] == metrics["constant_predictor"]
    assert train_doc["metrics"] == metrics["trained"]
