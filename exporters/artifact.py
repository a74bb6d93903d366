"""The export stage's work as one library call: hardened checkpoint in, checked and compressed ONNX out.

`export_hardened` exports the hardened model to a multi-head ONNX file with metadata, simplifies it,
canonicalises negative zeros, verifies that every conv weight kept the hardened zero pattern (and the 2:4
pattern where the checkpoint promises it), compresses the file, writes `checks.json` and `io_spec.json`, and
raises `CheckFailed` when the sparsity did not survive. The stage adapter only resolves paths and records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from exporters.checks import (
    ZeroPatternReport,
    canonicalize_zeros,
    compress_artifact,
    conv_weights_from_onnx,
    conv_weights_from_torch,
    match_zero_patterns,
    nm_report,
)
from exporters.fileio import save_onnx
from exporters.onnx_export import ExportInfo, export_onnx
from exporters.simplify import simplify_onnx
from pipeline.artifacts import atomic_write_json
from pipeline.checkpoint import HardenedCheckpoint
from pipeline.config import ExportConfig, as_task_kinds
from pipeline.errors import CheckFailed
from pipeline.models.factory import example_image
from pipeline.models.hardened import load_hardened

ONNX_NAME = "model.onnx"
RAW_NAME = "model.raw.onnx"
CHECKS_NAME = "checks.json"
IO_SPEC_NAME = "io_spec.json"


@dataclass
class ExportResult:
    """Files written into the output folder (names) and the summary the stage records."""

    outputs: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


def export_metadata(ckpt: HardenedCheckpoint, source_run: str, height: int, width: int) -> dict[str, Any]:
    """The ONNX metadata_props taken from a hardened checkpoint (class names, sparsity, provenance)."""
    sparsity = ckpt.sparsity
    return {
        "task_kinds": as_task_kinds(ckpt.tasks),
        "class_names": ckpt.class_names,
        "num_classes": ckpt.num_classes,
        "sparsity": {k: sparsity[k] for k in ("pattern", "target", "overall", "components") if k in sparsity},
        "two_four_layers": ckpt.two_four_layers,
        "source_run": source_run,
        "source_method": ckpt.source["method"],
        "model": ckpt.model["name"],
        "input_size": [height, width],
        "data": ckpt.data["name"],
    }


def _export_simplified(
    model: nn.Module, ckpt: HardenedCheckpoint, out_dir: Path, ecfg: ExportConfig, height: int, width: int,
    source_run: str,
) -> tuple[ExportInfo, Any, int]:
    """Export to `model.raw.onnx`, simplify into `model.onnx`, drop the raw file, make every zero +0.0.

    Returns (export info, simplifier record, number of negative zeros rewritten)."""
    onnx_path, raw_path = out_dir / ONNX_NAME, out_dir / RAW_NAME
    example = example_image(model, 2, height, width)
    info = export_onnx(
        model,
        raw_path,
        task_names=list(ckpt.tasks),
        example_input=example,
        opset=ecfg.opset,
        exporter=ecfg.exporter,
        dynamic_hw=ecfg.dynamic_hw,
        max_batch=ecfg.max_batch,
        metadata=export_metadata(ckpt, source_run, height, width),
    )
    simplify = simplify_onnx(raw_path, onnx_path, tool=ecfg.simplifier)
    raw_path.unlink()
    proto = onnx.load(str(onnx_path))
    negative_zeros = canonicalize_zeros(proto)
    if negative_zeros:
        save_onnx(proto, onnx_path)
    return info, simplify, negative_zeros


def _sparsity_checks(onnx_path: Path, model: nn.Module, ckpt: HardenedCheckpoint) -> dict[str, Any]:
    """Zero pattern and 2:4 checks of the written file against the hardened model.

    The sparsity must survive export and simplification: every ONNX conv weight carries exactly the hardened
    model's zero pattern (BN folding rescales channels, never creates or removes zeros)."""
    onnx_w = conv_weights_from_onnx(onnx_path)
    torch_w = conv_weights_from_torch(model)
    zeros: ZeroPatternReport = match_zero_patterns(onnx_w, torch_w)
    two_four = {f"{n}.weight" for n in ckpt.two_four_layers}
    nm = nm_report({p.onnx_name: onnx_w[p.onnx_name] for p in zeros.pairs if p.torch_name in two_four})
    nm_ok = len(nm) == len(two_four) and all(r.get("violations") == 0 for r in nm.values())
    return {
        "conv_weights": sum(w.size for w in onnx_w.values()),
        "conv_nonzeros": sum(int((w != 0).sum()) for w in onnx_w.values()),
        "sparsity_survived": bool(zeros.passed and nm_ok),
        "zero_pattern": zeros.to_dict(),
        "two_four_check": {"layers": len(nm), "passed": nm_ok, "per_layer": nm},
    }


def export_hardened(
    checkpoint: Path, out_dir: Path, ecfg: ExportConfig, *, height: int, width: int, source_run: str,
    rel_dir: str = "export",
) -> ExportResult:
    """Export, simplify, check and compress the hardened model at `checkpoint` into `out_dir`.

    `rel_dir` is the folder name recorded in `checks.json` for the files (the run-relative location).

    Raises:
        CheckFailed: when the zero pattern (or a promised 2:4 pattern) did not survive export;
            `checks.json` and `io_spec.json` are written first so the failure can be inspected.
    """
    model, ckpt = load_hardened(checkpoint)
    info, simplify, negative_zeros = _export_simplified(model, ckpt, out_dir, ecfg, height, width, source_run)
    onnx_path = out_dir / ONNX_NAME
    sparsity = _sparsity_checks(onnx_path, model, ckpt)
    gz_path, raw_bytes, gz_bytes = compress_artifact(onnx_path)
    checks = {
        "onnx": f"{rel_dir}/{ONNX_NAME}",
        "compressed": f"{rel_dir}/{gz_path.name}",
        "opset": info.opset,
        "ir_version": info.ir_version,
        "exporter": info.exporter,
        "fallback_reason": info.fallback_reason,
        "simplifier": simplify,
        "negative_zeros_canonicalized": negative_zeros,
        "size_bytes": raw_bytes,
        "compressed_bytes": gz_bytes,
        "compression_ratio": gz_bytes / max(raw_bytes, 1),
        **sparsity,
        "checker": "onnx.checker full_check passed",
    }
    atomic_write_json(out_dir / CHECKS_NAME, checks)
    # the export went to the raw file, deleted once simplified: name the shipped file and its size instead
    io_spec = {**info.to_dict(), "path": checks["onnx"], "file_bytes": raw_bytes}
    atomic_write_json(out_dir / IO_SPEC_NAME, io_spec)
    if not checks["sparsity_survived"]:
        bad = checks["zero_pattern"]
        raise CheckFailed(
            "the zero pattern did not survive export "
            f"(mismatched {bad['mismatched'][:3]}, unmatched {bad['unmatched_onnx'][:3]}{bad['unmatched_torch'][:3]}, "
            f"2:4 ok={checks['two_four_check']['passed']})",
            str(out_dir / CHECKS_NAME),
        )
    summary = {
        "opset": info.opset,
        "exporter": info.exporter,
        "size_bytes": raw_bytes,
        "compressed_bytes": gz_bytes,
        "sparsity_survived": True,
        "metadata_keys": sorted(json.loads(json.dumps(info.metadata)).keys()),
    }
    return ExportResult([ONNX_NAME, gz_path.name, CHECKS_NAME, IO_SPEC_NAME], summary, checks)
