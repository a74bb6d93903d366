"""Resuming mid-training continues the same trajectory bit for bit (CPU, deterministic ops)."""

from __future__ import annotations

import pytest
import torch

from pipeline.data import build_dataset
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from tests.helpers import with_sparsity, with_train
from trainers.loop import Trainer
from trainers.objectives import MultiTaskLoss
from trainers.sparsity.methods import build_method
from trainers.training_run import init_conv_weights_
from trainers.weighting import build_weighting


class _Stop(Exception):
    pass


def _trainer(cfg, steps):
    ds = build_dataset(cfg.data, "train", cfg.tasks)
    torch.manual_seed(0)
    model = create_model("tiny_mtl", task_channels(cfg.tasks, ds.num_classes), dropout=0.2)  # uses the RNG
    init_conv_weights_(model, "normal001", 0)
    method, _ = build_method(cfg.sparsity, steps)
    method.attach(model)
    weighting = build_weighting("adaptive", list(cfg.tasks), cfg.train.weighting)
    return Trainer(model, method, weighting, MultiTaskLoss(cfg.tasks), ds, cfg.train, steps=steps)


@pytest.mark.parametrize("method", ["adapmtl", "gmp_global", "adapmtl_faithful", "disparse_dynamic"])
def test_resume_continues_identically(tiny_cfg, method):
    cfg = with_train(with_sparsity(tiny_cfg, method=method, target=0.8), checkpoint_every=8)
    steps = 16
    ref = _trainer(cfg, steps)
    ref.run(progress=False)

    saved = {}

    def checkpoint(t):
        saved["state"] = t.state_dict()
        raise _Stop  # the process "dies" right after writing its checkpoint

    first = _trainer(cfg, steps)
    with pytest.raises(_Stop):
        first.run(checkpoint=checkpoint, progress=False)
    assert saved["state"]["step"] == 8

    torch.manual_seed(123)  # a fresh process would have a different RNG state; the checkpoint restores it
    resumed = _trainer(cfg, steps)
    resumed.load_state_dict(saved["state"])
    resumed.run(progress=False)

    for (name, a), (_, b) in zip(ref.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert ref.method.measure()["overall"] == resumed.method.measure()["overall"]
    assert ref.weighting.weights() == resumed.weighting.weights()
    assert ref.timeseries == resumed.timeseries
