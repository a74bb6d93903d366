"""Where AdapMTL's training overhead goes: standalone timings of its parts, and a profiler attribution.

Everything is reached through public names of the method (`set_thresholds`, `log_magnitudes`, `solve_offset`,
`apply_bounds`, `reallocate`, `kth_smallest`); the result keys keep the private names the results were
first published under.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from benchmarks.cost.machine import repeat_cpu_ms, summarize
from trainers.sparsity.adapmtl import kth_smallest
from trainers.sparsity.layers import soft_threshold, soft_threshold_reference


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

PROFILE_KEYS = {
    "W_eff forward (_SoftThreshold)": "_SoftThreshold",
    "W_eff backward (_SoftThresholdBackward)": "autograd::engine::evaluate_function: _SoftThresholdBackward",
    "convolutions forward": "aten::convolution",
    "convolutions backward": "autograd::engine::evaluate_function: ConvolutionBackward0",
    "Adam step": "Optimizer.step#Adam.step",
}


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


def w_eff_timings(method, reps: int) -> dict[str, Any]:
    """Forward (with the tau graph) and backward CPU ms of W_eff for every implementation, and what each saves
    for backward beyond the weights and W_eff, over all of the method's layers."""
    layers = list(method.layers.values())
    weights = [layer.weight for layer in layers]
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(w.shape, generator=gen) * 1e-3 for w in weights]
    impls = {}
    for name, impl in IMPLEMENTATIONS.items():
        fwd, bwd, saved = [], [], 0
        for _ in range(reps):
            c = time.process_time()
            method.set_thresholds()
            outs, saved = _saved_bytes(lambda f=impl: [f(layer.weight, layer.tau) for layer in layers], weights)
            c1 = time.process_time()
            torch.autograd.backward(outs, grads)
            c2 = time.process_time()
            fwd.append((c1 - c) * 1e3)
            bwd.append((c2 - c1) * 1e3)
            del outs
            for w in weights:
                w.grad = None
            method.s.grad = None
        impls[name] = {"forward_ms": summarize(fwd), "backward_ms": summarize(bwd), "saved_extra_bytes": saved}
    return impls


def _solve_timings(method, solve_step: int, reps: int) -> dict[str, Any]:
    """The controller's solve and its parts (state changes are harmless: the timed steps are over)."""
    target = method.target_at(solve_step)
    res: dict[str, Any] = {"solve_step": solve_step, "solve_target": target}
    res["before_forward_solve_ms"] = summarize(repeat_cpu_ms(lambda: method.before_forward(solve_step), reps))
    res["before_forward_plain_ms"] = summarize(repeat_cpu_ms(lambda: method.before_forward(solve_step + 1), reps))
    logm = method.log_magnitudes()
    res["solve_parts_ms"] = {
        "_log_mags": summarize(repeat_cpu_ms(method.log_magnitudes, reps)),
        "_solve_offset (x2 per solve)": summarize(repeat_cpu_ms(lambda: method.solve_offset(target, logm), reps)),
        "_apply_bounds": summarize(repeat_cpu_ms(lambda: method.apply_bounds(logm), reps)),
        "_reallocate (learning phase only)": summarize(repeat_cpu_ms(lambda: method.reallocate(logm), reps)),
    }
    keys = torch.cat([logm[n] for n in method.layers])
    k = max(1, int(round(target * keys.numel())))
    res["kth_value_ms"] = {
        "torch.kthvalue": summarize(repeat_cpu_ms(lambda: keys.kthvalue(k), reps)),
        "_kth_smallest (numpy introselect on CPU)": summarize(repeat_cpu_ms(lambda: kth_smallest(keys, k), reps)),
        "same_value": bool(keys.kthvalue(k).values.item() == kth_smallest(keys, k).item()),
    }
    return res


def component_timings(trainers: dict[str, Any], solve_step: int, reps: int) -> dict[str, Any]:
    """Standalone CPU timings of the pieces of AdapMTL's overhead, at the model's real layer sizes."""
    dense, ours = trainers["dense"].method, trainers["adapmtl"].method
    res: dict[str, Any] = {
        "layers": len(ours.layers),
        "prunable_weights": int(sum(layer.weight.numel() for layer in ours.layers.values())),
        "update_every": ours.cfg.update_every,
    }
    ours.before_forward(solve_step)  # current thresholds on every layer
    res["set_taus_ms"] = summarize(repeat_cpu_ms(ours.set_thresholds, reps))
    res["w_eff"] = w_eff_timings(ours, reps)
    res.update(_solve_timings(ours, solve_step, reps))
    res["snapshot_ms"] = {
        "adapmtl": summarize(repeat_cpu_ms(lambda: ours.snapshot(solve_step), reps)),
        "dense": summarize(repeat_cpu_ms(lambda: dense.snapshot(solve_step), reps)),
    }
    return res


def profile_attribution(trainers: dict[str, Any], step: int, variants: Sequence[str] = ("dense", "adapmtl")):
    """One extra step per variant under torch.profiler: inclusive CPU ms of the soft threshold's forward and
    backward nodes and of the convolutions. The profiler inflates small ops, so these attribute, not time."""
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
