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

Writes `<out>/results.json` and `<out>/results.md` (default `benchmarks/results/cost`); intermediate files
(checkpoints, ONNX) go to `--work` (default `.cache/cost`).
"""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import gc
import gzip
import json
import lzma
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trainers.sparsity.layers import SparseConv2d, soft_threshold, soft_threshold_reference

DEFAULT_OUT = Path("benchmarks/results/cost")
DEFAULT_WORK = Path(".cache/cost")
TASKS = ["seg", "depth", "normal"]
VARIANTS = ["dense", "adapmtl", "naive"]


# ---------------------------------------------------------------------------------------------------------
# machine and statistics


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
    }
    for mod in ("onnx", "onnxruntime", "onnxsim"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    try:
        import zstandard  # noqa: F401

        info["zstandard"] = zstandard.__version__
    except ImportError:
        info["zstandard"] = None
    from benchmarks.provenance import git_state

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


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# ---------------------------------------------------------------------------------------------------------
# training variants


class NaiveSparseConv2d(SparseConv2d):
    """A SparseConv2d whose soft threshold is the plain autograd formula (for the naive timing only)."""

    def effective_weight(self) -> Tensor:
        if self.tau is not None:
            return soft_threshold_reference(self.weight, self.tau)
        return super().effective_weight()


class _SoftThresholdV0(torch.autograd.Function):
    """The custom autograd as it was before the cost work (commit 6bf3250), for the component table only:
    out-of-place forward, an int8 sign(W_eff) saved for backward."""

    @staticmethod
    def forward(ctx, weight: Tensor, tau: Tensor) -> Tensor:  # type: ignore[override]
        out = torch.sign(weight) * (weight.abs() - tau).clamp_min(0)
        ctx.save_for_backward(torch.sign(out).to(torch.int8))
        ctx.tau_shape = tau.shape
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (signed_keep,) = ctx.saved_tensors
        grad_w = grad * signed_keep.abs() if ctx.needs_input_grad[0] else None
        grad_tau = None
        if ctx.needs_input_grad[1]:
            grad_tau = -(grad * signed_keep).sum().reshape(ctx.tau_shape)
        return grad_w, grad_tau


IMPLEMENTATIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "current": soft_threshold,
    "v0 (before this benchmark)": _SoftThresholdV0.apply,
    "naive autograd": soft_threshold_reference,
}


def synthetic_dataset(n: int, height: int, width: int, num_classes: int, seed: int = 0):
    """Random images and labels of a real dataset's shape (the cost does not depend on the values)."""
    from pipeline.data.base import MultiTaskTensorDataset

    g = torch.Generator().manual_seed(seed)
    normal = torch.nn.functional.normalize(torch.randn(n, 3, height, width, generator=g), dim=1)
    return MultiTaskTensorDataset(
        name="synthetic",
        class_names=[f"class{i}" for i in range(num_classes)],
        tasks=TASKS,
        image=torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=g),
        seg=torch.randint(0, num_classes, (n, height, width), generator=g),
        depth=torch.rand(n, 1, height, width, generator=g) * 5 + 0.5,
        normal=normal,
    )


def make_trainer(cfg, dataset, variant: str, total_steps: int):
    """A Trainer exactly as `train_run` builds it (same seed, init, method, weighting, loss) for a variant."""
    from trainers.assembly import build_model, init_conv_weights_
    from trainers.loop import Trainer
    from trainers.objectives import MultiTaskLoss
    from trainers.sparsity.methods import build_method
    from trainers.weighting import build_weighting

    method_name = "dense" if variant == "dense" else "adapmtl"
    scfg = dataclasses.replace(cfg.sparsity, method=method_name)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, dataset.num_classes)
    init_conv_weights_(model, cfg.train.init, cfg.train.seed)
    model.to(cfg.train.device)
    method, spec = build_method(scfg, total_steps)
    method.attach(model)
    if variant == "naive":
        for layer in method.layers.values():
            layer.__class__ = NaiveSparseConv2d
    kind = spec.weighting if cfg.train.weighting.kind == "auto" else cfg.train.weighting.kind
    weighting = build_weighting(kind, list(cfg.tasks), cfg.train.weighting)
    objective = MultiTaskLoss(cfg.tasks, cfg.train.depth_loss)
    return Trainer(model, method, weighting, objective, dataset, cfg.train, steps=total_steps)


class PhaseTimer:
    """Wraps a trainer's model.forward, optimizer.step, method hooks and Tensor.backward with clocks.

    The wrappers add a few microseconds per step. Times accumulate into `current` (a dict reset per step).
    """

    _backward_owner: PhaseTimer | None = None
    _orig_backward = torch.Tensor.backward

    def __init__(self, trainer):
        self.current: dict[str, list[float]] = {}
        self._wrap(trainer.model, "forward", "forward")
        self._wrap(trainer.optimizer, "step", "optimizer")
        self._wrap(trainer.method, "before_forward", "before_forward")
        self._wrap(trainer.method, "after_backward", "after_backward")
        self._wrap(trainer.weighting, "observe", "weighting")

    def _add(self, key: str, wall: float, cpu: float) -> None:
        acc = self.current.setdefault(key, [0.0, 0.0])
        acc[0] += wall
        acc[1] += cpu

    def _wrap(self, obj: Any, name: str, key: str) -> None:
        fn = getattr(obj, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            w, c = _clock()
            try:
                return fn(*args, **kwargs)
            finally:
                w2, c2 = _clock()
                self._add(key, w2 - w, c2 - c)

        setattr(obj, name, wrapped)

    def __enter__(self) -> PhaseTimer:
        self.current = {}
        PhaseTimer._backward_owner = self
        return self

    def __exit__(self, *exc: object) -> None:
        PhaseTimer._backward_owner = None

    @staticmethod
    def install_backward_hook() -> None:
        orig = PhaseTimer._orig_backward

        def backward(tensor: Tensor, *args: Any, **kwargs: Any) -> Any:
            owner = PhaseTimer._backward_owner
            w, c = _clock()
            try:
                return orig(tensor, *args, **kwargs)
            finally:
                if owner is not None:
                    w2, c2 = _clock()
                    owner._add("backward", w2 - w, c2 - c)

        torch.Tensor.backward = backward  # type: ignore[method-assign]

    @staticmethod
    def remove_backward_hook() -> None:
        torch.Tensor.backward = PhaseTimer._orig_backward  # type: ignore[method-assign]


def time_training(
    cfg,
    dataset,
    *,
    warmup: int,
    timed: int,
    start_step: int,
    total_steps: int,
    variants: Sequence[str] = VARIANTS,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Interleaved step timing of `variants` with the project's Trainer. Returns (results, trainers).

    Steps: 0, then `start_step`, `start_step + 1`, ...; the first `warmup` are not timed. One iteration is
    `train_step(s)` plus `_log(s)` when `s % log_every == 0`, as in `Trainer.run`.
    """
    if warmup < 1 or timed < 1:
        raise ValueError("need warmup >= 1 (step 0) and timed >= 1")
    trainers = {v: make_trainer(cfg, dataset, v, total_steps) for v in variants}
    timers = {v: PhaseTimer(t) for v, t in trainers.items()}
    steps = [0] + list(range(start_step, start_step + warmup - 1 + timed))
    records: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    PhaseTimer.install_backward_hook()
    try:
        for t in trainers.values():
            t.method.prepare(t)  # Trainer.run does this before step 0 of a fresh run
        for i, s in enumerate(steps):
            k = i % len(variants)
            for v in list(variants[k:]) + list(variants[:k]):
                tr = trainers[v]
                with timers[v] as timer:
                    w0, c0 = _clock()
                    losses = tr.train_step(s)
                    w1, c1 = _clock()
                    logged = s % tr.cfg.log_every == 0
                    if logged:
                        tr._log(s, losses)
                    w2, c2 = _clock()
                phases = {key: {"wall": a[0] * 1e3, "cpu": a[1] * 1e3} for key, a in timer.current.items()}
                records[v].append(
                    {
                        "step": s,
                        "warmup": i < warmup,
                        "solve": s % tr.method.cfg.update_every == 0,
                        "logged": logged,
                        "wall": (w2 - w0) * 1e3,
                        "cpu": (c2 - c0) * 1e3,
                        "step_wall": (w1 - w0) * 1e3,
                        "step_cpu": (c1 - c0) * 1e3,
                        "log_wall": (w2 - w1) * 1e3,
                        "log_cpu": (c2 - c1) * 1e3,
                        "phases": phases,
                    }
                )
            last = {v: records[v][-1]["cpu"] for v in variants}
            log(f"  step {s:5d} {'(warm-up)' if i < warmup else '         '} cpu ms: "
                + ", ".join(f"{v} {last[v]:.1f}" for v in variants))
    finally:
        PhaseTimer.remove_backward_hook()
    return analyse_training(records, cfg), trainers


def analyse_training(records: dict[str, list[dict[str, Any]]], cfg) -> dict[str, Any]:
    """Medians, pairwise ratios, the solve/log costs and the amortised per-step time of each variant."""
    update_every, log_every = cfg.sparsity.update_every, cfg.train.log_every
    out: dict[str, Any] = {"variants": {}, "update_every": update_every, "log_every": log_every}
    for v, recs in records.items():
        timed = [r for r in recs if not r["warmup"]]
        plain = [r for r in timed if not r["solve"] and not r["logged"]] or timed
        after0 = [r for r in recs if r["step"] != 0]
        bf = lambda rs: [r["phases"].get("before_forward", {}).get("cpu", 0.0) for r in rs]  # noqa: E731
        solve_bf = bf([r for r in after0 if r["solve"]])
        plain_bf = bf([r for r in after0 if not r["solve"]])
        solve_extra = (statistics.median(solve_bf) - statistics.median(plain_bf)) if solve_bf and plain_bf else 0.0
        logs = [r["log_cpu"] for r in recs if r["logged"] and r["step"] != 0] or [
            r["log_cpu"] for r in recs if r["logged"]
        ]
        log_cost = statistics.median(logs) if logs else 0.0
        plain_cpu = statistics.median([r["cpu"] for r in plain])
        phase_names = sorted({p for r in plain for p in r["phases"]})
        phases = {p: statistics.median([r["phases"].get(p, {}).get("cpu", 0.0) for r in plain]) for p in phase_names}
        phases["other (data, loss, zero_grad, ...)"] = statistics.median(
            [r["step_cpu"] - sum(x["cpu"] for x in r["phases"].values()) for r in plain]
        )
        out["variants"][v] = {
            "timed_cpu_ms": summarize([r["cpu"] for r in timed]),
            "timed_wall_ms": summarize([r["wall"] for r in timed]),
            "plain_step_cpu_ms": summarize([r["cpu"] for r in plain]),
            "plain_step_wall_ms": summarize([r["wall"] for r in plain]),
            "solve_extra_cpu_ms": solve_extra,
            "log_cpu_ms": log_cost,
            "amortized_cpu_ms": plain_cpu + solve_extra / update_every + log_cost / log_every,
            "phases_cpu_ms": phases,
            "records": recs,
        }
    ref = out["variants"].get("dense")
    if ref is not None:
        for v, r in out["variants"].items():
            if v == "dense":
                continue
            pair_cpu = _pairwise(records[v], records["dense"], "cpu")
            pair_wall = _pairwise(records[v], records["dense"], "wall")
            r["vs_dense"] = {
                "median_cpu_ratio": r["timed_cpu_ms"]["median"] / ref["timed_cpu_ms"]["median"],
                "median_wall_ratio": r["timed_wall_ms"]["median"] / ref["timed_wall_ms"]["median"],
                "mean_cpu_ratio": r["timed_cpu_ms"]["mean"] / ref["timed_cpu_ms"]["mean"],
                "pairwise_cpu_ratio": summarize(pair_cpu),
                "pairwise_wall_ratio": summarize(pair_wall),
                "amortized_cpu_ratio": r["amortized_cpu_ms"] / ref["amortized_cpu_ms"],
                "phase_diff_cpu_ms": {
                    p: r["phases_cpu_ms"].get(p, 0.0) - ref["phases_cpu_ms"].get(p, 0.0)
                    for p in sorted(set(r["phases_cpu_ms"]) | set(ref["phases_cpu_ms"]))
                },
            }
    return out


def _pairwise(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(a, b) if not x["warmup"] and x["step"] == y["step"] and y[key] > 0]


# ---------------------------------------------------------------------------------------------------------
# component timings


def _saved_bytes(fn: Callable[[], list[Tensor]], exclude: Sequence[Tensor]) -> tuple[list[Tensor], int]:
    """Bytes of the distinct storages autograd saves while `fn` runs, minus those of `exclude` and of the
    returned tensors (parameters exist anyway; W_eff is saved by the convolution that consumes it)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = fn()
    skip = {t.untyped_storage().data_ptr() for t in [*exclude, *outs]}
    return outs, sum(n for p, n in seen.items() if p not in skip)


def _repeat(fn: Callable[[], Any], reps: int) -> list[float]:
    """CPU milliseconds of `reps` calls of `fn`."""
    out = []
    for _ in range(reps):
        c = time.process_time()
        fn()
        out.append((time.process_time() - c) * 1e3)
    return out


def component_timings(trainers: dict[str, Any], solve_step: int, reps: int) -> dict[str, Any]:
    """Standalone CPU timings of the pieces of AdapMTL's overhead, at the model's real layer sizes."""
    dense, ours = trainers["dense"].method, trainers["adapmtl"].method
    layers = list(ours.layers.values())
    weights = [layer.weight for layer in layers]
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(w.shape, generator=gen) * 1e-3 for w in weights]
    res: dict[str, Any] = {
        "layers": len(layers),
        "prunable_weights": int(sum(w.numel() for w in weights)),
        "update_every": ours.cfg.update_every,
    }
    ours.before_forward(solve_step)  # current thresholds on every layer
    res["set_taus_ms"] = summarize(_repeat(ours._set_taus, reps))
    impls = {}
    for name, impl in IMPLEMENTATIONS.items():
        fwd, bwd, saved = [], [], 0
        for _ in range(reps):
            c = time.process_time()
            ours._set_taus()
            outs, saved = _saved_bytes(lambda f=impl: [f(layer.weight, layer.tau) for layer in layers], weights)
            c1 = time.process_time()
            torch.autograd.backward(outs, grads)
            c2 = time.process_time()
            fwd.append((c1 - c) * 1e3)
            bwd.append((c2 - c1) * 1e3)
            del outs
            for w in weights:
                w.grad = None
            ours.s.grad = None
        impls[name] = {
            "forward_ms": summarize(fwd),
            "backward_ms": summarize(bwd),
            "saved_extra_bytes": saved,
        }
    res["w_eff"] = impls
    # the controller's solve and its parts (state changes are harmless: timing is over)
    target = ours.target_at(solve_step)
    res["solve_step"] = solve_step
    res["solve_target"] = target
    res["before_forward_solve_ms"] = summarize(_repeat(lambda: ours.before_forward(solve_step), reps))
    res["before_forward_plain_ms"] = summarize(_repeat(lambda: ours.before_forward(solve_step + 1), reps))
    logm = ours._log_mags()
    res["solve_parts_ms"] = {
        "_log_mags": summarize(_repeat(ours._log_mags, reps)),
        "_solve_offset (x2 per solve)": summarize(_repeat(lambda: ours._solve_offset(target, logm), reps)),
        "_apply_bounds": summarize(_repeat(lambda: ours._apply_bounds(logm), reps)),
        "_reallocate (learning phase only)": summarize(_repeat(lambda: ours._reallocate(logm), reps)),
    }
    keys = torch.cat([logm[n] for n in ours.layers])
    k = max(1, int(round(target * keys.numel())))
    from trainers.sparsity import adapmtl as st_mod

    res["kth_value_ms"] = {
        "torch.kthvalue": summarize(_repeat(lambda: keys.kthvalue(k), reps)),
        "_kth_smallest (numpy introselect on CPU)": summarize(_repeat(lambda: st_mod._kth_smallest(keys, k), reps)),
        "same_value": bool(keys.kthvalue(k).values.item() == st_mod._kth_smallest(keys, k).item()),
    }
    res["snapshot_ms"] = {
        "adapmtl": summarize(_repeat(lambda: ours.snapshot(solve_step), reps)),
        "dense": summarize(_repeat(lambda: dense.snapshot(solve_step), reps)),
    }
    return res


PROFILE_KEYS = {
    "W_eff forward (_SoftThreshold)": "_SoftThreshold",
    "W_eff backward (_SoftThresholdBackward)": "autograd::engine::evaluate_function: _SoftThresholdBackward",
    "convolutions forward": "aten::convolution",
    "convolutions backward": "autograd::engine::evaluate_function: ConvolutionBackward0",
    "Adam step": "Optimizer.step#Adam.step",
}


def profile_attribution(trainers: dict[str, Any], step: int, variants: Sequence[str] = ("dense", "adapmtl")):
    """One extra step per variant under torch.profiler: inclusive CPU ms of the soft threshold's forward and
    backward nodes and of the convolutions. The profiler inflates small ops, so these attribute, not time."""
    from torch.profiler import ProfilerActivity, profile

    out: dict[str, Any] = {"step": step}
    for v in variants:
        tr = trainers[v]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            c = time.process_time()
            tr.train_step(step)
            dt = (time.process_time() - c) * 1e3
        events = {e.key: e for e in prof.key_averages()}
        row = {"profiled_step_cpu_ms": dt}
        for label, key in PROFILE_KEYS.items():
            e = events.get(key)
            row[label] = (e.cpu_time_total / 1e3) if e is not None else 0.0
        out[v] = row
    return out


def component_estimate(result: dict[str, Any]) -> dict[str, Any]:
    """What AdapMTL adds per step, summed from its parts: W_eff forward + backward in the real step (profiler),
    the tau graph, the solve every `update_every` steps and the snapshot difference every `log_every` steps."""
    v, prof, comp = result["variants"], result["profile"]["adapmtl"], result["components"]
    parts = {
        "W_eff forward (in step, profiler)": prof["W_eff forward (_SoftThreshold)"],
        "W_eff backward (in step, profiler)": prof["W_eff backward (_SoftThresholdBackward)"],
        "tau graph (_set_taus)": comp["set_taus_ms"]["median"],
        "solve / update_every": v["adapmtl"]["solve_extra_cpu_ms"] / result["update_every"],
        "snapshot difference / log_every": (v["adapmtl"]["log_cpu_ms"] - v["dense"]["log_cpu_ms"]) / result["log_every"],
    }
    total = sum(parts.values())
    return {"parts_ms": parts, "total_ms": total, "ratio": 1 + total / v["dense"]["amortized_cpu_ms"]}


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
            "sqrt": statistics.median(_repeat(lambda a=a: a.sqrt(), reps)),
            "lerp_": statistics.median(_repeat(lambda a=a: a.clone().lerp_(g, 0.1), reps)),
            "mul_": statistics.median(_repeat(lambda a=a: a.clone().mul_(0.999), reps)),
            "addcdiv_": statistics.median(_repeat(lambda a=a: d.clone().addcdiv_(a, d, value=-1e-3), reps)),
        }
    return out


# ---------------------------------------------------------------------------------------------------------
# training section driver


def training_config(name: str, quick: bool, paper_size: tuple[int, int], threads: int):
    """RunConfig of a timing configuration (the demo preset, with the model/batch/size of the config)."""
    from pipeline.config import load_config

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
    from pipeline.data import build_dataset

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


# ---------------------------------------------------------------------------------------------------------
# export variants


def prunable_layer_names(model, rules) -> list[str]:
    from trainers.sparsity.components import assign_components

    return [a.name for a in assign_components(model, rules) if a.component is not None]


def build_variant(cfg, num_classes: int, state_dict: dict[str, Tensor], pattern: str):
    """The demo model with `state_dict`, pruned to `pattern`, hardened and BN-folded (the harden stage's steps).

    pattern: "dense", "unstructured" (global magnitude to `cfg.sparsity.target` over the prunable convs, the
    `gmp_global` method's cut) or "2:4" (`nm_mask` on every eligible prunable conv via `nm_project_`).
    """
    from pipeline.models.folding import fold_batchnorm_
    from trainers.assembly import build_model
    from trainers.sparsity.harden import harden_, nm_project_, summarize_decisions
    from trainers.sparsity.methods import build_method

    model = build_model(cfg, num_classes)
    model.load_state_dict(state_dict)
    info: dict[str, Any] = {"pattern": pattern}
    names = prunable_layer_names(model, cfg.sparsity.rules)
    if pattern == "unstructured":
        method, _ = build_method(dataclasses.replace(cfg.sparsity, method="gmp_global"), 1)
        method.attach(model)
        method.finalize()  # masks at exactly the target (one global magnitude cut)
        harden_(method)
    elif pattern == "2:4":
        decisions, _ = nm_project_(model, names, {}, "2:4")
        info["decisions"] = summarize_decisions(decisions)
        info["skipped"] = {d.name: d.reason for d in decisions if d.pattern != "2:4"}
    elif pattern != "dense":
        raise ValueError(f"unknown pattern {pattern}")
    model.eval()
    with torch.no_grad():
        x = model.example_inputs(batch=2, height=cfg.data.height, width=cfg.data.width)[0]
        before = model(x)
        info["bn_folded"] = len(fold_batchnorm_(model))
        after = model(x)
    info["fold_max_diff"] = max(float((before[k] - after[k]).abs().max()) for k in before)
    info.update(_zero_stats(model, names))
    return model, info


def _zero_stats(model, prunable: Sequence[str]) -> dict[str, Any]:
    modules = dict(model.named_modules())
    pz = sum(int((modules[n].weight == 0).sum()) for n in prunable)
    pn = sum(modules[n].weight.numel() for n in prunable)
    params = sum(p.numel() for p in model.parameters())
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return {
        "prunable_weights": pn,
        "prunable_sparsity": pz / max(pn, 1),
        "params": params,
        "param_sparsity": zeros / max(params, 1),
    }


def export_variant(model, path: Path, cfg, exporter: str = "dynamo", simplifier: str = "onnxsim") -> dict[str, Any]:
    """`export_onnx` + `simplify_onnx` as the export stage does; returns the export facts."""
    from exporters.onnx_export import export_onnx
    from exporters.simplify import simplify_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.stem + ".raw.onnx")
    example = model.example_inputs(batch=2, height=cfg.data.height, width=cfg.data.width)[0]
    info = export_onnx(model, raw, task_names=list(cfg.tasks), example_input=example, exporter=exporter)
    simp = simplify_onnx(raw, path, tool=simplifier)
    raw.unlink()
    return {"exporter": info.exporter, "opset": info.opset, "simplifier": simp["tool"], "nodes": simp["nodes_after"]}


def entropy_bits(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def size_report(path: Path, dense_onnx_bytes: int | None = None, extra_codecs: bool = True) -> dict[str, Any]:
    """Raw and compressed sizes of one ONNX file, the information limit, and where the bytes go."""
    import onnx
    from onnx import numpy_helper

    from exporters.checks import compress_artifact

    gz_path, raw, gz = compress_artifact(path)  # gzip level 9, mtime 0 (what the pipeline ships)
    data = path.read_bytes()
    out: dict[str, Any] = {"onnx_bytes": raw, "gzip9_bytes": gz}
    if extra_codecs:
        out["gzip6_bytes"] = len(gzip.compress(data, compresslevel=6, mtime=0))
        out["xz9_bytes"] = len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        out["bz2_9_bytes"] = len(bz2.compress(data, 9))
        try:
            _, _, zst = compress_artifact(path, codec="zstd")
            out["zstd19_bytes"] = zst
            Path(str(path) + ".zst").unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - zstandard is optional; its absence is recorded as None
            out["zstd19_bytes"] = None
    gz_path.unlink(missing_ok=True)
    # information content: survivors at 32 bits plus the zero mask at its entropy, dense tensors at 32 bits
    model = onnx.load(str(path))
    init_bytes = limit_bits = nnz = zeros = negative_zeros = 0
    survivor_bytes = []
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        init_bytes += a.nbytes
        if a.dtype != np.float32:
            limit_bits += a.nbytes * 8
            continue
        nz = int(np.count_nonzero(a))
        negative_zeros += int(((a == 0) & np.signbit(a)).sum())
        nnz += nz
        zeros += a.size - nz
        limit_bits += nz * 32 + (a.size * entropy_bits(nz / a.size) if a.size else 0)
        survivor_bytes.append(a[a != 0].astype(np.float32).view(np.uint8).reshape(-1, 4))
    other = raw - init_bytes
    out["initializer_bytes"] = init_bytes
    out["float_zeros"] = zeros
    out["float_nonzeros"] = nnz
    out["float_negative_zeros"] = negative_zeros
    out["limit_bytes"] = int(limit_bits / 8 + other)
    if survivor_bytes:
        sb = np.concatenate(survivor_bytes)
        planes = [_byte_entropy(sb[:, i]) for i in range(4)]  # little endian: byte 3 holds sign + exponent
        out["survivor_bits_per_value_byte_entropy"] = float(sum(planes))
        out["survivor_byte_plane_entropy_bits"] = planes
        out["survivors_gzip9_bytes"] = len(gzip.compress(sb.tobytes(), 9, mtime=0))
    if dense_onnx_bytes:
        for key in ("onnx_bytes", "gzip9_bytes", "gzip6_bytes", "xz9_bytes", "bz2_9_bytes", "zstd19_bytes", "limit_bytes"):
            if out.get(key) is not None:
                out[key.replace("_bytes", "_vs_dense_onnx")] = out[key] / dense_onnx_bytes
    return out


def canonical_zeros_onnx(src: Path, dst: Path) -> dict[str, Any]:
    """Copy `src` to `dst` with every float initializer's -0.0 written as +0.0 (equal values, same graph).

    Hardening writes sign(W) * 0 = -0.0 for every negative pruned weight, masks (W * 0) and BN folding
    (0 * negative scale) do the same: half the zeros carry a sign bit, which breaks the zero runs a compressor
    relies on. Returns how many zeros changed and whether ORT gives bit-identical outputs on a test batch.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(src))
    changed = 0
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype.kind != "f":
            continue
        neg = (a == 0) & np.signbit(a)
        if neg.any():
            changed += int(neg.sum())
            b = a.copy()
            b[neg] = 0.0
            t.CopyFrom(numpy_helper.from_array(b, t.name))
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    shape = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x}) for p in (src, dst)]
    same = all(np.array_equal(a, b) for a, b in zip(*outs))
    return {"negative_zeros_rewritten": changed, "ort_outputs_identical": bool(same)}


def _byte_entropy(b: np.ndarray) -> float:
    counts = np.bincount(b, minlength=256).astype(np.float64)
    p = counts[counts > 0] / b.size
    return float(-(p * np.log2(p)).sum())


# ---------------------------------------------------------------------------------------------------------
# weights for the exports


def trained_checkpoint(work: Path, method: str, steps: int, threads: int, log: Callable[[str], None]) -> Path:
    """Train the demo preset briefly with `train_run` (cached in `work`); returns checkpoint.pt."""
    from pipeline.config import load_config
    from trainers.training_run import train_run, training_fingerprint

    overrides = [
        "dense_reference=null",
        f"sparsity.method={method}",
        "sparsity.target=0.9",
        f"train.steps={steps}",
        f"train.num_threads={threads}",
        "train.checkpoint_every=0",
    ]
    cfg = load_config("demo", overrides)
    fingerprint = training_fingerprint(cfg)  # the resolved config: a changed preset retrains
    out = work / f"train_{method}_{steps}"
    ckpt = out / "checkpoint.pt"
    stamp = out / "fingerprint.txt"
    if ckpt.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        log(f"  reusing {ckpt}")
        return ckpt
    out.mkdir(parents=True, exist_ok=True)
    (out / "resume.pt").unlink(missing_ok=True)
    t0 = time.perf_counter()
    res = train_run(cfg, out, progress=False)
    log(f"  trained {method} for {steps} steps in {time.perf_counter() - t0:.0f} s "
        f"(sparsity {res['sparsity']['overall']:.3f})")
    (out / "result.json").write_text(json.dumps({k: res[k] for k in ("metrics", "steps", "train_seconds")}, default=str))
    stamp.write_text(fingerprint)
    return ckpt


def adapmtl_hardened(ckpt_path: Path):
    """The hardened AdapMTL model of a train checkpoint (shrunk survivors), BN-folded, and its zero stats."""
    from pipeline.checkpoint import TrainCheckpoint, read_checkpoint
    from pipeline.models.folding import fold_batchnorm_
    from trainers.hardening import restore_method_model
    from trainers.sparsity.harden import harden_

    ckpt = read_checkpoint(ckpt_path, TrainCheckpoint)
    model, method = restore_method_model(ckpt, ckpt_path)
    names = list(method.layers)
    harden_(method)
    model.eval()
    fold_batchnorm_(model)
    return model, {"pattern": "unstructured (AdapMTL, hardened: sign(W)(|W|-tau))", **_zero_stats(model, names)}


# ---------------------------------------------------------------------------------------------------------
# latency and memory


def ort_session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return so


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
    from deploy.latency import latency_stats, measure
    from deploy.runners import OnnxrtRunner, TorchRunner

    torch.set_num_threads(threads)
    runners = {}
    for name, (path, model) in variants.items():
        runners[("onnxrt", name)] = OnnxrtRunner(path, session_options=ort_session_options(threads)).__enter__()
        runners[("torch", name)] = TorchRunner(model).__enter__()
    out: dict[str, Any] = {}
    try:
        for batch in batches:
            x = np.random.default_rng(0).random((batch, 3, height, width), dtype=np.float32)
            feed = {"image": x}
            keys = list(runners)
            for key in keys:  # warm-up: allocator, ORT's first-run initialisation
                measure(lambda r=runners[key], f=feed: r.infer(f), warmup=3, iters=1)
            samples: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
            n = max(1, iters // rounds)
            for r in range(rounds):
                k = r % len(keys)
                for key in keys[k:] + keys[:k]:
                    samples[key] += measure(lambda rr=runners[key], f=feed: rr.infer(f), warmup=0, iters=n)
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
    root = Path(__file__).resolve().parent.parent
    # Linux keeps ru_maxrss across fork + exec: a child forked from this (large) process would start at our
    # RSS. A small /bin/sh forks the probe instead ('"$@"; exit $?' keeps sh from exec-ing it in place).
    cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", _MEMPROBE, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# inference + size section driver


def run_inference_section(args, log: Callable[[str], None] = print) -> dict[str, Any]:
    from pipeline.checkpoint import load_checkpoint
    from pipeline.config import load_config
    from trainers.assembly import build_model, init_conv_weights_

    work = Path(args.work)
    torch.set_num_threads(args.threads)
    cfg = load_config("demo", ["dense_reference=null"])
    steps = 20 if args.quick else args.train_steps
    log(f"[inference] weights: train_run on the demo preset, {steps} steps (dense, and AdapMTL at 90 %)")
    dense_ckpt = load_checkpoint(trained_checkpoint(work, "dense", steps, args.threads, log), "train")
    adap_path = trained_checkpoint(work, "adapmtl", steps, args.threads, log)
    num_classes = dense_ckpt["num_classes"]
    torch.manual_seed(cfg.train.seed)
    init_model = build_model(cfg, num_classes)
    init_conv_weights_(init_model, "normal001", cfg.train.seed)
    sources = {"trained": dense_ckpt["state_dict"], "init N(0,0.01)": init_model.state_dict()}

    exports: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {}
    for src, state in sources.items():
        for pattern in ("dense", "unstructured", "2:4"):
            key = f"{src} / {pattern}"
            model, info = build_variant(cfg, num_classes, state, pattern)
            path = work / "onnx" / f"{src.split()[0]}_{pattern.replace(':', '_')}.onnx"
            log(f"  export {key}")
            info["export"] = export_variant(model, path, cfg)
            info["path"] = str(path)
            exports[key] = info
            models[key] = model
    model, info = adapmtl_hardened(adap_path)
    path = work / "onnx" / "trained_adapmtl.onnx"
    log("  export trained / adapmtl-hardened")
    info["export"] = export_variant(model, path, cfg)
    info["path"] = str(path)
    exports["trained / adapmtl hardened"] = info
    models["trained / adapmtl hardened"] = model

    log("[size]")
    sizes = {}
    fields = ("pattern", "prunable_sparsity", "param_sparsity", "prunable_weights", "params")
    for src in ("trained", "init"):
        dense_key = next(k for k in exports if k.startswith(src) and k.endswith("/ dense"))
        dense_bytes = Path(exports[dense_key]["path"]).stat().st_size
        for key, info in list(exports.items()):
            if not key.startswith(src):
                continue
            path = Path(info["path"])
            sizes[key] = {**size_report(path, dense_bytes), **{k: info[k] for k in fields}}
            if info["pattern"] != "dense":  # the remedy: zeros stored as +0.0 (same values, same graph)
                fixed = path.with_name(path.stem + ".pz.onnx")
                canon = canonical_zeros_onnx(path, fixed)
                sizes[key + ", zeros as +0.0"] = {**size_report(fixed, dense_bytes), **{k: info[k] for k in fields},
                                                  **canon}
            for k in (key, key + ", zeros as +0.0"):
                if k in sizes:
                    log(f"  {k}: onnx {sizes[k]['onnx_bytes']} gzip9 {sizes[k]['gzip9_bytes']} "
                        f"({sizes[k]['gzip9_vs_dense_onnx']:.3f} x dense onnx)")

    log("[latency] interleaved, one process")
    lat_variants = {
        p: (Path(exports[f"trained / {p}"]["path"]), models[f"trained / {p}"]) for p in ("dense", "unstructured", "2:4")
    }
    iters, rounds = (30, 3) if args.quick else (args.latency_iters, 10)
    latency = latency_table(lat_variants, [1, 8], cfg.data.height, cfg.data.width, args.threads, iters, rounds, log)

    log("[memory] one subprocess per runtime, variant and batch")
    memory: dict[str, Any] = {}
    for p, (onnx_path, model) in lat_variants.items():
        pt_path = onnx_path.with_suffix(".pt")
        torch.save(model, pt_path)
        for batch in (1, 8):
            for kind, path in (("onnxrt", onnx_path), ("torch", pt_path)):
                m = peak_memory(kind, path, batch, cfg.data.height, cfg.data.width, args.threads)
                memory.setdefault(kind, {}).setdefault(p, {})[str(batch)] = m
                log(f"  {kind}/{p}/b{batch}: {m}")
    for info in exports.values():
        info.pop("path", None)
    return {
        "model": cfg.model.name,
        "input": [cfg.data.height, cfg.data.width],
        "train_steps_for_weights": steps,
        "variants": exports,
        "sizes": sizes,
        "latency": latency,
        "latency_iters_per_variant": iters,
        "memory": memory,
        "memory_method": "peak RSS of a fresh subprocess (getrusage(RUSAGE_SELF).ru_maxrss, KiB on Linux) after "
        "importing the runtime (baseline), loading the model and running 3 batches; increase = peak - baseline",
    }


# ---------------------------------------------------------------------------------------------------------
# report


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Cost benchmark results",
        "",
        f"Produced by `{results['command']}` on commit `{m.get('git_commit')}`"
        + (f" (uncommitted changes in {', '.join(m['git_dirty_files'])})" if m.get("git_dirty_files") else "")
        + f", {results['finished']}.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), shared with other "
        f"jobs (load average {', '.join(f'{x:.1f}' for x in m['loadavg_start'])} at the start, "
        f"{', '.join(f'{x:.1f}' for x in m.get('loadavg_end', []))} at the end); torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']}, onnx {m['onnx']}; {m['threads']} thread(s) for torch and ORT.",
        "",
        "Times are CPU time of the process (`time.process_time`, one compute thread), which a busy shared machine "
        "disturbs far less than wall time; wall times are in results.json. Ratios compare variants measured "
        "interleaved in the same process.",
        "",
    ]
    for name, title in (("demo", "demo preset"), ("paper", "paper configuration")):
        tr = results.get("training", {}).get(name)
        if not tr:
            continue
        s = tr["setup"]
        lines += [
            f"## Training step: {title}",
            "",
            f"`{s['model']}` ({s['params'] / 1e6:.2f} M parameters, {s['prunable_weights'] / 1e6:.2f} M prunable), "
            f"batch {s['batch']}, {s['height']}x{s['width']}, {s['data']}; steps {s['steps'][0]}, "
            f"{s['steps'][1]}..{s['steps'][-1]} ({s['warmup_steps']} warm-up, {s['timed_steps']} timed per variant; "
            f"target sparsity {s['target_at_timed_steps']:.2f} there). The offset solve runs every "
            f"`sparsity.update_every` = {s['update_every']} steps, the snapshot every `train.log_every` = "
            f"{s['log_every']} steps.",
            "",
            "| variant | median step (CPU ms) | p25-p75 | min-max | solve extra (ms, every "
            f"{s['update_every']}) | snapshot (ms, every {s['log_every']}) | amortised step (ms) | "
            "ratio to dense: median | pairwise median [min, max] | amortised |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v, r in tr["variants"].items():
            t = r["timed_cpu_ms"]
            vs = r.get("vs_dense")
            pr = vs["pairwise_cpu_ratio"] if vs else None
            lines.append(
                f"| {v} | {t['median']:.1f} | {t['p25']:.1f}-{t['p75']:.1f} | {t['min']:.1f}-{t['max']:.1f} | "
                f"{abs(r['solve_extra_cpu_ms']) if abs(r['solve_extra_cpu_ms']) < 0.05 else r['solve_extra_cpu_ms']:.1f} | "
                f"{r['log_cpu_ms']:.1f} | {r['amortized_cpu_ms']:.1f} | "
                + (f"{vs['median_cpu_ratio']:.3f} | {pr['median']:.3f} [{pr['min']:.3f}, {pr['max']:.3f}] | "
                   f"**{vs['amortized_cpu_ratio']:.3f}** |" if vs else "1 | 1 | 1 |")
            )
        ad = tr["variants"].get("adapmtl", {}).get("vs_dense")
        if ad:
            lines += [
                "",
                f"Wall-time median ratio adapmtl/dense: {ad['median_wall_ratio']:.3f} (pairwise median "
                f"{ad['pairwise_wall_ratio']['median']:.3f}).",
                "",
                "Where the difference goes (median CPU ms per plain step, adapmtl - dense, from phase timers in the timed "
                "steps):",
                "",
                "| phase | dense | adapmtl | naive | adapmtl - dense |",
                "|---|---|---|---|---|",
            ]
            for p, d in ad["phase_diff_cpu_ms"].items():
                vals = [tr["variants"][v]["phases_cpu_ms"].get(p, 0.0) for v in ("dense", "adapmtl", "naive")
                        if v in tr["variants"]]
                lines.append(f"| {p} | " + " | ".join(f"{x:.1f}" for x in vals) + f" | {d:+.1f} |")
        est = tr.get("component_estimate")
        if est:
            lines += ["", "Component estimate of AdapMTL's added CPU ms per step: " + ", ".join(
                f"{k} {x:.1f}" for k, x in est["parts_ms"].items()) + f"; total {est['total_ms']:.1f} ms, "
                f"ratio **{est['ratio']:.3f}** (against the amortised dense step)."]
        prof = tr.get("profile")
        if prof:
            vs = [v for v in ("dense", "adapmtl") if v in prof]
            lines += ["", f"torch.profiler, one extra step (step {prof['step']}) per variant, inclusive CPU ms "
                      "(the profiler's per-op cost inflates many small ops):", "",
                      "| | " + " | ".join(vs) + " |", "|---|" + "---|" * len(vs)]
            for label in ["profiled_step_cpu_ms", *PROFILE_KEYS]:
                lines.append(f"| {label} | " + " | ".join(f"{prof[v].get(label, 0.0):.1f}" for v in vs) + " |")
        c = tr["components"]
        lines += [
            "",
            f"Components at this model's size ({c['layers']} prunable convs, {c['prunable_weights'] / 1e6:.2f} M "
            "weights; standalone, median CPU ms):",
            "",
            "| W_eff implementation | forward (incl. tau graph) | backward | extra saved for backward |",
            "|---|---|---|---|",
        ]
        for impl, r in c["w_eff"].items():
            lines.append(f"| {impl} | {r['forward_ms']['median']:.2f} | {r['backward_ms']['median']:.2f} | "
                         f"{r['saved_extra_bytes'] / 2**20:.1f} MiB |")
        sp = c["solve_parts_ms"]
        lines += [
            "",
            f"- tau graph alone (`_set_taus`): {c['set_taus_ms']['median']:.2f} ms per step;",
            f"- a solve step's `before_forward`: {c['before_forward_solve_ms']['median']:.1f} ms (plain step: "
            f"{c['before_forward_plain_ms']['median']:.2f} ms), of which "
            + ", ".join(f"{k} {v['median']:.1f}" for k, v in sp.items())
            + f"; k-th value: torch.kthvalue {c['kth_value_ms']['torch.kthvalue']['median']:.1f} ms vs numpy "
            f"{c['kth_value_ms']['_kth_smallest (numpy introselect on CPU)']['median']:.1f} ms (same value: "
            f"{c['kth_value_ms']['same_value']});",
            f"- snapshot (`measure`, at log steps): adapmtl {c['snapshot_ms']['adapmtl']['median']:.1f} ms, dense "
            f"{c['snapshot_ms']['dense']['median']:.1f} ms.",
            "",
        ]
    eff = results.get("cpu_effects")
    if eff:
        lines += ["## Element-wise ops on subnormal and zero values (this CPU)", "",
                  f"Median CPU ms per {eff['n']:,} float32 values:", "",
                  "| values | sqrt | lerp_ | mul_ | addcdiv_ |", "|---|---|---|---|---|"]
        for name, r in eff.items():
            if isinstance(r, dict):
                lines.append(f"| {name} | {r['sqrt']:.2f} | {r['lerp_']:.2f} | {r['mul_']:.2f} | {r['addcdiv_']:.2f} |")
        lines.append("")
    inf = results.get("inference")
    if inf:
        lines += [
            f"## Inference: `{inf['model']}` {inf['input'][0]}x{inf['input'][1]}",
            "",
            f"Weights: the demo preset trained {inf['train_steps_for_weights']} steps with `train_run` (dense), then "
            "pruned; BN folded; dynamo export + onnxsim.",
            "",
            "| runtime | variant | batch | p50 ms | p90 ms | p50 / dense |",
            "|---|---|---|---|---|---|",
        ]
        for rt, by in inf["latency"].items():
            for name, bb in by.items():
                for b, s in bb.items():
                    lines.append(f"| {rt} | {name} | {b} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
                                 f"{s.get('p50_vs_dense', 1):.3f} |")
        lines += ["", f"Peak memory: {inf['memory_method']}.", "",
                  "| runtime | variant | batch | peak RSS MiB | increase over baseline MiB |", "|---|---|---|---|---|"]
        for rt, by in inf["memory"].items():
            for name, bb in by.items():
                for b, s in bb.items():
                    lines.append(f"| {rt} | {name} | {b} | {_f(s.get('peak_mib'), '.1f')} | "
                                 f"{_f(s.get('increase_mib'), '.1f')} |")
        lines += [
            "",
            "## Artifact size",
            "",
            "gzip9 = `compress_artifact` (what the export stage ships). limit = survivors at 32 bits + the zero mask "
            "at its entropy + everything else stored raw. Ratios are to the dense ONNX of the same weights.",
            "",
            "| weights / pattern | sparsity (prunable) | zeros stored as -0.0 | ONNX bytes | gzip9 bytes | "
            "gzip9 / dense ONNX | xz9 / dense | limit / dense | survivor bits (byte entropy) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, s in inf["sizes"].items():
            lines.append(
                f"| {key} | {s['prunable_sparsity']:.3f} | {s['float_negative_zeros']:,} | {s['onnx_bytes']:,} | "
                f"{s['gzip9_bytes']:,} | "
                f"**{s['gzip9_vs_dense_onnx']:.3f}** | {_f(s.get('xz9_vs_dense_onnx'), '.3f')} | "
                f"{s['limit_vs_dense_onnx']:.3f} | {_f(s.get('survivor_bits_per_value_byte_entropy'), '.1f')} |"
            )
        zst = [s.get("zstd19_bytes") for s in inf["sizes"].values()]
        lines += ["", "zstd: " + ("not installed (the optional `zstandard` package); not added." if not any(zst)
                                  else "see results.json.")]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# main


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced sizes and counts (minutes)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--work", default=str(DEFAULT_WORK), help="checkpoints and ONNX files (not results)")
    p.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads (default 1)")
    p.add_argument("--paper-size", type=parse_size, default=(288, 384), help="HxW: 288x384 (MTAN) or 321x321")
    p.add_argument("--paper-steps", type=int, default=4, help="timed steps per variant, paper configuration")
    p.add_argument("--demo-steps", type=int, default=40, help="timed steps per variant, demo preset")
    p.add_argument("--train-steps", type=int, default=300, help="train_run steps for the exported weights")
    p.add_argument("--latency-iters", type=int, default=200, help="timed inferences per variant and batch")
    p.add_argument("--sections", nargs="+", default=["demo", "inference", "paper"],
                   choices=["demo", "inference", "paper"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": "python -m benchmarks.cost " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "machine": machine_info(args.threads),
        "training": {},
        "cpu_effects": cpu_effects(),
    }

    def save() -> None:
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "results.md").write_text(render_markdown(results))

    def log(msg: str) -> None:
        print(msg, flush=True)

    for section in args.sections:
        if section in ("demo", "paper"):
            results["training"][section] = run_training_section(section, args, log)
        else:
            results["inference"] = run_inference_section(args, log)
        save()
    log(f"wrote {out / 'results.md'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
