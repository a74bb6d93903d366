"""The training section of the cost benchmark: its configurations (`demo`, `paper`) and what it records."""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.cost.components import component_estimate, component_timings, profile_attribution
from benchmarks.cost.training import synthetic_dataset, time_training
from pipeline.config import load_config
from pipeline.data import build_dataset


def training_config(name: str, quick: bool, paper_size: tuple[int, int], threads: int):
    """RunConfig of a timing configuration (the demo preset, with the model/batch/size of the config)."""
    base = ["dense_reference=null", f"train.num_threads={threads}", "train.checkpoint_every=0"]
    if name == "demo":
        return load_config("demo", base)
    if name == "paper":
        h, w = paper_size if not quick else (96, 128)
        batch = 8 if not quick else 2
        return load_config(
            "demo",
            base
            + [
                "model.name=deeplab_resnet34",
                f"train.batch_size={batch}",
                f"data.height={h}",
                f"data.width={w}",
                "data.num_classes=13",
            ],
        )
    raise ValueError(f"unknown training config {name}")


def run_training_section(name: str, args, log: Callable[[str], None] = print) -> dict[str, Any]:
    cfg = training_config(name, args.quick, args.paper_size, args.threads)
    if name == "demo":
        dataset = build_dataset(cfg.data, "train", cfg.tasks)
        warmup, timed = (2, 20) if args.quick else (3, args.demo_steps)
        reps, label = (5 if args.quick else 20), "scenes (demo preset)"
    else:
        dataset = synthetic_dataset(cfg.train.batch_size, cfg.data.height, cfg.data.width, cfg.data.num_classes)
        warmup, timed = (2, 2) if args.quick else (2, args.paper_steps)
        reps, label = (2 if args.quick else 3), "synthetic tensors of NYUv2 shape (13 classes)"
    log(f"[training:{name}] {cfg.model.name} batch {cfg.train.batch_size} {cfg.data.height}x{cfg.data.width}, "
        f"{warmup} warm-up + {timed} timed steps per variant, {args.threads} thread(s)")
    return training_result(cfg, dataset, warmup=warmup, timed=timed, reps=reps, data_label=label, log=log)


def training_result(
    cfg,
    dataset,
    *,
    warmup: int,
    timed: int,
    reps: int,
    data_label: str,
    start: int = 300,
    total: int = 600,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Step timing, profiler attribution, component timings and the component estimate of one configuration."""
    t0 = time.perf_counter()
    result, trainers = time_training(
        cfg, dataset, warmup=warmup, timed=timed, start_step=start, total_steps=total, log=log
    )
    last = result["variants"]["dense"]["records"][-1]["step"] + 1
    last += last % cfg.sparsity.update_every == 0
    log(f"  profiler attribution (step {last}) and components")
    result["profile"] = profile_attribution(trainers, last)
    result["components"] = component_timings(trainers, start + 10, reps)
    result["component_estimate"] = component_estimate(result)
    model = trainers["dense"].model
    result["setup"] = {
        "model": cfg.model.name,
        "model_kwargs": dict(cfg.model.kwargs),
        "params": int(sum(p.numel() for p in model.parameters())),
        "prunable_weights": result["components"]["prunable_weights"],
        "batch": cfg.train.batch_size,
        "height": cfg.data.height,
        "width": cfg.data.width,
        "data": data_label,
        "warmup_steps": warmup,
        "timed_steps": timed,
        "steps": [r["step"] for r in result["variants"]["dense"]["records"]],
        "schedule_total_steps": total,
        "target_at_timed_steps": trainers["adapmtl"].method.target_at(start + 1),
        "update_every": cfg.sparsity.update_every,
        "log_every": cfg.train.log_every,
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - t0,
        "peak_rss_mib_process_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    del trainers
    gc.collect()
    return result
