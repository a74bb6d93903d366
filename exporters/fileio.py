"""Saving ONNX models, inline or with one external-data side file when they are too large for protobuf.

Writes are made atomic by the caller with `pipeline.artifacts.staged_output` (it keeps side files together).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

# Above this many bytes of tensor data a model is written with external data: protobuf cannot serialise a
# message over 2 GiB, and the margin leaves room for the graph itself.
LARGE_MODEL_BYTES = int(1.8e9)


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of initializer data held in memory or referenced externally (upper bound on file size)."""
    total = 0
    for init in model.graph.initializer:
        if init.HasField("raw_data"):
            total += len(init.raw_data)
        else:
            for entry in init.external_data:
                if entry.key == "length":
                    total += int(entry.value)
    return total


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Save a model as one file, or with one external-data file when its tensors exceed LARGE_MODEL_BYTES.

    Tensors whose data is already external (loaded with `load_external_data=False`) keep their references.
    """
    path = Path(path)
    if tensor_bytes(model) > LARGE_MODEL_BYTES:
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{path.name}.data",
        )
    else:
        onnx.save_model(model, path)
