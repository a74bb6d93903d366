"""The training entry point: build data, model, method and weighting from a RunConfig, train, evaluate.

`train_run(cfg, out_dir)` writes `checkpoint.pt`, `sparsity.json`, `metrics.json`, `timeseries.json` into
`out_dir` and keeps a `resume.pt` there while it runs, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import __version__
from pipeline.artifacts import atomic_write_json, sha256_json
from pipeline.checkpoint import (
    CHECKPOINT_FORMAT,
    ResumePoint,
    TrainCheckpoint,
    load_checkpoint,
    load_model_state,
    read_checkpoint,
    write_checkpoint,
)
from pipeline.config import RunConfig, config_to_dict, task_record
from pipeline.data import build_dataset, dataset_fingerprint
from pipeline.data.batching import iter_batches
from pipeline.errors import PipelineError
from pipeline.metrics.evaluate import evaluate
from trainers import distributed as dist
from trainers.assembly import assemble_trainer, build_model, init_conv_weights_
from trainers.loop import Trainer
from trainers.sparsity.report import sparsity_report

log = logging.getLogger(__name__)


TRAINING_SECTIONS = ("tasks", "data", "model", "train", "sparsity")


def _fingerprint(config: dict[str, Any], version: str | None) -> str:
    return sha256_json({"version": version, **{k: config.get(k) for k in TRAINING_SECTIONS}})


def training_fingerprint(cfg: RunConfig) -> str:
    """What decides a training trajectory; a resume checkpoint is only used when this matches. The package
    version is part of it: a release may change what a method name means (0.2: `adapmtl` became hierarchical)."""
    return _fingerprint(config_to_dict(cfg), __version__)


def checkpoint_fingerprint(ckpt: TrainCheckpoint) -> str:
    """`training_fingerprint` of the run that wrote a train checkpoint (its config and package version)."""
    return _fingerprint(ckpt.config, ckpt.version)


def versions() -> dict[str, str]:
    return {"torch": str(torch.__version__), "python": platform.python_version()}


def _initial_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The untrained model: seeded init, or the weights of `train.dense_init`, on the training device."""
    model = build_model(cfg, num_classes)
    init_conv_weights_(model, cfg.train.init, cfg.train.seed)
    if cfg.train.dense_init:
        load_model_state(model, dense_init_state(Path(cfg.train.dense_init)), cfg.train.dense_init)
    return model.to(cfg.train.device)


def dense_init_state(path: Path) -> dict[str, Any]:
    """The weights `train.dense_init` names: a project train checkpoint, or a plain state_dict file (a dict of
    name -> tensor, optionally under "state_dict"), both read with `torch.load(weights_only=True)`."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing, damaged or pickled files: load_checkpoint says which, in one line
        raw = load_checkpoint(path)
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        return read_checkpoint(path, TrainCheckpoint).state_dict
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise PipelineError(
            f"train.dense_init {path} is neither an mtl-compress train checkpoint nor a state_dict "
            "(a dict of parameter name -> tensor, as torch.save(model.state_dict(), path) writes)"
        )
    return state


def _resume(trainer: Trainer, path: Path, fingerprint: str) -> int | None:
    """Continue from `path` when it was written by this same training; returns the step resumed from."""
    if not path.exists():
        return None
    try:
        state = read_checkpoint(path, ResumePoint)
    except PipelineError as e:  # a resume point is only a shortcut: never let a damaged one block the run
        log.warning("ignoring the resume point: %s; training from step 0", e)
        return None
    if state.fingerprint != fingerprint:
        return None
    trainer.load_state_dict(state.trainer)
    return trainer.step


def train_run(cfg: RunConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train one model per `cfg` into `out_dir`; resume from `out_dir/resume.pt` when it matches."""
    out_dir = Path(out_dir)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    train_set = build_dataset(cfg.data, "train", cfg.task_kinds)
    val_set = build_dataset(cfg.data, "val", cfg.task_kinds)
    trainer = assemble_trainer(cfg, _initial_model(cfg, train_set.num_classes), train_set)

    fingerprint = training_fingerprint(cfg)
    resume_path = out_dir / "resume.pt"
    resumed_from = _resume(trainer, resume_path, fingerprint)

    def save_resume(t: Trainer) -> None:
        if dist.is_main():
            write_checkpoint(resume_path, ResumePoint(fingerprint=fingerprint, trainer=t.state_dict()))

    t0 = time.perf_counter()
    trainer.run(checkpoint=save_resume, progress=progress)
    seconds = time.perf_counter() - t0

    metrics = evaluate(trainer.model, iter_batches(val_set, max(cfg.train.batch_size, 16)), cfg.task_kinds, val_set.num_classes, cfg.train.device)
    report = sparsity_report(trainer.method)
    result = {
        "metrics": metrics,
        "sparsity": report,
        "weighting": trainer.weighting.kind,
        "steps": trainer.steps,
        "resumed_from_step": resumed_from,
        "train_seconds": seconds,
        "mean_step_seconds": sum(trainer.step_seconds) / max(len(trainer.step_seconds), 1),
        "final_task_weights": trainer.weighting.weights(),
    }
    if dist.is_main():
        _write_outputs(out_dir, cfg, trainer, val_set, report, result)
        if resume_path.exists():
            resume_path.unlink()
    return result


def _write_outputs(
    out_dir: Path, cfg: RunConfig, trainer: Trainer, val_set: Any, report: dict[str, Any], result: dict[str, Any]
) -> None:
    """checkpoint.pt, sparsity.json, metrics.json and timeseries.json of a finished run."""
    model, method = trainer.model, trainer.method
    summary = {k: v for k, v in report.items() if k != "layers"}
    write_checkpoint(
        out_dir / "checkpoint.pt",
        TrainCheckpoint(
            model=dict(model.spec),
            state_dict=model.state_dict(),
            method={"name": method.name, "state": method.state_dict()},
            tasks=task_record(cfg.task_kinds),
            num_classes=val_set.num_classes,
            class_names=list(val_set.class_names),
            data={"name": cfg.data.name, "fingerprint": dataset_fingerprint(cfg.data),
                  "height": cfg.data.height, "width": cfg.data.width},
            config=config_to_dict(cfg),
            sparsity=summary,
            versions=versions(),
        ),
    )
    atomic_write_json(out_dir / "sparsity.json", report)
    atomic_write_json(out_dir / "metrics.json", result | {"sparsity": summary})
    atomic_write_json(out_dir / "timeseries.json", {"threshold_kind": method.threshold_kind, "points": trainer.timeseries})

