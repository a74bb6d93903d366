"""DiSparse-static (Sun et al., CVPR 2022): per-task saliency at initialisation, unanimous backbone decision.

Each task scores every weight it uses (the backbone and its own head) by |dL_t/dW * W| accumulated over a few
training batches at initialisation (SNIP-style), normalised per task. A task keeps its top fraction; a
backbone weight is pruned only when every task agrees (the union of the tasks' keep masks), a head weight
follows its own task. The keep fraction is found by bisection so the overall sparsity meets the target; the
masks are then fixed for the rest of training. Written from the paper's description, not its code.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.config import SparsityConfig
from trainers.sparsity.magnitude import FixedMasks


class DiSparseStatic(FixedMasks):
    threshold_kind = "none"
    saliency_batches = 8

    def __init__(self, cfg: SparsityConfig, total_steps: int):
        super().__init__(cfg, total_steps, masks={})

    def setup(self) -> None:
        for layer in self.layers.values():
            layer.mask = torch.ones_like(layer.weight, dtype=torch.bool)

    def prepare(self, trainer: Any) -> None:
        """Score weights per task on the first training batches and fix the masks.

        `trainer` is the loop's Trainer, used through its attributes only (methods never import the loop)."""
        tasks = list(trainer.objective.tasks)
        names = list(self.layers)
        scores = {t: {n: torch.zeros_like(self.layers[n].weight) for n in names} for t in tasks}
        trainer.model.train()
        for i in range(self.saliency_batches):
            batch = trainer.global_batch(i, trainer.cfg.seed + 7919)
            for t in tasks:
                trainer.model.zero_grad(set_to_none=True)
                loss = trainer.objective(trainer.model(batch["image"]), batch)[t]
                loss.backward()
                for n in names:
                    w = self.layers[n].weight
                    if w.grad is not None:
                        scores[t][n] += (w.grad * w).abs().detach()
        trainer.model.zero_grad(set_to_none=True)
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
