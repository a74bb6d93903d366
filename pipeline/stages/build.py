"""build stage: dense and sparse TensorRT engines from the same ONNX, checked against the saved reference.

Where TensorRT or a CUDA GPU is missing (every machine this project has been able to use), the stage is
recorded as `skipped` with the reason and `pipeline run all` still succeeds; `--require-tensorrt` turns the
skip into an error. The ONNX Runtime GPU route (CUDA execution provider) runs when `onnxruntime-gpu` is
installed, and refuses a silent fallback to CPU. The work itself is `deploy.engine_build.build_and_check_engines`,
shared with `scripts/gpu_check.py`.
"""

from __future__ import annotations

from typing import Any

from deploy.engine_build import ENGINE_KINDS, build_and_check_engines, build_int8_engine, engine_files
from deploy.engine_check import (
    check_ort_gpu,
    check_settings_from_config,
    load_reference,
    torch_cuda_latencies,
)
from deploy.environment import probe_gpu_environment, tensorrt_skip_reason
from pipeline.artifacts import atomic_write_json
from pipeline.models.hardened import load_hardened
from pipeline.stages.base import StageContext, StageRecord


def run(ctx: StageContext) -> StageRecord:
    cfg = ctx.cfg
    probe = probe_gpu_environment()
    onnx_path, model_path = ctx.run.path("export", "model.onnx"), ctx.run.path("harden", "model.pt")
    reference = load_reference(ctx.run.path("validate"), model_path)
    settings = check_settings_from_config(cfg)
    ort_gpu = check_ort_gpu(
        onnx_path,
        "CUDAExecutionProvider",
        cfg.build.precision == "fp16",
        reference,
        settings,
        ctx.out / "ort_cache",
        probe,
        enabled=cfg.build.ort_gpu,
    )
    report: dict[str, Any] = {"environment": probe, "ort_gpu": ort_gpu}
    reason = tensorrt_skip_reason(probe)
    if reason is not None:
        report |= {"status": "skipped", "reason": reason}
        atomic_write_json(ctx.out / "report.json", report)
        return StageRecord(
            status="skipped", reason=reason, outputs=["report.json"], summary={"status": "skipped"}
        )

    report |= build_and_check_engines(cfg, onnx_path, ctx.out, reference, probe, settings=settings)
    hw = (cfg.data.height, cfg.data.width)
    report["torch_cuda_latency"] = torch_cuda_latencies(load_hardened(model_path)[0], settings, hw)
    int8_path = ctx.run.path("quantize", "model_int8.onnx")  # present only when quantize.mode is int8
    if int8_path.exists():
        report["int8_engine"] = build_int8_engine(cfg, int8_path, ctx.out, reference, probe)
        if report["int8_engine"]["status"] != "ok":
            report["status"] = "failed"
            report["reason"] = "; ".join(r for r in (report["reason"], report["int8_engine"]["reason"]) if r)
    atomic_write_json(ctx.out / "report.json", report)
    ok = report["status"] == "ok"
    kinds = [kind for kind, _ in ENGINE_KINDS] + ["int8"]
    files = ["report.json", "timing.cache"] + [f for kind in kinds for f in engine_files(kind)]
    return StageRecord(
        status="ok" if ok else "failed",
        reason=report["reason"],
        outputs=[p for p in files if (ctx.out / p).exists()],
        summary={"status": report["status"], "speedup": report["sparse_speedup"]},
    )
