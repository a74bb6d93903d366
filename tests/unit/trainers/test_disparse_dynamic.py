"""DiSparse dynamic: ERK densities, the random sparse start, magnitude prune and per-task gradient regrowth
(union over tasks in the backbone, own task in a head), and the fixed ERK counts after the ramp."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.data import build_dataset
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from tests.helpers import with_sparsity
from trainers.loop import Trainer
from trainers.objectives import MultiTaskLoss
from trainers.sparsity.disparse_dynamic import DiSparseDynamic, erk_densities
from trainers.training_run import init_conv_weights_
from trainers.weighting import StaticWeighting


def test_erk_meets_the_density_favours_small_layers_and_clamps_at_one():
    shapes = {"stem": (8, 3, 3, 3), "mid": (32, 32, 3, 3), "big": (64, 64, 3, 3), "head": (3, 64, 1, 1)}
    numel = {n: math.prod(s) for n, s in shapes.items()}
    for density in (0.03, 0.1, 0.5):
        d = erk_densities(shapes, density)
        kept = sum(d[n] * numel[n] for n in shapes)
        assert kept == pytest.approx(density * sum(numel.values()), rel=1e-9)
        assert all(0.0 <= v <= 1.0 for v in d.values())
        assert d["big"] < d["mid"]  # more weights per (in + out + kernel): sparser
    d = erk_densities(shapes, 0.5)
    assert d["stem"] == 1.0 and d["head"] == 1.0  # would exceed 1: dense, the rest rescaled


def _setup(cfg, target=0.8, steps=20):
    ds = build_dataset(cfg.data, "train", cfg.tasks)
    torch.manual_seed(0)
    model = create_model("tiny_mtl", task_channels(cfg.tasks, ds.num_classes))
    init_conv_weights_(model, "normal001", 0)
    method = DiSparseDynamic(with_sparsity(cfg, method="disparse_dynamic", target=target).sparsity, steps)
    method.attach(model)
    trainer = Trainer(model, method, StaticWeighting(list(cfg.tasks)), MultiTaskLoss(cfg.tasks), ds, cfg.train,
                      steps=steps)
    return model, method, trainer


def _kept(method):
    return {n: int(layer.mask.sum()) for n, layer in method.layers.items()}


def test_random_start_at_the_erk_counts(tiny_cfg):
    _, method, trainer = _setup(tiny_cfg)
    method.prepare(trainer)
    assert _kept(method) == method.kept
    assert abs(method.measure()["overall"] - 0.8) < 0.005
    first = {n: layer.mask.clone() for n, layer in method.layers.items()}
    _, other, trainer2 = _setup(tiny_cfg)
    trainer2.cfg = trainer2.cfg.__class__(**{**trainer2.cfg.__dict__, "seed": 1})
    other.prepare(trainer2)
    assert any(not torch.equal(first[n], layer.mask) for n, layer in other.layers.items())  # seeded, not fixed


def test_prune_keeps_the_largest_and_growth_follows_the_tasks(tiny_cfg):
    model, method, trainer = _setup(tiny_cfg)
    method.prepare(trainer)
    before = {n: layer.weight.detach().abs().clone() for n, layer in method.layers.items()}
    method._prune(0.5)
    for n, layer in method.layers.items():
        assert int(layer.mask.sum()) == round(method.kept[n] * 0.5)
        kept_vals, dropped = before[n][layer.mask], before[n][~layer.mask & (before[n] > 0)]
        if dropped.numel() and kept_vals.numel():
            assert kept_vals.min() >= dropped.max()  # magnitude: the smallest kept ones went
    pruned = {n: layer.mask.clone() for n, layer in method.layers.items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    method._grow(0)
    tasks = list(tiny_cfg.tasks)
    grew_beyond = False
    for n, layer in method.layers.items():
        assert bool((layer.mask | ~pruned[n]).all()) and bool((layer.mask >= pruned[n]).all())  # grows only
        assert bool((layer.weight[layer.mask & ~pruned[n]] == 0).all())  # regrown weights start at zero
        kept, want = int(layer.mask.sum()), method.kept[n]
        if layer.component == "backbone":  # the union over tasks: at least the ERK count, at most T times the gap
            assert want <= kept <= want + (len(tasks) - 1) * (want - int(pruned[n].sum()))
            grew_beyond |= kept > want
        else:  # a head regrows by its own task only: exactly back to its count
            assert kept == want
    assert grew_beyond  # tasks disagree somewhere in the backbone
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())  # BN statistics untouched
    assert all(p.grad is None for p in model.parameters())
    method.finalize()
    assert _kept(method) == method.kept  # (regrown weights are still 0 here, so measure() would count them)
    total = sum(layer.weight.numel() for layer in method.layers.values())
    assert abs(1 - sum(method.kept.values()) / total - 0.8) < 0.005


def test_the_prune_rate_decays_to_zero_at_the_end_of_the_ramp(tiny_cfg):
    _, method, _ = _setup(tiny_cfg, steps=100)
    end = int(method.cfg.ramp_end * 100)
    assert method.rate_at(0) == pytest.approx(0.5)
    assert method.rate_at(end // 2) == pytest.approx(0.25)
    assert method.rate_at(end) == 0.0 and method.rate_at(end - 1) < 0.01


def test_a_full_run_moves_the_mask_and_ends_at_the_target(tiny_cfg):
    _, method, trainer = _setup(tiny_cfg, target=0.9, steps=30)
    trainer.run(progress=False)
    assert _kept(method) == method.kept and abs(method.measure()["overall"] - 0.9) < 0.005
