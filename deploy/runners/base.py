"""The runner contract every backend implements, and `run_batched` over any runner.

A runner is a context manager. `__init__` only stores arguments; `__enter__` does the heavy work (load the
session, engine or device model); `infer(feed)` maps input names to arrays and returns output arrays keyed by
output name (the task names); `__exit__` releases. Backends live beside this module and import only it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from pipeline.errors import PipelineError


class InferenceRunner(Protocol):
    """What the comparison and latency code needs: a context manager with `infer`. Every runner in
    this package subclasses Runner; a test stand-in only needs these members."""

    name: str

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> Any: ...

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Runner(abc.ABC):
    """Base class: context management and the active-state check shared by all runners."""

    name: str = "runner"

    def __init__(self) -> None:
        self._active = False

    def __enter__(self) -> Runner:
        self.activate()
        self._active = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active = False
        self.deactivate()

    @abc.abstractmethod
    def activate(self) -> None:
        """Load the model into the runtime (called by `__enter__`)."""

    @abc.abstractmethod
    def deactivate(self) -> None:
        """Release the runtime's resources (called by `__exit__`)."""

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Returns host arrays keyed by output name.

        Raises:
            PipelineError: If called outside the `with` block.
        """
        if not self._active:
            raise PipelineError(f"{type(self).__name__}.infer() called outside its 'with' block")
        return self._infer(feed)


def run_batched(
    runner: InferenceRunner, inputs: Mapping[str, np.ndarray], batch_size: int
) -> dict[str, np.ndarray]:
    """Feed `inputs` through an active runner in chunks along axis 0 and concatenate the outputs."""
    n = len(next(iter(inputs.values())))
    chunks: dict[str, list[np.ndarray]] = {}
    for i in range(0, n, batch_size):
        for k, v in runner.infer({name: a[i : i + batch_size] for name, a in inputs.items()}).items():
            chunks.setdefault(k, []).append(v)
    return {k: np.concatenate(v, axis=0) for k, v in chunks.items()}
