"""Generate `docs/config.md`, the reference of every config key, from the config dataclasses.

`render_config_doc()` walks `RunConfig` with `dataclasses.fields` and reads, per key: the type hint, the
default, and the meaning from (first found) the field's `metadata` (`doc` / `help` / `description`), the
`MEANINGS` below, or the comment after the field in the schema source. Any other metadata (e.g. a value domain)
is shown as "allowed", beside the choices of a `Literal`. Keys the loader handles outside the dataclasses
(`extends`) come from `EXTRA_KEYS`. `tests/unit/pipeline/report/test_config_doc.py` fails when the file is
stale.

Regenerate: `python -m pipeline.report.config_doc` (`--check` only compares, exit 1 when stale).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

from pipeline.config import RunConfig

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"
_DOC_KEYS = ("doc", "help", "description")
# Meanings per key (field metadata in the schema wins; the schema's own comment is the fallback).
MEANINGS: dict[str, str] = {
    "data.factory": "bring your own data: 'package.module:callable', called as callable(split, tasks, **data.kwargs); "
                    "replaces data.name",
    "data.kwargs": "keyword arguments passed to data.factory",
    "validate.metric_flip_pixels": "k of the parity rule: thresholded metrics may differ by k near-tie pixels' worth "
                                   "(k / valid pixels x 100 points); mIoU by k flipped argmax pixels",
    "quantize": "INT8 (QDQ) quantization of the exported model, its task-level gate and the latency table",
    "quantize.calibration_method": "how activation ranges are calibrated (percentile measured best on dev data)",
    "quantize.calibration_batch_size": "calibration images per ONNX Runtime call",
    "quantize.activation_type": "activation integer type (uint8 measured faster on CPUs without VNNI)",
    "quantize.reduce_range": "7-bit weights (ONNX Runtime's option for CPUs without VNNI)",
    "quantize.max_auto_exclude": "most conv layers the sensitivity search may leave in fp32",
    "quantize.latency_batches": "batch sizes of the latency table",
    "quantize.latency_threads": "ONNX Runtime intra-op threads of the latency table (empty: 1 and all cores)",
    "quantize.latency_warmup": "untimed runs before timing",
    "quantize.latency_rounds": "interleaved rounds over the models (fair ratios on a noisy machine)",
    "quantize.latency_iters": "timed runs per model per round",
    "tasks": "task heads to train, in this order: a list of kinds (seg, depth, normal), or a mapping name -> kind "
             "such as `{semantic: seg, z: depth}` (names key outputs, metrics, ONNX outputs and tolerances)",
    "data": "the dataset",
    "data.name": "dataset: scenes (procedural, cached), nyuv2_mtan (npy folders under root), nyuv2_png (real sample)",
    "data.height": "input height in pixels (images are rendered or resized to it)",
    "data.width": "input width in pixels",
    "data.num_train": "scenes: training images to render",
    "data.num_val": "scenes: validation images to render",
    "data.num_classes": "segmentation classes",
    "data.min_objects": "scenes: fewest objects per scene",
    "data.max_objects": "scenes: most objects per scene",
    "data.noise": "scenes: image noise standard deviation",
    "data.seed": "scenes: rendering seed",
    "model": "the network",
    "model.name": "registered model (`pipeline list`): tiny_mtl, scene_aspp, deeplab_resnet18/34, mobilenetv2_aspp",
    "model.kwargs": "extra keyword arguments for the model constructor",
    "train": "the training loop",
    "train.steps": "optimizer steps",
    "train.batch_size": "images per step (per process under torchrun)",
    "train.lr": "learning rate of the weights",
    "train.weight_decay": "weight decay of the weights",
    "train.lr_schedule": "learning-rate schedule",
    "train.gamma": "lr_schedule=step: factor per step_size steps",
    "train.betas": "Adam betas",
    "train.depth_loss": "depth loss: l1 on metres or l1 on log depth",
    "train.seed": "seed of initialisation and batch order",
    "train.log_every": "steps between timeseries points",
    "train.checkpoint_every": "steps between resumable checkpoints",
    "train.device": "torch device: cpu, cuda, cuda:1, ...; under torchrun each rank takes its local GPU",
    "train.weighting": "task-loss weighting",
    "sparsity": "the pruning method",
    "sparsity.method": "sparsity method (`pipeline list`): adapmtl, gmp_global, str, dense, ...",
    "sparsity.target": "overall fraction removed, in (0, 1): of prunable weights (unstructured) or of conv MACs "
    "(channel); when a config leaves it unset, 0.9 for unstructured and 0.5 for channel",
    "sparsity.ramp_start": "fraction of training where the cubic target ramp (Zhu & Gupta) starts",
    "sparsity.ramp_end": "fraction of training where the ramp reaches the target (held afterwards)",
    "sparsity.alloc_lr": "learned allocation: threshold step size",
    "sparsity.alloc_ema": "learned allocation: EMA factor of the signal",
    "sparsity.component_max": "highest sparsity a component may reach",
    "sparsity.component_min": "lowest sparsity a component may keep",
    "sparsity.init": "paper mode: initial threshold logit",
    "sparsity.threshold_lr": "paper mode: threshold learning rate",
    "sparsity.threshold_decay": "paper mode: coupled threshold decay",
    "sparsity.rules": "which convs are prunable: ordered glob rules {match, component}, first match wins",
    "harden": "baking thresholds or masks into plain convs",
    "harden.pattern": "hardened pattern: unstructured, 2:4 on every eligible layer, or 2:4 where learned sparsity is high",
    "harden.finetune_lr": "learning rate of the masked fine-tune",
    "harden.fold_bn": "fold batch norms into the preceding convs",
    "harden.channel_multiple": "channel structure: round each pruned group's kept channels up to a multiple of "
    "this by keeping all-zero channels (outputs unchanged, a few more MACs; lets blocked conv kernels run)",
    "export": "ONNX export",
    "export.opset": "ONNX opset",
    "export.exporter": "torch exporter (dynamo falls back to torchscript, recorded)",
    "export.dynamic_hw": "export height and width as dynamic axes",
    "export.simplifier": "graph simplifier",
    "export.max_batch": "largest batch the exported graph promises",
    "validate": "ONNX Runtime vs PyTorch check",
    "validate.samples": "held-out images compared",
    "validate.batch_size": "images per inference call",
    "validate.atol": "absolute tolerance per head, keyed by task name or kind (`default` for the others)",
    "validate.rtol": "relative tolerance",
    "validate.metric_atol": "largest allowed task-metric difference",
    "validate.real_data": "real-image folder to check too; `auto`: the NYUv2 sample when one is installed; null to skip",
    "validate.real_samples": "real images compared",
    "validate.save_polygraphy_json": "also write inputs/outputs as Polygraphy JSON",
    "build": "TensorRT engines and GPU checks",
    "build.precision": "engine precision",
    "build.min_batch": "engine profile: smallest batch",
    "build.opt_batch": "engine profile: batch tuned for (and the speedup's batch)",
    "build.max_batch": "engine profile: largest batch",
    "build.workspace_mb": "TensorRT builder workspace in MiB",
    "build.require_tensorrt": "fail instead of skipping when TensorRT is missing",
    "build.ort_gpu": "also check ONNX Runtime GPU (CUDA provider)",
    "build.latency_batches": "batch sizes timed",
    "build.warmup": "untimed runs before timing",
    "build.iters": "timed runs per batch size",
    "build.atol": "engine vs PyTorch absolute tolerance per head, keyed by task name or kind (`default` for the others)",
    "build.miou_tol": "largest allowed mIoU difference (points)",
    "dense_reference": (
        "dense metrics for ΔT/Δp: null (none), `auto` (train a dense twin into train/reference), a dense run "
        "directory, or a path to its train/metrics.json"
    ),
}
# Keys the loader reads outside the dataclasses: name -> (type, default, meaning).
EXTRA_KEYS: dict[str, tuple[str, str, str]] = {
    "extends": ("str", "–", "a preset name or YAML path this file starts from; its keys are merged under this file's"),
}


def type_name(tp: Any) -> str:
    """A short readable type: `int`, `str | None`, `list[int]`, `dict[str, float]`, `one of: a, b`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(a) for a in args)
    if tp is type(None):
        return "null"
    if tp is typing.Any:
        return "any"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _fmt_default(v: Any) -> str:
    if dataclasses.is_dataclass(v):
        return "(section)"
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if isinstance(v, tuple):
        v = list(v)
    return "`" + re.sub(r"\s+", " ", repr(v)).replace("'", '"').replace("|", "\\|") + "`"


def _source_comments(cls: type) -> dict[str, str]:
    """`name: ... # comment` lines of a dataclass's source, the comment per field name."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for m in re.finditer(r"^\s+(\w+)\s*:[^\n#]*#\s*(.+)$", src, re.M):
        out[m.group(1)] = m.group(2).strip()
    return out


def _rows(cls: type, prefix: str) -> list[list[str]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    comments = _source_comments(cls)
    rows: list[list[str]] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        meta = dict(f.metadata or {})
        meaning = next((str(meta.pop(k)) for k in _DOC_KEYS if k in meta), None)
        meaning = meaning or MEANINGS.get(key) or comments.get(f.name, "")
        tp = hints.get(f.name, f.type)
        # a value domain is shown by its text (its predicate has no stable repr)
        allowed = ", ".join(f"{k}: {getattr(v, 'text', v)}" for k, v in meta.items())
        rows.append([f"`{key}`", type_name(tp).replace("|", "\\|"), _fmt_default(_default(f)),
                     meaning.replace("|", "\\|"), allowed.replace("|", "\\|")])
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows += _rows(tp, f"{key}.")  # a section's keys right under it
    return rows


def render_config_doc() -> str:
    """The whole of docs/config.md."""
    rows = [[f"`{k}`", t, d, m, ""] for k, (t, d, m) in EXTRA_KEYS.items()] + _rows(RunConfig, "")
    lines = [
        "# Config reference",
        "",
        "<!-- generated by `python -m pipeline.report.config_doc` from pipeline/config/schema.py; do not edit -->",
        "",
        "A config is a preset name (`tiny`, `demo`, `bench`: `pipeline/presets/`) or a YAML file, plus",
        "`--set key.path=value` overrides. Unknown keys and wrong types are errors, all reported at once;",
        "`pipeline check-config --config FILE` prints the resolved config. Sections are mappings; a key",
        "left out takes its default.",
        "",
        "| key | type | default | meaning | allowed |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render_config_doc()
    if "--check" in argv:
        stale = not DOC_PATH.exists() or DOC_PATH.read_text() != text
        print(f"{DOC_PATH} is {'stale: run python -m pipeline.report.config_doc' if stale else 'up to date'}")
        return 1 if stale else 0
    DOC_PATH.write_text(text)
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
