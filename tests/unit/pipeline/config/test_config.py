"""Strict config loading: every problem at once, overrides, presets, YAML 1.2 numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import (
    DATASET_NAMES,
    apply_overrides,
    check_registered_names,
    config_from_dict,
    list_presets,
    load_config,
    yaml_load,
)
from pipeline.config.loader import PRESET_DIR
from pipeline.errors import ConfigError
from pipeline.orchestrate import load_run_config


def test_presets_load():
    assert {"tiny", "demo", "bench"} <= set(list_presets())
    for name in list_presets():
        assert load_config(name).tasks == ["seg", "depth", "normal"]
    assert load_config("bench").train.steps == 400 != load_config("demo").train.steps  # own values win
    assert load_config("bench").model.name == "scene_aspp"


def test_all_mistakes_reported_at_once():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"trian": {}, "train": {"lr": "fast", "stepz": 3}, "sparsity": {"target": "high"}})
    text = str(e.value)
    assert len(e.value.problems) == 4
    for part in ("unknown key 'trian'", "'train.lr'", "unknown key 'train.stepz'", "'sparsity.target'"):
        assert part in text


def test_value_checks_name_the_fix():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"sparsity": {"target": 1.5, "method": "magic"}, "tasks": ["seg", "edges"],
                          "model": {"name": "nope"}}, models=["tiny_mtl"], methods=["adapmtl", "dense"])
    text = str(e.value)
    assert "unknown task 'edges'" in text and "unknown model 'nope' (available: tiny_mtl)" in text
    assert "unknown sparsity method 'magic' (available: adapmtl, dense)" in text and "must be in (0, 1)" in text


def test_registry_names_are_checked_only_when_passed_in():
    """The config is a leaf: it knows no registry, the caller passes the names (pipeline.orchestrate does)."""
    data = {"model": {"name": "nope"}, "sparsity": {"method": "magic"}}
    assert config_from_dict(data).model.name == "nope"
    cfg = config_from_dict(data)
    assert check_registered_names(cfg, models=["tiny_mtl"]) == ["unknown model 'nope' (available: tiny_mtl)"]
    assert check_registered_names(cfg, methods=["magic"]) == []
    with pytest.raises(ConfigError, match="unknown sparsity method 'magic'"):
        load_config("tiny", ["sparsity.method=magic"], methods=["adapmtl"])


def test_run_config_checks_the_real_registries():
    with pytest.raises(ConfigError) as e:
        load_run_config("tiny", ["model.name=nope", "sparsity.method=magic", "train.lr=-1"])
    assert len(e.value.problems) == 3
    assert "unknown model 'nope'" in str(e.value) and "tiny_mtl" in str(e.value)
    assert "unknown sparsity method 'magic'" in str(e.value) and "adapmtl" in str(e.value)


def test_config_package_is_a_leaf():
    """Loading and validating a config imports no registry, trainer or stage (fresh interpreter)."""
    code = (
        "import sys, pipeline.config as c; c.load_config('tiny'); "
        "bad = [m for m in sys.modules if m.startswith(('pipeline.models', 'pipeline.stages', 'trainers'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[4]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dataset_names_match_the_schema():
    assert DATASET_NAMES == ("scenes", "nyuv2_mtan", "nyuv2_png")
    with pytest.raises(ConfigError, match="'data.name' = 'imagenet' is not one of 'scenes'"):
        config_from_dict({"data": {"name": "imagenet"}})


def test_overrides_parse_yaml_values_without_evaluating():
    data = apply_overrides({}, ["train.lr=1e-3", "harden.pattern=2:4", "train.steps=10", "x.y=__import__('os')"])
    assert data["train"]["lr"] == 0.001 and data["harden"]["pattern"] == "2:4" and data["train"]["steps"] == 10
    assert data["x"]["y"] == "__import__('os')"  # a plain string, never code
    with pytest.raises(ConfigError):
        apply_overrides({}, ["no_equals_sign"])


def test_yaml_numbers():
    assert yaml_load("a: 2:4\nb: 5.0e-5\nc: 1e-3\nd: 7") == {"a": "2:4", "b": 5e-5, "c": 1e-3, "d": 7}


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny"):
        load_config("huge")


def test_a_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    """`--config tiny` in a directory that holds a run folder called `tiny` still means the preset."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    assert load_config("tiny").model.name == load_config(str(PRESET_DIR / "tiny.yaml")).model.name
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config("runs")
