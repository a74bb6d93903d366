"""Training as a library call: build data, model, method and weighting from a RunConfig, train, evaluate.

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

from pipeline.artifacts import atomic_write_json, sha256_json
from pipeline.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from pipeline.config import RunConfig, config_to_dict
from pipeline.data import build_dataset, dataset_fingerprint
from pipeline.errors import PipelineError
from pipeline.metrics.evaluate import evaluate
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model
from trainers import distributed as dist
from trainers.loop import Trainer
from trainers.objectives import MultiTaskLoss
from trainers.sparsity.methods import build_method
from trainers.sparsity.report import sparsity_report
from trainers.weighting import build_weighting

log = logging.getLogger(__name__)


TRAINING_SECTIONS = ("tasks", "data", "model", "train", "sparsity")


def _fingerprint(config: dict[str, Any], version: str | None) -> str:
    return sha256_json({"version": version, **{k: config.get(k) for k in TRAINING_SECTIONS}})


def training_fingerprint(cfg: RunConfig) -> str:
    """What decides a training trajectory; a resume checkpoint is only used when this matches. The package
    version is part of it: a release may change what a method name means (0.2: `adapmtl` became hierarchical)."""
    from pipeline import __version__

    return _fingerprint(config_to_dict(cfg), __version__)


def checkpoint_fingerprint(ckpt: dict[str, Any]) -> str:
    """`training_fingerprint` of the run that wrote a train checkpoint (its config and package version)."""
    return _fingerprint(ckpt["config"], ckpt.get("version"))


def init_conv_weights_(model: nn.Module, kind: str, seed: int) -> None:
    """`normal001`: every conv weight ~ N(0, 0.01) as in the official AdapMTL code (uniform scale)."""
    if kind != "normal001":
        return
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.01)


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    return create_model(cfg.model.name, task_channels(cfg.tasks, num_classes), **cfg.model.kwargs)


def versions() -> dict[str, str]:
    return {"torch": str(torch.__version__), "python": platform.python_version()}


def train_run(cfg: RunConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train one model per `cfg` into `out_dir`; resume from `out_dir/resume.pt` when it matches."""
    out_dir = Path(out_dir)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    train_set = build_dataset(cfg.data, "train", cfg.tasks)
    val_set = build_dataset(cfg.data, "val", cfg.tasks)
    model = build_model(cfg, train_set.num_classes)
    init_conv_weights_(model, cfg.train.init, cfg.train.seed)
    if cfg.train.dense_init:
        src = load_checkpoint(Path(cfg.train.dense_init))
        load_model_state(model, src["state_dict"], cfg.train.dense_init)
    model.to(cfg.train.device)

    method, spec = build_method(cfg.sparsity, cfg.train.steps)
    method.attach(model)
    kind = spec.weighting if cfg.train.weighting.kind == "auto" else cfg.train.weighting.kind
    weighting = build_weighting(kind, list(cfg.tasks), cfg.train.weighting)
    trainer = Trainer(model, method, weighting, MultiTaskLoss(cfg.tasks, cfg.train.depth_loss), train_set, cfg.train)

    fingerprint = training_fingerprint(cfg)
    resume_path = out_dir / "resume.pt"
    resumed_from = None
    if resume_path.exists():
        try:
            state = load_checkpoint(resume_path, "resume")
        except PipelineError as e:  # a resume point is only a shortcut: never let a damaged one block the run
            log.warning("ignoring the resume point: %s; training from step 0", e)
            state = {"fingerprint": None}
        if state["fingerprint"] == fingerprint:
            trainer.load_state_dict(state["trainer"])
            resumed_from = trainer.step

    def save_resume(t: Trainer) -> None:
        if dist.is_main():
            save_checkpoint(resume_path, "resume", {"fingerprint": fingerprint, "trainer": t.state_dict()})

    t0 = time.perf_counter()
    trainer.run(checkpoint=save_resume, progress=progress)
    seconds = time.perf_counter() - t0

    metrics = evaluate(model, _loader(val_set, cfg), list(cfg.tasks), val_set.num_classes, cfg.train.device)
    report = sparsity_report(method)
    result = {
        "metrics": metrics,
        "sparsity": report,
        "weighting": kind,
        "steps": trainer.steps,
        "resumed_from_step": resumed_from,
        "train_seconds": seconds,
        "mean_step_seconds": sum(trainer.step_seconds) / max(len(trainer.step_seconds), 1),
        "final_task_weights": weighting.weights(),
    }
    if dist.is_main():
        save_checkpoint(
            out_dir / "checkpoint.pt",
            "train",
            {
                "model": dict(model.spec),
                "state_dict": model.state_dict(),
                "method": {"name": method.name, "state": method.state_dict()},
                "tasks": list(cfg.tasks),
                "num_classes": val_set.num_classes,
                "class_names": list(val_set.class_names),
                "data": {"name": cfg.data.name, "fingerprint": dataset_fingerprint(cfg.data),
                         "height": cfg.data.height, "width": cfg.data.width},
                "config": config_to_dict(cfg),
                "sparsity": {k: v for k, v in report.items() if k != "layers"},
                "versions": versions(),
            },
        )
        atomic_write_json(out_dir / "sparsity.json", report)
        atomic_write_json(out_dir / "metrics.json", result | {"sparsity": {k: v for k, v in report.items() if k != "layers"}})
        atomic_write_json(out_dir / "timeseries.json", {"threshold_kind": method.threshold_kind, "points": trainer.timeseries})
        if resume_path.exists():
            resume_path.unlink()
    return result


def _loader(dataset, cfg: RunConfig):
    return torch.utils.data.DataLoader(dataset, batch_size=max(cfg.train.batch_size, 16), shuffle=False)


def restore_method_model(ckpt: dict[str, Any], source: Path) -> tuple[nn.Module, Any]:
    """Rebuild the soft/masked model of a train checkpoint: returns (model, method) ready for hardening."""
    from pipeline.config import config_from_dict

    cfg = config_from_dict(ckpt["config"])
    model = create_model(ckpt["model"]["name"], **ckpt["model"]["kwargs"])
    method, _ = build_method(cfg.sparsity, cfg.train.steps)
    method.attach(model)
    load_model_state(model, ckpt["state_dict"], source)
    if ckpt["method"]["name"] != method.name:
        raise PipelineError(f"{source}: method {ckpt['method']['name']} does not match its config ({method.name})")
    method.load_state_dict(ckpt["method"]["state"])  # sets the final thresholds / masks on the layers
    model.eval()
    return model, method
