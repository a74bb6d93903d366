"""Shared pieces of the dataset layer: task names, the in-memory tensor dataset and resizing helpers.

Every dataset in `pipeline.data` returns dict samples in the layout of docs/architecture.md (batches are drawn
only through `pipeline.data.batching`):

| key      | dtype, shape          | meaning                                             |
|----------|-----------------------|-----------------------------------------------------|
| `image`  | float32 `[3, H, W]`   | RGB in [0, 1]                                       |
| `seg`    | int64 `[H, W]`        | class index `0..C-1`, `-1` = ignore                 |
| `depth`  | float32 `[1, H, W]`   | metres, `0` = invalid                               |
| `normal` | float32 `[3, H, W]`   | unit, camera frame (x right, y down, z forward), 0 = invalid |

Only `image` and the requested tasks are present.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pipeline.config import TASK_KINDS

TASKS = TASK_KINDS  # defined once, in the config schema

# The 13-class NYUv2 mapping (Couprie et al. 2013), label ids 0..12 after the `-1` shift; MTAN/LibMTL use the same.
NYU13_CLASS_NAMES = [
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "picture", "sofa", "table", "tv", "wall", "window",
]  # fmt: skip


def check_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """Return `tasks` as a tuple after checking every name is a known task kind.

    Raises:
        ValueError: an unknown or repeated task name. The config layer validates tasks first, so reaching this is a
            programming error rather than a user error.
    """
    out = tuple(tasks)
    unknown = [t for t in out if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    if len(set(out)) != len(out):
        raise ValueError(f"task list {list(out)} names a task twice")
    return out


def renormalise(normal: torch.Tensor, dim: int = 1, eps: float = 1e-3) -> torch.Tensor:
    """Scale vectors along `dim` to unit length; vectors shorter than `eps` (the invalid zeros) become exactly 0.

    Args:
        normal: float tensor holding 3-vectors along `dim`.
        dim: the vector dimension.
        eps: length below which a vector counts as invalid.

    Returns:
        A new float32 tensor of the same shape.
    """
    normal = normal.float()
    # Explicit sum of squares: torch's vector_norm along a non-last dim is ~50x slower on CPU here.
    length = (normal * normal).sum(dim=dim, keepdim=True).sqrt()
    valid = length > eps
    return torch.where(valid, normal / length.clamp_min(eps), torch.zeros_like(normal))


def resize_sample(sample: dict[str, torch.Tensor], height: int, width: int) -> dict[str, torch.Tensor]:
    """Resize one sample (dict of `[C, H, W]` / `[H, W]` tensors) to `height` x `width`.

    RGB is resized bilinearly with antialiasing, because the real data is downscaled by up to 8x and plain bilinear
    would alias. Labels, depth and normals use nearest-exact sampling so that no value is invented across a label or
    depth boundary and invalid (zero) pixels never leak into valid ones; normals are renormalised afterwards.
    """
    h, w = sample["image"].shape[-2:]
    if (h, w) == (height, width):
        return sample
    size = (height, width)
    out: dict[str, torch.Tensor] = {}
    for key, value in sample.items():
        if key == "image":
            x = F.interpolate(
                value[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
            )
            out[key] = x[0].clamp_(0.0, 1.0)
        elif key == "seg":
            # Label ids are small integers, exactly representable in float32.
            x = F.interpolate(value[None, None].float(), size=size, mode="nearest-exact")
            out[key] = x[0, 0].round().long()
        elif key == "depth":
            out[key] = F.interpolate(value[None].float(), size=size, mode="nearest-exact")[0]
        elif key == "normal":
            x = F.interpolate(value[None].float(), size=size, mode="nearest-exact")[0]
            out[key] = renormalise(x, dim=0)
        else:  # pragma: no cover - the loaders only produce the keys above
            raise KeyError(key)
    return out


class MultiTaskTensorDataset(Dataset):
    """A whole split held in memory as tensors, so `__getitem__` is a cheap slice.

    The image is kept as uint8 when the source is 8-bit (4x less memory) and converted per item; labels may be kept
    as int16 for the same reason.

    Attributes:
        name: dataset kind ("scenes", "nyuv2_mtan", "nyuv2_png").
        num_classes: number of segmentation classes C (labels are 0..C-1, -1 = ignore).
        class_names: C class names.
        tasks: the tasks present in each sample besides `image`.
        height, width: spatial size of every sample.
    """

    def __init__(
        self,
        *,
        name: str,
        class_names: Sequence[str],
        tasks: Iterable[str],
        image: torch.Tensor,
        seg: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
        normal: torch.Tensor | None = None,
        meta: dict[str, object] | None = None,
    ) -> None:
        """Wrap stacked tensors.

        Args:
            name: dataset kind.
            class_names: one name per class.
            tasks: which of seg/depth/normal samples carry.
            image: `[N, 3, H, W]` uint8 (0..255) or float32 (0..1).
            seg: `[N, H, W]` integer labels, needed when "seg" is in tasks.
            depth: `[N, 1, H, W]` float32 metres, needed when "depth" is in tasks.
            normal: `[N, 3, H, W]` float32 unit normals, needed when "normal" is in tasks.
            meta: free-form extra information (e.g. source file ids) kept as `self.meta`.
        """
        self.name = name
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.tasks = check_tasks(tasks)
        self.meta = dict(meta or {})
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [N, 3, H, W], got {tuple(image.shape)}")
        self.height, self.width = int(image.shape[2]), int(image.shape[3])
        self._image = image
        self._targets: dict[str, torch.Tensor] = {}
        given = {"seg": seg, "depth": depth, "normal": normal}
        for task in self.tasks:
            tensor = given[task]
            if tensor is None:
                raise ValueError(f"task '{task}' requested but no {task} tensor given")
            if tensor.shape[0] != image.shape[0] or tuple(tensor.shape[-2:]) != (self.height, self.width):
                raise ValueError(
                    f"{task} shape {tuple(tensor.shape)} does not match image {tuple(image.shape)}"
                )
            self._targets[task] = tensor

    def __len__(self) -> int:
        return int(self._image.shape[0])

    def __getitem__(self, index: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """One sample for an int index; a whole batch (leading dim B) for a 1-D index tensor, in one slice per key."""
        image = self._image[index]
        sample = {"image": image.float().div_(255.0) if image.dtype == torch.uint8 else image}
        for task, tensor in self._targets.items():
            value = tensor[index]
            sample[task] = value.long() if task == "seg" else value
        return sample

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch at a 1-D index tensor in one slice per key: the fast path of `pipeline.data.batching.gather`."""
        return self[indices]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, size={self.height}x{self.width}, "
            f"classes={self.num_classes}, tasks={list(self.tasks)})"
        )


def nhwc_to_tensor(array: np.ndarray) -> torch.Tensor:
    """`[N, H, W, C]` numpy array to a contiguous `[N, C, H, W]` tensor (copies, so the array may be freed)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 1)))


class NamedTasks(Dataset):
    """A built-in dataset (samples keyed by kind) seen through the run's task names: `sample[name] = sample[kind]`.

    Two names of one kind share the kind's target. Attributes (`num_classes`, `class_names`, `name`, ...) are the
    wrapped dataset's; its `get_batch` fast path is kept.
    """

    def __init__(self, dataset: Dataset, kinds: dict[str, str]) -> None:
        self.dataset = dataset
        self.kinds = dict(kinds)

    def _rename(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"image": sample["image"], **{name: sample[kind] for name, kind in self.kinds.items()}}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self._rename(self.dataset[index])

    def __getattr__(self, attr: str) -> object:
        if attr in ("dataset", "kinds", "get_batch") or attr.startswith("__"):  # not set yet / no fast path
            if attr == "get_batch" and hasattr(self.__dict__.get("dataset"), "get_batch"):
                return lambda indices: self._rename(self.dataset.get_batch(indices))
            raise AttributeError(attr)
        return getattr(self.dataset, attr)

    def __repr__(self) -> str:
        return f"NamedTasks({self.dataset!r}, {self.kinds})"
