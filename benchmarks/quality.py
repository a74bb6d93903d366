"""Quality benchmark: every pruning method at several sparsities, paired seeds, same budget.

    python -m benchmarks.quality --quick          # minutes: a smoke test of the comparison
    python -m benchmarks.quality                  # the full grid (see --help for its size)
    python -m benchmarks.quality --int8           # adapmtl at 0.9 + dense, 3 seeds, plus int8's cost

Each (method, sparsity, seed) run trains the `bench` preset through the project's own training loop, so
every method sees the same initialisation and batch order for a given seed (paired seeds). Results of
finished runs are cached under `<out>/runs/`, so an interrupted benchmark continues where it stopped.
Writes `<out>/results.json`, `<out>/results.md` and `<out>/delta_t.png`.
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

import torch

from benchmarks.aggregate import write_results
from benchmarks.int8_quality import int8_cost, write_int8_results
from benchmarks.provenance import git_state
from pipeline.config import load_config
from pipeline.data import build_dataset
from trainers.training_run import train_run

ALL_METHODS = [
    "dense", "adapmtl", "adapmtl_adaptive", "adapmtl_component", "adapmtl_hierarchical", "adapmtl_faithful", "soft_uniform",
    "gmp_split", "gmp_global", "gmp_uniform", "str", "snip", "imp", "disparse_static", "disparse_dynamic",
]
ALL_SPARSITIES = [0.5, 0.8, 0.9, 0.95, 0.97]


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration in a worker process (one torch thread) and cache its summary."""
    torch.set_num_threads(1)
    out = Path(job["dir"])
    done = out / "summary.json"
    if done.exists():
        cached = json.loads(done.read_text())
        # a run cached without int8, or without the checkpoint a later run starts from, has lost it: retrain
        has_ckpt = not job.get("keep_checkpoint") or (out / "checkpoint.pt").exists()
        if (not job.get("int8") or "int8" in cached) and has_ckpt:
            return cached
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(job["preset"], job["overrides"])
    t0 = time.perf_counter()
    res = train_run(cfg, out, progress=False)
    summary = {
        "method": job["method"], "target": job["target"], "seed": job["seed"],
        "metrics": res["metrics"],
        "sparsity": {k: res["sparsity"][k] for k in ("overall", "components", "thresholds")},
        "seconds": time.perf_counter() - t0, "mean_step_seconds": res["mean_step_seconds"],
    }
    if job.get("int8"):
        t1 = time.perf_counter()
        summary["int8"] = int8_cost(cfg, out) | {"seconds": time.perf_counter() - t1}
    if not job.get("keep_checkpoint"):  # keep the cache small; metrics and sparsity.json stay
        (out / "checkpoint.pt").unlink(missing_ok=True)
    done.write_text(json.dumps(summary, indent=1))
    return summary


def plan_jobs(args) -> list[list[dict[str, Any]]]:
    """Jobs in waves, seed by seed (so an interrupted benchmark still has complete seeds): per seed, first
    dense and every learned method, then gmp_split, which reuses that seed's AdapMTL split."""
    base = [f"train.steps={args.steps}"] + (args.set or [])
    d = Path(args.out) / "runs"
    waves: list[list[dict[str, Any]]] = []
    for seed in getattr(args, "only_seeds", None) or range(args.seeds):
        common = base + [f"train.seed={seed}"]
        first: list[dict[str, Any]] = [{"method": "dense", "target": 0.0, "seed": seed, "preset": args.preset,
                                        "dir": str(d / f"dense_s{seed}"), "overrides": common + ["sparsity.method=dense"]}]
        second: list[dict[str, Any]] = []
        for target in args.sparsities:
            for m in args.methods:
                if m == "dense":
                    continue
                ov = common + [f"sparsity.method={m}", f"sparsity.target={target}"]
                if m == "gmp_split":
                    ov.append(f"sparsity.split_from={d / f'adapmtl_{target}_s{seed}' / 'sparsity.json'}")
                job = {"method": m, "target": target, "seed": seed, "preset": args.preset,
                       "dir": str(d / f"{m}_{target}_s{seed}"), "overrides": ov,
                       "int8": bool(getattr(args, "int8", False))}
                (second if m == "gmp_split" else first).append(job)
        waves += [first, second] if second else [first]
    return waves


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with the --quick and full defaults filled in."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 seeds, 0.9 and 0.97, 4 methods, 400 steps")
    p.add_argument("--int8", action="store_true",
                   help="also measure int8's task-metric cost per pruned run (benchmarks/int8_quality.py); "
                        "defaults: adapmtl at 0.9, out benchmarks/results/int8_quality")
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--sparsities", nargs="+", type=float, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--jobs", type=int, default=2, help="parallel training processes (one thread each)")
    p.add_argument("--preset", default="bench")
    p.add_argument("--out", default=None)
    p.add_argument("--set", action="append", help="extra config override for every run (key=value)")
    p.add_argument("--only-seeds", type=int, nargs="+", default=None,
                   help="run only these seeds (e.g. to fill in one seed from a second process)")
    p.add_argument("--aggregate-only", action="store_true",
                   help="write the results from the runs already finished under --out (no training)")
    args = p.parse_args(argv)
    if args.quick:
        args.methods = args.methods or ["dense", "adapmtl", "soft_uniform", "gmp_global"]
        args.sparsities = args.sparsities or [0.9, 0.97]
        args.seeds = args.seeds or 2
        args.steps = args.steps or 400
        args.out = args.out or "benchmarks/results/quick"
    if args.int8:
        args.methods = args.methods or ["dense", "adapmtl"]
        args.sparsities = args.sparsities or [0.9]
        args.out = args.out or "benchmarks/results/int8_quality"
    args.methods = args.methods or ALL_METHODS
    if "gmp_split" in args.methods and "adapmtl" not in args.methods:
        args.methods.append("adapmtl")
    args.sparsities = args.sparsities or ALL_SPARSITIES
    args.seeds = args.seeds or 3
    args.out = args.out or "benchmarks/results/full"
    return args


def _finished_runs(args) -> list[dict[str, Any]]:
    """Summaries of the runs already under `<out>/runs` that belong to the requested grid."""
    results = []
    for f in sorted((Path(args.out) / "runs").glob("*/summary.json")):
        res = json.loads(f.read_text())
        if res["method"] in args.methods and (res["method"] == "dense" or res["target"] in args.sparsities):
            results.append(res)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.preset, list(args.set or []))  # the data the runs will use (--set may change it)
    args.steps = args.steps or cfg.train.steps
    build_dataset(cfg.data, "train", cfg.tasks)  # render the scene cache once, before the workers start
    build_dataset(cfg.data, "val", cfg.tasks)

    git_state_at_start = git_state()
    t0 = time.perf_counter()
    results = _finished_runs(args) if args.aggregate_only else []
    wave_list = [] if args.aggregate_only else plan_jobs(args)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        for wave in wave_list:
            for res in pool.map(run_one, wave):
                results.append(res)
                print(f"{res['method']:17s} {res['target']:.2f} seed {res['seed']}  "
                      f"overall {res['sparsity']['overall']:.4f}  {res['seconds']:.0f}s", flush=True)
    meta = {
        "command": "python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset, "steps": args.steps, "seeds": args.seeds, "methods": args.methods,
        "sparsities": args.sparsities, "overrides": list(args.set or []),
        "seed_list": list(args.only_seeds or range(args.seeds)), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "wall_seconds": time.perf_counter() - t0,
        "run_seconds_total": sum(r.get("seconds", 0.0) for r in results), "jobs": args.jobs,
        "date": time.strftime("%Y-%m-%d"), **git_state_at_start,
    }
    path = write_results(results, meta, Path(args.out))
    if args.int8:
        write_int8_results(results, meta, Path(args.out))
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
