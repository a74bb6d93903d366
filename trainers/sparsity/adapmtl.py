"""Learnable soft thresholds: AdapMTL's learned allocation (improved default) over scale-invariant thresholds.

`SoftThresholds`: layer l of group g uses

    tau_l = rms(W_l) * exp(s_g + b)

where a group is a layer (`layer`: the default AdapMTL since 0.5; each layer's threshold learns its own share,
so components get whatever sparsity their layers tolerate), a component (`component`: the paper's granularity),
or a layer whose threshold is its component's refined per layer (`hierarchical`: the default of 0.2-0.4; the
split is learned between components on pooled signals and between the layers of each component). Per-layer
beat hierarchical on dev at 0.9 and 0.97 (docs/benchmarks.md), hence the default.

- `rms(W_l)` makes the threshold scale-invariant: layers with different weight scales are compared fairly.
- `b` is one shared offset set by the target controller: every `update_every` steps it is solved exactly (a
  k-th value over all prunable weights) so the overall sparsity equals the cubic schedule's value. At the end
  it is solved once more, so the achieved overall sparsity equals the target to within one weight.
- `s_g` (mean zero) carries only the *split* between groups. It is learned from the task loss: the gradient
  dL/ds_g says how much the loss rises when group g prunes more; dividing it by dN_g/ds_g (how many weights
  that prunes, read off the density of weight magnitudes at the threshold) gives the marginal loss per
  pruned weight. Groups whose marginal cost is below average prune more, those above prune less, until the
  costs are equal: the optimum of "least loss at a fixed number of pruned weights". This preconditioning is
  what plain Adam on s_g lacks (its sign-like steps move every group alike; see docs/method.md).

The paper-faithful mode and real STR (sigmoid thresholds in weight units, learned by the optimizer) are in
`trainers.sparsity.sigmoid`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.errors import PipelineError
from trainers.sparsity.base import SparsityMethod, reduce_grad_

_DENSITY_BAND = 0.05  # half-width (in log-threshold units) of the band used to count weights at the threshold


def kth_smallest(values: Tensor, k: int) -> Tensor:
    """`values.kthvalue(k).values` for a 1-d tensor (1-based k): the same element, so the same bits.

    On CPU, numpy's introselect is 3-7x faster than torch's CPU kthvalue, which dominated the offset solve
    (docs/cost.md); other devices keep kthvalue.
    """
    if values.device.type == "cpu" and values.dim() == 1 and values.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.partition(values.numpy(), k - 1)[k - 1 : k]).reshape(())
    return values.kthvalue(k).values


class SoftThresholds(SparsityMethod):
    threshold_kind = "tau / rms(W)"

    def __init__(self, cfg, total_steps: int, granularity: str = "component", allocation: str = "marginal"):
        super().__init__(cfg, total_steps)
        if granularity not in ("component", "layer", "hierarchical") or allocation not in ("marginal", "none"):
            raise ValueError(f"bad soft-threshold setup {granularity}/{allocation}")
        self.granularity = granularity
        self.allocation = allocation
        self._optimizer = None

    def bind_optimizer(self, optimizer) -> None:
        self._optimizer = optimizer

    # -- state ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        names = list(self.layers)
        self.groups = self.components if self.granularity == "component" else names
        index = {g: i for i, g in enumerate(self.groups)}
        self.group_of = {
            n: index[layer.component if self.granularity == "component" else n] for n, layer in self.layers.items()
        }
        dev = next(iter(self.layers.values())).weight.device
        # component of each group (of each threshold): the partition that the hierarchical rule pools over
        comp_index = {c: i for i, c in enumerate(self.components)}
        comp_of_group = [0] * len(self.groups)
        for n, layer in self.layers.items():
            comp_of_group[self.group_of[n]] = comp_index[layer.component]
        self.comp_of_group = torch.tensor(comp_of_group, device=dev, dtype=torch.long)
        self.s = torch.zeros(len(self.groups), device=dev, requires_grad=self.allocation == "marginal")
        self.b = torch.tensor(-30.0, device=dev)  # effectively no pruning until the first solve
        self.grad_ema = torch.zeros(len(self.groups), device=dev)
        self.rms = {n: torch.ones((), device=dev) for n in names}
        self.numel = torch.tensor(
            [sum(self.layers[n].weight.numel() for n in names if self.group_of[n] == i) for i in range(len(self.groups))],
            device=dev,
            dtype=torch.float64,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "s": self.s.detach().clone(),
            "b": self.b.clone(),
            "grad_ema": self.grad_ema.clone(),
            "rms": {n: r.clone() for n, r in self.rms.items()},
            "groups": list(self.groups),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = list(state.get("groups", self.groups))
        if saved != list(self.groups):
            per = {"component": "component", "layer": "layer", "hierarchical": "layer"}[self.granularity]
            raise PipelineError(
                f"the checkpoint holds {len(saved)} thresholds but method '{self.name}' keeps one per {per} "
                f"({len(self.groups)} here): it was written with another threshold granularity (before version "
                "0.2, 'adapmtl' meant today's 'adapmtl_component'); use --set sparsity.method=adapmtl_component "
                "for such a run, or retrain"
            )
        with torch.no_grad():
            self.s.copy_(state["s"])
            self.b.copy_(state["b"])
            self.grad_ema.copy_(state["grad_ema"])
        self.rms = {n: r.clone() for n, r in state["rms"].items()}
        self.set_thresholds()

    # -- controller ----------------------------------------------------------------------------------
    @torch.no_grad()
    def log_magnitudes(self) -> dict[str, Tensor]:
        """log(|W| / rms(W)) per layer (the key that the shared offset is compared against, minus s_g)."""
        out = {}
        for n, layer in self.layers.items():
            w = layer.weight.detach()
            self.rms[n] = w.pow(2).mean().sqrt().clamp_min(1e-12)
            out[n] = torch.log(w.abs().flatten() / self.rms[n])  # -inf for exact zeros: always pruned
        return out

    @torch.no_grad()
    def solve_offset(self, fraction: float, logm: dict[str, Tensor]) -> None:
        keys = torch.cat([logm[n] - self.s[self.group_of[n]] for n in self.layers])
        k = int(round(fraction * keys.numel()))
        if k <= 0:
            finite = keys[torch.isfinite(keys)]
            self.b.fill_((finite.min() - 1.0).item() if finite.numel() else -30.0)
        else:
            self.b.fill_(kth_smallest(keys, k).item())

    @torch.no_grad()
    def apply_bounds(self, logm: dict[str, Tensor]) -> None:
        """Keep each component's sparsity within [component_min, component_max] by shifting all of its
        thresholds together (every granularity: a layer belongs to one component)."""
        lo, hi = self.cfg.component_min, self.cfg.component_max
        for c in self.components:
            members = [n for n, layer in self.layers.items() if layer.component == c]
            vals = torch.cat([logm[n] - self.s[self.group_of[n]] for n in members])
            frac = (vals <= self.b).double().mean().item()
            if frac > hi or frac < lo:
                q = hi if frac > hi else lo
                k = max(1, int(round(q * vals.numel())))
                shift = kth_smallest(vals, k) - self.b
                for g in {self.group_of[n] for n in members}:
                    self.s[g] += shift

    def set_thresholds(self) -> None:
        for n, layer in self.layers.items():
            layer.tau = self.rms[n] * torch.exp(self.s[self.group_of[n]] + self.b)

    @torch.no_grad()
    def _marginal_cost_terms(self, logm: dict[str, Tensor], density: Tensor) -> tuple[Tensor, Tensor]:
        """Loss per extra pruned weight, per group, as (numerator, denominator): sums that pool exactly over
        the groups of a component (see the module docstring and docs/method.md)."""
        if self.cfg.alloc_signal == "gradient" or self._optimizer is None:
            return self.grad_ema.double(), density
        # saliency: mean over the survivors just above the threshold of F_w * tau_l^2, with the empirical Fisher
        # diagonal F_w read from Adam's second-moment estimate (the OBD cost of pruning those weights)
        total = torch.zeros(len(self.groups), dtype=torch.float64, device=self.s.device)
        count = torch.zeros_like(total)
        for n, layer in self.layers.items():
            v = self._optimizer.state.get(layer.weight, {}).get("exp_avg_sq")
            if v is None:
                continue
            key = logm[n] - self.s[self.group_of[n]] - self.b
            band = (key > 0) & (key < 2 * _DENSITY_BAND)
            tau2 = float(layer.tau.detach()) ** 2 if layer.tau is not None else 0.0
            g = self.group_of[n]
            total[g] += v.flatten()[band].double().sum() * tau2
            count[g] += band.sum()
        return total, count.clamp_min(1.0)

    def _centred_log_step(self, cost: Tensor, weight: Tensor, part: Tensor) -> Tensor:
        """alloc_lr * clamp(log cost - its weight-averaged mean within each part of `part`, +-1)."""
        positive = cost[cost > 0]
        floor = (positive.min() * 1e-3).item() if positive.numel() else 1e-12
        log_cost = torch.log(cost.clamp_min(floor))
        parts = int(part.max()) + 1
        wsum = torch.zeros(parts, dtype=torch.float64, device=cost.device).index_add_(0, part, weight)
        wlog = torch.zeros_like(wsum).index_add_(0, part, weight * log_cost)
        mean = (wlog / wsum.clamp_min(1e-12))[part]
        return (log_cost - mean).clamp(-1.0, 1.0) * self.cfg.alloc_lr

    def _per_component_sum(self, per_group: Tensor) -> Tensor:
        """Sum a per-group float64 vector over the groups of each component."""
        out = torch.zeros(len(self.components), dtype=torch.float64, device=per_group.device)
        return out.index_add_(0, self.comp_of_group, per_group)

    @torch.no_grad()
    def _density_at_threshold(self, logm: dict[str, Tensor]) -> Tensor:
        """dN_g/ds_g: weights per unit of log-threshold at each group's threshold (counted in a narrow band)."""
        density = torch.zeros(len(self.groups), dtype=torch.float64, device=self.s.device)
        for n in self.layers:
            key = logm[n] - self.s[self.group_of[n]] - self.b
            density[self.group_of[n]] += (key.abs() < _DENSITY_BAND).sum()
        return density.clamp_min(1.0) / (2 * _DENSITY_BAND)

    @torch.no_grad()
    def reallocate(self, logm: dict[str, Tensor]) -> None:
        """One preconditioned step on s toward equal marginal loss per pruned weight across groups.

        Hierarchical granularity takes two steps: one between components, on costs pooled over each
        component's layers (many weights: a low-noise signal), and one between the layers of each component.
        """
        density = self._density_at_threshold(logm)
        num, den = self._marginal_cost_terms(logm, density)
        one_part = torch.zeros(len(self.groups), dtype=torch.long, device=self.s.device)
        if self.granularity == "hierarchical":
            pool = self._per_component_sum
            between = self._centred_log_step(pool(num) / pool(den), pool(density), one_part[: len(self.components)])
            step = between[self.comp_of_group] + self._centred_log_step(num / den, density, self.comp_of_group)
        else:
            step = self._centred_log_step(num / den, density, one_part)
        self.s -= step.to(self.s.dtype)
        centre = (self.numel * self.s.double()).sum() / self.numel.sum()
        self.s -= centre.to(self.s.dtype)
        self.s.clamp_(-self.cfg.alloc_bound, self.cfg.alloc_bound)

    def _learning(self, step: int) -> bool:
        start = (self.cfg.ramp_start + 0.1 * (self.cfg.ramp_end - self.cfg.ramp_start)) * self.total_steps
        return self.allocation == "marginal" and start <= step <= self.cfg.ramp_end * self.total_steps

    def before_forward(self, step: int) -> None:
        if step % self.cfg.update_every == 0:
            logm = self.log_magnitudes()
            if self._learning(step) and step > 0:
                self.reallocate(logm)
            target = self.target_at(step)
            self.solve_offset(target, logm)
            if target > 0:
                self.apply_bounds(logm)
                self.solve_offset(target, logm)
        self.set_thresholds()

    def after_backward(self, step: int) -> None:
        if self.s.grad is None:
            return
        reduce_grad_(self.s.grad)
        with torch.no_grad():
            a = self.cfg.alloc_ema
            self.grad_ema.mul_(a).add_(self.s.grad, alpha=1 - a)
        self.s.grad = None

    def finalize(self) -> None:
        logm = self.log_magnitudes()
        self.solve_offset(self.cfg.target, logm)
        self.set_thresholds()

    def thresholds(self) -> dict[str, float]:
        """exp(s + b) per component; for per-layer thresholds the parameter-weighted mean of its layers' s."""
        w = self._per_component_sum(self.numel)
        ws = self._per_component_sum(self.numel * self.s.detach().double())
        return {c: math.exp(float(ws[i] / w[i]) + float(self.b)) for i, c in enumerate(self.components)}
