"""The stage table and the engine that runs stages over a run directory.

A stage is a function from files to files: it reads its inputs from the run directory, writes its outputs into
`<stage>.tmp/`, and the folder is committed only when the stage returns. The manifest records each stage's
inputs and outputs with their sha256 and the hash of the config sections it depends on, so re-running
`run all` skips stages whose inputs are unchanged and re-runs those downstream of a change.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.artifacts import RunDir, atomic_write_text, now_iso, sha256_file, sha256_json
from pipeline.config import RunConfig, config_to_dict
from pipeline.errors import CheckFailed, MissingArtifactError, PipelineError, StaleArtifactError
from pipeline.stages import build, export, harden, quantize, train, validate
from pipeline.stages.base import STAGE_NAMES, Stage, StageContext, StageRecord

__all__ = [
    "STAGE_NAMES",
    "Stage",
    "StageContext",
    "StageRecord",
    "check_needs",
    "upstream_stages",
    "config_key",
    "execute_stage",
    "follow_stage",
    "get_stage",
    "stage_state",
    "stages",
    "write_config",
]

log = logging.getLogger(__name__)


INT8_NEED = ("quantize/model_int8.onnx",)  # optional: written only when quantize.mode is int8


def _stage_table() -> tuple[Stage, ...]:
    return (
        Stage("train", train.run, (), ("tasks", "data", "model", "train", "sparsity", "dense_reference"), True,
              "train with the configured sparsity method; write checkpoint, sparsity and metrics"),
        Stage("harden", harden.run, ("train/checkpoint.pt",), ("harden",), False,
              "bake thresholds/masks into plain convs (unstructured, 2:4 or adaptive-2:4), fold BN"),
        Stage("export", export.run, ("harden/model.pt",), ("export",), False,
              "export a multi-head ONNX, simplify it, verify the zero pattern survived, compress"),
        Stage("quantize", quantize.run, ("export/model.onnx",), ("quantize", "data", "export", "dense_reference"), False,
              "int8 (QDQ) model calibrated on train images, sensitive layers left fp32; CPU latency table",
              INT8_NEED),
        Stage("validate", validate.run, ("harden/model.pt", "export/model.onnx"), ("validate", "data", "quantize"),
              False, "compare ONNX Runtime (CPU) with PyTorch per head and per task metric; the int8 gate",
              INT8_NEED),
        Stage("build", build.run, ("export/model.onnx", "validate/inputs.npz", "validate/outputs_torch.npz"),
              ("build", "quantize"), False, "build dense and sparse TensorRT engines and check accuracy and latency",
              INT8_NEED),
    )


def stages() -> tuple[Stage, ...]:
    return _stage_table()


def get_stage(name: str) -> Stage:
    for s in stages():
        if s.name == name:
            return s
    raise PipelineError(f"unknown stage '{name}' (available: {', '.join(STAGE_NAMES)})")


def producer_command(rel_path: str, run: RunDir) -> str:
    stage = rel_path.split("/")[0]
    return f"pipeline {stage} --run-dir {run.root}"


def config_key(cfg: RunConfig, stage: Stage) -> str:
    d = config_to_dict(cfg)
    return sha256_json({k: d[k] for k in stage.config_sections})


def _produced(manifest: dict[str, Any], rel: str) -> bool:
    """Whether the manifest records `rel` as an output of its stage (the test for an optional input)."""
    entry = manifest.get("stages", {}).get(rel.split("/")[0], {})
    return entry.get("status") == "ok" and any(o.get("path") == rel for o in entry.get("outputs", []))


def upstream_stages(stage: Stage) -> list[str]:
    """Every stage `stage` depends on, directly or through another stage, in pipeline order."""
    found: set[str] = set()
    todo = [rel.split("/")[0] for rel in stage.needs]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += [rel.split("/")[0] for rel in get_stage(name).needs]
    return [n for n in STAGE_NAMES if n in found]


def check_needs(run: RunDir, cfg: RunConfig, stage: Stage) -> None:
    """Refuse to run `stage` on a missing, modified or stale upstream stage; the message names the command."""
    manifest = run.load_manifest()
    optional = [rel for rel in stage.optional_needs if _produced(manifest, rel)]
    for rel in (*stage.needs, *optional):
        up = rel.split("/")[0]
        entry = manifest.get("stages", {}).get(up, {})
        if not run.path(rel).exists():
            raise MissingArtifactError(
                f"stage '{stage.name}' needs {rel}, which does not exist; run `{producer_command(rel, run)}` first"
            )
        if entry.get("status") not in ("ok",):
            raise MissingArtifactError(
                f"stage '{stage.name}' needs {rel}, but stage '{up}' is {entry.get('status', 'not run')}; "
                f"run `{producer_command(rel, run)}` first"
            )
        # A truncated, corrupted or replaced input is never trusted: it must be the file the manifest recorded.
        recorded = next((o["sha256"] for o in entry.get("outputs", []) if o.get("path") == rel), None)
        if recorded is not None and sha256_file(run.path(rel)) != recorded:
            raise StaleArtifactError(
                f"stage '{stage.name}' needs {rel}, which was modified after stage '{up}' wrote it (its sha256 "
                f"differs from manifest.json); run `{producer_command(rel, run)}` to write it again"
            )
    for up in upstream_stages(stage):
        state, reason = stage_state(run, cfg, get_stage(up))
        if state != "ok":
            raise StaleArtifactError(
                f"stage '{stage.name}' needs stage '{up}', which is {state} ({reason}); "
                f"run `pipeline {up} --run-dir {run.root}` first"
            )


def stage_state(run: RunDir, cfg: RunConfig, stage: Stage) -> tuple[str, str]:
    """('ok'|'stale'|'missing'|'failed'|'skipped', reason) for one stage of an existing run.

    The one judge of whether a stage is current: its record, its config sections, its input and output files,
    and every stage upstream of it. The engine, `run all`, `show` and the single-stage commands ask here.
    """
    entry = run.load_manifest().get("stages", {}).get(stage.name)
    if not entry:
        return "missing", "not run yet"
    if entry.get("config_key") != config_key(cfg, stage):
        return "stale", "its config sections changed"
    for rec in entry.get("inputs", []):
        p = run.root / rec["path"]
        if not p.exists() or sha256_file(p) != rec["sha256"]:
            return "stale", f"input {rec['path']} changed"
    for rec in entry.get("outputs", []):
        p = run.root / rec["path"]
        if not p.exists() or sha256_file(p) != rec["sha256"]:
            return "stale", f"output {rec['path']} is missing or was modified"
    for up in upstream_stages(stage):
        up_state, _ = stage_state(run, cfg, get_stage(up))
        if up_state != "ok":
            return "stale", f"upstream stage '{up}' is {up_state}"
    return entry.get("status", "missing"), entry.get("reason") or ""


def execute_stage(run: RunDir, cfg: RunConfig, name: str, options: dict[str, Any] | None = None) -> StageRecord:
    """Run one stage: check inputs, run into a staging folder, commit it, record it in the manifest."""
    stage = get_stage(name)
    check_needs(run, cfg, stage)
    started, t0 = now_iso(), time.perf_counter()
    with run.staging(stage.name, keep_partial=stage.keep_partial) as tmp:
        record = stage.run(StageContext(run, cfg, tmp, dict(options or {})))
    seconds = time.perf_counter() - t0
    folder = run.stage_dir(stage.name)
    used = [*stage.needs, *(rel for rel in stage.optional_needs if _produced(run.load_manifest(), rel))]
    inputs = [run.file_record(run.path(rel)) for rel in used] + [
        {"path": str(p), "sha256": sha256_file(p)} for p in record.inputs if Path(p).exists() and not _inside(run, p)
    ]
    outputs = [run.file_record(folder / o) for o in record.outputs if (folder / o).exists()]
    run.update_manifest(
        stages={
            stage.name: {
                "status": record.status,
                "reason": record.reason,
                "started_at": started,
                "seconds": round(seconds, 3),
                "config_key": config_key(cfg, stage),
                "inputs": inputs,
                "outputs": outputs,
                "summary": record.summary,
                "env": _env(),
            }
        }
    )
    if record.status == "failed":
        raise CheckFailed(f"stage '{stage.name}' failed: {record.reason}", str(folder))
    return record


def _inside(run: RunDir, p: Path) -> bool:
    try:
        Path(p).resolve().relative_to(run.root)
        return True
    except ValueError:
        return False


def _env() -> dict[str, Any]:
    out = {}
    for pkg in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "onnxsim", "onnxslim"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def write_config(run: RunDir, cfg: RunConfig) -> None:
    atomic_write_text(run.config_path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    run.update_manifest(config={"path": "config.yaml", "sha256": sha256_file(run.config_path)})


def follow_stage(
    root: Path, cfg: RunConfig, name: str, options: dict[str, Any] | None = None,
    *, after_copy: Callable[[], None] = lambda: None,
) -> StageRecord:
    """Run a stage as a follower (a torchrun rank other than 0): same computation, nothing in the run dir.

    The follower starts from a copy of the leader's staging folder (`<root>/<stage>.tmp/`, so every rank resumes
    from the same step) and writes into a scratch folder that is deleted afterwards; no manifest entry.
    `after_copy` runs once the copy is taken (a barrier: the leader then writes into its staging folder again).
    """
    stage = get_stage(name)
    with tempfile.TemporaryDirectory() as tmp:
        partial = Path(root) / f"{stage.name}.tmp"
        if stage.keep_partial and partial.is_dir():
            shutil.copytree(partial, tmp, dirs_exist_ok=True)
        after_copy()
        return stage.run(StageContext(RunDir(tmp), cfg, Path(tmp), dict(options or {})))
