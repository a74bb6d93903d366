"""Static checks on exported weights: N:M pattern, zero-pattern survival, and compressed size.

BatchNorm folding multiplies each output channel of a conv weight by one scale, so values change but zeros
stay zeros (unless a BN scale is exactly 0, which adds zeros and is reported). The zero mask of every ONNX
Conv weight must therefore equal the hardened torch weight's mask exactly.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

from exporters.pairing import WeightPair, pair_weights
from pipeline.artifacts import atomic_path
from pipeline.errors import BackendUnavailable, PipelineError
from pipeline.nm_sparsity import nm_report, nm_violations

__all__ = [
    "ZeroPatternReport",
    "WeightPair",
    "compress_artifact",
    "conv_weights_from_onnx",
    "conv_weights_from_torch",
    "match_zero_patterns",
    "nm_report",
    "nm_violations",
]


# ---------------------------------------------------------------------------------------------------------
# reading conv weights


def _sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    dims = tuple(sp.dims)
    dense = np.zeros(int(np.prod(dims)), dtype=values.dtype)
    # ONNX allows linear indices [NNZ] or coordinates [NNZ, rank].
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    dense[flat] = values
    return dense.reshape(dims)


def _resolve(
    name: str, tensors: Mapping[str, Any], producers: Mapping[str, onnx.NodeProto]
) -> np.ndarray | None:
    """Follow Identity chains back to an initializer or a Constant; None for a computed weight."""
    for _ in range(32):  # an Identity chain longer than this is not an exporter pattern
        if name in tensors:
            tensor = tensors[name]
            if isinstance(tensor, onnx.SparseTensorProto):
                return _sparse_to_dense(tensor)
            return numpy_helper.to_array(tensor)
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "Identity":
            name = node.input[0]
            continue
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
                if attr.name == "sparse_value":
                    return _sparse_to_dense(attr.sparse_tensor)
        return None
    return None


def _weight_key(node: onnx.NodeProto, weight_name: str) -> str:
    """Prefer the name that carries the module path: dynamo keeps it in the initializer name, TorchScript
    in the node scope (its BN-folded initializers are called `onnx::Conv_119`)."""
    if "." in weight_name and "::" not in weight_name and "/" not in weight_name:
        return weight_name
    return node.name or weight_name


def conv_weights_from_onnx(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Return the weight of every Conv node, in graph order.

    Weights are read from initializers (dense or sparse), through Identity nodes and Constant nodes. A Conv
    whose weight is computed at run time is skipped. A weight shared by several Convs appears once.

    Args:
        model_or_path: A loaded model or a path (external data is loaded from beside the file).

    Returns:
        `{key: array}`; the key is the initializer name when it contains the module path (dynamo:
        `model.backbone.0.weight`), else the Conv node's name (TorchScript: `/model/backbone/backbone.0/Conv`).
    """
    model = model_or_path
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model_or_path))
    graph = model.graph
    tensors: dict[str, Any] = {t.name: t for t in graph.initializer}
    tensors.update({s.values.name: s for s in graph.sparse_initializer})
    producers = {out: n for n in graph.node for out in n.output}
    weights: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] in seen:
            continue
        array = _resolve(node.input[1], tensors, producers)
        if array is None:
            continue
        seen.add(node.input[1])
        key = _weight_key(node, node.input[1])
        while key in weights:  # unnamed or duplicate node names
            key += "#"
        weights[key] = array
    return weights


def conv_weights_from_torch(model: nn.Module) -> dict[str, np.ndarray]:
    """Return `{module_name.weight: array}` for every Conv1d/2d/3d (subclasses included), in module order."""
    return {
        f"{name}.weight": m.weight.detach().cpu().numpy()
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    }


# ---------------------------------------------------------------------------------------------------------
# N:M pattern


# `nm_violations` / `nm_report` live in the foundation (pipeline.nm_sparsity) so hardening shares them;
# they are re-exported here as part of this module's interface.


# ---------------------------------------------------------------------------------------------------------
# zero-pattern survival


@dataclass(frozen=True)
class ZeroPatternReport:
    """Pairs of (ONNX weight, torch weight) and their mask agreement. True when every weight is paired and
    every pair's zero mask is identical."""

    pairs: list[WeightPair]
    unmatched_onnx: list[str]
    unmatched_torch: list[str]

    @property
    def passed(self) -> bool:
        return not self.unmatched_onnx and not self.unmatched_torch and all(p.mask_equal for p in self.pairs)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "pairs": [p.to_dict() for p in self.pairs],
            "mismatched": [p.onnx_name for p in self.pairs if not p.mask_equal],
            "unmatched_onnx": list(self.unmatched_onnx),
            "unmatched_torch": list(self.unmatched_torch),
        }


def match_zero_patterns(
    onnx_weights: Mapping[str, np.ndarray], torch_weights: Mapping[str, np.ndarray]
) -> ZeroPatternReport:
    """Pair ONNX conv weights with the hardened model's conv weights and compare their zero masks exactly.

    Pairing (see `exporters.pairing`) needs equal shapes and then uses, in order of confidence: the module
    path carried by the ONNX name, identical zero masks, and finally the nearest mask, so a corrupted weight
    still meets its true partner and is reported rather than left unmatched.

    Args:
        onnx_weights: From `conv_weights_from_onnx`.
        torch_weights: From `conv_weights_from_torch` on the hardened model (BN not folded is fine).
    """
    pairs, unmatched_onnx, unmatched_torch = pair_weights(onnx_weights, torch_weights)
    return ZeroPatternReport(pairs, unmatched_onnx, unmatched_torch)


# ---------------------------------------------------------------------------------------------------------
# compressed size


def compress_artifact(
    path: str | Path, *, codec: str = "gzip", level: int | None = None
) -> tuple[Path, int, int]:
    """Compress a file beside itself (`.gz` or `.zst`), atomically; deterministic for gzip (mtime 0).

    Sparse weights are stored dense in ONNX; a general-purpose compressor is what turns the zeros into
    bytes saved on disk (docs/environment.md section 7).

    Args:
        path: File to compress.
        codec: "gzip" (default, level 9) or "zstd" (level 19; needs the `zstandard` package).
        level: Compression level override.

    Returns:
        (compressed path, raw bytes, compressed bytes).
    """
    src = Path(path)
    if codec == "gzip":
        dest = src.with_name(src.name + ".gz")
        with open(src, "rb") as fin, atomic_path(dest) as staged, open(staged, "wb") as raw:
            # filename and mtime are fixed so equal inputs give byte-identical archives (stable sha256).
            with gzip.GzipFile(
                filename=src.name, mode="wb", compresslevel=level or 9, fileobj=raw, mtime=0
            ) as gz:
                shutil.copyfileobj(fin, gz, 1 << 20)
    elif codec == "zstd":
        try:
            import zstandard
        except ImportError:
            raise BackendUnavailable(
                "codec 'zstd' needs the zstandard package; fix: pip install zstandard (or use codec='gzip')"
            ) from None
        dest = src.with_name(src.name + ".zst")
        with open(src, "rb") as fin, atomic_path(dest) as staged, open(staged, "wb") as raw:
            zstandard.ZstdCompressor(level=level or 19).copy_stream(fin, raw)
    else:
        raise PipelineError(f"Unknown codec '{codec}'. Available: gzip, zstd")
    return dest, src.stat().st_size, dest.stat().st_size


def canonicalize_zeros(model: onnx.ModelProto) -> int:
    """Rewrite every -0.0 in float initializers as +0.0, in place; returns how many changed.

    sign(W) * 0 and BN folding with a negative scale leave negative zeros. They compute exactly like +0.0 but
    break gzip's runs of identical zero bytes: at 90 % sparsity the compressed ONNX is about 30 % larger with
    them (docs/cost.md).
    """
    changed = 0
    for init in model.graph.initializer:
        if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            continue
        arr = numpy_helper.to_array(init)
        neg_zero = (arr == 0) & np.signbit(arr)
        n = int(neg_zero.sum())
        if n:
            init.CopyFrom(numpy_helper.from_array(np.where(neg_zero, np.zeros_like(arr), arr), init.name))
            changed += n
    return changed
