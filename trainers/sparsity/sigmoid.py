"""Sigmoid thresholds in the weight's units, learned by the run's optimizer: real STR and the paper-faithful mode.

Both use tau_g = sigmoid(s_g) (absolute units, no controller) with W_eff = sign(W) * relu(|W| - tau_g):

- `SigmoidLayerThresholds` (`str`, Kusupati et al. 2020): one s per prunable layer, its own Adam parameter
  group (`sparsity.threshold_lr`, coupled decay `sparsity.threshold_decay`, which pulls s towards 0 and so
  raises the threshold). The sparsity it reaches is whatever training gives: it is reported, never projected.
  Its initial value per target comes from `STR_S_INIT` (measured on dev, see below) or `sparsity.str_init`.
- `FaithfulSoftThresholds` (`adapmtl_faithful`): one s per component, trained exactly as the official code
  does (method.md sections 3-4): one coupled L2 decay `sparsity.faithful_decay` on *all* parameters, weights and
  thresholds alike, at the run's learning rate; Adam betas (0.5, 0.999); StepLR stepped per iteration (x0.5 at
  every fifth of the run: the official 20000 iterations halve every 4000); no loss normalisation; threshold
  gradients dropped whenever overall sparsity is at or above the target (the freeze).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from pipeline.config import TrainConfig
from trainers.sparsity.base import SparsityMethod, reduce_grad_

# Initial s of `str` per target, for the `bench` regime (N(0, 0.01) init, 400 steps, threshold_lr 0.01,
# threshold_decay 1.0). Targets in between are interpolated linearly in s; outside, the nearest entry is used.
# Measured on dev (bench, data seed 0, training seed 0, one run per value; docs/benchmarks.md): achieved overall
# sparsity 0.29 at s_init -8.1, 0.34 at -7.8, 0.39 at -7.5, 0.43 at -7.3, 0.46 at -7.15, 0.49 at -7.0,
# 0.84 at -5.75, 0.897 at -5.5, 0.97 at -5.0, 0.999 at -4.0. The entries interpolate that curve in logit(sparsity)
# (-5.5 was chosen by interpolation, then checked: 0.897).
STR_S_INIT: dict[float, float] = {0.5: -6.95, 0.9: -5.5, 0.97: -5.0}


def str_initial_s(target: float, table: dict[float, float] = STR_S_INIT) -> float:
    """s_init for `target` from `table`: linear interpolation between entries, clamped at the ends."""
    keys = sorted(table)
    if target <= keys[0]:
        return table[keys[0]]
    if target >= keys[-1]:
        return table[keys[-1]]
    hi = next(k for k in keys if k >= target)
    lo = max(k for k in keys if k <= target)
    if hi == lo:
        return table[lo]
    f = (target - lo) / (hi - lo)
    return table[lo] + f * (table[hi] - table[lo])


class SigmoidThresholds(SparsityMethod):
    """tau_g = sigmoid(s_g) for groups of layers (per layer or per component), s trained by the optimizer."""

    threshold_kind = "sigmoid(s) (absolute)"
    per = "layer"  # or "component"

    def initial_s(self) -> float:
        return float(self.cfg.init)

    def setup(self) -> None:
        dev = next(iter(self.layers.values())).weight.device
        groups = list(self.layers) if self.per == "layer" else self.components
        self.index = {g: i for i, g in enumerate(groups)}
        self.s = torch.nn.Parameter(torch.full((len(groups),), self.initial_s(), device=dev))

    def _group(self, name: str) -> int:
        return self.index[name if self.per == "layer" else self.layers[name].component]

    def before_forward(self, step: int) -> None:
        tau = torch.sigmoid(self.s)
        for n, layer in self.layers.items():
            layer.tau = tau[self._group(n)]

    def after_backward(self, step: int) -> None:
        reduce_grad_(self.s.grad)

    def thresholds(self) -> dict[str, float]:
        return {g: float(torch.sigmoid(self.s[i].detach())) for g, i in self.index.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"s": self.s.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.s.copy_(state["s"])
        self.before_forward(0)


class SigmoidLayerThresholds(SigmoidThresholds):
    """STR: one learned sigmoid threshold per layer, own learning rate and decay, no controller."""

    per = "layer"

    def initial_s(self) -> float:
        c = self.cfg
        return float(c.str_init) if c.str_init is not None else str_initial_s(c.target)

    def extra_param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.s], "lr": self.cfg.threshold_lr, "weight_decay": self.cfg.threshold_decay}]

    def target_at(self, step: int) -> float:
        return self.cfg.target  # no schedule: the target only picks s_init


class FaithfulSoftThresholds(SigmoidThresholds):
    """The official dynamics: one sigmoid threshold per component, the official optimizer, freeze at ratio."""

    per = "component"

    def setup(self) -> None:
        super().setup()
        self.frozen_at: int | None = None
        self.frozen_now = False

    def extra_param_groups(self) -> list[dict[str, Any]]:
        # no lr / weight_decay of its own: the thresholds share the run's lr and the one coupled decay
        return [{"params": [self.s]}]

    def train_config(self, cfg: TrainConfig) -> TrainConfig:
        """The official optimizer and schedule (method.md sections 3 and 12), scaled to this run's length."""
        return dataclasses.replace(
            cfg,
            betas=(0.5, 0.999),
            weight_decay=self.cfg.faithful_decay,
            lr_schedule="step",
            step_size=max(1, self.total_steps // 5),
            gamma=0.5,
            weighting=dataclasses.replace(cfg.weighting, normalise_losses=False),
        )

    @torch.no_grad()
    def _overall(self) -> float:
        zeros = total = 0
        tau = torch.sigmoid(self.s)
        for n, layer in self.layers.items():
            zeros += int((layer.weight.abs() <= tau[self._group(n)]).sum())
            total += layer.weight.numel()
        return zeros / total

    def after_backward(self, step: int) -> None:
        reduce_grad_(self.s.grad)
        # Official rule: once overall sparsity reaches the ratio, drop the threshold gradients so Adam skips
        # them (weight decay included); weights keep training, so sparsity can drift past the target.
        self.frozen_now = self._overall() >= self.cfg.target
        if self.frozen_now:
            self.s.grad = None
            if self.frozen_at is None:
                self.frozen_at = step

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "frozen_at": -1 if self.frozen_at is None else self.frozen_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        f = int(state.get("frozen_at", -1))
        self.frozen_at = None if f < 0 else f
