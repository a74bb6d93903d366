"""Pareto benchmark (issue #17): ΔT against measured ONNX Runtime CPU latency, dense / unstructured / channel.

    python -m benchmarks.pareto --jobs 1                      # the grid: 3 paired seeds, bench preset
    python -m benchmarks.pareto --seeds 1 --points dense adapmtl_c0.5 l1_uniform_c0.5   # a smaller grid

Each point trains the `bench` preset (dev data) through the project's own training loop, paired seeds as in
`benchmarks.quality` (same cache layout, `<out>/runs/<point>_s<seed>/summary.json`). ΔT is taken from the trained
model's val metrics: a channel model's gated outputs are the compacted model's (harden checks it), an unstructured
one's soft-thresholded weights are the hardened ones. One seed's model per point (`--latency-seed`) is hardened
(channel: compacted), exported and quantized to int8 (`exporters.quantize.quantize_int8`); all of those ONNX files
are timed side by side in one process (`deploy.latency_table.latency_table`): a compacted model's latency depends
only on its kept channel counts. `--paper` adds the paper-size model (`deeplab_resnet34` + ASPP heads, 144x192),
latency only: untrained weights, channel plans from `l1_uniform` at the same MAC fractions.
Writes `<out>/results.json`, `results.md`, `pareto.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.pareto_report import write_results
from benchmarks.provenance import git_state
from pipeline.config import ExportConfig, QuantizeConfig, load_config
from pipeline.data import build_dataset, iter_batches

# name -> (structure, method, target); the unstructured points prune weights, the channel ones MACs
POINTS: dict[str, tuple[str, str, float]] = {
    "dense": ("unstructured", "dense", 0.0),
    "adapmtl_u0.9": ("unstructured", "adapmtl", 0.9),
    "adapmtl_u0.97": ("unstructured", "adapmtl", 0.97),
    "adapmtl_c0.5": ("channel", "adapmtl", 0.5),
    "l1_uniform_c0.5": ("channel", "l1_uniform", 0.5),
    "l1_global_c0.5": ("channel", "l1_global", 0.5),
    "adapmtl_c0.75": ("channel", "adapmtl", 0.75),
    "l1_uniform_c0.75": ("channel", "l1_uniform", 0.75),
    "l1_global_c0.75": ("channel", "l1_global", 0.75),
}
PAPER_TARGETS = (0.5, 0.75)


def _calibration(cfg, count: int) -> np.ndarray:
    train = build_dataset(cfg.data, "train", list(cfg.tasks))
    return np.concatenate([b["image"].numpy() for b in iter_batches(train, 8, limit=count)])[:count]


def _deployable(cfg, out: Path, ckpt_path: Path) -> dict[str, Any]:
    """Harden (channel: compact), export and quantize one trained run; returns the files and the harden numbers."""
    from exporters.artifact import export_hardened
    from exporters.quantize import quantize_int8
    from pipeline.checkpoint import TrainCheckpoint, read_checkpoint, write_checkpoint
    from trainers.hardening import harden_checkpoint

    ckpt = read_checkpoint(ckpt_path, TrainCheckpoint)
    res = harden_checkpoint(cfg, ckpt, ckpt_path, progress=False)
    write_checkpoint(out / "hardened.pt", res.checkpoint)
    export_hardened(out / "hardened.pt", out / "export", ExportConfig(), height=cfg.data.height,
                    width=cfg.data.width, source_run=str(out))
    from pipeline.errors import ConfigError

    q = QuantizeConfig()
    images = _calibration(cfg, q.calibration_samples)
    calibration = q.calibration_method
    try:  # the quantize stage's defaults; min/max where an activation is too narrow for the histogram
        quantize_int8(out / "export" / "model.onnx", out / "model_int8.onnx", images, method=calibration,
                      activation_type=q.activation_type, percentile=q.percentile)
    except ConfigError:
        calibration = "minmax"
        quantize_int8(out / "export" / "model.onnx", out / "model_int8.onnx", images, method=calibration,
                      activation_type=q.activation_type)
    (out / "hardened.pt").unlink()
    from deploy.quantize_stage import int8_gate_report, split_arrays

    val = build_dataset(cfg.data, "val", list(cfg.tasks))
    images, targets = split_arrays(val, None, list(cfg.tasks))
    gate = int8_gate_report(out / "export" / "model.onnx", out / "model_int8.onnx", images, targets, list(cfg.tasks),
                            val.num_classes, q, None)
    rep = res.report
    return {
        "ort_metrics": gate["metrics"], "int8_gate_passed": gate["passed"], "calibration": calibration,
        "onnx": str(out / "export" / "model.onnx"), "onnx_int8": str(out / "model_int8.onnx"),
        "hardened_metrics": res.metrics, "soft_vs_hardened_max_abs": rep["soft_vs_hardened_max_abs"],
        "param_sparsity": rep.get("param_sparsity", rep["overall"]),
        "channels": {k: v for k, v in (rep.get("channels") or {}).items() if k != "groups"} or None,
    }


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (point, seed) in a worker process (one torch thread); the latency seed is also exported."""
    from trainers.training_run import train_run

    torch.set_num_threads(1)
    out = Path(job["dir"])
    done = out / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(job["preset"], job["overrides"])
    t0 = time.perf_counter()
    res = train_run(cfg, out, progress=False)
    sp = res["sparsity"]
    summary = {
        "point": job["point"], "method": job["point"], "structure": cfg.sparsity.structure,
        "base_method": cfg.sparsity.method, "target": job["target"], "seed": job["seed"], "metrics": res["metrics"],
        "sparsity": {"overall": sp["overall"], "components": sp["components"],
                     "param_sparsity": sp.get("param_sparsity", sp["overall"])},
        "seconds": time.perf_counter() - t0, "mean_step_seconds": res["mean_step_seconds"],
    }
    if job["export"]:
        summary["deploy"] = _deployable(cfg, out, out / "checkpoint.pt")
    (out / "checkpoint.pt").unlink(missing_ok=True)
    done.write_text(json.dumps(summary, indent=1))
    return summary


def plan_jobs(args) -> list[dict[str, Any]]:
    """Seed by seed (an interrupted benchmark still has complete seeds), every point per seed."""
    base = [f"train.steps={args.steps}"] + (args.set or [])
    jobs = []
    for seed in args.seed_list:
        for name in args.points:
            structure, method, target = POINTS[name]
            ov = base + [f"train.seed={seed}", f"sparsity.method={method}", f"sparsity.structure={structure}"]
            if method != "dense":
                ov.append(f"sparsity.target={target}")
            jobs.append({"point": name, "target": target, "seed": seed, "preset": args.preset, "overrides": ov,
                         "dir": str(Path(args.out) / "runs" / f"{name}_s{seed}"),
                         "export": seed == args.latency_seed})
    return jobs


def _paper_latency(args) -> dict[str, Any]:
    """deeplab_resnet34 + ASPP heads at the paper's size: dense and l1_uniform channel plans, fp32 and int8."""
    from deploy.latency_table import latency_table
    from exporters.onnx_export import export_onnx
    from exporters.quantize import quantize_int8
    from pipeline.models.multitask import task_channels
    from pipeline.models.registry import create_model
    from trainers.assembly import init_conv_weights_
    from trainers.sparsity.harden import channel_compact_, harden_
    from trainers.sparsity.methods import build_method

    h, w = args.paper_hw
    cfg = load_config("demo", [f"data.height={h}", f"data.width={w}", "data.num_train=64",
                               "sparsity.structure=channel", "sparsity.method=l1_uniform"])
    work = Path(args.work) / f"paper_{h}x{w}"
    work.mkdir(parents=True, exist_ok=True)
    images = _calibration(cfg, 16)
    x = torch.rand(1, 3, h, w)
    paths, macs = {}, {}
    for target in (0.0, *PAPER_TARGETS):
        torch.manual_seed(0)
        model = create_model("deeplab_resnet34", task_channels(cfg.tasks, cfg.data.num_classes)).eval()
        init_conv_weights_(model, "normal001", 0)
        name = "dense" if target == 0 else f"l1_uniform_c{target}"
        if target > 0:
            import dataclasses

            method, _ = build_method(dataclasses.replace(cfg.sparsity, target=target), 1)
            method.attach(model, list(cfg.tasks), example=x)
            method.finalize()  # the l1_uniform plan at the target (untrained weights: the uniform keep counts)
            harden_(method)
            _, _, _, ch = channel_compact_(model, method, x, None, multiple=cfg.harden.channel_multiple)
            macs[name] = {"mac_fraction_removed": ch["mac_fraction_removed"], "macs_compact": ch["macs_compact"],
                          "macs_dense": ch["macs_dense"], "params_compact": ch["params_compact"]}
        model.eval()
        paths[f"{name}_fp32"] = work / f"{name}.onnx"
        export_onnx(model, paths[f"{name}_fp32"], task_names=list(cfg.tasks), example_input=x)
        paths[f"{name}_int8"] = work / f"{name}_int8.onnx"
        # untrained activations are too narrow for the histogram calibrators: min/max (benchmarks.int8_latency)
        quantize_int8(paths[f"{name}_fp32"], paths[f"{name}_int8"], images, method="minmax")
    order = sorted(paths, key=lambda k: (k.endswith("int8"), k))  # dense_fp32 first: the ratio baseline
    table = latency_table({k: paths[k] for k in order}, [3, h, w], batches=args.batches, threads=args.threads,
                          warmup=2, rounds=args.paper_rounds, iters_per_round=args.paper_iters)
    table["settings"] |= {"model": "deeplab_resnet34", "height": h, "width": w,
                          "weights": "init N(0, 0.01); channel plans from l1_uniform (uniform keep per group)"}
    return {"latency": table, "macs": macs}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--only-seeds", type=int, nargs="+", default=None)
    p.add_argument("--latency-seed", type=int, default=0, help="the seed whose models are exported and timed")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--preset", default="bench")
    p.add_argument("--set", action="append", help="extra config override for every run (key=value)")
    p.add_argument("--out", default="benchmarks/results/pareto")
    p.add_argument("--work", default=".cache/pareto")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--paper", action="store_true", help="measure the deeplab_resnet34 latency section (paper.json)")
    p.add_argument("--paper-only", action="store_true", help="only measure the paper-size section, then stop")
    p.add_argument("--paper-hw", type=int, nargs=2, default=[144, 192])
    p.add_argument("--paper-rounds", type=int, default=3)
    p.add_argument("--paper-iters", type=int, default=3)
    p.add_argument("--aggregate-only", action="store_true", help="no training: aggregate the cached runs")
    args = p.parse_args(argv)
    args.seed_list = args.only_seeds or list(range(args.seeds))
    return args


def main(argv: list[str] | None = None) -> None:
    from deploy.latency_table import format_latency_table, latency_table

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.paper or args.paper_only:  # measured once, kept beside the results; later aggregates reuse it
        (out / "paper.json").write_text(json.dumps(_paper_latency(args), indent=1) + "\n")
        if args.paper_only:
            return
    cfg = load_config(args.preset, list(args.set or []))
    args.steps = args.steps or cfg.train.steps
    build_dataset(cfg.data, "train", cfg.tasks)  # render the scene cache once, before the workers start
    build_dataset(cfg.data, "val", cfg.tasks)
    state = git_state()
    t0 = time.perf_counter()
    jobs = plan_jobs(args)
    results = []
    if args.aggregate_only:
        results = [json.loads((Path(j["dir"]) / "summary.json").read_text()) for j in jobs
                   if (Path(j["dir"]) / "summary.json").exists()]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            for res in pool.map(run_one, jobs):
                results.append(res)
                print(f"{res['point']:17s} seed {res['seed']}  overall {res['sparsity']['overall']:.4f}  "
                      f"{res['seconds']:.0f}s", flush=True)
    torch.set_num_threads(max(args.threads))
    models = {}
    for r in sorted((r for r in results if "deploy" in r), key=lambda r: list(POINTS).index(r["point"])):
        models[f"{r['point']}_fp32"] = r["deploy"]["onnx"]
    for r in sorted((r for r in results if "deploy" in r), key=lambda r: list(POINTS).index(r["point"])):
        models[f"{r['point']}_int8"] = r["deploy"]["onnx_int8"]
    latency = None
    if models:
        latency = latency_table(models, [3, cfg.data.height, cfg.data.width], batches=args.batches,
                                threads=args.threads, rounds=args.rounds, iters_per_round=args.iters)
        print(format_latency_table(latency), flush=True)
    paper = json.loads((out / "paper.json").read_text()) if (out / "paper.json").exists() else None
    meta = {
        "command": "python -m benchmarks.pareto " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset, "steps": args.steps, "seed_list": args.seed_list, "points": args.points,
        "latency_seed": args.latency_seed, "overrides": list(args.set or []),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
        "torch": torch.__version__, "wall_seconds": time.perf_counter() - t0, "date": time.strftime("%Y-%m-%d"),
        "data": {"height": cfg.data.height, "width": cfg.data.width, "model": cfg.model.name}, **state,
    }
    print(f"wrote {write_results(results, latency, paper, meta, out)}")


if __name__ == "__main__":
    main()
