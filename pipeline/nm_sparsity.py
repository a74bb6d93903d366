"""The N:M (2:4) sparsity check, in numpy, shared by hardening (trainers), the export checks (exporters) and tests.

It lives in the foundation because both trainers and exporters need it and exporters must never import trainers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["nm_report", "nm_violations"]


def nm_violations(w: np.ndarray, n: int = 2, m: int = 4, axis: int = 1) -> int:
    """Count groups of `m` consecutive entries along `axis` that hold more than `n` nonzeros.

    For a conv weight [K, C, R, S] and axis 1 this is TensorRT's 2:4 rule: for each output channel and kernel
    position, every 4 consecutive input channels hold at least 2 zeros. NaN counts as nonzero.

    Raises:
        ValueError: If the axis length is not a multiple of `m` (the pattern does not apply).
    """
    w = np.asarray(w)
    length = w.shape[axis]
    if length % m:
        raise ValueError(f"axis {axis} has length {length}, not a multiple of {m}: {n}:{m} does not apply")
    groups = np.moveaxis(w != 0, axis, -1).reshape(-1, m)
    return int(np.count_nonzero(groups.sum(axis=1) > n))


def nm_report(
    weights: Mapping[str, np.ndarray], n: int = 2, m: int = 4, axis: int = 1
) -> dict[str, dict[str, Any]]:
    """Per weight: shape, zero fraction, whether N:M applies (`eligible`), and the violation count."""
    report = {}
    for name, w in weights.items():
        eligible = w.ndim > axis and w.shape[axis] % m == 0
        report[name] = {
            "shape": list(w.shape),
            "sparsity": float(np.mean(w == 0)) if w.size else 0.0,
            "eligible": bool(eligible),
            "violations": nm_violations(w, n, m, axis) if eligible else None,
        }
    return report
