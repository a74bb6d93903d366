"""SNIP and DiSparse-static: saliency at initialisation, then fixed masks.

DiSparse-static (Sun et al., CVPR 2022): per-task saliency at initialisation, unanimous backbone decision.

Each task scores every weight it uses (the backbone and its own head) by |dL_t/dW * W| accumulated over a few
training batches at initialisation (SNIP-style), normalised per task. A task keeps its top fraction; a
backbone weight is pruned only when every task agrees (the union of the tasks' keep masks), a head weight
follows its own task. The keep fraction is found by bisection so the overall sparsity meets the target; the
masks are then fixed for the rest of training. Written from the paper's description, not its code.
DiSparse's dynamic mode (its paper's best, and the AdapMTL paper's baseline) is `disparse_dynamic.py`.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.config import SparsityConfig
from trainers.sparsity.magnitude import FixedMasks


def saliency_scores(
    trainer: Any, layers: dict[str, Any], groups: dict[str, tuple[str, ...]], batches: int
) -> dict[str, dict[str, torch.Tensor]]:
    """SNIP saliency |dL/dW * W| per layer, accumulated over the first `batches` training batches at
    initialisation, for each named group of task losses (L = the sum of the group's task losses).

    `trainer` is the loop's Trainer, used through its attributes only (methods never import the loop)."""
    names = list(layers)
    scores = {g: {n: torch.zeros_like(layers[n].weight) for n in names} for g in groups}
    trainer.model.train()
    for i in range(batches):
        batch = trainer.global_batch(i, trainer.cfg.seed + 7919)
        for g, tasks in groups.items():
            trainer.model.zero_grad(set_to_none=True)
            losses = trainer.objective(trainer.model(batch["image"]), batch)
            loss = losses[tasks[0]]
            for t in tasks[1:]:
                loss = loss + losses[t]
            loss.backward()
            for n in names:
                w = layers[n].weight
                if w.grad is not None:
                    scores[g][n] += (w.grad * w).abs().detach()
    trainer.model.zero_grad(set_to_none=True)
    return scores


class SaliencyMasks(FixedMasks):
    """Masks fixed once from saliency at initialisation (`prepare`); all weights kept until then."""

    threshold_kind = "none"
    saliency_batches = 8

    def __init__(self, cfg: SparsityConfig, total_steps: int):
        super().__init__(cfg, total_steps, masks={})

    def setup(self) -> None:
        for layer in self.layers.values():
            layer.mask = torch.ones_like(layer.weight, dtype=torch.bool)


class Snip(SaliencyMasks):
    """SNIP (Lee et al. 2019): one global cut on |g * w| of the summed task loss at initialisation, fixed after."""

    @torch.no_grad()
    def prepare(self, trainer: Any) -> None:
        with torch.enable_grad():
            scores = saliency_scores(trainer, self.layers, {"all": tuple(trainer.objective.tasks)},
                                     self.saliency_batches)["all"]
        flat = torch.cat([v.flatten() for v in scores.values()])
        k = int(round(self.cfg.target * flat.numel()))
        # keep the (numel - k) largest scores exactly: rank, not a value cut, so ties cannot miss the target
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[torch.argsort(flat, descending=True, stable=True)[: flat.numel() - k]] = True
        offset = 0
        for layer in self.layers.values():
            size = layer.weight.numel()
            layer.mask = keep[offset : offset + size].view_as(layer.weight).to(layer.weight.device)
            layer.weight.mul_(layer.mask)
            offset += size


class DiSparseStatic(SaliencyMasks):

    def prepare(self, trainer: Any) -> None:
        """Score weights per task on the first training batches and fix the masks."""
        tasks = list(trainer.objective.tasks)
        scores = saliency_scores(trainer, self.layers, {t: (t,) for t in tasks}, self.saliency_batches)
        self._set_masks(scores, tasks)

    def _uses(self, task: str, name: str) -> bool:
        comp = self.layers[name].component
        return comp == "backbone" or comp == task

    @torch.no_grad()
    def _set_masks(self, scores: dict[str, dict[str, torch.Tensor]], tasks: list[str]) -> None:
        flat = {}
        for t in tasks:
            used = [n for n in self.layers if self._uses(t, n)]
            vals = torch.cat([scores[t][n].flatten() for n in used])
            flat[t] = (used, vals / vals.sum().clamp_min(1e-30))
        total = sum(layer.weight.numel() for layer in self.layers.values())

        def masks_for(keep: float) -> dict[str, torch.Tensor]:
            out = {n: torch.zeros_like(layer.weight, dtype=torch.bool) for n, layer in self.layers.items()}
            for t in tasks:
                used, vals = flat[t]
                k = max(1, int(round(keep * vals.numel())))
                cut = vals.kthvalue(vals.numel() - k + 1).values if k < vals.numel() else vals.min() - 1
                offset = 0
                for n in used:
                    size = self.layers[n].weight.numel()
                    keep_n = (vals[offset : offset + size] >= cut).view_as(self.layers[n].weight)
                    out[n] |= keep_n  # backbone: union over tasks; heads: only their own task writes
                    offset += size
            return out

        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            kept = sum(int(m.sum()) for m in masks_for(mid).values())
            lo, hi = (mid, hi) if 1 - kept / total > self.cfg.target else (lo, mid)
        for n, mask in masks_for((lo + hi) / 2).items():
            self.layers[n].mask = mask
            self.layers[n].weight.mul_(mask)
