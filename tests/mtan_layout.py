"""Write a fake NYUv2 dataset in the MTAN `.npy` layout (`root/{train,val}/{image,label,depth,normal}/<i>.npy`).

Shared by the loader's unit tests and the end-to-end `run all` test, so both exercise the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mtan_split(root: Path, split: str, count: int, height: int, width: int, seed: int = 0) -> None:
    """`count` random samples of `height` x `width` under `root/split`, with the dtypes MTAN ships.

    Every sample has some invalid pixels: zero normals in row 0 (first 4 columns) and zero depth in row 1 (first
    3 columns); labels are uniform in -1..12 (13 classes, -1 = ignore).
    """
    rng = np.random.default_rng(seed)
    for folder in ("image", "label", "depth", "normal"):
        (root / split / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        normal = rng.normal(size=(height, width, 3))
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        normal[0, :4] = 0.0  # invalid pixels
        depth = rng.uniform(0.5, 9.0, size=(height, width, 1))
        depth[1, :3] = 0.0
        # MTAN stores float64 images and float labels; keep those dtypes so the fake matches the real files.
        np.save(root / split / "image" / f"{i}.npy", rng.uniform(0, 1, size=(height, width, 3)))
        np.save(
            root / split / "label" / f"{i}.npy", rng.integers(-1, 13, size=(height, width)).astype(np.float64)
        )
        np.save(root / split / "depth" / f"{i}.npy", depth)
        np.save(root / split / "normal" / f"{i}.npy", normal)
