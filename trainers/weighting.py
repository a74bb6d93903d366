"""Task-loss weighting: static priorities, or AdapMTL's adaptive rule (method.md section 5).

Adaptive rule, per step i >= begin: d_t(i) = |L_t(i-1) - L_t(i)| / L_t(i) goes into a FIFO of length `window`;
once the FIFO is full, w_t = mean(FIFO). Every step the weights are normalised to sum to `normalise_to`
(default: the number of tasks; the official code hard-codes 3). Weights never carry gradients. The weights
used at step i are computed from the losses of steps before i.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class StaticWeighting:
    """Fixed priorities p_t. With `normalise_losses`, each task loss is also divided by a running mean of
    itself (EMA, detached), so every task contributes relative changes on a common scale: the gradients, and
    with them the saliency the learned split reads, measure relative loss change, as ΔT does."""

    kind = "static"  # the name `build_weighting` takes

    def __init__(self, tasks: list[str], priority: dict[str, float] | None = None, normalise_losses: bool = False):
        self.tasks = list(tasks)
        self.priority = {t: float((priority or {}).get(t, 1.0)) for t in self.tasks}
        self.normalise_losses = normalise_losses
        self.scale: dict[str, float] | None = None

    def weights(self) -> dict[str, float]:
        return dict(self.priority)

    def loss_multipliers(self, current: dict[str, float]) -> dict[str, float]:
        """What each task loss is multiplied by this step: its weight, over its running scale if normalising."""
        w = self.weights()
        if not self.normalise_losses:
            return w
        if self.scale is None:
            self.scale = {t: max(abs(current[t]), 1e-8) for t in self.tasks}
        return {t: w[t] / self.scale[t] for t in self.tasks}

    def _update_scale(self, losses: dict[str, float]) -> None:
        if self.normalise_losses and self.scale is not None:
            self.scale = {t: 0.99 * self.scale[t] + 0.01 * max(abs(losses[t]), 1e-8) for t in self.tasks}

    def observe(self, step: int, losses: dict[str, float]) -> None:
        self._update_scale(losses)

    def state_dict(self) -> dict[str, Any]:
        return {"scale": dict(self.scale) if self.scale else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = {t: float(v) for t, v in state.get("scale", {}).items()} or None


class AdaptiveLossWeighting(StaticWeighting):
    kind = "adaptive"

    def __init__(
        self,
        tasks: list[str],
        begin: int,
        window: int,
        normalise_to: float | None = None,
        smoothing: float = 0.0,
        priority: dict[str, float] | None = None,
        normalise_losses: bool = False,
    ):
        super().__init__(tasks, priority, normalise_losses)
        if window <= 0 or begin < 0:
            raise ValueError("window must be positive and begin non-negative")
        self.begin, self.window, self.smoothing = begin, window, smoothing
        self.normalise_to = float(normalise_to) if normalise_to is not None else float(len(self.tasks))
        self.raw = {t: 1.0 for t in self.tasks}
        self.prev: dict[str, float] | None = None
        self.history: dict[str, deque[float]] = {t: deque(maxlen=window) for t in self.tasks}

    def weights(self) -> dict[str, float]:
        total = sum(self.raw.values())
        w = {t: self.normalise_to * self.raw[t] / total for t in self.tasks}
        return {t: w[t] * self.priority[t] for t in self.tasks}

    def observe(self, step: int, losses: dict[str, float]) -> None:
        self._update_scale(losses)
        cur = {t: float(losses[t]) for t in self.tasks}
        if self.smoothing > 0 and self.prev is not None:
            a = self.smoothing
            cur = {t: a * self.prev[t] + (1 - a) * cur[t] for t in self.tasks}
        if step >= self.begin and self.prev is not None:
            for t in self.tasks:
                self.history[t].append(abs(self.prev[t] - cur[t]) / max(abs(cur[t]), 1e-12))
            if all(len(h) == self.window for h in self.history.values()):
                self.raw = {t: sum(h) / self.window for t, h in self.history.items()}
                if sum(self.raw.values()) <= 0:
                    self.raw = {t: 1.0 for t in self.tasks}
        self.prev = cur

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "raw": dict(self.raw),
            "prev": dict(self.prev) if self.prev is not None else {},
            "history": {t: list(h) for t, h in self.history.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.raw = {t: float(v) for t, v in state["raw"].items()}
        self.prev = {t: float(v) for t, v in state["prev"].items()} or None
        for t, h in state["history"].items():
            self.history[t] = deque((float(x) for x in h), maxlen=self.window)


def build_weighting(kind: str, tasks: list[str], cfg) -> StaticWeighting:
    """`kind` is 'static' or 'adaptive' (already resolved from 'auto' by the caller)."""
    if kind == "adaptive":
        return AdaptiveLossWeighting(
            tasks, cfg.begin, cfg.window, cfg.normalise_to, cfg.smoothing, cfg.priority, cfg.normalise_losses
        )
    return StaticWeighting(tasks, cfg.priority, cfg.normalise_losses)
