"""Gradual magnitude pruning (Zhu & Gupta): masks recomputed on a cubic schedule, fixed after the ramp.

Scopes: `global` (one magnitude cut over all prunable weights), `uniform` (the same fraction in every layer)
and `split` (a given sparsity per component, e.g. the split AdapMTL learned: the allocation control).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pipeline.errors import ConfigError
from trainers.sparsity.base import SparsityMethod


def _cut(values: Tensor, fraction: float) -> Tensor:
    """Smallest value that, used as `|w| > cut`, prunes `fraction` of `values` (exactly, barring ties)."""
    k = int(round(fraction * values.numel()))
    if k <= 0:
        return values.new_tensor(-1.0)
    return values.kthvalue(k).values


def load_component_split(source: str) -> dict[str, float]:
    """Per-component sparsity from a run directory or a sparsity.json (for the `gmp_split` control)."""
    path = Path(source)
    if path.is_dir():
        for cand in (path / "train" / "sparsity.json", path / "sparsity.json"):
            if cand.exists():
                path = cand
                break
    try:
        data = json.loads(path.read_text())
        split = {k: float(v) for k, v in data["components"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"'sparsity.split_from' = {source}: expected a run directory or sparsity.json with a 'components' map"
        ) from None
    bad = {k: v for k, v in split.items() if not 0.0 <= v < 1.0}
    if bad:  # a component at 1.0 would lose every weight (a whole head, or the backbone)
        raise ConfigError(
            f"'sparsity.split_from' = {source}: component sparsities must lie in [0, 1); got {bad}"
        )
    return split


class MagnitudePruning(SparsityMethod):
    threshold_kind = "magnitude cut"

    def __init__(self, cfg, total_steps: int, scope: str):
        super().__init__(cfg, total_steps)
        self.scope = scope
        self.split: dict[str, float] = {}
        self.cuts: dict[str, float] = {}

    def setup(self) -> None:
        for layer in self.layers.values():
            layer.mask = torch.ones_like(layer.weight, dtype=torch.bool)
        if self.scope == "split":
            if not self.cfg.split_from:
                raise ConfigError("method 'gmp_split' needs 'sparsity.split_from' (an AdapMTL run directory)")
            split = load_component_split(self.cfg.split_from)
            missing = [c for c in self.components if c not in split]
            if missing:
                raise ConfigError(f"'sparsity.split_from' has no sparsity for components {missing}")
            self.split = self._rescale(split)

    def _rescale(self, split: dict[str, float]) -> dict[str, float]:
        """Scale the split's densities by one common factor so that, with this model's parameter counts, it
        meets the overall target exactly (bisection; densities are clamped to [0, 1])."""
        sizes = {c: 0 for c in self.components}
        for layer in self.layers.values():
            sizes[layer.component] += layer.weight.numel()
        total = sum(sizes.values())

        def at(g: float) -> dict[str, float]:
            return {c: 1.0 - min(max((1.0 - split[c]) * g, 0.0), 1.0) for c in self.components}

        lo, hi = 0.0, 1e6
        for _ in range(200):
            mid = (lo + hi) / 2
            overall = sum(v * sizes[c] for c, v in at(mid).items()) / total
            lo, hi = (mid, hi) if overall > self.cfg.target else (lo, mid)
        return at((lo + hi) / 2)

    @torch.no_grad()
    def _update_masks(self, fraction: float) -> None:
        mags = {n: layer.weight.abs() for n, layer in self.layers.items()}
        if self.scope == "global":
            cut = _cut(torch.cat([m.flatten() for m in mags.values()]), fraction)
            cuts = {n: cut for n in mags}
            self.cuts = {"global": float(cut)}
        elif self.scope == "uniform":
            cuts = {n: _cut(m.flatten(), fraction) for n, m in mags.items()}
            self.cuts = {n: float(c) for n, c in cuts.items()}
        else:
            scale = fraction / self.cfg.target if self.cfg.target > 0 else 0.0
            cuts = {}
            for comp in self.components:
                names = [n for n, layer in self.layers.items() if layer.component == comp]
                cut = _cut(torch.cat([mags[n].flatten() for n in names]), self.split[comp] * scale)
                cuts.update({n: cut for n in names})
                self.cuts[comp] = float(cut)
        for n, layer in self.layers.items():
            layer.mask = mags[n] > cuts[n]
            layer.weight.mul_(layer.mask)

    def _ramp_last_step(self) -> int:
        return int(self.cfg.ramp_end * self.total_steps)

    def before_forward(self, step: int) -> None:
        if step <= self._ramp_last_step() and step % self.cfg.update_every == 0:
            self._update_masks(self.target_at(step))

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        # Keep pruned weights at exactly zero so optimizer momentum cannot revive them between updates.
        for layer in self.layers.values():
            layer.weight.mul_(layer.mask)

    def finalize(self) -> None:
        if abs(self.measure()["overall"] - self.cfg.target) > 1e-4:
            self._update_masks(self.cfg.target)

    def thresholds(self) -> dict[str, float]:
        return dict(self.cuts) if self.scope != "uniform" else {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {n: layer.mask.clone() for n, layer in self.layers.items()},
            "split": dict(self.split),
            "cuts": dict(self.cuts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n, mask in state["masks"].items():
            self.layers[n].mask = mask.to(torch.bool)
        self.split = dict(state.get("split", {})) or self.split
        self.cuts = dict(state.get("cuts", {}))


class IterativeMagnitudePruning(MagnitudePruning):
    """IMP with rewinding (Frankle et al., LTH style) inside the run's own step budget.

    Schedule: the T steps are split into R + 1 equal phases (R = `sparsity.imp_rounds`). The surviving weights
    are saved at the rewind step k = phase / 10 (rewinding to an early iteration rather than to the
    initialisation, as in "Stabilizing the LTH"). At the start of phase r = 1..R, the global magnitude cut
    prunes to 1 - (1 - target)^(r / R) (each round removes the same fraction of the survivors), every
    surviving prunable weight is rewound to its value at step k and Adam's moments are cleared; the last
    phase trains at the target. The learning-rate schedule follows the global step (it is not rewound).
    """

    threshold_kind = "magnitude cut"

    def __init__(self, cfg, total_steps: int):
        super().__init__(cfg, total_steps, "global")
        self.rounds = max(1, int(cfg.imp_rounds))
        self.phase = max(1, self.total_steps // (self.rounds + 1))
        self.rewind_step = self.phase // 10
        self.rewind: dict[str, torch.Tensor] = {}
        self.round = 0

    def bind_optimizer(self, optimizer) -> None:
        self._optimizer = optimizer

    def round_sparsity(self, r: int) -> float:
        return 1.0 - (1.0 - self.cfg.target) ** (r / self.rounds) if r > 0 else 0.0

    def target_at(self, step: int) -> float:
        return self.round_sparsity(min(self.rounds, step // self.phase))

    @torch.no_grad()
    def before_forward(self, step: int) -> None:
        if step == self.rewind_step and not self.rewind:
            self.rewind = {n: layer.weight.detach().clone() for n, layer in self.layers.items()}
        r = step // self.phase
        if step > 0 and step % self.phase == 0 and 1 <= r <= self.rounds and r > self.round:
            self._update_masks(self.round_sparsity(r))
            for n, layer in self.layers.items():
                layer.weight.copy_(self.rewind[n] * layer.mask)
            if getattr(self, "_optimizer", None) is not None:
                self._optimizer.state.clear()  # a rewound network restarts its optimizer too
            self.round = r

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rewind": {n: w.clone() for n, w in self.rewind.items()}, "round": self.round}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rewind = {n: w.clone() for n, w in state.get("rewind", {}).items()}
        self.round = int(state.get("round", 0))


class FixedMasks(SparsityMethod):
    """Masks given up front and never changed (2:4 fine-tuning): zeros stay zeros, survivors train."""

    name = "fixed_masks"
    threshold_kind = "none"

    def __init__(self, cfg, total_steps: int, masks: dict[str, torch.Tensor]):
        super().__init__(cfg, total_steps)
        self.given = masks

    def setup(self) -> None:
        missing = [n for n in self.layers if n not in self.given]
        if missing:
            raise ValueError(f"no mask for layers {missing[:3]}")
        for n, layer in self.layers.items():
            layer.mask = self.given[n].to(device=layer.weight.device, dtype=torch.bool)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        for layer in self.layers.values():
            layer.weight.mul_(layer.mask)

    def target_at(self, step: int) -> float:
        return self.cfg.target

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {n: layer.mask.clone() for n, layer in self.layers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n, mask in state["masks"].items():
            self.layers[n].mask = mask.to(torch.bool)
