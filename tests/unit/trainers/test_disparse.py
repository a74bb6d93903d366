"""DiSparse-static: per-task saliency masks (union over tasks in the backbone, own task in a head), the target
met by bisection, and saliency read through the trainer without the sparsity package importing the loop."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from pipeline.data import build_dataset
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from tests.helpers import with_sparsity
from trainers.loop import Trainer
from trainers.objectives import MultiTaskLoss
from trainers.sparsity.disparse import DiSparseStatic
from trainers.weighting import StaticWeighting

SPARSITY_PKG = Path(__file__).resolve().parents[3] / "trainers" / "sparsity"


def _method(cfg, target):
    torch.manual_seed(0)
    model = create_model("tiny_mtl", task_channels(cfg.tasks, 13))
    method = DiSparseStatic(with_sparsity(cfg, target=target).sparsity, 10)
    method.attach(model)
    return model, method


def test_backbone_keeps_the_union_of_the_tasks_and_heads_follow_their_own_task(tiny_cfg):
    _, method = _method(tiny_cfg, 0.7)
    tasks = list(tiny_cfg.tasks)
    gen = torch.Generator().manual_seed(1)
    scores = {t: {n: torch.rand(layer.weight.shape, generator=gen) for n, layer in method.layers.items()}
              for t in tasks}
    method._set_masks(scores, tasks)
    assert abs(method.measure()["overall"] - 0.7) < 0.01
    comps = method.measure()["components"]
    assert comps["backbone"] < min(comps[t] for t in tasks)  # a weight any task keeps stays
    # a head weight no other task scores is decided by its own task alone: zeroing the other tasks' scores
    # of a head changes nothing there
    head = next(n for n, layer in method.layers.items() if layer.component == tasks[0])
    kept = method.layers[head].mask.clone()
    for t in tasks[1:]:
        scores[t][head].zero_()
    method._set_masks(scores, tasks)
    assert torch.equal(method.layers[head].mask, kept)
    for layer in method.layers.values():
        assert bool((layer.weight[~layer.mask] == 0).all())


def test_prepare_scores_batches_from_the_trainer_and_fixes_the_masks(tiny_cfg):
    ds = build_dataset(tiny_cfg.data, "train", tiny_cfg.tasks)
    model, method = _method(tiny_cfg, 0.8)
    trainer = Trainer(model, method, StaticWeighting(list(tiny_cfg.tasks)), MultiTaskLoss(tiny_cfg.tasks), ds,
                      tiny_cfg.train, steps=2)
    method.saliency_batches = 2
    method.prepare(trainer)
    assert abs(method.measure()["overall"] - 0.8) < 0.01
    assert all(p.grad is None for p in model.parameters())  # scoring leaves no gradients behind


def test_sparsity_methods_do_not_import_the_training_loop():
    for path in sorted(SPARSITY_PKG.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "trainers.loop" or n.startswith("trainers.training_run") for n in names), path
