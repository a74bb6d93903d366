"""Component assignment: ordered rules, first match wins, `{task}` expansion, dense layers, rule errors."""

from __future__ import annotations

import pytest
from torch import nn

from pipeline.errors import ConfigError
from trainers.sparsity.components import assign_components, components_of


class TwoHeadNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
        self.heads = nn.ModuleDict(
            {t: nn.Sequential(nn.Conv2d(8, 8, 1), nn.Conv2d(8, 2, 1)) for t in ("seg", "depth")}
        )


RULES = [
    {"match": "heads.*.1", "component": None},
    {"match": "backbone.*", "component": "backbone"},
    {"match": "heads.{task}.*", "component": "{task}"},
]


def test_first_matching_rule_wins_and_task_rules_expand_per_head():
    by = {a.name: a for a in assign_components(TwoHeadNet(), RULES)}
    assert by["backbone.0"].component == "backbone" and by["backbone.1"].component == "backbone"
    assert by["heads.seg.0"].component == "seg" and by["heads.depth.0"].component == "depth"
    assert by["heads.seg.1"].component is None  # the dense rule comes first
    assert by["heads.seg.0"].rule == "heads.{task}.* -> {task}"
    assert by["heads.seg.1"].rule == "heads.*.1 -> dense"
    assert by["backbone.0"].shape == (8, 3, 3, 3) and by["backbone.0"].numel == 8 * 3 * 3 * 3


def test_unmatched_layers_stay_dense_and_components_keep_first_appearance_order():
    assignments = assign_components(TwoHeadNet(), [{"match": "heads.{task}.0", "component": "{task}"}])
    assert [a.component for a in assignments if a.name.startswith("backbone")] == [None, None]
    assert all(a.rule == "no rule matched (dense)" for a in assignments if a.component is None)
    assert components_of(assignments) == ["seg", "depth"]


def test_rules_that_prune_nothing_or_are_malformed_are_config_errors():
    with pytest.raises(ConfigError, match=r"sparsity.rules\[0\] match 'nothing.\*' matches no conv layer"):
        assign_components(TwoHeadNet(), [{"match": "nothing.*", "component": "backbone"}])
    with pytest.raises(ConfigError, match="no conv layer matched a prunable sparsity rule"):
        assign_components(TwoHeadNet(), [{"match": "*", "component": None}])
    with pytest.raises(ConfigError, match=r"sparsity.rules\[0\]"):
        assign_components(TwoHeadNet(), [{"match": "backbone.*", "component": "backbone", "extra": 1}])
    with pytest.raises(ConfigError, match=r"sparsity.rules\[1\]"):
        assign_components(TwoHeadNet(), [{"match": "backbone.*", "component": "backbone"}, "heads.*"])
