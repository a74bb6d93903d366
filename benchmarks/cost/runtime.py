"""Inference cost: ONNX Runtime CPU and PyTorch eager latency (interleaved, one process) and peak memory
(one fresh subprocess per runtime, variant and batch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from deploy.latency import latency_stats, measure
from deploy.runners import OnnxrtRunner, TorchRunner

REPO_ROOT = Path(__file__).resolve().parents[2]


def ort_session_options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return so


def _interleaved_samples(runners: dict[tuple[str, str], Any], feed, iters: int, rounds: int):
    """Latency samples of every runner, in `rounds` rounds of rotating order after a warm-up of each."""
    keys = list(runners)
    for key in keys:  # warm-up: allocator, ORT's first-run initialisation
        measure(lambda r=runners[key], f=feed: r.infer(f), warmup=3, iters=1)
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    n = max(1, iters // rounds)
    for r in range(rounds):
        k = r % len(keys)
        for key in keys[k:] + keys[:k]:
            samples[key] += measure(lambda rr=runners[key], f=feed: rr.infer(f), warmup=0, iters=n)
    return samples


def latency_table(
    variants: dict[str, tuple[Path, Any]],
    batches: Sequence[int],
    height: int,
    width: int,
    threads: int,
    iters: int,
    rounds: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """p50/p90 of ORT CPU and torch eager for every variant and batch, interleaved in rounds in one process."""
    torch.set_num_threads(threads)
    runners = {}
    for name, (path, model) in variants.items():
        runners[("onnxrt", name)] = OnnxrtRunner(path, session_options=ort_session_options(threads)).__enter__()
        runners[("torch", name)] = TorchRunner(model).__enter__()
    out: dict[str, Any] = {}
    try:
        for batch in batches:
            x = np.random.default_rng(0).random((batch, 3, height, width), dtype=np.float32)
            samples = _interleaved_samples(runners, {"image": x}, iters, rounds)
            for (rt, name), s in samples.items():
                out.setdefault(rt, {}).setdefault(name, {})[str(batch)] = latency_stats(s, batch)
            for rt in ("onnxrt", "torch"):
                dense = out[rt].get("dense", {}).get(str(batch))
                for name in out[rt]:
                    if dense:
                        st_ = out[rt][name][str(batch)]
                        st_["p50_vs_dense"] = st_["p50_ms"] / dense["p50_ms"]
            log(f"  batch {batch}: " + ", ".join(
                f"{rt}/{nm} p50 {out[rt][nm][str(batch)]['p50_ms']:.2f} ms" for rt in out for nm in out[rt]))
    finally:
        for r in runners.values():
            r.__exit__(None, None, None)
    return out


_MEMPROBE = r"""
import json, resource, sys
import numpy as np
spec = json.loads(sys.argv[1])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
x = np.random.default_rng(0).random((spec["batch"], 3, spec["height"], spec["width"]), dtype=np.float32)
if spec["kind"] == "onnxrt":
    import onnxruntime as ort
    base = rss()
    so = ort.SessionOptions()
    so.intra_op_num_threads = spec["threads"]
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(spec["path"], sess_options=so, providers=["CPUExecutionProvider"])
    loaded = rss()
    for _ in range(3):
        sess.run(None, {"image": x})
else:
    import torch
    import pipeline.models  # the pickled model's classes
    torch.set_num_threads(spec["threads"])
    base = rss()
    model = torch.load(spec["path"], weights_only=False).eval()
    loaded = rss()
    with torch.inference_mode():
        for _ in range(3):
            model(torch.from_numpy(x))
peak = rss()
hwm = next((int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")), None)
print(json.dumps({"baseline_kib": base, "after_load_kib": loaded, "peak_kib": peak, "vmhwm_kib": hwm,
                  "peak_mib": peak / 1024, "increase_mib": (peak - base) / 1024}))
"""


def peak_memory(kind: str, path: Path, batch: int, height: int, width: int, threads: int) -> dict[str, Any]:
    """Peak RSS of a fresh process that imports only the runtime (baseline), loads the model and runs `batch`
    3 times. ru_maxrss is the process's high-water mark in KiB (Linux); tracemalloc would miss ORT's arena."""
    spec = {"kind": kind, "path": str(path), "batch": batch, "height": height, "width": width, "threads": threads}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # Linux keeps ru_maxrss across fork + exec: a child forked from this (large) process would start at our
    # RSS. A small /bin/sh forks the probe instead ('"$@"; exit $?' keeps sh from exec-ing it in place).
    cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", _MEMPROBE, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])
