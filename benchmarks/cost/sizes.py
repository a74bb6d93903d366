"""Artifact size: ONNX bytes under several codecs, the information limit, and the -0.0 remedy."""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from exporters.checks import compress_artifact

_RATIO_KEYS = ("onnx_bytes", "gzip9_bytes", "gzip6_bytes", "xz9_bytes", "bz2_9_bytes", "zstd19_bytes", "limit_bytes")


def entropy_bits(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _byte_entropy(b: np.ndarray) -> float:
    counts = np.bincount(b, minlength=256).astype(np.float64)
    p = counts[counts > 0] / b.size
    return float(-(p * np.log2(p)).sum())


def _codec_sizes(path: Path, extra_codecs: bool) -> dict[str, Any]:
    gz_path, raw, gz = compress_artifact(path)  # gzip level 9, mtime 0 (what the pipeline ships)
    out: dict[str, Any] = {"onnx_bytes": raw, "gzip9_bytes": gz}
    if extra_codecs:
        data = path.read_bytes()
        out["gzip6_bytes"] = len(gzip.compress(data, compresslevel=6, mtime=0))
        out["xz9_bytes"] = len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        out["bz2_9_bytes"] = len(bz2.compress(data, 9))
        try:
            _, _, zst = compress_artifact(path, codec="zstd")
            out["zstd19_bytes"] = zst
            Path(str(path) + ".zst").unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - zstandard is optional; its absence is recorded as None
            out["zstd19_bytes"] = None
    gz_path.unlink(missing_ok=True)
    return out


def _information(path: Path, raw_bytes: int) -> dict[str, Any]:
    """Survivors at 32 bits plus the zero mask at its entropy, non-float tensors and the graph stored raw."""
    model = onnx.load(str(path))
    init_bytes = limit_bits = nnz = zeros = negative_zeros = 0
    survivor_bytes = []
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        init_bytes += a.nbytes
        if a.dtype != np.float32:
            limit_bits += a.nbytes * 8
            continue
        nz = int(np.count_nonzero(a))
        negative_zeros += int(((a == 0) & np.signbit(a)).sum())
        nnz += nz
        zeros += a.size - nz
        limit_bits += nz * 32 + (a.size * entropy_bits(nz / a.size) if a.size else 0)
        survivor_bytes.append(a[a != 0].astype(np.float32).view(np.uint8).reshape(-1, 4))
    out: dict[str, Any] = {
        "initializer_bytes": init_bytes,
        "float_zeros": zeros,
        "float_nonzeros": nnz,
        "float_negative_zeros": negative_zeros,
        "limit_bytes": int(limit_bits / 8 + raw_bytes - init_bytes),
    }
    if survivor_bytes:
        sb = np.concatenate(survivor_bytes)
        planes = [_byte_entropy(sb[:, i]) for i in range(4)]  # little endian: byte 3 holds sign + exponent
        out["survivor_bits_per_value_byte_entropy"] = float(sum(planes))
        out["survivor_byte_plane_entropy_bits"] = planes
        out["survivors_gzip9_bytes"] = len(gzip.compress(sb.tobytes(), 9, mtime=0))
    return out


def size_report(path: Path, dense_onnx_bytes: int | None = None, extra_codecs: bool = True) -> dict[str, Any]:
    """Raw and compressed sizes of one ONNX file, the information limit, and where the bytes go."""
    out = _codec_sizes(path, extra_codecs)
    out.update(_information(path, out["onnx_bytes"]))
    if dense_onnx_bytes:
        for key in _RATIO_KEYS:
            if out.get(key) is not None:
                out[key.replace("_bytes", "_vs_dense_onnx")] = out[key] / dense_onnx_bytes
    return out


def canonical_zeros_onnx(src: Path, dst: Path) -> dict[str, Any]:
    """Copy `src` to `dst` with every float initializer's -0.0 written as +0.0 (equal values, same graph).

    Hardening writes sign(W) * 0 = -0.0 for every negative pruned weight, masks (W * 0) and BN folding
    (0 * negative scale) do the same: half the zeros carry a sign bit, which breaks the zero runs a compressor
    relies on. Returns how many zeros changed and whether ORT gives bit-identical outputs on a test batch.
    """
    model = onnx.load(str(src))
    changed = 0
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype.kind != "f":
            continue
        neg = (a == 0) & np.signbit(a)
        if neg.any():
            changed += int(neg.sum())
            b = a.copy()
            b[neg] = 0.0
            t.CopyFrom(numpy_helper.from_array(b, t.name))
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    shape = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x}) for p in (src, dst)]
    same = all(np.array_equal(a, b) for a, b in zip(*outs))
    return {"negative_zeros_rewritten": changed, "ort_outputs_identical": bool(same)}
