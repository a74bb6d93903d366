"""A user's own dataset factory: `make_dataset(split, tasks, **data.kwargs)` -> a torch Dataset of dict samples.

`tasks` is the config's `tasks`: a list of kinds, or a mapping task name -> kind (`{semantic: seg, z: depth}`).
Each sample is `{"image": float32 [3, H, W] in [0, 1], <task name>: target}` with the target in its kind's format:
`seg` int64 `[H, W]`, `depth` float32 `[1, H, W]` in metres, `normal` float32 `[3, H, W]` unit vectors. The dataset
has `num_classes`.
Here the samples are synthetic (a tilted floor with coloured stripes) so the example needs no download.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class StripesDataset(Dataset):
    def __init__(self, size: int, tasks: list[str] | dict[str, str], height: int, width: int, num_classes: int,
                 seed: int) -> None:
        self.kinds = dict(tasks) if isinstance(tasks, dict) else {t: t for t in tasks}  # name -> kind
        self.num_classes = num_classes
        self.class_names = [f"stripe_{i}" for i in range(num_classes)]
        gen = torch.Generator().manual_seed(seed)
        self.phase = torch.rand(size, generator=gen)
        self.slope = 0.5 + torch.rand(size, generator=gen)
        self.height, self.width = height, width

    def __len__(self) -> int:
        return len(self.phase)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        h, w = self.height, self.width
        y = torch.linspace(0, 1, h)[:, None].expand(h, w)
        x = torch.linspace(0, 1, w)[None, :].expand(h, w)
        seg = ((x * self.num_classes + self.phase[i] * self.num_classes) % self.num_classes).long()
        colour = torch.stack([seg.float() / self.num_classes, 1 - y, x]) * 0.8 + 0.1
        depth = (1.0 + self.slope[i] * 3 * (1 - y))[None]
        normal = F.normalize(torch.stack([torch.zeros_like(y), -torch.ones_like(y), self.slope[i] * torch.ones_like(y)]), dim=0)
        targets = {"seg": seg, "depth": depth, "normal": normal}
        return {"image": colour.float(), **{name: targets[kind] for name, kind in self.kinds.items()}}


def make_dataset(split: str, tasks: list[str] | dict[str, str], num_classes: int = 5, height: int = 32, width: int = 32,
                 train_size: int = 64, val_size: int = 16) -> StripesDataset:
    """The factory `data.factory` names: called with (split, tasks) plus `data.kwargs`."""
    size = train_size if split == "train" else val_size
    return StripesDataset(size, tasks, height, width, num_classes, seed=0 if split == "train" else 1)
