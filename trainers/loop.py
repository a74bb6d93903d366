"""The one training loop. Methods differ by their sparsity rule and task weighting, never by a copy of this.

Batch order is a pure function of (seed, step): step s of every run with the same seed sees the same images,
so methods are paired, and resuming at step s needs no sampler state. Under torchrun each rank takes an
interleaved shard of that same global batch.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.config import TrainConfig
from pipeline.data.batching import gather
from pipeline.progress import progress_bar
from trainers import distributed as dist
from trainers.objectives import MultiTaskLoss
from trainers.sparsify import Sparsifier
from trainers.sparsity.base import SparsityMethod
from trainers.weighting import StaticWeighting


def batch_indices(step: int, num_items: int, batch_size: int, seed: int) -> Tensor:
    """Indices of the global batch at `step`: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = max(1, num_items // batch_size)
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(num_items, generator=gen)
    return perm[pos * batch_size : (pos + 1) * batch_size]


def fetch(dataset: Any, idx: Tensor, device: str) -> dict[str, Tensor]:
    """The batch `idx` on `device`, drawn through the one batching path (`pipeline.data.batching.gather`)."""
    return {k: v.to(device) for k, v in gather(dataset, idx).items()}


def lr_factor(cfg: TrainConfig, step: int, steps: int) -> float:
    """Learning-rate multiplier at `step` of a run of `steps` steps (fine-tuning reuses the schedule)."""
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    if cfg.lr_schedule == "step":
        return cfg.gamma ** (step // cfg.step_size)
    return 1.0


STEP_PHASES = ("before_forward", "forward", "backward", "after_backward", "optimizer", "weighting")


class Trainer:
    """Holds everything a run needs to continue exactly: model, method, optimizer, schedule, weighting, RNG."""

    def __init__(
        self,
        model: nn.Module,
        method: SparsityMethod,
        weighting: StaticWeighting,
        objective: MultiTaskLoss,
        dataset: Any,
        cfg: TrainConfig,
        lr: float | None = None,
        steps: int | None = None,
    ):
        cfg = method.train_config(cfg)  # a method may prescribe its optimizer and schedule (adapmtl_faithful)
        if not cfg.weighting.normalise_losses:
            weighting.normalise_losses = False  # ... and turn loss normalisation off (never on)
        self.model, self.method, self.weighting, self.objective = model, method, weighting, objective
        self.dataset, self.cfg = dataset, cfg
        self.steps = steps if steps is not None else cfg.steps
        self.device = cfg.device
        self.net: nn.Module = model
        if dist.is_distributed():
            # BN running stats are averaged over ranks after every step (sync_buffers_) instead of DDP's
            # broadcast of rank 0's copy: every rank then holds the same state_dict at every step.
            # (torch >= 2.13 renamed broadcast_buffers to forward_sync_buffers.)
            params = inspect.signature(DistributedDataParallel.__init__).parameters
            no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": False}
            self.net = DistributedDataParallel(model, **no_sync)
        # The per-step hooks are the public API's object (trainers.sparsify): one implementation of the sequence.
        self.hooks = Sparsifier(model, method, weighting)
        self.optimizer = torch.optim.Adam(
            self.hooks.param_groups(),
            lr=lr if lr is not None else cfg.lr,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
        )
        for g in self.optimizer.param_groups:
            g["base_lr"] = g["lr"]
        self.hooks.bind_optimizer(self.optimizer)
        self.step = 0
        self.timeseries: list[dict[str, Any]] = []
        self.step_seconds: list[float] = []

    @property
    def phase_hook(self) -> Callable[[str], AbstractContextManager[Any]] | None:
        """Optional observer of train_step's phases (benchmarks/cost times them): called with a phase name
        (STEP_PHASES) it returns a context manager entered around that phase. None adds nothing."""
        return self.hooks.phase_hook

    @phase_hook.setter
    def phase_hook(self, hook: Callable[[str], AbstractContextManager[Any]] | None) -> None:
        self.hooks.phase_hook = hook

    # -- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "weighting": self.weighting.state_dict(),
            "rng": torch.get_rng_state(),
            "timeseries": self.timeseries,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.weighting.load_state_dict(state["weighting"])
        torch.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.timeseries = list(state["timeseries"])

    # -- batches -------------------------------------------------------------------------------------
    def global_batch(self, step: int, seed: int) -> dict[str, Tensor]:
        """The whole (unsharded) batch at `step` of the order seeded by `seed`, on the training device.

        For methods that look at data before training (`SparsityMethod.prepare`) without importing the loop.
        """
        idx = batch_indices(step, len(self.dataset), self.cfg.batch_size, seed)
        return fetch(self.dataset, idx, self.device)

    # -- one step ------------------------------------------------------------------------------------
    def _set_lr(self, step: int) -> float:
        f = lr_factor(self.cfg, step, self.steps)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return self.optimizer.param_groups[0]["lr"]

    def train_step(self, step: int) -> dict[str, float]:
        self.model.train()
        idx = batch_indices(step, len(self.dataset), self.cfg.batch_size, self.cfg.seed)
        idx = idx[dist.rank() :: dist.world_size()]
        batch = fetch(self.dataset, idx, self.device)
        self._set_lr(step)
        hooks = self.hooks
        hooks.before_forward(step)
        with self._phase("forward"):
            outputs = self.net(batch["image"])
        total = hooks.weighted_loss(self.objective(outputs, batch))
        self.optimizer.zero_grad(set_to_none=True)
        with self._phase("backward"):
            total.backward()
        hooks.after_backward(step)
        with self._phase("optimizer"):
            self.optimizer.step()
        dist.sync_buffers_(self.model)
        hooks.after_optimizer_step(step)
        return hooks.losses

    def _phase(self, name: str) -> AbstractContextManager[Any]:
        return self.hooks.phase(name)

    def run(
        self,
        checkpoint: Callable[[Trainer], None] | None = None,
        progress: bool = True,
    ) -> None:
        """Train from `self.step` to the end; call `checkpoint(self)` every `checkpoint_every` steps."""
        # Adam's moments of pruned weights decay into subnormal floats some 700 steps after pruning, which
        # makes elementwise CPU kernels 7-13x slower (docs/cost.md); flushing them to zero costs no accuracy.
        torch.set_flush_denormal(True)
        bar = None
        if progress and dist.is_main():
            bar = progress_bar(self.steps, f"train [{self.method.name}]", initial=self.step)
        self.method.bind_trainer(self)
        if self.step == 0:
            self.method.prepare(self)
        while self.step < self.steps:
            s = self.step
            t0 = time.perf_counter()
            losses = self.train_step(s)
            self.step_seconds.append(time.perf_counter() - t0)
            self.step = s + 1
            if s % self.cfg.log_every == 0 or self.step == self.steps:
                self._log(s, losses)
                if bar is not None:
                    snap = self.timeseries[-1]
                    bar.set_postfix(
                        {**{t: f"{v:.3f}" for t, v in losses.items()}, "sp": f"{snap['sparsity']['overall']:.3f}"}
                    )
            if bar is not None:
                bar.update(1)
            if checkpoint is not None and self.cfg.checkpoint_every > 0 and self.step % self.cfg.checkpoint_every == 0:
                if self.step < self.steps:
                    checkpoint(self)
        if bar is not None:
            bar.close()
        self.hooks.finish()

    def log_step(self, step: int, losses: dict[str, float]) -> None:
        """Append the sparsity snapshot of `step` to the timeseries, as `run` does every `log_every` steps."""
        self._log(step, losses)

    def _log(self, step: int, losses: dict[str, float]) -> None:
        snap = self.method.snapshot(step)
        self.timeseries.append(
            {
                "step": step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "losses": losses,
                "task_weights": self.weighting.weights(),
                "sparsity": {"target": snap["target"], "overall": snap["overall"], "components": snap["components"]},
                "thresholds": snap["thresholds"],
            }
        )

