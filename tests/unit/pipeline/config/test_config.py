"""Strict config loading: every problem at once, overrides, presets, YAML 1.2 numbers."""

from __future__ import annotations

import pytest

from pipeline.config import apply_overrides, config_from_dict, list_presets, load_config, yaml_load
from pipeline.errors import ConfigError


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
                          "model": {"name": "nope"}})
    text = str(e.value)
    assert "unknown task 'edges'" in text and "unknown model 'nope'" in text
    assert "unknown sparsity method 'magic'" in text and "must be in (0, 1)" in text


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
