#!/usr/bin/env python3
"""Every GPU-side check in one command, for whoever has a CUDA machine (with or without TensorRT).

Steps: probe the environment; make (or reuse) a run with 2:4 hardening up to `validate` (by default the demo
preset's model, `scene_aspp`, trained only a few steps: the checks measure latency and runtime agreement, not
accuracy); build dense and sparse TensorRT engines from the same ONNX (when TensorRT and CUDA exist) and check them
against the saved reference with `deploy.engine_build.build_and_check_engines`, the same code as the build stage;
time PyTorch CUDA FP32/FP16; run the ONNX Runtime GPU route (CUDA and TensorRT providers) when onnxruntime-gpu
works. Whatever cannot run is listed as skipped with the reason. Everything is written to `<run-dir>/gpu_check/`
(engines, logs, `gpu_check.json`).

    python scripts/gpu_check.py                        # demo model, short training, in runs/gpu_check
    python scripts/gpu_check.py --config tiny          # the seconds-scale test model instead
    python scripts/gpu_check.py --run-dir runs/demo    # reuse a run that has export/ and validate/
    python scripts/gpu_check.py --require-tensorrt     # missing TensorRT is an error (exit 1)

Exit codes: 0 every check that ran passed (skips allowed); 1 an error, or --require-tensorrt without TensorRT;
3 a tolerance or parity check failed.

Status of this script: it has run on the CPU machine only (everything skipped; and with the TensorRT test double
in unit tests). No real TensorRT build has ever run through it.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from deploy.engine_build import ENGINE_KINDS, build_and_check_engines  # noqa: E402 - needs REPO on sys.path
from deploy.engine_check import (  # noqa: E402
    CheckSettings,
    ReferenceData,
    check_ort_gpu,
    check_settings_from_config,
    load_reference,
    torch_cuda_latencies,
)
from deploy.environment import cuda_skip_reason, probe_gpu_environment, tensorrt_skip_reason  # noqa: E402
from deploy.runners import TensorRTRunner  # noqa: E402
from pipeline.artifacts import atomic_write_json  # noqa: E402
from pipeline.config import RunConfig, load_config  # noqa: E402
from pipeline.models.hardened import load_hardened  # noqa: E402

# A fresh run: the demo model at the demo resolution (so latencies mean something), trained just long enough to
# export; no dense reference run and a small procedural dataset keep it to a few CPU minutes.
FRESH_RUN_OVERRIDES = (
    "train.steps=40",
    "train.checkpoint_every=20",
    "dense_reference=null",
    "data.num_train=64",
    "data.num_val=32",
)


@dataclass
class Row:
    check: str
    status: str  # ok | FAILED | ERROR | skipped
    detail: str = ""
    p50_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFiles:
    """The artifacts of a prepared run that the checks read."""

    run: Path
    cfg: RunConfig
    onnx: Path
    model_pt: Path
    reference: ReferenceData

    @classmethod
    def load(cls, run: Path) -> RunFiles:
        return cls(
            run=run,
            cfg=load_config(str(run / "config.yaml")),
            onnx=run / "export" / "model.onnx",
            model_pt=run / "harden" / "model.pt",
            reference=load_reference(run / "validate", run / "harden" / "model.pt"),
        )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--run-dir", type=Path, default=None, help="reuse this run (needs export/ and validate/)")
    p.add_argument(
        "--config",
        default="demo",
        help="preset or YAML for a fresh run (default: demo, shortened by FRESH_RUN_OVERRIDES)",
    )
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
    if args.config == "demo":
        for override in FRESH_RUN_OVERRIDES:
            cmd += ["--set", override]
    if (
        importlib.util.find_spec("onnxsim") is None
    ):  # GPU images often lack onnxsim; export without simplifying
        cmd += ["--set", "export.simplifier=none"]
    print("preparing run: pipeline " + " ".join(cmd[3:]), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"`pipeline run all` exited {proc.returncode}: " + " | ".join(tail))
    return run


def _check_row(name: str, res: dict[str, Any]) -> Row:
    """One table row from a `run_engine_checks` result."""
    heads = res["heads"]
    fails = [h for h, c in heads.items() if not c["passed"]]
    worst = max(heads, key=lambda h: float("inf") if heads[h]["max_abs"] is None else heads[h]["max_abs"])
    max_abs = heads[worst]["max_abs"]
    detail = f"max_abs {'nan' if max_abs is None else format(max_abs, '.3g')} ({worst})"
    if fails:
        detail = f"outside tolerance: {', '.join(fails)}; " + detail
    if res["metrics_agree"] is False:
        detail += "; task metrics differ beyond build.miou_tol"
    lat = {b: e["end_to_end"]["p50_ms"] for b, e in res["latency"].items()}
    return Row(name, "ok" if res["passed"] else "FAILED", detail, lat)


def _tensorrt_rows(
    run: RunFiles, settings: CheckSettings, env: dict, out: Path, device: str
) -> tuple[list[Row], dict]:
    cfg = run.cfg
    reason = tensorrt_skip_reason(env)
    names = {kind: f"TensorRT {kind} {cfg.build.precision}" for kind, _ in ENGINE_KINDS}
    if reason:
        return [Row(names[k], "skipped", reason) for k in names], {"status": "skipped", "reason": reason}
    res = build_and_check_engines(
        cfg,
        run.onnx,
        out,
        run.reference,
        env,
        settings=settings,
        runner_factory=lambda p: TensorRTRunner(p, device=device),
    )
    rows = []
    for kind, entry in res["engines"].items():
        if "error" in entry:
            rows.append(Row(names[kind], "ERROR", entry["error"]))
            continue
        row = _check_row(names[kind], entry["checks"])
        row.detail += f"; built in {entry['build']['build_seconds']:.1f}s"
        rep = res["sparse_layers"]
        if kind == "sparse" and rep is not None:
            row.detail += (
                f"; 2:4 layers {rep['hardened_2to4']}, eligible {rep['hardened_eligible']}, "
                f"picked {rep['hardened_picked']}"
            )
            if not run.reference.two_four_layers:
                row.detail += " (this run has no 2:4 layers; harden.pattern is not 2:4)"
            if res["note"]:
                row.detail += f"; note: {res['note']}"
        rows.append(row)
    return rows, res


def _torch_rows(run: RunFiles, settings: CheckSettings, env: dict) -> tuple[list[Row], dict]:
    reason = cuda_skip_reason(env)
    if reason:
        return [Row(f"PyTorch CUDA {d}", "skipped", reason) for d in ("fp32", "fp16")], {}
    model, _ = load_hardened(run.model_pt)
    stats = torch_cuda_latencies(model, settings, (run.cfg.data.height, run.cfg.data.width))
    rows = [
        Row(f"PyTorch CUDA {d}", "ERROR", s["error"])
        if "error" in s
        else Row(
            f"PyTorch CUDA {d}", "ok", f"eager, {env['gpu']['name']}", {b: x["p50_ms"] for b, x in s.items()}
        )
        for d, s in stats.items()
    ]
    return rows, stats


def _ort_rows(run: RunFiles, settings: CheckSettings, env: dict, out: Path) -> tuple[list[Row], dict]:
    rows, report = [], {}
    fp16 = run.cfg.build.precision == "fp16"
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        name = f"ORT {'CUDA' if provider.startswith('CUDA') else 'TensorRT'} EP {run.cfg.build.precision}"
        res = check_ort_gpu(run.onnx, provider, fp16, run.reference, settings, out / "ort_cache", env)
        report[provider] = res
        if res["status"] == "skipped":
            rows.append(Row(name, "skipped", res["reason"]))
        elif res["status"] == "error":
            rows.append(Row(name, "ERROR", res["reason"]))
        else:
            rows.append(_check_row(name, res["checks"]))
    return rows, report


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
        run = RunFiles.load(_prepare_run(args))
    except Exception as e:  # noqa: BLE001 - the script's one-line error for a run that cannot be prepared
        print(f"error: could not prepare a run: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    batches = [int(x) for x in args.batches.split(",")] if args.batches else None
    settings = check_settings_from_config(
        run.cfg, latency_batches=batches, warmup=args.warmup, iters=args.iters
    )
    out = args.out or run.run / "gpu_check"
    out.mkdir(parents=True, exist_ok=True)
    trt_rows, trt_report = _tensorrt_rows(run, settings, env, out, args.device)
    torch_rows, torch_report = _torch_rows(run, settings, env)
    ort_rows, ort_report = _ort_rows(run, settings, env, out)
    rows = trt_rows + torch_rows + ort_rows
    report: dict[str, Any] = {
        "environment": env,
        "run_dir": str(run.run),
        "reference": run.reference.source,
        "settings": settings.to_dict(),
        "tensorrt": trt_report,
        "torch_cuda": torch_report,
        "ort_gpu": ort_report,
        "rows": [r.__dict__ for r in rows],
    }
    atomic_write_json(out / "gpu_check.json", report)
    print(f"run: {run.run} | reference: validate/{run.reference.source} | details: {out / 'gpu_check.json'}")
    _print_table(rows, list(settings.latency_batches))
    if any(r.status == "ERROR" for r in rows):
        return 1
    return 3 if any(r.status == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
