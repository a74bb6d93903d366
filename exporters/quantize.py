"""INT8 (QDQ) quantization with ONNX Runtime's own tools, and the checks that the sparse pattern survives it.

`quant_pre_process` (shape inference + basic graph optimisation) then `quantize_static` in QDQ format. Weights
are per-channel **symmetric** int8: the zero point is 0, so a zero weight quantizes to exactly 0 and the 2:4
pattern of a pruned conv survives. `check_int8_weights` verifies that on the quantized initializers, as the
export stage does for fp32. Rounding may add zeros (|w| < scale / 2); it can never remove one.

Calibration is data-agnostic: callers pass numpy images (the stage feeds TRAIN-split images, never validation
ones). The calibration ranges can be cached to a file, so the per-layer sensitivity search
(`exporters.quantize_search`) calibrates once and re-quantizes cheaply.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from exporters.checks import _weight_key, conv_weights_from_onnx, nm_report
from pipeline.artifacts import staged_output
from pipeline.config import QuantizeConfig  # the `quantize:` section; re-exported for callers
from pipeline.errors import CheckFailed, ConfigError, MissingArtifactError

log = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_METHODS",
    "Int8WeightReport",
    "QuantizeConfig",
    "QuantizeInfo",
    "NumpyCalibrationReader",
    "calibration_images",
    "check_int8_weights",
    "conv_nodes",
    "int8_conv_weights",
    "preprocess",
    "quantize_int8",
]

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


def validate_settings(method: str, activation_type: str) -> None:
    """Raise ConfigError for an unknown calibration method or activation type (checked before any work)."""
    problems = []
    if method not in CALIBRATION_METHODS:
        problems.append(
            f"quantize.calibration_method '{method}' is unknown; use one of {', '.join(CALIBRATION_METHODS)}"
        )
    if activation_type not in ACTIVATION_TYPES:
        problems.append(
            f"quantize.activation_type '{activation_type}' is unknown; use one of {', '.join(ACTIVATION_TYPES)}"
        )
    if problems:
        raise ConfigError(problems)


def calibration_images(images: np.ndarray, count: int) -> np.ndarray:
    """The first `count` images of `images` ([N, 3, H, W]) as contiguous float32.

    Raises:
        ConfigError: count < 1, or count larger than the images provided (the split).
    """
    n = len(images)
    if count < 1:
        raise ConfigError(f"quantize.calibration_samples is {count}; it must be at least 1 (e.g. 64)")
    if count > n:
        raise ConfigError(
            f"quantize.calibration_samples is {count} but the calibration split has only {n} images; "
            f"set it to at most {n}"
        )
    return np.ascontiguousarray(images[:count], dtype=np.float32)


class NumpyCalibrationReader(CalibrationDataReader):
    """Feeds `images` to ORT's calibrator in batches of `batch_size` under the model's input name."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 8):
        self.input_name = input_name
        self.images = images
        self.batch_size = max(1, int(batch_size))
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.images), self.batch_size):
            yield {self.input_name: self.images[i : i + self.batch_size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


def preprocess(fp32_path: str | Path, out_path: str | Path) -> Path:
    """ORT's `quant_pre_process` (symbolic shape inference, basic optimisation); the quantizer's input."""
    src = Path(fp32_path)
    if not src.is_file():
        raise MissingArtifactError(f"ONNX model {src} does not exist; run `pipeline export` first")
    out = Path(out_path)
    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
    except Exception as e:  # noqa: BLE001 - the symbolic shape tool fails in many ways on dynamo's Expand nodes
        # ONNX's own shape inference is enough for the CNNs here (static H/W, symbolic batch only).
        log.info("symbolic shape inference failed (%s: %s); using ONNX shape inference", type(e).__name__, e)
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def conv_nodes(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> list[str]:
    """Names of the Conv nodes in graph order: the candidates for `exclude`."""
    model = (
        model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(os.fspath(model_or_path))
    )
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


@dataclass(frozen=True)
class QuantizeInfo:
    """What `quantize_int8` did: settings, fp32 layers, and the int8 weight check."""

    path: Path
    method: str
    activation_type: str
    per_channel: bool
    calibration_samples: int
    excluded: list[str]
    int8_convs: int
    fp32_convs: int
    weights: Int8WeightReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "calibration_method": self.method,
            "activation_type": self.activation_type,
            "weight_type": "int8 symmetric " + ("per-channel" if self.per_channel else "per-tensor"),
            "calibration_samples": self.calibration_samples,
            "excluded": list(self.excluded),
            "int8_convs": self.int8_convs,
            "fp32_convs": self.fp32_convs,
            "weights": self.weights.to_dict(),
        }



@contextlib.contextmanager
def _histogram_range_errors(method: str) -> Iterator[None]:
    """ONNX Runtime's histogram calibrators (entropy, percentile) fail inside numpy when an activation's range
    is too narrow for 2048 bins (e.g. an untrained or collapsed layer); say so in one line, with the fix."""
    try:
        yield
    except ValueError as e:
        if "bins" not in str(e):
            raise
        raise ConfigError(
            f"{method} calibration failed: an activation's range is too narrow for ONNX Runtime's histogram "
            f"({e}); set quantize.calibration_method=minmax"
        ) from None

def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    images: np.ndarray | None,
    *,
    method: str = "percentile",
    activation_type: str = "uint8",
    per_channel: bool = True,
    reduce_range: bool = False,
    exclude: Sequence[str] = (),
    percentile: float = 99.999,
    batch_size: int = 8,
    preprocessed: str | Path | None = None,
    calibration_cache: str | Path | None = None,
) -> QuantizeInfo:
    """Quantize an fp32 ONNX model to QDQ int8 and check its int8 conv weights against the fp32 ones.

    Args:
        fp32_path: The exported fp32 model.
        out_path: Where the int8 model goes (written atomically).
        images: Calibration images `[N, 3, H, W]`, already cut to the wanted count (`calibration_images`);
            None only when `calibration_cache` already exists.
        method: minmax | entropy | percentile.
        activation_type: uint8 | int8 (asymmetric activations either way).
        per_channel: Per-output-channel weight scales (symmetric int8 always).
        exclude: Conv node names left in fp32.
        preprocessed: An existing `preprocess` output to reuse (the search quantizes many times).
        calibration_cache: JSON file of calibration ranges: read when it exists, else written.

    Raises:
        ConfigError: Unknown method or activation type.
        MissingArtifactError: No fp32 model.
        CheckFailed: A zero weight became nonzero or a 2:4 group broke in the int8 initializers.
    """
    validate_settings(method, activation_type)
    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="quantize.") as tmp:
        pre = (
            Path(preprocessed) if preprocessed is not None else preprocess(fp32_path, Path(tmp) / "pre.onnx")
        )
        pre_model = onnx.load(str(pre))
        input_name = pre_model.graph.input[0].name
        reader = None if images is None else NumpyCalibrationReader(input_name, images, batch_size)
        unknown = sorted(set(exclude) - set(conv_nodes(pre_model)))
        if unknown:
            raise ConfigError(f"quantize.exclude names no Conv node: {', '.join(unknown)} (see conv_nodes())")
        # ONNX Runtime's calibrators print progress with print(); keep it out of the pipeline's own output
        with (
            _histogram_range_errors(method),
            staged_output(out) as staged,
            contextlib.redirect_stdout(io.StringIO()) as chatter,
        ):
            quantize_static(
                str(pre),
                str(staged),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=ACTIVATION_TYPES[activation_type],
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude),
                calibrate_method=CALIBRATION_METHODS[method],
                # WeightSymmetric keeps zero point 0: the property the sparsity checks rely on.
                extra_options={
                    "WeightSymmetric": True,
                    "ActivationSymmetric": False,
                    "CalibPercentile": percentile,
                },
                calibration_cache_path=None if calibration_cache is None else str(calibration_cache),
            )
        log.debug("onnxruntime calibration: %s", chatter.getvalue().strip())
        report = check_int8_weights(conv_weights_from_onnx(pre_model), int8_conv_weights(out))
    if not report.passed:
        raise CheckFailed(f"int8 weights broke the sparse pattern: {report.summary()}", str(out))
    n_conv = len(conv_nodes(pre_model))
    return QuantizeInfo(
        out,
        method,
        activation_type,
        per_channel,
        0 if images is None else len(images),
        sorted(exclude),
        len(report.layers),
        n_conv - len(report.layers),
        report,
    )


# ---------------------------------------------------------------------------------------------------------
# int8 weight checks


def int8_conv_weights(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The int8 weight of every Conv fed by DequantizeLinear(int8 initializer), keyed like
    `exporters.checks.conv_weights_from_onnx` keys the fp32 model (so the two dicts pair by key).

    Conv nodes left in fp32 are absent.
    """
    model = (
        model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(os.fspath(model_or_path))
    )
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    weights: dict[str, np.ndarray] = {}
    for node in graph.node:
        dq = producers.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        q = inits[dq.input[0]]
        if q.data_type != onnx.TensorProto.INT8:
            continue
        # ORT names the quantized weight `<fp32 name>_quantized`; the fp32 name carries the module path.
        fp32_name = q.name[: -len("_quantized")] if q.name.endswith("_quantized") else q.name
        weights[_weight_key(node, fp32_name)] = numpy_helper.to_array(q)
    return weights


@dataclass(frozen=True)
class Int8WeightReport:
    """Per int8 conv: zeros lost (must be 0), zeros added by rounding, and 2:4 violations before/after."""

    layers: dict[str, dict[str, Any]]
    unmatched: list[str]

    @property
    def passed(self) -> bool:
        return not self.unmatched and all(v["ok"] for v in self.layers.values())

    def summary(self) -> str:
        bad = [
            f"{k}: {v['lost_zeros']} zeros lost, 2:4 violations {v['nm_fp32']} -> {v['nm_int8']}"
            for k, v in self.layers.items()
            if not v["ok"]
        ]
        if self.unmatched:
            bad.append(f"no fp32 partner for {', '.join(self.unmatched)}")
        return "; ".join(bad) or "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "layers": self.layers, "unmatched": list(self.unmatched)}


def check_int8_weights(fp32: dict[str, np.ndarray], int8: dict[str, np.ndarray]) -> Int8WeightReport:
    """Every fp32 zero is an int8 zero, and no 2:4-eligible weight gains a violation.

    Args:
        fp32: `conv_weights_from_onnx` of the model that was quantized (the pre-processed one).
        int8: `int8_conv_weights` of the quantized model.
    """
    nm_fp32, nm_int8 = nm_report(fp32), nm_report(int8)
    layers: dict[str, dict[str, Any]] = {}
    unmatched = []
    for key, q in int8.items():
        w = fp32.get(key)
        if w is None or w.shape != q.shape:
            unmatched.append(key)
            continue
        lost = int(np.count_nonzero((w == 0) & (q != 0)))
        before, after = nm_fp32[key]["violations"], nm_int8[key]["violations"]
        layers[key] = {
            "shape": list(q.shape),
            "sparsity_fp32": nm_fp32[key]["sparsity"],
            "sparsity_int8": nm_int8[key]["sparsity"],
            "lost_zeros": lost,
            "added_zeros": int(np.count_nonzero((w != 0) & (q == 0))),
            "nm_fp32": before,
            "nm_int8": after,
            "ok": lost == 0 and (before is None or after <= before),
        }
    return Int8WeightReport(layers, unmatched)
