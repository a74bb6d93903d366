"""build stage: dense and sparse TensorRT engines from the same ONNX, checked against the saved reference.

Where TensorRT or a CUDA GPU is missing (every machine this project has been able to use), the stage is
recorded as `skipped` with the reason and `pipeline run all` still succeeds; `--require-tensorrt` turns the
skip into an error. The ONNX Runtime GPU route (CUDA/TensorRT execution providers) runs when
`onnxruntime-gpu` is installed, and refuses a silent fallback to CPU.
"""

from __future__ import annotations

from typing import Any

from pipeline.artifacts import atomic_write_json
from pipeline.stages.base import StageContext, StageRecord


def _ort_gpu_route(ctx: StageContext, inputs, reference, targets, tasks, num_classes) -> dict[str, Any]:
    from deploy.engine_check import run_engine_checks
    from deploy.ort_gpu import OrtGpuRunner, ort_gpu_skip_reason

    bcfg = ctx.cfg.build
    reason = ort_gpu_skip_reason("CUDAExecutionProvider")
    if reason or not bcfg.ort_gpu:
        return {"status": "skipped", "reason": reason or "build.ort_gpu is false"}
    onnx_path = ctx.run.path("export", "model.onnx")
    checks = run_engine_checks(
        onnx_path, inputs, reference, targets, tasks, num_classes, bcfg.atol, 1e-3, bcfg.latency_batches,
        bcfg.warmup, bcfg.iters, miou_tol=bcfg.miou_tol,
        runner_factory=lambda p: OrtGpuRunner(p, provider="CUDAExecutionProvider"),
    )
    return {"status": "ok", "provider": "CUDAExecutionProvider", "checks": checks}


def run(ctx: StageContext) -> StageRecord:
    from deploy.environment import probe_gpu_environment, sparse_note, tensorrt_skip_reason
    from deploy.io import load_npz
    from pipeline.models.hardened import load_hardened_model

    probe = probe_gpu_environment()
    inputs = load_npz(ctx.run.path("validate", "inputs.npz"))
    reference = load_npz(ctx.run.path("validate", "outputs_torch.npz"))
    targets = load_npz(ctx.run.path("validate", "targets.npz"))
    _, ckpt = load_hardened_model(ctx.run.path("harden", "model.pt"))
    tasks, num_classes = list(ckpt["tasks"]), int(ckpt["num_classes"])

    report: dict[str, Any] = {"environment": probe, "ort_gpu": _ort_gpu_route(ctx, inputs, reference, targets, tasks, num_classes)}
    reason = tensorrt_skip_reason(probe)
    if reason is not None:
        report |= {"status": "skipped", "reason": reason}
        atomic_write_json(ctx.out / "report.json", report)
        return StageRecord(status="skipped", reason=reason, outputs=["report.json"], summary={"status": "skipped"})

    report |= _build_and_check(ctx, probe, inputs, reference, targets, tasks, num_classes, ckpt)
    report["note"] = sparse_note(probe)
    atomic_write_json(ctx.out / "report.json", report)
    ok = report["status"] == "ok"
    return StageRecord(
        status="ok" if ok else "failed",
        reason=None if ok else report.get("reason"),
        outputs=[p for p in ("report.json", "dense.engine", "sparse.engine", "dense.engine.json", "sparse.engine.json",
                             "timing.cache", "build_dense.log", "build_sparse.log") if (ctx.out / p).exists()],
        summary={"status": report["status"], "speedup": report.get("sparse_speedup")},
    )


def _build_and_check(ctx, probe, inputs, reference, targets, tasks, num_classes, ckpt) -> dict[str, Any]:
    """Real TensorRT path: written against the documented API; it has not run on any machine available here."""
    from deploy.engine_check import run_engine_checks, torch_cuda_latency
    from deploy.tensorrt_build import build_engine
    from deploy.tensorrt_logs import onnx_node_layer_map, sparse_layer_report
    from deploy.tensorrt_plan import plan_build
    from pipeline.models.hardened import load_hardened_model

    bcfg = ctx.cfg.build
    onnx_path = ctx.run.path("export", "model.onnx")
    cache = ctx.out / "timing.cache"
    engines: dict[str, Any] = {}
    for kind, sparse in (("dense", False), ("sparse", True)):
        plan = plan_build(probe["tensorrt"]["version"], bcfg, onnx_path, sparse, timing_cache_path=cache)
        sidecar = build_engine(plan, onnx_path, ctx.out / f"{kind}.engine", cache, ctx.out / f"build_{kind}.log")
        checks = run_engine_checks(
            ctx.out / f"{kind}.engine", inputs, reference, targets, tasks, num_classes, bcfg.atol, 1e-3,
            bcfg.latency_batches, bcfg.warmup, bcfg.iters, miou_tol=bcfg.miou_tol,
        )
        engines[kind] = {"sidecar": sidecar, "checks": checks}
    sparse_side = engines["sparse"]["sidecar"]
    layers = sparse_layer_report(
        sparse_side.get("sparse_eligible", []), sparse_side.get("sparse_picked", []),
        ckpt.get("two_four_layers", []), onnx_node_layer_map(onnx_path),
    )
    model, _ = load_hardened_model(ctx.run.path("harden", "model.pt"))
    torch_lat = {
        dtype: torch_cuda_latency(model, bcfg.latency_batches, dtype, bcfg.warmup, bcfg.iters,
                                  hw=(ctx.cfg.data.height, ctx.cfg.data.width))
        for dtype in ("float32", "float16")
    }
    ok = all(e["checks"]["elementwise_passed"] and e["checks"]["metrics_passed"] is not False for e in engines.values())
    b = bcfg.opt_batch if bcfg.opt_batch in bcfg.latency_batches else bcfg.latency_batches[-1]
    try:
        dense_p50 = engines["dense"]["checks"]["latency"][b]["end_to_end"]["p50_ms"]
        sparse_p50 = engines["sparse"]["checks"]["latency"][b]["end_to_end"]["p50_ms"]
        speedup = dense_p50 / sparse_p50
    except (KeyError, TypeError, ZeroDivisionError):
        speedup = None
    return {
        "status": "ok" if ok else "failed",
        "reason": None if ok else "engine outputs or task metrics outside tolerance",
        "engines": engines,
        "sparse_layers": layers,
        "torch_cuda_latency": torch_lat,
        "sparse_speedup": speedup,
    }
