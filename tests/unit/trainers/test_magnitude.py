"""Gradual magnitude pruning (global / uniform / split cuts) and fixed masks, without a training loop."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from tests.helpers import with_sparsity
from trainers.sparsity.magnitude import FixedMasks, MagnitudePruning, _cut, load_component_split


def _attached(cfg, method):
    torch.manual_seed(0)
    model = create_model("tiny_mtl", task_channels(cfg.tasks, 13))
    method.attach(model)
    return method


def test_cut_prunes_exactly_the_requested_fraction():
    values = torch.arange(1.0, 11.0)
    assert int((values > _cut(values, 0.3)).sum()) == 7
    assert int((values > _cut(values, 0.0)).sum()) == 10  # nothing pruned at 0


def test_global_cut_prunes_the_smallest_magnitudes_over_all_layers(tiny_cfg):
    method = _attached(tiny_cfg, MagnitudePruning(with_sparsity(tiny_cfg, target=0.8).sparsity, 10, "global"))
    before = {n: layer.weight.detach().abs().clone() for n, layer in method.layers.items()}
    method._update_masks(0.8)
    kept = torch.cat([before[n][layer.mask] for n, layer in method.layers.items()])
    pruned = torch.cat([before[n][~layer.mask] for n, layer in method.layers.items()])
    assert abs(method.measure()["overall"] - 0.8) < 1e-3
    assert float(kept.min()) > method.cuts["global"] >= float(pruned.max())
    assert all(bool((layer.weight[~layer.mask] == 0).all()) for layer in method.layers.values())
    assert set(method.thresholds()) == {"global"}


def test_uniform_cut_gives_every_layer_the_same_sparsity(tiny_cfg):
    method = _attached(tiny_cfg, MagnitudePruning(with_sparsity(tiny_cfg, target=0.6).sparsity, 10, "uniform"))
    method._update_masks(0.6)
    assert all(abs(v - 0.6) < 0.02 for v in method.measure()["layers"].values())
    assert method.thresholds() == {}  # one cut per layer: not reported as thresholds


def test_split_scope_meets_the_target_and_keeps_the_given_order(tiny_cfg, tmp_path):
    split = tmp_path / "sparsity.json"
    split.write_text(json.dumps({"components": {"backbone": 0.5, "seg": 0.9, "depth": 0.8, "normal": 0.95}}))
    cfg = with_sparsity(tiny_cfg, target=0.8, split_from=str(tmp_path))
    method = _attached(cfg, MagnitudePruning(cfg.sparsity, 10, "split"))
    method._update_masks(0.8)
    comps = method.measure()["components"]
    assert abs(method.measure()["overall"] - 0.8) < 0.01
    assert comps["backbone"] < comps["depth"] < comps["seg"] < comps["normal"]


def test_split_needs_a_readable_source(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="gmp_split"):
        _attached(tiny_cfg, MagnitudePruning(with_sparsity(tiny_cfg, split_from=None).sparsity, 10, "split"))
    with pytest.raises(ConfigError, match="components"):
        load_component_split(str(tmp_path / "missing.json"))


def test_fixed_masks_keep_zeros_through_an_update(tiny_cfg):
    torch.manual_seed(0)
    model = create_model("tiny_mtl", task_channels(tiny_cfg.tasks, 13))
    probe = MagnitudePruning(tiny_cfg.sparsity, 10, "global")
    probe.attach(model)
    names = list(probe.layers)
    masks = {n: torch.rand_like(probe.layers[n].weight) > 0.5 for n in names}
    model = create_model("tiny_mtl", task_channels(tiny_cfg.tasks, 13))
    method = FixedMasks(tiny_cfg.sparsity, 10, masks)
    method.attach(model)
    with torch.no_grad():
        for layer in method.layers.values():
            layer.weight.add_(1.0)  # an optimizer step that would revive every pruned weight
    method.after_optimizer_step(0)
    for n, layer in method.layers.items():
        assert bool((layer.weight[~masks[n]] == 0).all()) and bool((layer.weight[masks[n]] != 0).all())
    with pytest.raises(ValueError, match="no mask"):
        FixedMasks(tiny_cfg.sparsity, 10, {}).attach(create_model("tiny_mtl", task_channels(tiny_cfg.tasks, 13)))
