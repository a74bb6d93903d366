"""Training-step timing: the `dense`, `adapmtl` and `naive` variants, interleaved through the project's Trainer.

The phases of a step (forward, backward, optimizer, method hooks, weighting) are read through the Trainer's
public `phase_hook`; nothing of the Trainer is patched.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from benchmarks.cost.machine import clock, summarize
from pipeline.data.base import MultiTaskTensorDataset
from trainers.assembly import assemble_trainer, build_model, init_conv_weights_
from trainers.loop import Trainer
from trainers.sparsity.layers import SparseConv2d, soft_threshold_reference

TASKS = ["seg", "depth", "normal"]
VARIANTS = ["dense", "adapmtl", "naive"]


class NaiveSparseConv2d(SparseConv2d):
    """A SparseConv2d whose soft threshold is the plain autograd formula (for the naive timing only)."""

    def effective_weight(self) -> Tensor:
        if self.tau is not None:
            return soft_threshold_reference(self.weight, self.tau)
        return super().effective_weight()


def synthetic_dataset(n: int, height: int, width: int, num_classes: int, seed: int = 0) -> MultiTaskTensorDataset:
    """Random images and labels of a real dataset's shape (the cost does not depend on the values)."""
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


def _assemble(cfg, dataset, method_name: str, total_steps: int) -> Trainer:
    """A Trainer exactly as `train_run` builds it (same seed, init, method, prescribed weighting and loss), through
    the one assembly function, `trainers.assembly.assemble_trainer`."""
    cfg = dataclasses.replace(cfg, sparsity=dataclasses.replace(cfg.sparsity, method=method_name))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, dataset.num_classes)
    init_conv_weights_(model, cfg.train.init, cfg.train.seed)
    model.to(cfg.train.device)
    return assemble_trainer(cfg, model, dataset, steps=total_steps)


def make_trainer(cfg, dataset, variant: str, total_steps: int) -> Trainer:
    """A Trainer as `train_run` builds it, for a variant; `naive` swaps in the plain-autograd soft threshold."""
    trainer = _assemble(cfg, dataset, "dense" if variant == "dense" else "adapmtl", total_steps)
    if variant == "naive":
        for layer in trainer.method.layers.values():
            layer.__class__ = NaiveSparseConv2d  # same parameters and state: only effective_weight differs
    return trainer


class PhaseTimer:
    """Wall and CPU time of a Trainer's step phases, read through its public `phase_hook`.

    Times accumulate into `current` ({phase: [wall s, cpu s]}), reset when a `with timer:` block starts.
    """

    def __init__(self, trainer: Trainer):
        self.current: dict[str, list[float]] = {}
        self._trainer = trainer
        trainer.phase_hook = self.phase

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        w, c = clock()
        try:
            yield
        finally:
            w2, c2 = clock()
            acc = self.current.setdefault(name, [0.0, 0.0])
            acc[0] += w2 - w
            acc[1] += c2 - c

    def detach(self) -> None:
        self._trainer.phase_hook = None

    def __enter__(self) -> PhaseTimer:
        self.current = {}
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _timed_iteration(tr: Trainer, timer: PhaseTimer, s: int, warmup: bool) -> dict[str, Any]:
    """One iteration of `Trainer.run`: `train_step(s)`, plus the snapshot when `s % log_every == 0`."""
    with timer:
        w0, c0 = clock()
        losses = tr.train_step(s)
        w1, c1 = clock()
        logged = s % tr.cfg.log_every == 0
        if logged:
            tr.log_step(s, losses)
        w2, c2 = clock()
    return {
        "step": s,
        "warmup": warmup,
        "solve": s % tr.method.cfg.update_every == 0,
        "logged": logged,
        "wall": (w2 - w0) * 1e3,
        "cpu": (c2 - c0) * 1e3,
        "step_wall": (w1 - w0) * 1e3,
        "step_cpu": (c1 - c0) * 1e3,
        "log_wall": (w2 - w1) * 1e3,
        "log_cpu": (c2 - c1) * 1e3,
        "phases": {key: {"wall": a[0] * 1e3, "cpu": a[1] * 1e3} for key, a in timer.current.items()},
    }


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
) -> tuple[dict[str, Any], dict[str, Trainer]]:
    """Interleaved step timing of `variants` with the project's Trainer. Returns (results, trainers).

    Steps: 0, then `start_step`, `start_step + 1`, ...; the first `warmup` are not timed. One iteration is
    `train_step(s)` plus `log_step(s)` when `s % log_every == 0`, as in `Trainer.run`.
    """
    if warmup < 1 or timed < 1:
        raise ValueError("need warmup >= 1 (step 0) and timed >= 1")
    trainers = {v: make_trainer(cfg, dataset, v, total_steps) for v in variants}
    timers = {v: PhaseTimer(t) for v, t in trainers.items()}
    steps = [0] + list(range(start_step, start_step + warmup - 1 + timed))
    records: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        for t in trainers.values():
            t.method.prepare(t)  # Trainer.run does this before step 0 of a fresh run
        for i, s in enumerate(steps):
            k = i % len(variants)
            for v in list(variants[k:]) + list(variants[:k]):
                records[v].append(_timed_iteration(trainers[v], timers[v], s, i < warmup))
            last = {v: records[v][-1]["cpu"] for v in variants}
            log(f"  step {s:5d} {'(warm-up)' if i < warmup else '         '} cpu ms: "
                + ", ".join(f"{v} {last[v]:.1f}" for v in variants))
    finally:
        for timer in timers.values():
            timer.detach()
    return analyse_training(records, cfg), trainers


def _variant_summary(recs: list[dict[str, Any]], update_every: int, log_every: int) -> dict[str, Any]:
    """Medians of one variant: plain step, the solve step's extra `before_forward`, the snapshot, phases."""
    timed = [r for r in recs if not r["warmup"]]
    plain = [r for r in timed if not r["solve"] and not r["logged"]] or timed
    after0 = [r for r in recs if r["step"] != 0]

    def before_forward(rs: list[dict[str, Any]]) -> list[float]:
        return [r["phases"].get("before_forward", {}).get("cpu", 0.0) for r in rs]

    solve_bf = before_forward([r for r in after0 if r["solve"]])
    plain_bf = before_forward([r for r in after0 if not r["solve"]])
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
    return {
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


def _vs_dense(r: dict[str, Any], ref: dict[str, Any], recs: list[dict[str, Any]], dense_recs: list[dict[str, Any]]):
    return {
        "median_cpu_ratio": r["timed_cpu_ms"]["median"] / ref["timed_cpu_ms"]["median"],
        "median_wall_ratio": r["timed_wall_ms"]["median"] / ref["timed_wall_ms"]["median"],
        "mean_cpu_ratio": r["timed_cpu_ms"]["mean"] / ref["timed_cpu_ms"]["mean"],
        "pairwise_cpu_ratio": summarize(_pairwise(recs, dense_recs, "cpu")),
        "pairwise_wall_ratio": summarize(_pairwise(recs, dense_recs, "wall")),
        "amortized_cpu_ratio": r["amortized_cpu_ms"] / ref["amortized_cpu_ms"],
        "phase_diff_cpu_ms": {
            p: r["phases_cpu_ms"].get(p, 0.0) - ref["phases_cpu_ms"].get(p, 0.0)
            for p in sorted(set(r["phases_cpu_ms"]) | set(ref["phases_cpu_ms"]))
        },
    }


def analyse_training(records: dict[str, list[dict[str, Any]]], cfg) -> dict[str, Any]:
    """Medians, pairwise ratios, the solve/log costs and the amortised per-step time of each variant."""
    update_every, log_every = cfg.sparsity.update_every, cfg.train.log_every
    out: dict[str, Any] = {"variants": {}, "update_every": update_every, "log_every": log_every}
    for v, recs in records.items():
        out["variants"][v] = _variant_summary(recs, update_every, log_every)
    ref = out["variants"].get("dense")
    if ref is not None:
        for v, r in out["variants"].items():
            if v != "dense":
                r["vs_dense"] = _vs_dense(r, ref, records[v], records["dense"])
    return out


def _pairwise(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(a, b) if not x["warmup"] and x["step"] == y["step"] and y[key] > 0]
