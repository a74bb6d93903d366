"""Orchestration behind the CLI: settle a run's config, run one stage or the stage sequence, follow a leader.

Every function here is a plain library call; `pipeline/cli.py` only parses arguments and prints. This is also
where config names meet their registries: `load_run_config` checks model and sparsity-method names against
`pipeline.models.registry` and `trainers.sparsity.methods`, so `pipeline.config` stays a leaf.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.artifacts import RunDir, sha256_file
from pipeline.config import RunConfig, config_to_dict, load_config
from pipeline.errors import (
    BackendUnavailable,
    ConfigError,
    MissingArtifactError,
    PipelineError,
    StaleArtifactError,
)
from pipeline.models.factory import resolve_factory
from pipeline.models.multitask import task_channels
from pipeline.models.registry import create_model, list_models
from pipeline.report import write_run_report
from pipeline.stages import STAGE_NAMES, execute_stage, follow_stage, get_stage, stage_state, write_config
from trainers import distributed as dist
from trainers.sparsity.methods import list_methods

log = logging.getLogger(__name__)


def default_run_dir(config: str | None) -> Path:
    name = Path(config).stem if config else "demo"
    return Path("runs") / name


def load_run_config(source: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """`load_config` plus the registry name checks (model, sparsity method), all problems reported at once."""
    return load_config(source, overrides, models=list_models(), methods=list_methods())


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def load_saved_config(run: RunDir) -> RunConfig:
    """A run's own config.yaml, trusted only if it is the file the manifest recorded (sha256)."""
    if not run.manifest_path.exists() or not run.config_path.exists():
        raise PipelineError(f"{run.root} has no manifest.json and config.yaml; is it a run directory?")
    recorded = (run.load_manifest().get("config") or {}).get("sha256")
    if recorded != sha256_file(run.config_path):
        raise StaleArtifactError(
            f"{run.config_path} was modified after the pipeline wrote it (its sha256 differs from manifest.json); "
            "restore it, or pass --config and --force to replace it"
        )
    return load_run_config(str(run.config_path))


def resolve_run(
    run_dir: str | Path | None,
    config: str | None,
    overrides: tuple[str, ...] | list[str] = (),
    *,
    allow_change: bool = False,
    force: bool = False,
) -> tuple[RunDir, RunConfig]:
    """Open (or create) a run directory and settle its config.

    A run keeps the config it was created with. Stage commands refuse a different one unless `force`;
    `run all` (`allow_change`) accepts it and the changed stages become stale. Nothing is written before the
    config has been validated, and nothing at all in a directory that is not empty and not a run.
    """
    root = Path(run_dir) if run_dir else default_run_dir(config)
    if root.exists() and not root.is_dir():
        raise PipelineError(f"run directory {root} is a file; choose a directory path with --run-dir")
    if root.is_dir():
        RunDir(root, create=False).claim()
    if (root / "manifest.json").exists() and not (config and (force or allow_change)):
        saved = load_saved_config(RunDir(root, create=False))
        cfg = load_run_config(config or str(root / "config.yaml"), overrides) if (config or overrides) else saved
        changed = _diff_keys(config_to_dict(saved), config_to_dict(cfg))
        if changed and not (allow_change or force):
            raise PipelineError(
                f"run directory {root} was created with a different config (differs in {', '.join(changed[:5])}); "
                "pass --force to replace it, or use a new --run-dir"
            )
    else:
        cfg = load_run_config(config, overrides)
        changed = ["(new)"]
    check_device(cfg)
    run = RunDir(root)
    run.claim()
    if changed:
        write_config(run, cfg)
    return run, cfg


def check_device(cfg: RunConfig) -> None:
    """What the config alone cannot know, checked before anything is written: `train.device` exists here, the
    model options build a model that can run, and a dense reference file holds metrics."""
    dev = cfg.train.device
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"'train.device' = {dev!r}: CUDA is not available here (torch {torch.__version__}); "
                              "use train.device=cpu")
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"'train.device' = {dev!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about zero-size weights before create_model refuses them
        if cfg.model.factory:  # a user's model: importable now; its outputs are checked when it is built
            resolve_factory(cfg.model.factory, "model.factory")
        else:
            create_model(cfg.model.name, task_channels(cfg.task_kinds, cfg.data.num_classes), kinds=cfg.task_kinds,
                         **cfg.model.kwargs)
    _check_dense_reference(cfg.dense_reference)


def _check_dense_reference(ref: str | None) -> None:
    if ref in (None, "auto"):
        return
    path = Path(ref)
    cand = path / "train" / "metrics.json" if path.is_dir() else path
    try:
        metrics = json.loads(cand.read_text()).get("metrics")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        metrics = None
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        raise ConfigError(
            f"'dense_reference' = {ref}: no train/metrics.json with a 'metrics' map there; "
            "give a dense run directory or 'auto'"
        )


@dataclass
class StageOutcome:
    name: str
    status: str  # ok | skipped | failed | up-to-date
    seconds: float = 0.0
    reason: str | None = None
    path: str = ""


@dataclass
class PipelineOutcome:
    run_dir: Path
    stages: list[StageOutcome] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def run_stage(run: RunDir, cfg: RunConfig, name: str, options: dict[str, Any] | None = None) -> StageOutcome:
    options = dict(options or {})
    try:
        record = execute_stage(run, cfg, name, options)
    except (MissingArtifactError, StaleArtifactError):
        raise  # refused before anything ran: the run directory stays exactly as it was
    except Exception as exc:
        _report_failure(run, name, exc)
        raise
    entry = run.load_manifest()["stages"][name]
    if record.status == "skipped" and options.get("require_tensorrt") and name == "build":
        raise BackendUnavailable(f"TensorRT build was required but skipped: {record.reason}")
    return StageOutcome(name, record.status, entry["seconds"], record.reason, str(run.stage_dir(name)))


def _report_failure(run: RunDir, name: str, exc: Exception) -> None:
    """A failed stage still leaves report.json (users' scripts read it): the failing stage's verdict and reason."""
    try:
        write_run_report(run, failed_stage={"stage": name, "reason": str(exc), "error": type(exc).__name__})
    except Exception as report_exc:  # never hide the stage's own error behind a reporting problem
        log.warning("could not write report.json after stage %s failed: %s", name, report_exc)


def run_pipeline(
    run: RunDir,
    cfg: RunConfig,
    *,
    start: str | None = None,
    until: str | None = None,
    force: bool = False,
    options: dict[str, Any] | None = None,
) -> PipelineOutcome:
    """train -> harden -> export -> validate -> build, skipping stages that are up to date."""
    names = list(STAGE_NAMES)
    lo = names.index(start) if start else 0
    hi = names.index(until) + 1 if until else len(names)
    if lo >= hi:
        raise PipelineError(f"--from {start} comes after --until {until}; nothing would run (order: {' -> '.join(names)})")
    outcome = PipelineOutcome(run.root)
    for name in names[lo:hi]:
        state, reason = stage_state(run, cfg, get_stage(name))
        # A skipped stage is never up to date: its reason (no TensorRT here, quantize.mode none) may not hold on
        # this machine or run, and re-checking it costs nothing. Otherwise a run carried to a TensorRT box would
        # never build.
        if state == "ok" and not force:
            outcome.stages.append(StageOutcome(name, "up-to-date", 0.0, None, str(run.stage_dir(name))))
            continue
        log.info("stage %s: %s", name, reason)
        outcome.stages.append(run_stage(run, cfg, name, options))
    outcome.report = write_run_report(run)
    return outcome


def follow_run_stage(
    run_dir: str | Path | None, config: str | None, name: str, options: dict[str, Any] | None = None
) -> None:
    """A non-zero torchrun rank: run stage `name` through the engine as a follower of rank 0.

    The follower uses the config rank 0 settled (the run's config.yaml) and starts from a copy of rank 0's
    staging folder, so after an interruption every rank resumes from the same step. The barriers pair with
    the two in the leader's `pipeline train`.
    """
    root = Path(run_dir) if run_dir else default_run_dir(config)
    dist.barrier()  # rank 0 has validated and written config.yaml
    cfg = load_saved_config(RunDir(root, create=False))
    # after the copy, rank 0 may write into its staging folder again
    follow_stage(root, cfg, name, options, after_copy=dist.barrier)
