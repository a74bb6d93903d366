"""The inference and size section of the cost benchmark: export the demo model's variants, then measure
their artifact sizes, latency and peak memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.cost.exports import adapmtl_hardened, build_variant, export_variant, trained_checkpoint
from benchmarks.cost.runtime import latency_table, peak_memory
from benchmarks.cost.sizes import canonical_zeros_onnx, size_report
from pipeline.checkpoint import TrainCheckpoint, read_checkpoint
from pipeline.config import load_config
from trainers.assembly import build_model, init_conv_weights_

PATTERNS = ("dense", "unstructured", "2:4")
SIZE_FIELDS = ("pattern", "prunable_sparsity", "param_sparsity", "prunable_weights", "params")
MEMORY_METHOD = (
    "peak RSS of a fresh subprocess (getrusage(RUSAGE_SELF).ru_maxrss, KiB on Linux) after "
    "importing the runtime (baseline), loading the model and running 3 batches; increase = peak - baseline"
)


def _export_all(cfg, args, steps: int, log: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every (weights, pattern) variant exported to `<work>/onnx`: returns (export facts, models) by key."""
    work = Path(args.work)
    log(f"[inference] weights: train_run on the demo preset, {steps} steps (dense, and AdapMTL at 90 %)")
    dense_ckpt = read_checkpoint(trained_checkpoint(work, "dense", steps, args.threads, log), TrainCheckpoint)
    adap_path = trained_checkpoint(work, "adapmtl", steps, args.threads, log)
    num_classes = dense_ckpt.num_classes
    torch.manual_seed(cfg.train.seed)
    init_model = build_model(cfg, num_classes)
    init_conv_weights_(init_model, "normal001", cfg.train.seed)
    sources = {"trained": dense_ckpt.state_dict, "init N(0,0.01)": init_model.state_dict()}

    exports: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}

    def add(key: str, model, info: dict[str, Any], path: Path) -> None:
        info["export"] = export_variant(model, path, cfg)
        info["path"] = str(path)
        exports[key] = info
        models[key] = model

    for src, state in sources.items():
        for pattern in PATTERNS:
            key = f"{src} / {pattern}"
            model, info = build_variant(cfg, num_classes, state, pattern)
            log(f"  export {key}")
            add(key, model, info, work / "onnx" / f"{src.split()[0]}_{pattern.replace(':', '_')}.onnx")
    model, info = adapmtl_hardened(adap_path)
    log("  export trained / adapmtl-hardened")
    add("trained / adapmtl hardened", model, info, work / "onnx" / "trained_adapmtl.onnx")
    return exports, models


def _sizes(exports: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """size_report of every export against the dense export of the same weights, and of its +0.0 remedy."""
    sizes: dict[str, Any] = {}
    for src in ("trained", "init"):
        dense_key = next(k for k in exports if k.startswith(src) and k.endswith("/ dense"))
        dense_bytes = Path(exports[dense_key]["path"]).stat().st_size
        for key, info in list(exports.items()):
            if not key.startswith(src):
                continue
            path = Path(info["path"])
            fields = {k: info[k] for k in SIZE_FIELDS}
            sizes[key] = {**size_report(path, dense_bytes), **fields}
            if info["pattern"] != "dense":  # the remedy: zeros stored as +0.0 (same values, same graph)
                fixed = path.with_name(path.stem + ".pz.onnx")
                canon = canonical_zeros_onnx(path, fixed)
                sizes[key + ", zeros as +0.0"] = {**size_report(fixed, dense_bytes), **fields, **canon}
            for k in (key, key + ", zeros as +0.0"):
                if k in sizes:
                    log(f"  {k}: onnx {sizes[k]['onnx_bytes']} gzip9 {sizes[k]['gzip9_bytes']} "
                        f"({sizes[k]['gzip9_vs_dense_onnx']:.3f} x dense onnx)")
    return sizes


def _memory(variants: dict[str, tuple[Path, Any]], cfg, threads: int, log: Callable[[str], None]) -> dict[str, Any]:
    memory: dict[str, Any] = {}
    for p, (onnx_path, model) in variants.items():
        pt_path = onnx_path.with_suffix(".pt")
        torch.save(model, pt_path)
        for batch in (1, 8):
            for kind, path in (("onnxrt", onnx_path), ("torch", pt_path)):
                m = peak_memory(kind, path, batch, cfg.data.height, cfg.data.width, threads)
                memory.setdefault(kind, {}).setdefault(p, {})[str(batch)] = m
                log(f"  {kind}/{p}/b{batch}: {m}")
    return memory


def run_inference_section(args, log: Callable[[str], None] = print) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    cfg = load_config("demo", ["dense_reference=null"])
    steps = 20 if args.quick else args.train_steps
    exports, models = _export_all(cfg, args, steps, log)
    log("[size]")
    sizes = _sizes(exports, log)

    log("[latency] interleaved, one process")
    lat_variants = {p: (Path(exports[f"trained / {p}"]["path"]), models[f"trained / {p}"]) for p in PATTERNS}
    iters, rounds = (30, 3) if args.quick else (args.latency_iters, 10)
    latency = latency_table(lat_variants, [1, 8], cfg.data.height, cfg.data.width, args.threads, iters, rounds, log)

    log("[memory] one subprocess per runtime, variant and batch")
    memory = _memory(lat_variants, cfg, args.threads, log)
    for info in exports.values():
        info.pop("path", None)
    return {
        "model": cfg.model.name,
        "input": [cfg.data.height, cfg.data.width],
        "train_steps_for_weights": steps,
        "variants": exports,
        "sizes": sizes,
        "latency": latency,
        "latency_iters_per_variant": iters,
        "memory": memory,
        "memory_method": MEMORY_METHOD,
    }
