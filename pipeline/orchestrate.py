"""Orchestration behind the CLI: settle a run's config, run one stage or the stage sequence, follow a leader.

Every function here is a plain library call; `pipeline/cli.py` only parses arguments and prints. This is also
where config names meet their registries: `load_run_config` checks model and sparsity-method names against
`pipeline.models.registry` and `trainers.sparsity.methods`, so `pipeline.config` stays a leaf.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts import RunDir, atomic_write_json
from pipeline.config import RunConfig, config_to_dict, load_config
from pipeline.errors import BackendUnavailable, MissingArtifactError, PipelineError, StaleArtifactError
from pipeline.models.registry import list_models
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
    config has been validated.
    """
    root = Path(run_dir) if run_dir else default_run_dir(config)
    if root.exists() and not root.is_dir():
        raise PipelineError(f"run directory {root} is a file; choose a directory path with --run-dir")
    saved_path = root / "config.yaml"
    if saved_path.exists():
        saved = load_run_config(str(saved_path))
        cfg = load_run_config(config or str(saved_path), overrides) if (config or overrides) else saved
        changed = _diff_keys(config_to_dict(saved), config_to_dict(cfg))
        if changed and not (allow_change or force):
            raise PipelineError(
                f"run directory {root} was created with a different config (differs in {', '.join(changed[:5])}); "
                "pass --force to replace it, or use a new --run-dir"
            )
    else:
        cfg = load_run_config(config, overrides)
        changed = ["(new)"]
    run = RunDir(root)
    if changed:
        write_config(run, cfg)
    return run, cfg


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
        report = write_run_report(run)
        report["stages"][name] = {**report["stages"].get(name, {}), "status": "failed", "reason": str(exc)}
        report["failed_stage"] = {"stage": name, "reason": str(exc), "error": type(exc).__name__}
        atomic_write_json(run.report_path, report)
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
    outcome = PipelineOutcome(run.root)
    for name in names[lo:hi]:
        state, reason = stage_state(run, cfg, get_stage(name))
        if state in ("ok", "skipped") and not force and not (
            name == "build" and state == "skipped" and (options or {}).get("require_tensorrt")
        ):
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
    cfg = load_run_config(str(root / "config.yaml"))
    # after the copy, rank 0 may write into its staging folder again
    follow_stage(root, cfg, name, options, after_copy=dist.barrier)
