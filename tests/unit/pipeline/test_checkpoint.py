"""Typed checkpoints: what `write_checkpoint` saves is what `read_checkpoint` returns, in the on-disk layout
the dict form had; wrong kinds and missing fields are one-line PipelineErrors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline import __version__
from pipeline.checkpoint import (
    HardenedCheckpoint,
    ResumePoint,
    TrainCheckpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    write_checkpoint,
)
from pipeline.errors import PipelineError


def _train_ckpt() -> TrainCheckpoint:
    return TrainCheckpoint(
        model={"name": "tiny_mtl", "kwargs": {}}, state_dict={"w": torch.arange(6.0).view(2, 3)},
        method={"name": "adapmtl", "state": {"s": torch.ones(2)}}, tasks=["seg", "depth"], num_classes=13,
        class_names=[str(i) for i in range(13)], data={"name": "scenes"}, config={"tasks": ["seg", "depth"]},
        sparsity={"target": 0.9, "overall": 0.9}, versions={"torch": "x"},
    )


def test_train_checkpoint_round_trips_and_records_the_package_version(tmp_path):
    ckpt = _train_ckpt()
    write_checkpoint(tmp_path / "c.pt", ckpt)
    back = read_checkpoint(tmp_path / "c.pt", TrainCheckpoint)
    assert back.version == __version__
    assert torch.equal(back.state_dict["w"], ckpt.state_dict["w"])
    assert torch.equal(back.method["state"]["s"], ckpt.method["state"]["s"])
    same = [f.name for f in dataclasses.fields(ckpt) if f.name not in ("version", "state_dict", "method")]
    assert all(getattr(back, n) == getattr(ckpt, n) for n in same)


def test_on_disk_layout_is_the_dict_form(tmp_path):
    write_checkpoint(tmp_path / "c.pt", ResumePoint(fingerprint="abc", trainer={"step": 3}))
    raw = load_checkpoint(tmp_path / "c.pt", "resume")
    assert list(raw) == ["format", "kind", "version", "fingerprint", "trainer"]
    assert raw["fingerprint"] == "abc" and raw["trainer"] == {"step": 3}


def test_wrong_kind_and_missing_fields_are_pipeline_errors(tmp_path):
    write_checkpoint(tmp_path / "c.pt", _train_ckpt())
    with pytest.raises(PipelineError, match="'train' checkpoint, expected 'hardened'"):
        read_checkpoint(tmp_path / "c.pt", HardenedCheckpoint)
    save_checkpoint(tmp_path / "old.pt", "resume", {"trainer": {}})
    with pytest.raises(PipelineError, match="lacks 'fingerprint'"):
        read_checkpoint(tmp_path / "old.pt", ResumePoint)
