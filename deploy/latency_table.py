"""Side-by-side ONNX Runtime CPU latency of several ONNX files, measured in one process.

On a shared, noisy machine absolute times drift by tens of percent between minutes; ratios between models
only mean something when the models see the same noise. So all sessions are created up front and timed in
interleaved rounds: every round runs a short block of each (model, batch, threads) configuration, in
rotating order, and the samples of all rounds are pooled before taking percentiles
(`deploy.latency.latency_stats`). Sizes are raw and gzip level 9 (what sparse weights save on disk).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from deploy.latency import latency_stats, measure
from pipeline.errors import MissingArtifactError, PipelineError

__all__ = ["file_sizes", "latency_table", "format_latency_table"]


def file_sizes(path: str | Path) -> dict[str, int]:
    """`{"raw_bytes", "gzip_bytes"}` of a file (gzip level 9, in memory; ONNX files here are small)."""
    data = Path(path).read_bytes()
    return {"raw_bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Several sessions stay open side by side; idle intra-op threads that spin-wait would steal the cores the
    # timed session runs on, so multi-thread rows measured the neighbours' spinning. Threads sleep when idle.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def latency_table(
    models: Mapping[str, str | Path],
    input_shape: Sequence[int],
    *,
    batches: Sequence[int] = (1, 8),
    threads: Sequence[int] | None = None,
    warmup: int = 5,
    rounds: int = 5,
    iters_per_round: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Time every model at every batch size and thread count, interleaved.

    Args:
        models: Stable name -> ONNX path, e.g. `{"dense_fp32": ..., "pruned_fp32": ..., "pruned_int8": ...}`.
        input_shape: One image `[3, H, W]` (or `[1, 3, H, W]`); batches are stacked from it.
        batches: Batch sizes (the graphs need a dynamic batch axis).
        threads: intra-op thread counts; default `(1, os.cpu_count())` ("one thread and all cores").
        warmup: Untimed runs per configuration before the first round.
        rounds: Interleaved rounds; each times `iters_per_round` runs of every configuration.

    Returns:
        `{"machine": {...}, "settings": {...}, "sizes": {model: {...}}, "rows": [{"model", "batch",
        "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips", "n", "ratio_p50"}]}`;
        `ratio_p50` is p50 over the first model's p50 at the same batch and threads.

    Raises:
        MissingArtifactError: A model file is missing.
        PipelineError: No models, or rounds/iters < 1.
    """
    if not models:
        raise PipelineError("latency_table needs at least one ONNX file")
    if rounds < 1 or iters_per_round < 1 or warmup < 0:
        raise PipelineError(
            f"latency_table needs rounds, iters_per_round >= 1 (got {rounds}, {iters_per_round})"
        )
    paths = {name: Path(p) for name, p in models.items()}
    for name, p in paths.items():
        if not p.is_file():
            raise MissingArtifactError(f"ONNX file for '{name}' not found: {p}")
    threads = tuple(threads) if threads is not None else tuple(sorted({1, os.cpu_count() or 1}))
    shape = tuple(input_shape)[-3:]
    rng = np.random.default_rng(seed)
    configs = []  # (model, batch, threads, callable)
    for t in threads:
        for name, path in paths.items():
            sess = _session(path, t)
            input_name = sess.get_inputs()[0].name
            for b in batches:
                feed = {input_name: rng.random((b, *shape), dtype=np.float32)}
                configs.append((name, b, t, lambda s=sess, f=feed: s.run(None, f)))
    samples: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    for *_, fn in configs:  # warm-up: allocator, kernel selection, caches
        for _ in range(warmup):
            fn()
    for r in range(rounds):
        order = list(range(len(configs)))
        order = order[r % len(order) :] + order[: r % len(order)]  # rotate who goes first each round
        for i in order:
            samples[i] += measure(configs[i][3], 0, iters_per_round)
    rows = []
    for i, (name, b, t, _) in enumerate(configs):
        s = latency_stats(samples[i], b)
        rows.append(
            {
                "model": name,
                "batch": b,
                "threads": t,
                **{k: s[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips", "n")},
            }
        )
    first = next(iter(paths))
    base = {(r["batch"], r["threads"]): r["p50_ms"] for r in rows if r["model"] == first}
    for r in rows:
        r["ratio_p50"] = r["p50_ms"] / base[r["batch"], r["threads"]]
    rows.sort(key=lambda r: (r["batch"], r["threads"], list(paths).index(r["model"])))
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "provider": "CPUExecutionProvider",
        },
        "settings": {
            "input_shape": list(shape),
            "batches": list(batches),
            "threads": list(threads),
            "warmup": warmup,
            "rounds": rounds,
            "iters_per_round": iters_per_round,
            "baseline": first,
        },
        "sizes": {name: file_sizes(p) for name, p in paths.items()},
        "rows": rows,
    }


def format_latency_table(table: Mapping[str, Any]) -> str:
    """Markdown: one latency row per (batch, threads, model), then the sizes."""
    lines = [
        "| model | batch | threads | p50 ms | p90 ms | p99 ms | vs " + table["settings"]["baseline"] + " |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['threads']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
            f"{r['p99_ms']:.3f} | {r['ratio_p50']:.2f}x |"
        )
    lines += ["", "| model | raw bytes | gzip bytes |", "|---|---:|---:|"]
    for name, s in table["sizes"].items():
        lines.append(f"| {name} | {s['raw_bytes']:,} | {s['gzip_bytes']:,} |")
    return "\n".join(lines)
