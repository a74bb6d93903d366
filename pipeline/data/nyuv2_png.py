"""The real 50-image NYUv2 test sample stored as PNGs (`shared/realdata/nyuv2_test50/`, see its README).

Layout: `index.csv` (columns `labeled_idx0, rgb, depth_mm, seg13, normal_derived, ...`, paths relative to the folder)
and per sample:

| file                                | format                        | becomes                                   |
|-------------------------------------|-------------------------------|-------------------------------------------|
| `rgb/NNNNN_colors.png`              | uint8 RGB                     | float RGB in [0, 1]                        |
| `depth/NNNNN_depth.png`             | uint16 millimetres            | float metres, 0 = invalid                  |
| `seg13/new_nyu_class13_MMMM.png`    | uint8, 0 = unlabelled, 1..13  | int labels 0..12, -1 = ignore              |
| `normals_derived/NNNNN_normal.png`  | uint8, n = px / 255 * 2 - 1   | unit normals (OpenCV camera frame, like ours), (0,0,0) px = invalid = 0 |

The sample is evaluation-only: the images come from ~12 scenes and the normals are derived from depth.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.data.base import (
    NYU13_CLASS_NAMES,
    MultiTaskTensorDataset,
    check_tasks,
    renormalise,
    resize_sample,
)
from pipeline.errors import DataError

REALDATA_RELPATH = Path("shared") / "realdata" / "nyuv2_test50"
NUM_CLASSES = len(NYU13_CLASS_NAMES)
INDEX_COLUMNS = ("labeled_idx0", "rgb", "depth_mm", "seg13", "normal_derived")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _is_sample_dir(path: Path) -> bool:
    return (path / "index.csv").is_file()


def find_realdata(start: str | Path | None = None) -> Path | None:
    """Locate the `nyuv2_test50` folder, or return None when it is not available.

    Looked for, in order: `shared/realdata/nyuv2_test50` inside the project root and each of its parents (the
    checkout at /work/main finds /work/shared/...; a CI clone finds the `shared/` copied beside it), then the same
    relative to the current directory and its parents (covers `../shared/...` when run from the project root).

    Args:
        start: search from here instead of the project root (mainly for tests).

    Returns:
        The resolved folder holding `index.csv`, or None.
    """
    bases = [Path(start).resolve()] if start is not None else [_PROJECT_ROOT, Path.cwd().resolve()]
    seen: set[Path] = set()
    for base in bases:
        for folder in (base, *base.parents):
            if folder in seen:
                continue
            seen.add(folder)
            candidate = folder / REALDATA_RELPATH
            if _is_sample_dir(candidate):
                return candidate
    return None


def _read_png(path: Path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing; expected the {what} PNG listed in index.csv") from None
    except OSError as e:
        raise DataError(f"{path}: cannot decode ({e}); expected a {what} PNG") from None


def _check(
    path: Path, array: np.ndarray, shape: tuple[int, ...], dtypes: tuple[type, ...], what: str
) -> None:
    if array.shape != shape:
        raise DataError(f"{path}: shape {array.shape}, expected {shape} ({what})")
    if array.dtype.type not in dtypes:
        names = " or ".join(np.dtype(d).name for d in dtypes)
        raise DataError(f"{path}: dtype {array.dtype}, expected {names} ({what})")


def read_index(root: Path) -> list[dict[str, str]]:
    """Rows of `index.csv`, checked for the needed columns.

    Raises:
        DataError: the index is missing, empty or lacks a column.
    """
    index = root / "index.csv"
    if not index.is_file():
        raise DataError(
            f"{index}: file is missing; a real-image folder needs an index.csv with columns {', '.join(INDEX_COLUMNS)} "
            "(the format is in the README, section Data)"
        )
    with open(index, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{index}: columns {missing} are missing; expected {', '.join(INDEX_COLUMNS)}")
        rows = list(reader)
    if not rows:
        raise DataError(f"{index}: no rows; expected one row per sample")
    return rows


def load_sample(
    root: Path,
    row: dict[str, str],
    tasks: Iterable[str],
    height: int | None = None,
    width: int | None = None,
) -> dict[str, torch.Tensor]:
    """Decode one sample into the contract's tensors, resized to `height` x `width` when both are given.

    Args:
        root: the `nyuv2_test50` folder.
        row: its `index.csv` row.
        tasks: which of seg/depth/normal to decode.
        height, width: output size; None keeps the native size.

    Raises:
        DataError: a file is missing or has the wrong shape, dtype or values.
    """
    rgb_path = root / row["rgb"]
    rgb = _read_png(rgb_path, "uint8 RGB")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"{rgb_path}: shape {rgb.shape}, expected (H, W, 3) uint8 RGB")
    size = rgb.shape[:2]
    _check(rgb_path, rgb, (*size, 3), (np.uint8,), "uint8 RGB")
    sample = {"image": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0}
    if "seg" in tasks:
        path = root / row["seg13"]
        seg = _read_png(path, "13-class label")
        _check(path, seg, size, (np.uint8,), "uint8 labels 0..13")
        if int(seg.max()) > NUM_CLASSES:
            raise DataError(
                f"{path}: label {int(seg.max())} found, expected 0 (unlabelled) or 1..{NUM_CLASSES}"
            )
        # 0 = unlabelled -> -1 (ignore), classes 1..13 -> 0..12.
        sample["seg"] = torch.from_numpy(seg.astype(np.int64) - 1)
    if "depth" in tasks:
        path = root / row["depth_mm"]
        depth = _read_png(path, "uint16 depth (mm)")
        if depth.dtype == np.int32 and depth.size and depth.min() >= 0 and depth.max() <= 65535:
            depth = depth.astype(np.uint16)  # some Pillow versions decode 16-bit PNGs as mode "I" (int32)
        _check(path, depth, size, (np.uint16,), "uint16 depth in millimetres")
        sample["depth"] = torch.from_numpy(depth.astype(np.float32) / 1000.0)[None]
    if "normal" in tasks:
        path = root / row["normal_derived"]
        px = _read_png(path, "uint8 normal")
        _check(path, px, (*size, 3), (np.uint8,), "uint8 encoded normals")
        valid = px.any(axis=-1)
        n = px.astype(np.float32) / 255.0 * 2.0 - 1.0
        n[~valid] = 0.0
        # Decoded normals are unit up to 8-bit quantisation; they are renormalised once, after any resize.
        sample["normal"] = torch.from_numpy(np.ascontiguousarray(n.transpose(2, 0, 1)))
    if height is not None and width is not None and (height, width) != tuple(size):
        return resize_sample(sample, height, width)  # renormalises the normals
    if "normal" in sample:
        sample["normal"] = renormalise(sample["normal"], dim=0)
    return sample


def load_nyuv2_png(
    root: str | Path | None,
    tasks: Iterable[str],
    height: int | None = None,
    width: int | None = None,
) -> MultiTaskTensorDataset:
    """Load all samples of the real PNG sample into memory, resized to `height` x `width`.

    Args:
        root: the `nyuv2_test50` folder; None or "auto" searches with `find_realdata()`.
        tasks: which of seg/depth/normal to load.
        height, width: output size; None keeps the native 480 x 640.

    Returns:
        A dataset named "nyuv2_png" with 13 classes, `meta["labeled_idx0"]` giving each sample's NYUv2 index.

    Raises:
        DataError: the folder is not found or a file is missing or malformed.
    """
    tasks = check_tasks(tasks)
    if root is None or str(root) == "auto":
        found = find_realdata()
        if found is None:
            raise DataError(
                f"real NYUv2 sample not found: no {REALDATA_RELPATH} above {_PROJECT_ROOT} or {os.getcwd()}; "
                "set data.root to the nyuv2_test50 folder"
            )
        root = found
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: directory does not exist; expected the nyuv2_test50 folder (index.csv, rgb/, ...)"
        )
    rows = read_index(root)
    samples = []
    for row in rows:
        samples.append(load_sample(root, row, tasks, height, width))
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) > 1:
        raise DataError(
            f"{root}: images have different sizes {sorted(shapes)}; give data.height/width to resize them"
        )
    return MultiTaskTensorDataset(
        name="nyuv2_png",
        class_names=NYU13_CLASS_NAMES,
        tasks=tasks,
        # Back to uint8 for the image: 4x less memory, and the source is 8-bit anyway.
        image=torch.stack([(s["image"] * 255.0).round_().to(torch.uint8) for s in samples]),
        seg=torch.stack([s["seg"] for s in samples]) if "seg" in tasks else None,
        depth=torch.stack([s["depth"] for s in samples]) if "depth" in tasks else None,
        normal=torch.stack([s["normal"] for s in samples]) if "normal" in tasks else None,
        meta={"root": str(root), "labeled_idx0": [int(r["labeled_idx0"]) for r in rows]},
    )
