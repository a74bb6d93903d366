"""Pair ONNX conv weights with the torch conv weights they came from.

Exporters rename weights: dynamo keeps the module path in initializer names (`model.heads.seg.0.weight`),
TorchScript renames BN-folded weights to `onnx::Conv_N` but keeps the module scope in the node name
(`/model/seg/seg.0/Conv`), and onnxslim reorders nodes, so neither names nor graph order can be trusted
alone. Shapes must always agree; within a shape, three passes run in order of confidence:

1. name: the ONNX name and the torch name share the longest trailing run of path tokens (ignoring runs of
   bare indices like `0`), and each is the other's unique best match;
2. mask: the zero masks are identical (if several are, the first in torch order: they are interchangeable
   for a zero-pattern check);
3. nearest: the fewest differing mask positions, so a corrupted weight still meets its true partner and is
   reported as a mismatch instead of being left unmatched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class WeightPair:
    """One paired weight and how its zero mask compares."""

    onnx_name: str
    torch_name: str
    shape: tuple[int, ...]
    paired_by: str  # "name", "mask" or "nearest"
    zeros_torch: int
    zeros_onnx: int
    zeros_lost: int  # zero in torch, nonzero in ONNX
    zeros_gained: int  # nonzero in torch, zero in ONNX (e.g. a BatchNorm scale of exactly 0)

    @property
    def mask_equal(self) -> bool:
        return self.zeros_lost == 0 and self.zeros_gained == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape), "mask_equal": self.mask_equal}


def name_tokens(name: str) -> list[str]:
    """Split an ONNX or torch weight name into module-path tokens.

    `/model/backbone/layer1/layer1.0/conv1/Conv` -> [model, backbone, layer1, 0, conv1] (scope parts that
    repeat their parent, `layer1` then `layer1.0`, are merged; the op part is dropped);
    `model.backbone.0.weight` -> [model, backbone, 0].
    """
    name = name.rstrip("#")
    if "/" in name:
        merged: list[str] = []
        for part in [p for p in name.split("/") if p][:-1]:
            if merged and part.startswith(merged[-1] + "."):
                merged[-1] = part
            else:
                merged.append(part)
        name = ".".join(merged)
    else:
        name = name.removesuffix(".weight")
    return [t for t in name.split(".") if t]


def name_score(a: list[str], b: list[str]) -> int:
    """Length of the common trailing token run; 0 when it holds only numeric indices (no evidence)."""
    k = 0
    while k < min(len(a), len(b)) and a[-1 - k] == b[-1 - k]:
        k += 1
    if k and all(t.isdigit() for t in a[len(a) - k :]):
        return 0
    return k


def _unique_best(scores: Mapping[str, int]) -> str | None:
    """The key with the highest positive score, if no other key ties it."""
    best = max(scores.values(), default=0)
    winners = [k for k, v in scores.items() if v == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


def _pair_by_name(onnx_w: Mapping[str, np.ndarray], torch_w: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Mutual unique best name matches among same-shape weights, repeated until nothing changes."""
    o_tok = {o: name_tokens(o) for o in onnx_w}
    t_tok = {t: name_tokens(t) for t in torch_w}
    paired: dict[str, str] = {}
    while True:
        taken = set(paired.values())
        by_onnx: dict[str, dict[str, int]] = {o: {} for o in onnx_w if o not in paired}
        by_torch: dict[str, dict[str, int]] = {t: {} for t in torch_w if t not in taken}
        for o in by_onnx:
            for t in by_torch:
                if onnx_w[o].shape == torch_w[t].shape:
                    by_onnx[o][t] = by_torch[t][o] = name_score(o_tok[o], t_tok[t])
        found = {}
        for o, scores in by_onnx.items():
            t = _unique_best(scores)
            if t is not None and _unique_best(by_torch[t]) == o:
                found[o] = t
        if not found:
            return paired
        paired.update(found)


def _mask_key(w: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    return w.shape, np.packbits(np.asarray(w) == 0).tobytes()


def pair_weights(
    onnx_w: Mapping[str, np.ndarray], torch_w: Mapping[str, np.ndarray]
) -> tuple[list[WeightPair], list[str], list[str]]:
    """Pair weights (see the module docstring). Returns (pairs in ONNX order, unmatched ONNX, unmatched torch)."""
    paired = {o: (t, "name") for o, t in _pair_by_name(onnx_w, torch_w).items()}
    taken = {t for t, _ in paired.values()}

    by_mask: dict[tuple[tuple[int, ...], bytes], list[str]] = {}
    for t, w in torch_w.items():
        if t not in taken:
            by_mask.setdefault(_mask_key(w), []).append(t)
    for o, w in onnx_w.items():
        if o not in paired and by_mask.get(_mask_key(w)):
            t = by_mask[_mask_key(w)].pop(0)
            paired[o] = (t, "mask")
            taken.add(t)

    for o, w in onnx_w.items():
        if o in paired:
            continue
        zero = np.asarray(w) == 0
        candidates = [t for t in torch_w if t not in taken and torch_w[t].shape == w.shape]
        if candidates:
            t = min(candidates, key=lambda c: int(np.count_nonzero(zero != (torch_w[c] == 0))))
            paired[o] = (t, "nearest")
            taken.add(t)

    pairs = [
        _compare(o, onnx_w[o], t, torch_w[t], how)
        for o, (t, how) in ((o, paired[o]) for o in onnx_w if o in paired)
    ]
    return pairs, [o for o in onnx_w if o not in paired], [t for t in torch_w if t not in taken]


def _compare(o: str, ow: np.ndarray, t: str, tw: np.ndarray, how: str) -> WeightPair:
    oz, tz = np.asarray(ow) == 0, np.asarray(tw) == 0
    return WeightPair(
        onnx_name=o,
        torch_name=t,
        shape=tuple(int(d) for d in ow.shape),
        paired_by=how,
        zeros_torch=int(tz.sum()),
        zeros_onnx=int(oz.sum()),
        zeros_lost=int(np.count_nonzero(tz & ~oz)),
        zeros_gained=int(np.count_nonzero(oz & ~tz)),
    )
