"""The sparsity-method contract shared by every pruning method, and the target schedule."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pipeline.config import SparsityConfig, TrainConfig
from trainers.distributed import all_reduce_mean
from trainers.sparsity.components import LayerAssignment, assign_components, components_of
from trainers.sparsity.layers import SparseConv2d, make_sparse_


def cubic_target(step: int, total_steps: int, target: float, ramp_start: float, ramp_end: float) -> float:
    """Zhu & Gupta's cubic ramp from 0 to `target` between two fractions of training, held afterwards."""
    t0, t1 = ramp_start * total_steps, ramp_end * total_steps
    if step <= t0:
        return 0.0
    if step >= t1 or t1 <= t0:
        return target
    frac = (step - t0) / (t1 - t0)
    return target * (1.0 - (1.0 - frac) ** 3)


class SparsityMethod:
    """Base class: wraps prunable convs, measures sparsity, and offers no-op training hooks.

    Subclasses own their thresholds or masks. Hooks are called by the one training loop in this order per
    step: `before_forward`, forward/backward, `after_backward`, optimizer step, `after_optimizer_step`.
    """

    name = "base"
    threshold_kind = "none"  # what `snapshot()["thresholds"]` means, for reports

    def __init__(self, cfg: SparsityConfig, total_steps: int):
        self.cfg = cfg
        self.total_steps = max(1, total_steps)
        self.layers: dict[str, SparseConv2d] = {}
        self.assignments: list[LayerAssignment] = []
        self.components: list[str] = []

    # -- setup ---------------------------------------------------------------------------------------
    def attach(self, model: nn.Module, tasks: list[str] | None = None) -> None:
        """Assign layers to components (`{task}` rules over `tasks`, default the model's heads) and make the
        prunable ones sparse-capable (in place)."""
        self.assignments = assign_components(model, self.cfg.rules, tasks)
        modules = dict(model.named_modules())
        for a in self.assignments:
            if a.component is not None:
                self.layers[a.name] = make_sparse_(modules[a.name], a.component)
        self.components = components_of(self.assignments)
        self.setup()

    def setup(self) -> None:
        """Create method state once layers are known."""

    def extra_param_groups(self) -> list[dict[str, Any]]:
        return []

    def train_config(self, cfg: TrainConfig) -> TrainConfig:
        """The training settings this method runs under: `cfg` itself unless the method prescribes its own
        optimizer or schedule (the paper-faithful mode does; see trainers/sparsity/sigmoid.py)."""
        return cfg

    def bind_trainer(self, trainer: Any) -> None:
        """Called by the training loop before it trains, fresh or resumed: for a method that looks at data during
        training (disparse_dynamic), through the trainer's attributes only."""

    def prepare(self, trainer: Any) -> None:
        """Called once before the first training step of a fresh run (not on resume): data-driven setup."""

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Called once the optimizer exists (a method may read its state, e.g. second moments)."""

    # -- hooks ---------------------------------------------------------------------------------------
    def before_forward(self, step: int) -> None: ...

    def after_backward(self, step: int) -> None: ...

    def after_optimizer_step(self, step: int) -> None: ...

    def finalize(self) -> None:
        """Called once after the last step: make the achieved sparsity final (e.g. an exact projection)."""

    def target_at(self, step: int) -> float:
        c = self.cfg
        return cubic_target(step, self.total_steps, c.target, c.ramp_start, c.ramp_end)

    # -- measurement ---------------------------------------------------------------------------------
    @torch.no_grad()
    def effective_weights(self) -> dict[str, Tensor]:
        return {n: layer.effective_weight().detach().clone() for n, layer in self.layers.items()}

    @torch.no_grad()
    def measure(self) -> dict[str, Any]:
        """Exact zero fractions of the effective weights: per layer, per component, overall (prunable only)."""
        per_layer: dict[str, float] = {}
        comp_zero: dict[str, int] = {c: 0 for c in self.components}
        comp_total: dict[str, int] = {c: 0 for c in self.components}
        for n, layer in self.layers.items():
            zeros = int((layer.effective_weight() == 0).sum())
            per_layer[n] = zeros / layer.weight.numel()
            comp_zero[layer.component] += zeros
            comp_total[layer.component] += layer.weight.numel()
        total = sum(comp_total.values())
        return {
            "overall": sum(comp_zero.values()) / max(total, 1),
            "components": {c: comp_zero[c] / max(comp_total[c], 1) for c in self.components},
            "layers": per_layer,
            "prunable_params": total,
        }

    def thresholds(self) -> dict[str, float]:
        return {}

    def snapshot(self, step: int) -> dict[str, Any]:
        m = self.measure()
        return {
            "target": self.target_at(step),
            "overall": m["overall"],
            "components": m["components"],
            "thresholds": self.thresholds(),
        }

    # -- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def reduce_grad_(t: Tensor | None) -> None:
    """Average a gradient over data-parallel ranks in place (no-op when not distributed)."""
    if t is not None:
        t.copy_(all_reduce_mean(t))
