"""Cost benchmark: AdapMTL's training overhead, and the latency, memory and size of the sparse exports.

    python -m benchmarks.cost --quick     # a few minutes: every number at reduced sizes (a smoke test)
    python -m benchmarks.cost             # the full benchmark (~30 min on 2 shared CPU cores; the paper-size
                                          # training steps are most of it)

Sections (all ratios are measured side by side in one process; absolute times belong to the machine
recorded in `machine`):

1. Training step time. The project's `Trainer` with `adapmtl` (SoftThresholds, via `build_method`) against
   `dense`, plus `naive` (the same method with the plain-autograd formula `soft_threshold_reference` in every
   layer). One step of each variant in turn (rotating order) on the same batch, from the same initial weights:
   step 0 (so every weight gets an Adam state, as in a real run), a jump to mid-ramp (`start_step`, a solve
   step), more warm-ups, then the timed steps. The controller's k-th value solve runs inside the steps every
   `sparsity.update_every` steps and the sparsity snapshot every `train.log_every` steps, as in `Trainer.run`.
   Phase timers (forward, backward, optimizer, hooks, log) and standalone component timings (W_eff forward
   and backward, the tau graph, the solve and its parts, the snapshot) explain the difference.
   Configurations: `demo` (scene_aspp, batch 16, 64x80, the scenes data) and `paper` (deeplab_resnet34 with
   three ASPP heads of width 1024, batch 8, 288x384 = the MTAN NYUv2 size, synthetic data of that shape).
2. Exports of the demo model: dense, unstructured 90 % (global magnitude over the prunable convs of the
   default rules, via the `gmp_global` method), 2:4 (`nm_mask` on the eligible layers via `nm_project_`),
   each BN-folded as the harden stage does, exported with `export_onnx` + `simplify_onnx` (onnxsim).
   Weights: a briefly trained dense model (`train_run`, demo preset), the same with N(0, 0.01) weights as
   initialised for training, and the hardened AdapMTL 90 % model of a brief `train_run`.
3. Inference: ONNX Runtime CPU and PyTorch eager latency (p50/p90) at batch 1 and 8, interleaved in one
   process; peak memory of each in its own subprocess (peak RSS from getrusage(RUSAGE_SELF).ru_maxrss).
4. Artifact size: ONNX bytes, gzip (`compress_artifact`, level 9), ratios to the dense ONNX, the information
   limit, and what the bytes of the survivors cost.
5. INT8 (`int8`): dense fp32 / pruned fp32 / pruned int8 ONNX Runtime CPU latency (batch 1 and 8, one thread
   and all cores, p50/p90/p99, interleaved in one process by `deploy.latency_table`) and sizes raw and gzipped,
   at the paper's size (deeplab_resnet34 + ASPP, 144x192; ~10 min here) and the demo size (benchmarks/cost/int8.py).
   `python -m benchmarks.cost --sections int8 --int8-sizes demo --update` reruns one size and keeps the rest of
   an existing results.json.

Writes `<out>/results.json` and `<out>/results.md` (default `benchmarks/results/cost`); intermediate files
(checkpoints, ONNX) go to `--work` (default `.cache/cost`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.cost.inference import run_inference_section
from benchmarks.cost.int8 import INT8_SIZES, run_int8_section
from benchmarks.cost.machine import cpu_effects, machine_info
from benchmarks.cost.report import render_markdown
from benchmarks.cost.training_section import run_training_section
from benchmarks.provenance import git_state

DEFAULT_OUT = Path("benchmarks/results/cost")
DEFAULT_WORK = Path(".cache/cost")


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced sizes and counts (minutes)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--work", default=str(DEFAULT_WORK), help="checkpoints and ONNX files (not results)")
    p.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads (default 1)")
    p.add_argument("--paper-size", type=parse_size, default=(288, 384), help="HxW: 288x384 (MTAN) or 321x321")
    p.add_argument("--paper-steps", type=int, default=4, help="timed steps per variant, paper configuration")
    p.add_argument("--demo-steps", type=int, default=40, help="timed steps per variant, demo preset")
    p.add_argument("--train-steps", type=int, default=300, help="train_run steps for the exported weights")
    p.add_argument("--latency-iters", type=int, default=200, help="timed inferences per variant and batch")
    p.add_argument("--sections", nargs="+", default=["demo", "inference", "paper", "int8"],
                   choices=["demo", "inference", "paper", "int8"])
    p.add_argument("--int8-sizes", nargs="+", default=["paper", "demo"], choices=sorted(INT8_SIZES))
    p.add_argument("--int8-rounds", type=int, default=3, help="interleaved rounds of the int8 latency table")
    p.add_argument("--int8-iters", type=int, default=5, help="runs per configuration and round (int8 table)")
    p.add_argument("--int8-threads", type=int, nargs="+", default=None,
                   help="intra-op thread counts of the int8 table (default: 1 and all cores)")
    p.add_argument("--update", action="store_true",
                   help="start from <out>/results.json and replace only the sections (and int8 sizes) run now")
    return p.parse_args(argv)


def save(results: dict[str, Any], out: Path) -> None:
    # an --update run leaves the first run's record alone and notes its own end in its update entry
    record = results["updates"][-1] if results.get("updates") else results
    (record if results.get("updates") else results["machine"])["loadavg_end"] = list(os.getloadavg())
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(render_markdown(results))


def log(msg: str) -> None:
    print(msg, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.cost " + " ".join(argv if argv is not None else sys.argv[1:])
    previous = out / "results.json"
    if args.update and previous.exists():
        results = json.loads(previous.read_text())
        results.setdefault("updates", []).append({"command": command, "sections": args.sections,
                                                  "date": time.strftime("%Y-%m-%d"), **git_state()})
    else:
        results = {"command": command, "quick": args.quick, "machine": machine_info(args.threads), "training": {},
                   "cpu_effects": cpu_effects()}
    for section in args.sections:
        if section in ("demo", "paper"):
            results["training"][section] = run_training_section(section, args, log)
        elif section == "int8":
            results["int8"] = {**results.get("int8", {}), **run_int8_section(args, log)}
        else:
            results["inference"] = run_inference_section(args, log)
        save(results, out)  # after every section: a long run that stops still leaves its finished sections
    log(f"wrote {out / 'results.md'} and {out / 'results.json'}")
