"""Atomic writes for ONNX files (and their external-data side files).

A reader must never see a half-written model: every artifact is produced in a private staging folder next to
its destination and moved into place with `os.replace`, which is atomic on one filesystem.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx

# Above this many bytes of tensor data a model is written with external data: protobuf cannot serialise a
# message over 2 GiB, and the margin leaves room for the graph itself.
LARGE_MODEL_BYTES = int(1.8e9)


@contextmanager
def staged_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging path with the same file name as `path`; move it (and siblings) into place on success.

    The staging path sits in a fresh hidden folder beside `path`, so side files a writer creates next to it
    (`model.onnx.data`) keep the relative names the ONNX file refers to. Side files are moved first and the
    main file last, so a reader that sees the main file also sees its data. On an exception nothing is moved
    and the staging folder is removed.

    Args:
        path: Final destination.

    Yields:
        The path to write instead of `path`.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    staged = stage_dir / final.name
    try:
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written to the staging path {staged}")
        for side in sorted(stage_dir.iterdir()):
            if side != staged:
                os.replace(side, final.parent / side.name)
        os.replace(staged, final)
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)


def clear_staging(staged: Path) -> None:
    """Remove everything a failed writer left in the staging folder of `staged` (before a retry)."""
    for item in staged.parent.iterdir():
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


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
