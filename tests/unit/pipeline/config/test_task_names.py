"""Task names and kinds: the two config forms, and every dispatch that reads the kind of a named task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy.compare import atol_by_head
from deploy.task_gate import task_gate
from pipeline.config import as_task_kinds, config_from_dict, config_to_dict, load_config, task_record
from pipeline.data import build_dataset
from pipeline.data.factory import check_sample
from pipeline.errors import DataError
from pipeline.metrics import delta_t, metric_table
from pipeline.metrics.baselines import constant_predictions
from trainers.objectives import MultiTaskLoss

KINDS = {"semantic": "seg", "z": "depth", "z_aux": "depth"}


def test_list_and_mapping_forms():
    plain = load_config("tiny")
    assert plain.task_names == ["seg", "depth", "normal"] and plain.task_kinds == {t: t for t in plain.tasks}
    named = load_config("tiny", ["tasks={semantic: seg, z: depth}"])
    assert named.task_names == ["semantic", "z"] and named.task_kinds == {"semantic": "seg", "z": "depth"}
    assert config_from_dict(config_to_dict(named)) == named  # the run's config.yaml round-trips
    assert config_to_dict(plain)["tasks"] == ["seg", "depth", "normal"]  # list configs keep their form (and hashes)
    assert task_record(plain.task_kinds) == ["seg", "depth", "normal"] and task_record(KINDS) == KINDS
    # tolerance keys: names or kinds; an unknown name is a typo
    assert load_config("tiny", ["tasks={z: depth}", "validate.atol={default: 1, z: 2, seg: 3}"])
    with pytest.raises(Exception, match="'validate.atol' names \\['zz'\\]"):
        load_config("tiny", ["tasks={z: depth}", "validate.atol={default: 1, zz: 2}"])


def test_built_in_data_is_keyed_by_name_with_shared_targets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny", ["tasks={semantic: seg, z: depth, z_aux: depth}", "data.num_train=8", "data.num_val=8"])
    ds = build_dataset(cfg.data, "val", cfg.task_kinds)
    sample, batch = ds[0], ds.get_batch(torch.arange(3))
    assert list(sample) == ["image", *KINDS] and list(batch) == ["image", *KINDS]
    assert sample["semantic"].dtype == torch.int64 and torch.equal(sample["z"], sample["z_aux"])
    assert batch["z"].shape == (3, 1, cfg.data.height, cfg.data.width)
    assert ds.num_classes == cfg.data.num_classes
    consts = constant_predictions(ds, cfg.task_kinds)
    assert consts["semantic"].dtype == torch.int64 and float(consts["z"]) == float(consts["z_aux"]) > 0


def test_factory_samples_are_checked_by_kind():
    good = {"image": torch.zeros(3, 4, 5), "semantic": torch.zeros(4, 5, dtype=torch.int64), "z": torch.ones(1, 4, 5)}
    check_sample(good, {"semantic": "seg", "z": "depth"}, 4, 5, "here")
    with pytest.raises(DataError, match=r"sample 'z' is torch.float32 \(4, 5\), expected torch.float32 \(1, 4, 5\) "
                                        r"\(kind depth\)"):
        check_sample({**good, "z": torch.ones(4, 5)}, {"semantic": "seg", "z": "depth"}, 4, 5, "here")


def test_losses_and_metric_directions_by_kind():
    out = {"semantic": torch.randn(2, 3, 4, 4), "z": torch.rand(2, 1, 4, 4) + 1, "z_aux": torch.rand(2, 1, 4, 4) + 1}
    batch = {"semantic": torch.randint(0, 3, (2, 4, 4)), "z": torch.ones(2, 1, 4, 4), "z_aux": torch.ones(2, 1, 4, 4)}
    losses = MultiTaskLoss(KINDS)(out, batch)
    assert list(losses) == list(KINDS) and losses["z"] != losses["z_aux"]
    metrics = {"semantic": {"miou": 50.0, "pix_acc": 80.0}, "z": {"abs_err": 0.5, "rel_err": 0.2, "delta1": 60.0,
               "delta2": 80.0, "delta3": 90.0}}
    dense = {"semantic": {"miou": 40.0, "pix_acc": 80.0}, "z": {**metrics["z"], "abs_err": 0.4}}
    dt = delta_t(metrics, dense)
    assert dt["per_task"] == pytest.approx({"semantic": 25.0, "z": -25.0})  # abs_err: lower is better
    assert "z.abs_err↓" in metric_table({"m": metrics}, dense)


def test_gate_and_tolerances_by_kind():
    rng = np.random.default_rng(0)
    ref = {"semantic": rng.normal(size=(2, 3, 4, 4)), "z": rng.uniform(1, 2, (2, 1, 4, 4))}
    ref["z_aux"] = ref["z"] * 1.5
    targets = {"semantic": rng.integers(0, 3, (2, 4, 4)), "z": np.ones((2, 1, 4, 4)), "z_aux": np.ones((2, 1, 4, 4))}
    worse = {**ref, "z_aux": ref["z_aux"] + 1.0}
    gate = task_gate(ref, worse, targets, KINDS, 3)
    assert [(c.task, c.name) for c in gate.checks] == [
        ("semantic", "argmax_agreement_pct"), ("semantic", "miou_drop"), ("z", "abs_err_increase_m"),
        ("z_aux", "abs_err_increase_m")]
    assert [c.task for c in gate.checks if not c.passed] == ["z_aux"]
    assert atol_by_head({"default": 1.0, "depth": 2.0, "z_aux": 3.0}, KINDS) == {
        "semantic": 1.0, "z": 2.0, "z_aux": 3.0, "default": 1.0}
    assert as_task_kinds(["seg"]) == {"seg": "seg"}
