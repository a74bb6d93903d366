"""Accepted but not honoured (issue #13): a split file that would empty a component is refused, and a run whose
method reaches a sparsity far from the target says so in the train stage's verdict."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import ConfigError
from pipeline.stages.train import target_missed
from trainers.sparsity.magnitude import load_component_split


def test_target_missed_is_reported_only_beyond_the_slack():
    assert target_missed("adapmtl", 0.9, 0.9) is None
    assert target_missed("dense", 0.9, 0.0) is None
    note = target_missed("adapmtl_faithful", 0.999, 0.019)
    assert note is not None and "0.019" in note and "0.999" in note and "\n" not in note


@pytest.mark.parametrize("split", [{"backbone": 1.0, "seg": 1.0}, {"backbone": 0.5, "seg": -0.1}])
def test_a_split_that_empties_or_breaks_a_component_is_refused(tmp_path, split):
    path = tmp_path / "sparsity.json"
    path.write_text(json.dumps({"components": split}))
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\)"):
        load_component_split(str(path))


def test_a_valid_split_loads(tmp_path):
    path = tmp_path / "sparsity.json"
    path.write_text(json.dumps({"components": {"backbone": 0.7, "seg": 0.95}}))
    assert load_component_split(str(path)) == {"backbone": 0.7, "seg": 0.95}


def test_target_missed_names_the_unit_of_the_structure():
    assert "of the prunable weights" in target_missed("str", 0.9, 0.5)
    assert "of the MACs removed" in target_missed("adapmtl", 0.5, 0.2, "channel")
