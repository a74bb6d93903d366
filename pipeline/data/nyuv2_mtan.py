"""NYUv2 in the MTAN/LibMTL preprocessed layout: `root/{train,val}/{image,label,depth,normal}/<i>.npy`.

Per sample `i` (files `0.npy .. N-1.npy` in every folder):

| folder   | shape          | content                                                |
|----------|----------------|--------------------------------------------------------|
| `image`  | `(H, W, 3)`    | float RGB in [0, 1] (uint8 0..255 is accepted too)     |
| `label`  | `(H, W)`       | 13 classes `0..12`, `-1` = ignore (integer or integral float) |
| `depth`  | `(H, W, 1)`    | float metres, `0` = invalid (`(H, W)` is accepted too) |
| `normal` | `(H, W, 3)`    | float unit normals, all-zero = invalid                 |

MTAN ships 288 x 384 arrays; any size is accepted as long as every file of the split has the size of the first image.
Shapes and dtypes of every needed file are checked when the dataset is built, from the `.npy` headers only (cheap);
values (label range, NaN/Inf, negative depth) are checked when a sample is loaded. Arrays are read lazily because
the full split is gigabytes of float64; nothing is ever unpickled.

Axis convention: the normals are used as stored. MTAN's (Eigen) normals may not use our camera frame (x right, y
down, z forward); check before comparing against a model trained on other data.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.base import NYU13_CLASS_NAMES, check_tasks, renormalise, resize_sample
from pipeline.errors import DataError

NUM_CLASSES = len(NYU13_CLASS_NAMES)
_FOLDER_OF_TASK = {"seg": "label", "depth": "depth", "normal": "normal"}
_NAME = re.compile(r"^(\d+)\.npy$")


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an `.npy` file from its header, without reading the data."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); expected a .npy array file") from None
    except ValueError as e:
        raise DataError(f"{path}: not a valid .npy file ({e})") from None
    return tuple(shape), dtype


def _dtype_problem(folder: str, dtype: np.dtype) -> str | None:
    """Why `dtype` is not acceptable for `folder`, or None."""
    if folder == "image":
        ok = np.issubdtype(dtype, np.floating) or dtype == np.uint8
        want = "a float dtype (RGB in [0, 1]) or uint8"
    elif folder == "label":
        # Unsigned types cannot hold the -1 ignore label: they signal a different label convention (e.g. 0 = void).
        ok = np.issubdtype(dtype, np.signedinteger) or np.issubdtype(dtype, np.floating)
        want = "a signed integer or float dtype (labels -1..12)"
    else:
        ok = np.issubdtype(dtype, np.floating)
        want = "a float dtype (metres)" if folder == "depth" else "a float dtype (unit vectors)"
    return None if ok else f"dtype {dtype} is not {want}"


def _expected_shapes(height: int, width: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    return {
        "image": ((height, width, 3),),
        "label": ((height, width),),
        "depth": ((height, width, 1), (height, width)),
        "normal": ((height, width, 3),),
    }


def _fmt_shapes(options: tuple[tuple[int, ...], ...]) -> str:
    return " or ".join(str(o) for o in options)


class NYUv2MTAN(Dataset):
    """Lazy NYUv2 dataset in the MTAN `.npy` layout (13 classes).

    Attributes:
        name: "nyuv2_mtan".
        num_classes: 13.
        class_names: the NYUv2 13-class names.
        tasks: tasks present in each sample besides `image`.
        height, width: output size (resized from the stored size when they differ).
        native_size: (H, W) of the stored arrays.
    """

    name = "nyuv2_mtan"

    def __init__(
        self,
        root: str | Path,
        split: str,
        tasks: Iterable[str],
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        """Index and validate a split.

        Args:
            root: dataset directory holding `train/` and `val/`.
            split: "train" or "val".
            tasks: which of seg/depth/normal to load.
            height, width: output size; None keeps the stored size.

        Raises:
            DataError: a folder is missing or empty, the file counts or names disagree, or a file has the wrong shape
                or dtype.
        """
        self.tasks = check_tasks(tasks)
        self.class_names = list(NYU13_CLASS_NAMES)
        self.num_classes = NUM_CLASSES
        root = Path(root)
        if not root.is_dir():
            raise DataError(
                f"{root}: dataset directory does not exist; expected root/{{train,val}}/{{image,label,depth,normal}}/<i>.npy"
            )
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"{split_dir}: split directory is missing; expected {split}/{{image,label,depth,normal}}/<i>.npy"
            )
        self.split_dir = split_dir
        folders = ["image"] + [_FOLDER_OF_TASK[t] for t in self.tasks]
        counts: dict[str, int] = {}
        for folder in folders:
            d = split_dir / folder
            if not d.is_dir():
                raise DataError(f"{d}: folder is missing; expected {folder}/0.npy .. {folder}/<N-1>.npy")
            indices = sorted(int(m.group(1)) for p in d.iterdir() if (m := _NAME.match(p.name)))
            if not indices:
                raise DataError(
                    f"{d}: folder has no <i>.npy files; expected {folder}/0.npy .. {folder}/<N-1>.npy"
                )
            if indices != list(range(len(indices))):
                missing = sorted(set(range(max(indices) + 1)) - set(indices))
                raise DataError(
                    f"{d / f'{missing[0]}.npy'}: file is missing; expected {folder}/0.npy .. {folder}/{max(indices)}.npy without gaps"
                )
            counts[folder] = len(indices)
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{f}: {n}" for f, n in counts.items())
            raise DataError(
                f"{split_dir}: folders hold different numbers of files ({detail}); expected one file per sample in each"
            )
        self._count = counts["image"]
        self._folders = folders

        first = split_dir / "image" / "0.npy"
        shape, _ = _read_header(first)
        if len(shape) != 3 or shape[2] != 3:
            raise DataError(f"{first}: shape {shape}, expected (H, W, 3) RGB (MTAN: (288, 384, 3))")
        self.native_size = (int(shape[0]), int(shape[1]))
        self.height = height if height is not None else self.native_size[0]
        self.width = width if width is not None else self.native_size[1]
        expected = _expected_shapes(*self.native_size)
        for folder in folders:
            for i in range(self._count):
                path = split_dir / folder / f"{i}.npy"
                shape, dtype = _read_header(path)
                if shape not in expected[folder]:
                    raise DataError(f"{path}: shape {shape}, expected {_fmt_shapes(expected[folder])}")
                problem = _dtype_problem(folder, dtype)
                if problem is not None:
                    raise DataError(f"{path}: {problem}")

    def __len__(self) -> int:
        return self._count

    def _load(self, folder: str, index: int) -> np.ndarray:
        path = self.split_dir / folder / f"{index}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot load ({e}); expected a plain numeric .npy array") from None

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One sample (per-sample dataset: batches come from `pipeline.data.batching`, never a tensor of indices).

        Raises:
            TypeError: `index` is not a single integer (e.g. a batch index tensor).
            IndexError: `index` is outside `0..len-1`.
        """
        try:
            index = operator.index(index)  # int, numpy integer or a one-element integer tensor
        except TypeError:
            raise TypeError(
                f"NYUv2MTAN takes one integer index, got {type(index).__name__}; "
                "draw batches with pipeline.data.batching.gather / iter_batches"
            ) from None
        if not 0 <= index < self._count:
            raise IndexError(index)
        d = self.split_dir
        image = self._load("image", index)
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        else:
            bad = ~np.isfinite(image)
            if bad.any():
                raise DataError(
                    f"{d / 'image' / f'{index}.npy'}: {int(bad.sum())} NaN/Inf values; expected finite RGB in [0, 1]"
                )
            lo, hi = float(image.min()), float(image.max())
            if lo < -1e-3 or hi > 1.0 + 1e-3:
                raise DataError(
                    f"{d / 'image' / f'{index}.npy'}: values in [{lo:.3g}, {hi:.3g}], expected RGB in [0, 1]"
                )
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0))).float().clamp_(0, 1)
        }
        if "seg" in self.tasks:
            path = d / "label" / f"{index}.npy"
            label = self._load("label", index)
            if np.issubdtype(label.dtype, np.floating):
                if not np.isfinite(label).all() or (label != np.round(label)).any():
                    raise DataError(
                        f"{path}: non-integer or NaN labels; expected integer class ids -1..{NUM_CLASSES - 1}"
                    )
            lo, hi = int(label.min()), int(label.max())
            if lo < -1 or hi > NUM_CLASSES - 1:
                raise DataError(
                    f"{path}: labels in [{lo}, {hi}], expected -1 (ignore) or 0..{NUM_CLASSES - 1}"
                )
            sample["seg"] = torch.from_numpy(label.astype(np.int64))
        if "depth" in self.tasks:
            path = d / "depth" / f"{index}.npy"
            depth = self._load("depth", index).astype(np.float32).reshape(self.native_size)
            bad = ~np.isfinite(depth)
            if bad.any():
                raise DataError(
                    f"{path}: {int(bad.sum())} NaN/Inf depth values; expected finite metres with 0 = invalid"
                )
            if (depth < 0).any():
                raise DataError(
                    f"{path}: negative depth (min {float(depth.min()):.3g}); expected metres >= 0 with 0 = invalid"
                )
            sample["depth"] = torch.from_numpy(depth)[None]
        if "normal" in self.tasks:
            path = d / "normal" / f"{index}.npy"
            normal = self._load("normal", index).astype(np.float32)
            bad = ~np.isfinite(normal)
            if bad.any():
                raise DataError(
                    f"{path}: {int(bad.sum())} NaN/Inf normal values; expected unit vectors with 0 = invalid"
                )
            # Stored normals are unit up to interpolation error; renormalise so the contract (unit or 0) holds.
            sample["normal"] = renormalise(
                torch.from_numpy(np.ascontiguousarray(np.moveaxis(normal, -1, 0))), dim=0
            )
        return resize_sample(sample, self.height, self.width)

    def __repr__(self) -> str:
        return f"NYUv2MTAN({str(self.split_dir)!r}, n={self._count}, size={self.height}x{self.width}, tasks={list(self.tasks)})"
