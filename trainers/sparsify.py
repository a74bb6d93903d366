"""Compress inside your own training loop: the per-step hooks of a sparsity method and its task weighting.

`sparsify(model, ...)` makes a model sparse-capable with a registered method (AdapMTL by default) and returns a
`Sparsifier`; the user's loop calls, per step,

    sp.before_forward(step); out = model(x); loss = sp.weighted_loss(per_task_losses)
    loss.backward(); sp.after_backward(step); optimizer.step(); sp.after_optimizer_step(step)

then `sp.harden()` for a plain `nn.Module` whose pruned weights are exact zeros. The pipeline's own loop
(`trainers.loop.Trainer`) drives the very same object, so there is one implementation of the step sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.config import SparsityConfig, WeightingConfig
from pipeline.errors import ConfigError, TrainingDiverged
from pipeline.models.folding import fold_batchnorm_
from trainers import distributed as dist
from trainers.sparsity.base import SparsityMethod
from trainers.sparsity.harden import harden_
from trainers.sparsity.methods import build_method
from trainers.sparsity.report import sparsity_report
from trainers.weighting import StaticWeighting, build_weighting

__all__ = ["Sparsifier", "sparsify"]


class Sparsifier:
    """A sparsity method and a task weighting, driven by hooks in a fixed order per step.

    Order per step: `before_forward`, forward, `weighted_loss`, backward, `after_backward`, optimizer step,
    `after_optimizer_step`. The thresholds (if the method learns them) must be in the optimizer: build it from
    `param_groups()` and pass it to `bind_optimizer`.
    """

    def __init__(self, model: nn.Module, method: SparsityMethod, weighting: StaticWeighting):
        self.model, self.method, self.weighting = model, method, weighting
        self.losses: dict[str, float] = {}  # this step's per-task losses (averaged over ranks), for logs
        self.finished = False
        self._hardened_report: dict[str, Any] | None = None
        # Optional observer (benchmarks time the phases): name -> context manager around that phase.
        self.phase_hook: Callable[[str], AbstractContextManager[Any]] | None = None

    def phase(self, name: str) -> AbstractContextManager[Any]:
        return nullcontext() if self.phase_hook is None else self.phase_hook(name)

    # -- setup ---------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """The model's trainable parameters, then the method's own (learned thresholds), as optimizer groups."""
        groups: list[dict[str, Any]] = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        return groups + self.method.extra_param_groups()

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Tell the method which optimizer steps its parameters (some read its state)."""
        self.method.bind_optimizer(optimizer)

    # -- the step ------------------------------------------------------------------------------------
    def before_forward(self, step: int) -> None:
        with self.phase("before_forward"):
            self.method.before_forward(step)

    def weighted_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """The total loss to back-propagate: each task loss times its current weight (static or adaptive)."""
        self.losses = {t: float(dist.all_reduce_mean(v.detach())) for t, v in losses.items()}
        weights = self.weighting.loss_multipliers(self.losses)
        return sum(weights[t] * losses[t] for t in losses)  # type: ignore[return-value]

    def after_backward(self, step: int) -> None:
        """Method hook on the fresh gradients; then refuse a non-finite loss before the optimizer uses it."""
        with self.phase("after_backward"):
            self.method.after_backward(step)
        for t, v in self.losses.items():
            if not math.isfinite(v):
                raise TrainingDiverged(
                    f"loss of task '{t}' is {v} at step {step}; the last good checkpoint is kept. "
                    "Lower train.lr or check the data for NaN/Inf"
                )

    def after_optimizer_step(self, step: int) -> None:
        """Method hook after the weights moved (threshold/mask refresh), then the task weighting's update."""
        self.method.after_optimizer_step(step)
        with self.phase("weighting"):
            self.weighting.observe(step, self.losses)

    # -- end -----------------------------------------------------------------------------------------
    def finish(self) -> None:
        """After the last step: make the achieved sparsity final (e.g. exact projection onto the target)."""
        if not self.finished:
            self.method.finalize()
            self.finished = True

    def sparsity(self) -> dict[str, Any]:
        """What the train stage writes to sparsity.json: overall, per component and per layer, thresholds.

        After `harden()` it is the report taken just before hardening (the weights no longer carry thresholds).
        """
        return self._hardened_report if self._hardened_report is not None else sparsity_report(self.method)

    def harden(self, fold_bn: bool = True) -> nn.Module:
        """Bake thresholds/masks into plain convs (zeros are stored zeros), optionally fold batch norm.

        Returns the same model object, in eval mode: a plain `nn.Module` with no sparsity machinery left.
        """
        self.finish()
        if self._hardened_report is None:
            self._hardened_report = sparsity_report(self.method)
        harden_(self.method)
        self.model.eval()
        if fold_bn:
            fold_batchnorm_(self.model)
        return self.model


def sparsify(
    model: nn.Module,
    *,
    total_steps: int,
    target: float = 0.9,
    method: str = "adapmtl",
    tasks: Sequence[str] | None = None,
    weighting: str = "auto",
    rules: list[dict[str, Any]] | None = None,
    weighting_cfg: WeightingConfig | None = None,
    **options: Any,
) -> Sparsifier:
    """Attach a registered sparsity method to `model` (in place) and return its `Sparsifier`.

    Args:
        model: A multitask model (`model(image) -> {task: tensor}`); its prunable convs become sparse-capable.
        total_steps: Steps the user's loop will run; the target ramps up on a cubic schedule over them.
        target: Overall sparsity of the prunable convs at the end.
        method: A name from `trainers.sparsity.methods.METHODS` ("adapmtl", "gmp_global", ...).
        tasks: Task names (keys of the loss dict); default: the model's heads.
        weighting: "auto" (what the method prescribes), "static" or "adaptive".
        rules: Which modules are prunable and into which component (see `SparsityConfig.rules`).
        weighting_cfg: Adaptive-weighting settings; default `WeightingConfig()`.
        options: Further `SparsityConfig` fields (ramp_start, ramp_end, ...).
    """
    fields = {"method": method, "target": target, **options}
    if rules is not None:
        fields["rules"] = rules
    try:
        cfg = SparsityConfig(**fields)
    except TypeError as exc:
        raise ConfigError(f"sparsify: {exc}; see pipeline.config.SparsityConfig for the options") from None
    built, spec = build_method(cfg, total_steps)
    if type(built).prepare is not SparsityMethod.prepare:
        raise ConfigError(
            f"sparsify: method '{method}' scores weights on data before training; it runs only in the "
            "pipeline's trainer (`pipeline run train`); pick another method"
        )
    if weighting not in ("auto", "static", "adaptive"):
        raise ConfigError(f"sparsify: weighting '{weighting}' is not one of auto, static, adaptive")
    task_names = list(tasks) if tasks is not None else list(getattr(model, "heads", {}))
    if not task_names:
        raise ConfigError("sparsify: pass tasks=[...] (the model has no `heads` to read them from)")
    built.attach(model)
    kind = spec.weighting if weighting == "auto" else weighting
    return Sparsifier(model, built, build_weighting(kind, task_names, weighting_cfg or WeightingConfig()))
