"""Latency measurement and summary statistics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np


def measure(
    fn: Callable[[], object], warmup: int, iters: int, sync: Callable[[], None] | None = None
) -> list[float]:
    """Time `iters` calls of `fn` after `warmup` untimed calls.

    Args:
        fn: The work to time (one inference).
        warmup: Untimed calls first (allocator, autotuning, lazy init).
        iters: Timed calls.
        sync: Device synchronisation (e.g. `torch.cuda.synchronize`); called before each clock read, so
            asynchronous GPU work is inside the interval it belongs to and none leaks into the next.

    Returns:
        Per-call wall time in milliseconds, from `time.perf_counter_ns`.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got {iters}, {warmup}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if sync is not None:
            sync()
        start = time.perf_counter_ns()
        fn()
        if sync is not None:
            sync()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def latency_stats(samples_ms: Sequence[float], batch: int) -> dict[str, float]:
    """Summarise latency samples of one batch size.

    Percentiles use numpy's default linear interpolation; `std` is the population standard deviation;
    `throughput_ips` (images per second) is `batch / mean latency`.

    Returns:
        `{"n", "batch", "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
        "throughput_ips"}`.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0 or batch < 1:
        raise ValueError(f"need at least one sample and batch >= 1, got {x.size} samples, batch {batch}")
    p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99])
    mean = float(x.mean())
    return {
        "n": int(x.size),
        "batch": int(batch),
        "mean_ms": mean,
        "std_ms": float(x.std()),
        "min_ms": float(x.min()),
        "max_ms": float(x.max()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "throughput_ips": float(batch * 1000.0 / mean) if mean > 0 else float("inf"),
    }
