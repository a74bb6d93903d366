#!/usr/bin/env python3
"""Every GPU-side check in one command, for whoever has a CUDA machine (with or without TensorRT).

Steps: probe the environment; make (or reuse) a small run with 2:4 hardening up to `validate` on CPU-cheap
settings; build dense and sparse FP16 TensorRT engines from the same ONNX (when TensorRT and CUDA exist) and check
them against the saved ONNX Runtime outputs and, if saved, the targets; time PyTorch CUDA FP32/FP16; run the ONNX
Runtime GPU route (CUDA and TensorRT providers) when onnxruntime-gpu works. Whatever cannot run is listed as
skipped with the reason. Everything is written to `<run-dir>/gpu_check/` (engines, logs, `gpu_check.json`).

    python scripts/gpu_check.py                        # tiny run in runs/gpu_check, then all checks
    python scripts/gpu_check.py --run-dir runs/demo    # reuse a run that has export/ and validate/
    python scripts/gpu_check.py --require-tensorrt     # missing TensorRT is an error (exit 1)

Exit codes: 0 every check that ran passed (skips allowed); 1 an error, or --require-tensorrt without TensorRT;
3 a tolerance or parity check failed.

Status of this script: it has run on the CPU machine only (everything skipped; and with a fake tensorrt in unit
tests). No real TensorRT build has ever run through it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class Row:
    check: str
    status: str  # ok | FAILED | ERROR | skipped
    detail: str = ""
    p50_ms: dict[str, float] = field(default_factory=dict)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--run-dir", type=Path, default=None, help="reuse this run (needs export/ and validate/)")
    p.add_argument("--config", default="tiny", help="preset or YAML for a fresh run (default: tiny)")
    p.add_argument("--pattern", default="2:4", help="harden.pattern for a fresh run (default: 2:4)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <run-dir>/gpu_check)")
    p.add_argument(
        "--batches", default=None, help="latency batch sizes, e.g. 1,8 (default: build.latency_batches)"
    )
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--device", default="cuda:0", help=argparse.SUPPRESS)  # "cpu" only for tests with a fake
    p.add_argument("--require-tensorrt", action="store_true", help="exit 1 when TensorRT cannot run here")
    return p.parse_args(argv)


def _prepare_run(args: argparse.Namespace) -> Path:
    """Reuse --run-dir when it already holds the artifacts, else run the pipeline up to validate in a subprocess."""
    run = args.run_dir or Path("runs") / "gpu_check"
    if (run / "export" / "model.onnx").exists() and (run / "validate" / "inputs.npz").exists():
        return run
    cmd = [
        sys.executable,
        "-c",
        "import sys; from pipeline.cli import main; sys.exit(main())",
        "run",
        "all",
        "--config",
        args.config,
        "--run-dir",
        str(run),
        "--until",
        "validate",
        "--set",
        f'harden.pattern="{args.pattern}"',  # quoted: YAML 1.1 reads a bare 2:4 as the integer 124
    ]
    if importlib.util.find_spec("onnxsim") is None:  # the GPU image has no onnxsim (environment.md §1)
        cmd += ["--set", "export.simplifier=none"]
    print("preparing run: pipeline " + " ".join(cmd[3:]), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"`pipeline run all` exited {proc.returncode}: " + " | ".join(tail))
    return run


def _artifacts(run: Path) -> dict[str, Any]:
    from deploy.io import load_npz
    from pipeline.config import load_config

    cfg = load_config(str(run / "config.yaml"))
    val = run / "validate"
    ref_file = (
        val / "outputs_onnxrt.npz" if (val / "outputs_onnxrt.npz").exists() else val / "outputs_torch.npz"
    )
    hardened = []
    sparsity = run / "harden" / "sparsity.json"
    if sparsity.exists():
        hardened = [
            la["name"]
            for la in json.loads(sparsity.read_text()).get("layers", [])
            if la.get("pattern") == "2:4"
        ]
    return {
        "cfg": cfg,
        "onnx": run / "export" / "model.onnx",
        "inputs": load_npz(val / "inputs.npz"),
        "reference": load_npz(ref_file),
        "reference_file": ref_file.name,
        "targets": load_npz(val / "targets.npz") if (val / "targets.npz").exists() else None,
        "hardened_2to4": hardened,
        "model_pt": run / "harden" / "model.pt",
    }


def _check_row(name: str, res: dict[str, Any]) -> Row:
    fails = [c["name"] for c in res["comparisons"] if not c["passed"]]
    worst = max(
        res["comparisons"], key=lambda c: c["max_abs"] if c["max_abs"] == c["max_abs"] else float("inf")
    )
    detail = f"max_abs {worst['max_abs']:.3g} ({worst['name']})"
    if fails:
        detail = f"outside tolerance: {', '.join(fails)}; " + detail
    if res.get("metrics_passed") is False:
        detail += "; task metrics differ beyond build.miou_tol"
    status = "ok" if not fails and res.get("metrics_passed") is not False else "FAILED"
    lat = {b: e["end_to_end"]["p50_ms"] for b, e in res["latency"].items()}
    return Row(name, status, detail, lat)


def _run_checks(a: dict[str, Any], args: argparse.Namespace, target: Path, factory: Any) -> dict[str, Any]:
    from deploy.engine_check import run_engine_checks

    b = a["cfg"].build
    return run_engine_checks(
        target,
        a["inputs"],
        a["reference"],
        a["targets"],
        a["cfg"].tasks,
        a["cfg"].data.num_classes,
        atol=b.atol,
        rtol=a["cfg"].validate.rtol,
        latency_batches=args.batch_list,
        warmup=args.warmup_n,
        iters=args.iters_n,
        batch_size=min(b.opt_batch, b.max_batch),
        miou_tol=b.miou_tol,
        runner_factory=factory,
    )


def _tensorrt_rows(
    a: dict[str, Any], args: argparse.Namespace, env: dict, out: Path, report: dict
) -> list[Row]:
    from deploy.environment import sparse_note, tensorrt_skip_reason
    from deploy.tensorrt_build import build_engine
    from deploy.tensorrt_logs import onnx_node_layer_map, sparse_layer_report
    from deploy.tensorrt_plan import plan_build
    from deploy.tensorrt_runner import TensorRTRunner

    reason = tensorrt_skip_reason(env)
    cfg = a["cfg"]
    if reason:
        return [Row(f"TensorRT {v} {cfg.build.precision}", "skipped", reason) for v in ("dense", "sparse")]
    rows = []
    hw = (cfg.data.height, cfg.data.width) if cfg.export.dynamic_hw else None
    for variant, sparse in (("dense", False), ("sparse", True)):
        name = f"TensorRT {variant} {cfg.build.precision}"
        try:
            plan = plan_build(
                env["tensorrt"]["version"],
                cfg.build,
                a["onnx"],
                sparse,
                hw=hw,
                timing_cache_path=out / "timing.cache",
            )
            side = build_engine(
                plan, a["onnx"], out / f"{variant}.engine", log_path=out / f"{variant}.build.log"
            )
            res = _run_checks(
                a, args, out / f"{variant}.engine", lambda p: TensorRTRunner(p, device=args.device)
            )
            row = _check_row(name, res)
            row.detail += f"; built in {side['build_seconds']:.1f}s"
            entry = {"build": side, "checks": res}
            if sparse:
                rep = sparse_layer_report(
                    side["sparsity"]["eligible"],
                    side["sparsity"]["picked"],
                    a["hardened_2to4"],
                    onnx_node_layer_map(a["onnx"]),
                )
                entry["sparse_layers"] = rep
                row.detail += (
                    f"; 2:4 layers {rep['hardened_2to4']}, eligible {rep['hardened_eligible']}, "
                    f"picked {rep['hardened_picked']}"
                )
                if not a["hardened_2to4"]:
                    row.detail += " (this run has no 2:4 layers; harden.pattern is not 2:4)"
                note = sparse_note(env)
                if note:
                    row.detail += f"; note: {note}"
            report["tensorrt"][variant] = entry
        except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others
            report["tensorrt"][variant] = {"error": traceback.format_exc()}
            row = Row(name, "ERROR", f"{type(e).__name__}: {e}")
        rows.append(row)
    return rows


def _torch_rows(a: dict[str, Any], args: argparse.Namespace, env: dict, report: dict) -> list[Row]:
    from deploy.engine_check import torch_cuda_latency
    from deploy.environment import cuda_skip_reason

    reason = cuda_skip_reason(env)
    if reason:
        return [Row(f"PyTorch CUDA {d}", "skipped", reason) for d in ("fp32", "fp16")]
    from pipeline.models.hardened import load_hardened_model

    rows = []
    model, _ = load_hardened_model(a["model_pt"])
    hw = tuple(a["inputs"][next(iter(a["inputs"]))].shape[-2:])
    for dtype in ("fp32", "fp16"):
        try:
            stats = torch_cuda_latency(model, args.batch_list, dtype, args.warmup_n, args.iters_n, hw=hw)
            report["torch_cuda"][dtype] = stats
            rows.append(
                Row(
                    f"PyTorch CUDA {dtype}",
                    "ok",
                    f"eager, {env['gpu']['name']}",
                    {b: s["p50_ms"] for b, s in stats.items()},
                )
            )
        except Exception as e:  # noqa: BLE001
            report["torch_cuda"][dtype] = {"error": traceback.format_exc()}
            rows.append(Row(f"PyTorch CUDA {dtype}", "ERROR", f"{type(e).__name__}: {e}"))
    return rows


def _ort_rows(a: dict[str, Any], args: argparse.Namespace, env: dict, out: Path, report: dict) -> list[Row]:
    from deploy.ort_gpu import OrtGpuRunner, ort_gpu_skip_reason

    rows = []
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        name = f"ORT {'CUDA' if provider.startswith('CUDA') else 'TensorRT'} EP fp16"
        reason = ort_gpu_skip_reason(provider, env)
        if reason:
            rows.append(Row(name, "skipped", reason))
            continue
        try:
            res = _run_checks(
                a, args, a["onnx"], lambda p, pr=provider: OrtGpuRunner(p, pr, True, out / "ort_cache")
            )
            report["ort_gpu"][provider] = res
            rows.append(_check_row(name, res))
        except Exception as e:  # noqa: BLE001
            report["ort_gpu"][provider] = {"error": traceback.format_exc()}
            rows.append(Row(name, "ERROR", f"{type(e).__name__}: {e}"))
    return rows


def _print_table(rows: list[Row], batches: list[int]) -> None:
    heads = ["check", "status"] + [f"p50 ms b={b}" for b in batches] + ["detail"]
    table = [
        [r.check, r.status]
        + [f"{r.p50_ms[str(b)]:.3f}" if str(b) in r.p50_ms else "-" for b in batches]
        + [r.detail]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *table, strict=True)]
    widths[-1] = 0
    for line in [heads, ["-" * w for w in widths[:-1]] + ["------"], *table]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from deploy.environment import probe_gpu_environment, tensorrt_skip_reason

    env = probe_gpu_environment()
    gpu = env["gpu"]
    print(
        f"python {env['python']} | torch {env['torch']['version']} (CUDA build {env['torch']['cuda_build']}) | "
        f"GPU {gpu['name'] + ' sm' + str(gpu['sm']) if gpu else 'none'} | TensorRT {env['tensorrt']['version']} | "
        f"onnxruntime {env['onnxruntime']['version']} ({env['onnxruntime']['flavour']}: "
        f"{', '.join(env['onnxruntime']['providers'])})"
    )
    trt_reason = tensorrt_skip_reason(env)
    if args.require_tensorrt and trt_reason:
        print(f"error: TensorRT is required but cannot run here: {trt_reason}", file=sys.stderr)
        return 1
    try:
        run = _prepare_run(args)
        a = _artifacts(run)
    except Exception as e:  # noqa: BLE001 - the script's one-line error for a run that cannot be prepared
        print(f"error: could not prepare a run: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    b = a["cfg"].build
    args.batch_list = [int(x) for x in args.batches.split(",")] if args.batches else list(b.latency_batches)
    args.warmup_n = b.warmup if args.warmup is None else args.warmup
    args.iters_n = b.iters if args.iters is None else args.iters
    out = args.out or run / "gpu_check"
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "environment": env,
        "run_dir": str(run),
        "reference": a["reference_file"],
        "tensorrt": {},
        "torch_cuda": {},
        "ort_gpu": {},
    }
    rows = (
        _tensorrt_rows(a, args, env, out, report)
        + _torch_rows(a, args, env, report)
        + _ort_rows(a, args, env, out, report)
    )
    report["rows"] = [r.__dict__ for r in rows]
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"run: {run} | reference: validate/{a['reference_file']} | details: {out / 'gpu_check.json'}")
    _print_table(rows, args.batch_list)
    if any(r.status == "ERROR" for r in rows):
        return 1
    return 3 if any(r.status == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
