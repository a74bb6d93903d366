"""ONNX `metadata_props`: what a deployed model says about itself.

Keys written by `export_onnx` (values are strings; lists and dicts are JSON):

| key | example |
|---|---|
| `producer` | `mtl-compress` |
| `tasks` | `["seg", "depth", "normal"]` (the task names = output names, in output order) |
| `input_name`, `input_format` | `image`, `RGB float32 [0,1] NCHW` (the model normalises internally) |
| `exporter`, `opset`, `ir_version`, `torch_version` | `dynamo`, `18`, `10`, `2.13.0+cpu` |
| `max_batch`, `dynamic_hw` | `64`, `false` |

Callers add their own keys through `metadata=`; the conventional ones are `task_kinds` (JSON object name -> kind,
e.g. `{"semantic": "seg", "z": "depth"}`), `class_names` (JSON list),
`sparsity` (JSON summary) and `source_run` (run id or path). The simplify step adds `simplifier`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import onnx

PRODUCER = "mtl-compress"
INPUT_FORMAT = "RGB float32 [0,1] NCHW"
# Facts recorded by the exporter itself; callers may not override them.
RESERVED_KEYS = frozenset(
    {
        "producer",
        "tasks",
        "input_name",
        "input_format",
        "exporter",
        "opset",
        "ir_version",
        "torch_version",
        "max_batch",
        "dynamic_hw",
    }
)


def to_meta_value(value: Any) -> str:
    """Return a metadata string: strings unchanged, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def check_extra_keys(extra: Mapping[str, Any] | None) -> None:
    """Raise ValueError if caller-supplied metadata tries to set a key the exporter owns."""
    clash = sorted(set(extra or {}) & RESERVED_KEYS)
    if clash:
        raise ValueError(f"metadata keys {clash} are written by the exporter; choose other names")


def build_metadata(
    *,
    task_names: Sequence[str],
    input_name: str,
    exporter: str,
    opset: int,
    ir_version: int,
    torch_version: str,
    max_batch: int,
    dynamic_hw: bool,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Combine the exporter's facts with caller-supplied entries.

    Raises:
        ValueError: If `extra` tries to set a reserved key.
    """
    check_extra_keys(extra)
    props = {
        "producer": PRODUCER,
        "tasks": to_meta_value(list(task_names)),
        "input_name": input_name,
        "input_format": INPUT_FORMAT,
        "exporter": exporter,
        "opset": str(opset),
        "ir_version": str(ir_version),
        "torch_version": torch_version,
        "max_batch": str(max_batch),
        "dynamic_hw": to_meta_value(dynamic_hw),
    }
    props.update({str(k): to_meta_value(v) for k, v in (extra or {}).items()})
    return props


def read_metadata(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> dict[str, str]:
    """Return a model's metadata_props as a dict (later duplicates win, as in onnxruntime)."""
    model = model_or_path
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model_or_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def write_metadata(
    model: onnx.ModelProto, props: Mapping[str, str], *, drop_prefixes: Sequence[str] = ()
) -> None:
    """Set `props` on `model` in place, replacing equal keys and dropping keys with any of `drop_prefixes`."""
    kept = {
        k: v
        for k, v in read_metadata(model).items()
        if k not in props and not any(k.startswith(p) for p in drop_prefixes)
    }
    kept.update(props)
    del model.metadata_props[:]
    for key, value in kept.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
