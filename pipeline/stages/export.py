"""export stage: multi-head ONNX with metadata, simplified, checked, zero pattern verified, compressed."""

from __future__ import annotations

import json

from pipeline.artifacts import atomic_write_json
from pipeline.errors import CheckFailed
from pipeline.stages.base import StageContext, StageRecord


def run(ctx: StageContext) -> StageRecord:
    import onnx

    from exporters.checks import (
        canonicalize_zeros,
        compress_artifact,
        conv_weights_from_onnx,
        conv_weights_from_torch,
        match_zero_patterns,
        nm_report,
    )
    from exporters.fileio import save_onnx
    from exporters.onnx_export import export_onnx
    from exporters.simplify import simplify_onnx
    from pipeline.models.hardened import load_hardened_model

    cfg, ecfg = ctx.cfg, ctx.cfg.export
    model, ckpt = load_hardened_model(ctx.run.path("harden", "model.pt"))
    onnx_path = ctx.out / "model.onnx"
    raw_path = ctx.out / "model.raw.onnx"
    example = model.example_inputs(batch=2, height=cfg.data.height, width=cfg.data.width)[0]
    sparsity = ckpt["sparsity"]
    info = export_onnx(
        model,
        raw_path,
        task_names=ckpt["tasks"],
        example_input=example,
        opset=ecfg.opset,
        exporter=ecfg.exporter,
        dynamic_hw=ecfg.dynamic_hw,
        max_batch=ecfg.max_batch,
        metadata={
            "class_names": ckpt["class_names"],
            "num_classes": ckpt["num_classes"],
            "sparsity": {k: sparsity[k] for k in ("pattern", "target", "overall", "components") if k in sparsity},
            "two_four_layers": ckpt.get("two_four_layers", []),
            "source_run": str(ctx.run.root.name),
            "source_method": ckpt["source"]["method"],
            "model": ckpt["model"]["name"],
            "input_size": [cfg.data.height, cfg.data.width],
            "data": ckpt["data"]["name"],
        },
    )
    simplify = simplify_onnx(raw_path, onnx_path, tool=ecfg.simplifier)
    raw_path.unlink()
    proto = onnx.load(str(onnx_path))
    negative_zeros = canonicalize_zeros(proto)
    if negative_zeros:
        save_onnx(proto, onnx_path)

    # The sparsity must survive export and simplification: every ONNX conv weight carries exactly the
    # hardened model's zero pattern (BN folding rescales channels, never creates or removes zeros).
    onnx_w = conv_weights_from_onnx(onnx_path)
    torch_w = conv_weights_from_torch(model)
    zeros = match_zero_patterns(onnx_w, torch_w)
    two_four = {f"{n}.weight" for n in ckpt.get("two_four_layers", [])}
    nm = nm_report({p.onnx_name: onnx_w[p.onnx_name] for p in zeros.pairs if p.torch_name in two_four})
    nm_ok = len(nm) == len(two_four) and all(r.get("violations") == 0 for r in nm.values())
    gz_path, raw_bytes, gz_bytes = compress_artifact(onnx_path)
    dense_equiv = sum(w.size for w in onnx_w.values())
    nnz = sum(int((w != 0).sum()) for w in onnx_w.values())
    checks = {
        "onnx": "export/model.onnx",
        "compressed": f"export/{gz_path.name}",
        "opset": info.opset,
        "ir_version": info.ir_version,
        "exporter": info.exporter,
        "fallback_reason": info.fallback_reason,
        "simplifier": simplify,
        "negative_zeros_canonicalized": negative_zeros,
        "size_bytes": raw_bytes,
        "compressed_bytes": gz_bytes,
        "compression_ratio": gz_bytes / max(raw_bytes, 1),
        "conv_weights": dense_equiv,
        "conv_nonzeros": nnz,
        "sparsity_survived": bool(zeros.passed and nm_ok),
        "zero_pattern": zeros.to_dict(),
        "two_four_check": {"layers": len(nm), "passed": nm_ok, "per_layer": nm},
        "checker": "onnx.checker full_check passed",
    }
    atomic_write_json(ctx.out / "checks.json", checks)
    atomic_write_json(ctx.out / "io_spec.json", info.to_dict())
    if not checks["sparsity_survived"]:
        bad = zeros.to_dict()
        raise CheckFailed(
            "the zero pattern did not survive export "
            f"(mismatched {bad['mismatched'][:3]}, unmatched {bad['unmatched_onnx'][:3]}{bad['unmatched_torch'][:3]}, "
            f"2:4 ok={nm_ok})",
            str(ctx.out / "checks.json"),
        )
    return StageRecord(
        outputs=["model.onnx", gz_path.name, "checks.json", "io_spec.json"],
        summary={
            "opset": info.opset,
            "exporter": info.exporter,
            "size_bytes": raw_bytes,
            "compressed_bytes": gz_bytes,
            "sparsity_survived": True,
            "metadata_keys": sorted(json.loads(json.dumps(info.metadata)).keys()),
        },
    )
