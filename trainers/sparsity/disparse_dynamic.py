"""DiSparse dynamic (Sun et al., CVPR 2022): sparse training from a random mask, with periodic prune-and-regrow
in which every task regrows the weights it needs.

The rule, as the paper's official code runs it on NYUv2 (the AdapMTL paper's DiSparse row), written anew here:
- per-layer densities from the Erdős–Rényi kernel (ERK, power 0.9) at the target's overall density; the
  initial masks are random at those densities (sparse from the first step, no dense phase);
- every `sparsity.update_every` steps before `ramp_end` of training, each layer drops the fraction α of its kept
  weights with the smallest magnitude (α = 0.5 cosine-decayed to 0 at `ramp_end`); then each task scores the
  pruned positions of the layers it uses (the backbone and its own head) by |dL_task/dw| on one batch and
  regrows its best ones up to the layer's ERK density. A backbone position comes back if any task regrows it
  (the union: DiSparse's "unanimous" pruning), a head position only by its own task;
- at `ramp_end` a last magnitude cut returns every layer to its ERK density; the masks are fixed afterwards.
Different from the official code, on purpose: a regrown weight starts at zero (RigL's convention; the official
code revives the value it had when pruned), the scoring batch is the run's own seeded batch of that step, and the
scoring passes leave the batch-norm statistics untouched. Overall sparsity is the target up to rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pipeline.config import SparsityConfig
from trainers.sparsity.disparse import SaliencyMasks


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float, power: float = 0.9) -> dict[str, float]:
    """Per-layer densities proportional to ((sum of dims) / (product of dims)) ** power, scaled so the kept
    weights total `density` of all weights; a layer that would exceed 1 is made dense and the rest rescaled."""
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / numel[n]) ** power for n, s in shapes.items()}
    total = sum(numel.values())
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        budget = density * total - sum(numel[n] for n in dense)
        divisor = sum(raw[n] * numel[n] for n in free)
        eps = budget / divisor if divisor > 0 else 0.0
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            return {n: 1.0 if n in dense else max(0.0, eps * raw[n]) for n in shapes}
        dense.add(max(over, key=lambda n: raw[n]))


class DiSparseDynamic(SaliencyMasks):
    name = "disparse_dynamic"
    prune_rate = 0.5  # α at the first update (the official NYUv2 setting), cosine-decayed to 0 at ramp_end
    erk_power = 0.9
    seed_offset = 104729  # the random initial mask's stream, apart from the batch order's

    def __init__(self, cfg: SparsityConfig, total_steps: int):
        super().__init__(cfg, total_steps)
        self.kept: dict[str, int] = {}
        self._trainer: Any = None

    def setup(self) -> None:
        super().setup()  # all weights kept until `prepare` draws the random sparse mask
        shapes = {n: tuple(layer.weight.shape) for n, layer in self.layers.items()}
        density = erk_densities(shapes, 1.0 - self.cfg.target, self.erk_power)
        self.kept = {n: int(round(density[n] * layer.weight.numel())) for n, layer in self.layers.items()}

    def bind_trainer(self, trainer: Any) -> None:
        self._trainer = trainer

    @torch.no_grad()
    def prepare(self, trainer: Any) -> None:
        self._trainer = trainer
        gen = torch.Generator().manual_seed(int(trainer.cfg.seed) + self.seed_offset)
        for n, layer in self.layers.items():
            mask = torch.zeros(layer.weight.numel(), dtype=torch.bool)
            mask[torch.randperm(mask.numel(), generator=gen)[: self.kept[n]]] = True
            layer.mask = mask.view_as(layer.weight).to(layer.weight.device)
            layer.weight.mul_(layer.mask)

    def _end(self) -> int:
        return int(self.cfg.ramp_end * self.total_steps)

    def rate_at(self, step: int) -> float:
        """α at `step`: the fraction of kept weights an update drops (cosine from `prune_rate` to 0 at ramp_end)."""
        end = self._end()
        return 0.0 if step >= end else self.prune_rate * 0.5 * (1.0 + math.cos(math.pi * step / end))

    def target_at(self, step: int) -> float:
        return self.cfg.target

    def before_forward(self, step: int) -> None:
        end = self._end()
        if step < end and step % self.cfg.update_every == 0:
            self._prune(self.rate_at(step))
            self._grow(step)
        elif step == end:
            self._prune(0.0)

    @torch.no_grad()
    def _prune(self, rate: float) -> None:
        """Keep the largest-magnitude round(kept * (1 - rate)) of each layer's currently kept weights."""
        for n, layer in self.layers.items():
            keep = min(int(round(self.kept[n] * (1.0 - rate))), int(layer.mask.sum()))
            score = layer.weight.abs().masked_fill(~layer.mask, -1.0).flatten()
            mask = torch.zeros_like(score, dtype=torch.bool)
            mask[torch.topk(score, keep, sorted=False).indices] = True
            layer.mask = mask.view_as(layer.weight)
            layer.weight.mul_(layer.mask)

    def _uses(self, task: str, name: str) -> bool:
        comp = self.layers[name].component
        return comp == "backbone" or comp == task

    def _grow(self, step: int) -> None:
        """Each task regrows, in the layers it uses, the pruned positions with the largest |dL_task/dw|."""
        trainer = self._trainer
        if trainer is None:
            raise RuntimeError("disparse_dynamic needs the training loop (bind_trainer) to score regrowth")
        model = trainer.model
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        masks = {n: layer.mask for n, layer in self.layers.items()}
        for layer in self.layers.values():
            layer.mask = None  # pruned weights are 0: same forward, and the gradient reaches every position
        grow = {n: torch.zeros_like(m) for n, m in masks.items()}
        tasks = list(trainer.objective.tasks)
        try:
            batch = trainer.global_batch(step, int(trainer.cfg.seed) + 7919)
            with torch.enable_grad():
                losses = trainer.objective(model(batch["image"]), batch)
                for i, task in enumerate(tasks):
                    model.zero_grad(set_to_none=True)
                    losses[task].backward(retain_graph=i < len(tasks) - 1)
                    for n, layer in self.layers.items():
                        missing = self.kept[n] - int(masks[n].sum())
                        if missing <= 0 or layer.weight.grad is None or not self._uses(task, n):
                            continue
                        score = layer.weight.grad.abs().masked_fill(masks[n], -1.0).flatten()
                        grow[n].view(-1)[torch.topk(score, missing, sorted=False).indices] = True
        finally:
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(buffers[n])
            for n, layer in self.layers.items():
                layer.mask = masks[n] | grow[n]  # regrown weights are still exactly 0: they start from zero

    def finalize(self) -> None:
        self._prune(0.0)  # exactly the ERK counts, even for a run shorter than one update interval

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "kept": dict(self.kept)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kept = {n: int(k) for n, k in state.get("kept", self.kept).items()}
