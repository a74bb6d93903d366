"""Per-layer sensitivity search: which Conv layers to leave in fp32 so the int8 model passes the task gate.

Cheap by construction: the model is pre-processed and calibrated once (ORT's calibration cache), so every trial
is a re-quantization plus one inference over the calibration images. Steps:

1. Quantize everything (minus the user's `exclude`). Passes the gate: done, nothing left in fp32.
2. Leave-one-out: for each candidate Conv, quantize with just that layer (plus the user's) in fp32 and record
   the gate's worst ratio. The layer whose exclusion helps most is the most sensitive.
3. Greedy: exclude the k most sensitive layers, k = 1, 2, ... `max_exclude`, until the gate passes.

The judge is injected (`deploy.task_gate.gate_judge` in the stage), so this module does not import `deploy`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from exporters.quantize import QuantizeInfo, conv_nodes, preprocess, quantize_int8
from pipeline.artifacts import staged_output

__all__ = ["Judgement", "SensitivityResult", "search_fp32_layers"]


class Judgement(Protocol):
    """What the judge returns (`deploy.task_gate.GateResult` satisfies it)."""

    @property
    def passed(self) -> bool: ...

    @property
    def worst_ratio(self) -> float: ...


@dataclass(frozen=True)
class SensitivityResult:
    """The chosen fp32 layers, whether the final model passed, and every trial (for the report)."""

    excluded: list[str]
    passed: bool
    info: QuantizeInfo
    judgement: Any
    sensitivity: dict[str, float] = field(default_factory=dict)  # layer -> worst ratio with it left in fp32
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "excluded": list(self.excluded),
            "passed": self.passed,
            "sensitivity": dict(self.sensitivity),
            "trials": list(self.trials),
        }


def search_fp32_layers(
    fp32_path: str | Path,
    out_path: str | Path,
    images: np.ndarray,
    judge: Callable[[Path], Judgement],
    *,
    exclude: Sequence[str] = (),
    candidates: Sequence[str] | None = None,
    max_exclude: int = 4,
    **quant_kwargs: Any,
) -> SensitivityResult:
    """Quantize `fp32_path` to `out_path`, leaving in fp32 the fewest layers that make `judge` pass.

    Args:
        fp32_path: The exported fp32 model.
        out_path: Final int8 model (the passing one, or the best tried when none passes).
        images: Calibration images (already cut to the configured count).
        judge: int8 path -> judgement; typically the task gate on the calibration images.
        exclude: Layers the user always keeps in fp32.
        candidates: Conv node names to try (default: every Conv not in `exclude`).
        max_exclude: Most layers the search may add to `exclude`.
        **quant_kwargs: Passed to `quantize_int8` (method, activation_type, ...).

    Returns:
        SensitivityResult; `passed` False means no set of at most `max_exclude` layers passed.
    """
    out = Path(out_path)
    trials: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="quantize_search.") as tmp:
        work = Path(tmp)
        pre = preprocess(fp32_path, work / "pre.onnx")
        cache = work / "calibration.json"

        def trial(extra: Sequence[str]) -> tuple[QuantizeInfo, Judgement]:
            path = work / f"trial{len(trials)}.onnx"
            info = quantize_int8(
                fp32_path,
                path,
                images,
                exclude=[*exclude, *extra],
                preprocessed=pre,
                calibration_cache=cache,
                **quant_kwargs,
            )
            verdict = judge(path)
            trials.append(
                {"excluded": list(extra), "passed": verdict.passed, "worst_ratio": verdict.worst_ratio}
            )
            return info, verdict

        best = trial([])
        chosen: list[str] = []
        sensitivity: dict[str, float] = {}
        if not best[1].passed and max_exclude > 0:
            pool = [c for c in (candidates or conv_nodes(pre)) if c not in exclude]
            single = {c: trial([c]) for c in pool}
            sensitivity = {c: v[1].worst_ratio for c, v in single.items()}
            ranked = sorted(pool, key=lambda c: sensitivity[c])
            for k in range(1, min(max_exclude, len(ranked)) + 1):
                result = single[ranked[0]] if k == 1 else trial(ranked[:k])
                if result[1].worst_ratio < best[1].worst_ratio or result[1].passed:
                    best, chosen = result, ranked[:k]
                if result[1].passed:
                    break
        info, verdict = best
        with staged_output(out) as staged:
            staged.write_bytes(Path(info.path).read_bytes())
    final = QuantizeInfo(
        out,
        info.method,
        info.activation_type,
        info.per_channel,
        info.calibration_samples,
        info.excluded,
        info.int8_convs,
        info.fp32_convs,
        info.weights,
    )
    return SensitivityResult(sorted([*exclude, *chosen]), verdict.passed, final, verdict, sensitivity, trials)
