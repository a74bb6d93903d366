"""Build dense and sparse TensorRT engines from one ONNX and check each against the saved reference.

The one implementation behind the build stage and `scripts/gpu_check.py`. It has run only against the TensorRT
test double (`tests/fakes/fake_tensorrt.py`), which proves the wiring, not TensorRT's behaviour.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.engine_check import CheckSettings, ReferenceData, check_settings_from_config, run_engine_checks
from deploy.environment import sparse_note
from deploy.runners import TensorRTRunner, run_batched
from deploy.task_gate import GateTolerances, ort_outputs, task_gate
from deploy.tensorrt_build import build_engine
from deploy.tensorrt_logs import onnx_node_layer_map, sparse_layer_report
from deploy.tensorrt_plan import plan_build
from pipeline.config import RunConfig

ENGINE_KINDS = (("dense", False), ("sparse", True))


def engine_files(kind: str) -> tuple[str, str, str]:
    """File names of one engine build inside the output folder: engine, its sidecar JSON, the build log."""
    return f"{kind}.engine", f"{kind}.engine.json", f"build_{kind}.log"


def profile_hw(cfg: RunConfig) -> tuple[int, int] | None:
    """Height and width for the optimisation profile when the ONNX has symbolic spatial dims, else None."""
    return (cfg.data.height, cfg.data.width) if cfg.export.dynamic_hw else None


def _build_one(
    cfg: RunConfig,
    onnx_path: Path,
    out_dir: Path,
    sparse: bool,
    kind: str,
    trt_version: str,
    reference: ReferenceData,
    settings: CheckSettings,
    runner_factory: Callable[[Path], Any] | None,
) -> dict[str, Any]:
    engine, _, log_name = engine_files(kind)
    cache = out_dir / "timing.cache"
    plan = plan_build(trt_version, cfg.build, onnx_path, sparse, hw=profile_hw(cfg), timing_cache_path=cache)
    sidecar = build_engine(plan, onnx_path, out_dir / engine, cache, out_dir / log_name)
    checks = run_engine_checks(out_dir / engine, reference, settings, runner_factory)
    return {"build": sidecar, "checks": checks}


def _speedup(engines: dict[str, Any], cfg: RunConfig, settings: CheckSettings) -> float | None:
    """Dense over sparse end-to-end p50 at build.opt_batch (or the largest timed batch)."""
    b = (
        cfg.build.opt_batch
        if cfg.build.opt_batch in settings.latency_batches
        else settings.latency_batches[-1]
    )
    try:
        dense = engines["dense"]["checks"]["latency"][str(b)]["end_to_end"]["p50_ms"]
        sparse = engines["sparse"]["checks"]["latency"][str(b)]["end_to_end"]["p50_ms"]
        return dense / sparse
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def build_and_check_engines(
    cfg: RunConfig,
    onnx_path: str | Path,
    out_dir: str | Path,
    reference: ReferenceData,
    probe: dict[str, Any],
    *,
    settings: CheckSettings | None = None,
    runner_factory: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Build the dense and the sparse engine, check both, and report which 2:4 layers TensorRT ran sparse.

    Args:
        cfg: the run's configuration (build section, export.dynamic_hw, data height/width, validate rtol).
        onnx_path: the exported model both engines are built from.
        out_dir: where engines, sidecars, build logs and the shared timing cache go (`engine_files`).
        reference: `deploy.engine_check.load_reference` of the same run.
        probe: `deploy.environment.probe_gpu_environment()`; its TensorRT version plans the builds.
        settings: check settings (default `check_settings_from_config(cfg)`).
        runner_factory: builds a runner from an engine path (default `TensorRTRunner`).

    Returns:
        {"status": "ok" | "failed", "reason", "settings", "engines": {kind: {"build": sidecar, "checks": ...} or
        {"error", "traceback"}}, "sparse_layers" (`sparse_layer_report`, None when the sparse build failed),
        "sparse_speedup", "note"}. A failing engine is recorded and does not stop the other one.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or check_settings_from_config(cfg)
    engines: dict[str, Any] = {}
    for kind, sparse in ENGINE_KINDS:
        try:
            engines[kind] = _build_one(
                cfg,
                onnx_path,
                out_dir,
                sparse,
                kind,
                probe["tensorrt"]["version"],
                reference,
                settings,
                runner_factory,
            )
        except Exception as e:  # noqa: BLE001 - one failing build must not hide the other
            engines[kind] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    layers = None
    if "build" in engines["sparse"]:
        found = engines["sparse"]["build"]["sparsity"]
        layers = sparse_layer_report(
            found["eligible"],
            found["picked"],
            list(reference.two_four_layers),
            onnx_node_layer_map(onnx_path),
        )
    errors = [f"{k}: {e['error']}" for k, e in engines.items() if "error" in e]
    failed = [k for k, e in engines.items() if "checks" in e and not e["checks"]["passed"]]
    reason = "; ".join(errors) or (
        f"{', '.join(failed)} engine outputs or task metrics outside tolerance" if failed else None
    )
    return {
        "status": "failed" if reason else "ok",
        "reason": reason,
        "settings": settings.to_dict(),
        "engines": engines,
        "sparse_layers": layers,
        "sparse_speedup": _speedup(engines, cfg, settings),
        "note": sparse_note(probe),
    }


def build_int8_engine(
    cfg: RunConfig,
    int8_onnx: str | Path,
    out_dir: str | Path,
    reference: ReferenceData,
    probe: dict[str, Any],
    *,
    runner_factory: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Build an INT8 engine from the quantize stage's QDQ model and gate it against ONNX Runtime's int8 outputs.

    Explicit quantization (the Q/DQ scales), FP16 allowed for the rest, SPARSE_WEIGHTS when the hardened
    weights are 2:4. The gate is the task-level one (`deploy.task_gate`, tolerances from `quantize.gate`) on the
    saved validation inputs and targets, with ONNX Runtime CPU as the reference.

    Returns:
        {"status": "ok" | "failed", "reason", "build": sidecar, "gate": GateResult dict} or, when the build
        itself fails, {"status": "failed", "reason", "traceback"}.
    """
    int8_onnx, out_dir = Path(int8_onnx), Path(out_dir)
    engine, _, log_name = engine_files("int8")
    sparse = bool(reference.two_four_layers)
    try:
        plan = plan_build(
            probe["tensorrt"]["version"], cfg.build, int8_onnx, sparse, hw=profile_hw(cfg),
            timing_cache_path=out_dir / "timing.cache", int8=True,
        )
        sidecar = build_engine(plan, int8_onnx, out_dir / engine, out_dir / "timing.cache", out_dir / log_name)
        if reference.targets is None:
            return {"status": "failed", "reason": "validate saved no targets.npz: no int8 gate", "build": sidecar}
        batch = cfg.validate.batch_size
        images = next(iter(reference.inputs.values()))
        ort = ort_outputs(int8_onnx, images, batch)
        with (runner_factory or TensorRTRunner)(out_dir / engine) as runner:
            trt_out = run_batched(runner, dict(reference.inputs), batch)
        gate = task_gate(
            ort, trt_out, reference.targets, reference.tasks, reference.num_classes,
            GateTolerances.from_mapping(cfg.quantize.gate),
        )
    except Exception as e:  # noqa: BLE001 - recorded like the dense and sparse builds; the stage decides
        return {"status": "failed", "reason": f"int8 engine: {type(e).__name__}: {e}",
                "traceback": traceback.format_exc()}
    return {
        "status": "ok" if gate.passed else "failed",
        "reason": None if gate.passed else f"TensorRT int8 vs ONNX Runtime int8: {gate.message()}",
        "build": sidecar,
        "gate": gate.to_dict(),
    }
