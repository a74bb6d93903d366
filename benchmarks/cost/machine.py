"""The machine a cost result belongs to, the clocks, sample statistics, and element-wise op costs of this CPU."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from benchmarks.provenance import git_state


def _optional_version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, core counts, library versions and load: absolute times only mean something with these."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_start": list(os.getloadavg()),
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        # optional packages: their absence is recorded as None
        "onnxsim": _optional_version("onnxsim"),
        "zstandard": _optional_version("zstandard"),
    }
    info.update(git_state())
    return info


def summarize(xs: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, extremes and mean of a sample (milliseconds in, milliseconds out)."""
    a = np.asarray(list(xs), dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    p25, p50, p75 = np.percentile(a, [25, 50, 75])
    return {
        "n": int(a.size),
        "median": float(p50),
        "p25": float(p25),
        "p75": float(p75),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def clock() -> tuple[float, float]:
    """(wall, process CPU) seconds."""
    return time.perf_counter(), time.process_time()


def repeat_cpu_ms(fn: Callable[[], Any], reps: int) -> list[float]:
    """CPU milliseconds of `reps` calls of `fn`."""
    out = []
    for _ in range(reps):
        c = time.process_time()
        fn()
        out.append((time.process_time() - c) * 1e3)
    return out


def cpu_effects(n: int = 1 << 20, reps: int = 9) -> dict[str, Any]:
    """Adam's element-wise ops on normal, subnormal and zero values on this CPU (median CPU ms per 2^20 values).

    Pruned weights get exactly zero gradients: their Adam moments decay towards zero and pass through the
    subnormal range, and a fresh optimizer on pruned weights holds exact zeros in exp_avg_sq.
    """
    out: dict[str, Any] = {"n": n}
    d = torch.full((n,), 1e-8)
    g = torch.zeros(n)
    for name, val in (("normal (1e-3)", 1e-3), ("subnormal (1e-40)", 1e-40), ("zero", 0.0)):
        a = torch.full((n,), val)
        out[name] = {
            "sqrt": statistics.median(repeat_cpu_ms(lambda a=a: a.sqrt(), reps)),
            "lerp_": statistics.median(repeat_cpu_ms(lambda a=a: a.clone().lerp_(g, 0.1), reps)),
            "mul_": statistics.median(repeat_cpu_ms(lambda a=a: a.clone().mul_(0.999), reps)),
            "addcdiv_": statistics.median(repeat_cpu_ms(lambda a=a: d.clone().addcdiv_(a, d, value=-1e-3), reps)),
        }
    return out
