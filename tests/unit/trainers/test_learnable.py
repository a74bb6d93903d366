"""The built-in scenes are a learning problem: a small dense model beats a constant predictor on every task,
and more training keeps improving it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.data import build_dataset
from pipeline.metrics.baselines import constant_predictor_metrics
from trainers.training_run import train_run


@pytest.mark.slow
def test_dense_beats_constant_and_improves_with_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["sparsity.method=dense", "dense_reference=null", "data.num_train=256", "data.num_val=64",
              "train.batch_size=16", "train.log_every=50", "train.checkpoint_every=0"]
    short = train_run(load_config("tiny", common + ["train.steps=30"]), Path("short"), progress=False)["metrics"]
    long = train_run(load_config("tiny", common + ["train.steps=150"]), Path("long"), progress=False)["metrics"]
    cfg = load_config("tiny", common)
    const = constant_predictor_metrics(
        build_dataset(cfg.data, "train", cfg.tasks), build_dataset(cfg.data, "val", cfg.tasks), cfg.tasks
    )
    assert long["seg"]["miou"] > 1.5 * const["seg"]["miou"]
    assert long["depth"]["abs_err"] < 0.8 * const["depth"]["abs_err"]
    assert long["normal"]["mean"] < 0.8 * const["normal"]["mean"]
    assert long["seg"]["miou"] > short["seg"]["miou"]
    assert long["depth"]["abs_err"] < short["depth"]["abs_err"]
    assert long["normal"]["mean"] < short["normal"]["mean"]
