"""`pipeline` command line: a thin click shell over `pipeline.orchestrate` and the stage engine.

Exit codes: 0 success (skipped stages listed with reasons), 1 user error (bad config or input, missing
artifact, required backend unavailable), 2 usage error, 3 a check failed (tolerance, parity, pattern).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click
import yaml

from pipeline.artifacts import RunDir
from pipeline.config import config_to_dict, list_presets
from pipeline.errors import PipelineError
from pipeline.models.registry import list_models
from pipeline.orchestrate import (
    follow_run_stage,
    load_run_config,
    load_saved_config,
    resolve_run,
    run_pipeline,
    run_stage,
)
from pipeline.report import build_run_report, write_run_report
from pipeline.report.console import format_key_numbers, format_summary
from pipeline.stages import STAGE_NAMES, get_stage, stage_state
from trainers import distributed as dist
from trainers.sparsity.methods import METHODS

STAGE_HELP = {
    "train": "Train with the configured sparsity method (checkpoint, sparsity.json, metrics).",
    "harden": "Bake thresholds/masks into plain convs: unstructured, 2:4 or adaptive-2:4.",
    "export": "Export a multi-head ONNX, simplify, verify the sparsity survived, compress.",
    "quantize": "INT8 (QDQ) model calibrated on TRAIN images, sensitive layers left fp32; CPU latency table (quantize.mode).",
    "validate": "Compare ONNX Runtime (CPU) with PyTorch per head and per task metric.",
    "build": "Build dense and sparse TensorRT engines; check accuracy and latency (skipped without TensorRT).",
}


def _handle_errors(fn):
    """Turn PipelineError into a one-line message and its exit code; let bugs raise with a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; completed stages are kept, re-run to continue", err=True)
            sys.exit(130)

    return wrapper


def _run_options(fn):
    fn = click.option("--force", is_flag=True, help="Re-run even if up to date; accept a changed config.")(fn)
    fn = click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable)."
    )(fn)
    fn = click.option(
        "--config", "config", default=None, help="Preset name (tiny, demo, ...) or YAML file. Default: demo."
    )(fn)
    fn = click.option(
        "--run-dir", "run_dir", type=click.Path(path_type=Path), default=None,
        help="Run directory (default: runs/<config name>).",
    )(fn)
    fn = click.option("--no-progress", is_flag=True, help="Hide progress bars.")(fn)
    return fn


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
@click.version_option(package_name="mtl-compress")
def main(verbose: bool) -> None:
    """Compress multitask dense-prediction CNNs with AdapMTL and ship them to ONNX Runtime and TensorRT.

    Example: pipeline run all --config demo
    """
    _setup_logging(verbose)


def _print_stage(o) -> None:
    label = {"ok": "PASSED", "up-to-date": "SKIPPED", "skipped": "SKIPPED", "failed": "FAILED"}[o.status]
    extra = " (up to date)" if o.status == "up-to-date" else (f" ({o.reason})" if o.reason else "")
    click.echo(f"{label:7s} | {o.name:8s} | {o.seconds:7.1f}s | {o.path}{extra}")


def _stage_command(name: str):
    @_handle_errors
    def command(run_dir, config, overrides, force, no_progress, require_tensorrt=False, **_):
        run, cfg = resolve_run(run_dir, config, overrides, force=force)
        outcome = run_stage(run, cfg, name, {"progress": not no_progress, "require_tensorrt": require_tensorrt})
        _print_stage(outcome)
        write_run_report(run)

    command.__name__ = name
    command.__doc__ = STAGE_HELP[name] + f"\n\nExample: pipeline {name} --run-dir runs/demo"
    cmd = _run_options(command)
    if name == "build":
        cmd = click.option("--require-tensorrt", is_flag=True, help="Fail instead of skipping without TensorRT.")(cmd)
    return main.command(name=name)(cmd)


for _name in STAGE_NAMES[1:]:  # train has its own command (method options, torchrun)
    _stage_command(_name)


@main.command()
@_run_options
@click.option("--method", default=None, help="Sparsity method (adapmtl, gmp_global, str, dense, ...).")
@click.option("--sparsity", "target", type=float, default=None, help="Overall target sparsity, e.g. 0.9.")
@click.option("--steps", type=int, default=None, help="Training steps.")
@_handle_errors
def train(run_dir, config, overrides, force, no_progress, method, target, steps):
    """Train with the configured sparsity method (checkpoint, sparsity.json, metrics).

    Runs under torchrun too (DistributedDataParallel; only rank 0 writes).

    Example: pipeline train --method adapmtl --sparsity 0.9 --run-dir runs/a90
    """
    extra = list(overrides)
    if method is not None:
        extra.append(f"sparsity.method={method}")
    if target is not None:
        extra.append(f"sparsity.target={target}")
    if steps is not None:
        extra.append(f"train.steps={steps}")
    if dist.init_from_env(_device_hint(config, extra)) and not dist.is_main():
        follow_run_stage(run_dir, config, "train", {"progress": False})
        return
    run, cfg = resolve_run(run_dir, config, extra, force=force)
    dist.barrier()  # config.yaml is settled: followers read it
    dist.barrier()  # followers have copied the resume state of train.tmp/
    outcome = run_stage(run, cfg, "train", {"progress": not no_progress})
    _print_stage(outcome)
    write_run_report(run)
    metrics = (run.load_manifest()["stages"]["train"]["summary"] or {})
    _print_metrics(metrics)


def _device_hint(config, overrides) -> str:
    return load_run_config(config, overrides).train.device


def _print_metrics(summary: dict) -> None:
    m = summary.get("metrics") or {}
    for task, values in m.items():
        click.echo(f"  {task:7s} " + "  ".join(f"{k}={v:.4g}" for k, v in values.items()))
    if summary.get("sparsity"):
        sp = summary["sparsity"]
        comps = ", ".join(f"{c} {v:.3f}" for c, v in sp["components"].items())
        click.echo(f"  sparsity overall {sp['overall']:.4f} (target {sp['target']}): {comps}")
    if summary.get("delta_t") is not None:
        click.echo(f"  delta_t {summary['delta_t']:+.2f}  delta_p {summary['delta_p']:+.2f} (vs dense reference)")


@main.group()
def run() -> None:
    """Run the whole pipeline (`pipeline run all`)."""


@run.command(name="all")
@_run_options
@click.option("--from", "start", type=click.Choice(STAGE_NAMES), default=None)
@click.option("--until", type=click.Choice(STAGE_NAMES), default=None)
@click.option("--require-tensorrt", is_flag=True, help="Fail instead of skipping the build without TensorRT.")
@_handle_errors
def run_all(run_dir, config, overrides, force, no_progress, start, until, require_tensorrt):
    """train -> harden -> export -> validate -> build, skipping stages that are up to date.

    Example: pipeline run all --config tiny --run-dir runs/tiny
    """
    run_, cfg = resolve_run(run_dir, config, overrides, allow_change=True)
    outcome = run_pipeline(
        run_, cfg, start=start, until=until, force=force,
        options={"progress": not no_progress, "require_tensorrt": require_tensorrt},
    )
    for o in outcome.stages:
        _print_stage(o)
    click.echo(format_summary(outcome.report))
    click.echo(f"run directory: {run_.root}  (report: {run_.report_path})")


@main.command()
@click.option("--run-dir", type=click.Path(path_type=Path), required=True)
@_handle_errors
def report(run_dir):
    """Regenerate report.json and report.md (with plots) for a run.

    Example: pipeline report --run-dir runs/demo
    """
    run_ = RunDir(run_dir, create=False)
    load_saved_config(run_)  # only a run of this project (manifest + the config it recorded) gets a report
    click.echo(format_summary(write_run_report(run_)))
    click.echo(f"report: {run_.report_path}")


@main.command()
@click.option("--run-dir", type=click.Path(path_type=Path), required=True)
@_handle_errors
def show(run_dir):
    """Show each stage's status and time, then the key numbers: sparsity, ΔT, parity, sizes.

    Example: pipeline show --run-dir runs/demo
    """
    run_ = RunDir(run_dir, create=False)
    cfg = load_saved_config(run_)
    stages = run_.load_manifest().get("stages", {})
    for name in STAGE_NAMES:
        state, reason = stage_state(run_, cfg, get_stage(name))
        secs = stages.get(name, {}).get("seconds")
        click.echo(f"{name:9s} {state:8s} {'' if secs is None else f'{secs:7.1f}s'}  {reason or ''}")
    numbers = format_key_numbers(build_run_report(run_))  # read only: report.json is not rewritten
    click.echo(("\n" + numbers) if numbers else "\nno numbers yet: no stage has produced any")


@main.command(name="check-config")
@click.argument("config_arg", metavar="[CONFIG]", required=False)
@click.option("--config", "config", default=None, help="Preset name (tiny, demo, ...) or YAML file. Default: demo.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable).")
@_handle_errors
def check_config(config_arg, config, overrides):
    """Validate a preset or YAML config (all problems at once) and print the resolved config.

    The config is given with --config, as for every other command (a positional CONFIG works too).
    Every key is described in docs/config.md.

    Example: pipeline check-config --config tiny --set sparsity.target=0.95
    """
    if config_arg is not None and config is not None and config_arg != config:
        raise click.UsageError(f"two configs given ('{config_arg}' and --config '{config}'); give one")
    cfg = load_run_config(config or config_arg, overrides)
    click.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    click.echo("config OK")


@main.command(name="list")
def list_cmd():
    """List models, sparsity methods and presets."""
    click.echo("models:  " + ", ".join(list_models()))
    click.echo("presets: " + ", ".join(list_presets()))
    click.echo("methods:")
    for name, spec in METHODS.items():
        click.echo(f"  {name:17s} [{spec.weighting} weighting] {spec.description}")


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
