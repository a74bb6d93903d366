"""NYUv2 MTAN `.npy` loader on a tiny fake dataset, and one DataError per kind of bad input."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import DataConfig
from pipeline.data import TASKS, build_dataset, dataset_fingerprint
from pipeline.data.nyuv2_mtan import NYUv2MTAN
from pipeline.errors import DataError
from tests.mtan_layout import write_mtan_split

H, W = 12, 16


def _write_split(root: Path, split: str, count: int, seed: int = 0) -> None:
    write_mtan_split(root, split, count, H, W, seed)


@pytest.fixture
def mtan_root(tmp_path: Path) -> Path:
    root = tmp_path / "nyuv2"
    _write_split(root, "train", 3)
    _write_split(root, "val", 2, seed=1)
    return root


def test_loads_fake_dataset(mtan_root: Path) -> None:
    ds = NYUv2MTAN(mtan_root, "train", TASKS)
    assert len(ds) == 3 and ds.num_classes == 13 and ds.name == "nyuv2_mtan"
    assert ds.class_names[11] == "wall" and len(ds.class_names) == 13
    s = ds[1]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, H, W)
    assert s["seg"].dtype == torch.int64 and s["seg"].shape == (H, W)
    assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, H, W)
    assert s["normal"].dtype == torch.float32 and s["normal"].shape == (3, H, W)
    raw = np.load(mtan_root / "train" / "label" / "1.npy")
    assert torch.equal(s["seg"], torch.from_numpy(raw.astype(np.int64)))
    raw_depth = np.load(mtan_root / "train" / "depth" / "1.npy")[..., 0]
    assert torch.allclose(s["depth"][0], torch.from_numpy(raw_depth).float())
    length = s["normal"].norm(dim=0)
    assert (length[0, :4] == 0).all()
    assert torch.allclose(length[1:], torch.ones(()), atol=1e-5)


def test_build_dataset_resizes_and_selects_tasks(mtan_root: Path) -> None:
    cfg = DataConfig(name="nyuv2_mtan", root=str(mtan_root), height=6, width=8)
    ds = build_dataset(cfg, "val", ["seg", "normal"])
    assert len(ds) == 2
    s = ds[0]
    assert set(s) == {"image", "seg", "normal"}
    assert s["image"].shape == (3, 6, 8) and s["seg"].shape == (6, 8) and s["normal"].shape == (3, 6, 8)
    assert -1 <= int(s["seg"].min()) and int(s["seg"].max()) <= 12
    length = s["normal"].norm(dim=0)
    assert torch.all((length.sub(1).abs() < 1e-5) | (length == 0))


def test_only_needed_folders_are_required(mtan_root: Path) -> None:
    for p in (mtan_root / "val" / "normal").iterdir():
        p.unlink()
    (mtan_root / "val" / "normal").rmdir()
    assert len(NYUv2MTAN(mtan_root, "val", ["seg", "depth"])) == 2


def test_fingerprint_tracks_files(mtan_root: Path) -> None:
    cfg = DataConfig(name="nyuv2_mtan", root=str(mtan_root), height=H, width=W)
    fp = dataset_fingerprint(cfg)
    assert fp.startswith("nyuv2_mtan-") and fp == dataset_fingerprint(cfg)
    _write_split(mtan_root, "val", 3, seed=1)  # one more sample
    assert dataset_fingerprint(cfg) != fp


# ---------------------------------------------------------------------------------------------------------
# bad inputs: each raises DataError whose message names the offending path


def _expect(match_path: Path, fn: Callable[[], object], *, match: str) -> None:
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert str(match_path) in message, message
    assert match in message, message
    assert "\n" not in message


def test_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "absent"
    _expect(root, lambda: NYUv2MTAN(root, "train", TASKS), match="does not exist")


def test_missing_split_dir(mtan_root: Path) -> None:
    shutil.rmtree(mtan_root / "val")
    _expect(mtan_root / "val", lambda: NYUv2MTAN(mtan_root, "val", TASKS), match="missing")


def test_missing_task_dir(mtan_root: Path) -> None:
    shutil.rmtree(mtan_root / "train" / "depth")
    _expect(mtan_root / "train" / "depth", lambda: NYUv2MTAN(mtan_root, "train", TASKS), match="missing")


def test_empty_dir(mtan_root: Path) -> None:
    folder = mtan_root / "train" / "label"
    for p in folder.iterdir():
        p.unlink()
    _expect(folder, lambda: NYUv2MTAN(mtan_root, "train", TASKS), match="no <i>.npy files")


def test_mismatched_counts(mtan_root: Path) -> None:
    (mtan_root / "train" / "normal" / "2.npy").unlink()
    _expect(mtan_root / "train", lambda: NYUv2MTAN(mtan_root, "train", TASKS), match="different numbers")


def test_gap_in_file_names(mtan_root: Path) -> None:
    (mtan_root / "train" / "depth" / "1.npy").rename(mtan_root / "train" / "depth" / "7.npy")
    _expect(
        mtan_root / "train" / "depth" / "1.npy", lambda: NYUv2MTAN(mtan_root, "train", TASKS), match="missing"
    )


@pytest.mark.parametrize(
    ("folder", "array"),
    [
        ("image", np.zeros((H, W), dtype=np.float32)),
        ("label", np.zeros((H, W, 1), dtype=np.int64)),
        ("depth", np.zeros((H, W + 1, 1), dtype=np.float32)),
        ("normal", np.zeros((H, W, 2), dtype=np.float32)),
    ],
)
def test_wrong_shape(mtan_root: Path, folder: str, array: np.ndarray) -> None:
    path = mtan_root / "train" / folder / "2.npy"
    np.save(path, array)
    _expect(path, lambda: NYUv2MTAN(mtan_root, "train", TASKS), match="expected")


@pytest.mark.parametrize(
    ("folder", "array"),
    [
        ("image", np.zeros((H, W, 3), dtype=np.int32)),
        ("label", np.zeros((H, W), dtype=np.uint8)),  # cannot hold the -1 ignore label
        ("depth", np.zeros((H, W, 1), dtype=np.int32)),
        ("normal", np.zeros((H, W, 3), dtype=bool)),
        ("normal", np.zeros((H, W, 3), dtype=object)),  # would need pickle
    ],
)
def test_wrong_dtype(mtan_root: Path, folder: str, array: np.ndarray) -> None:
    path = mtan_root / "train" / folder / "0.npy"
    np.save(path, array, allow_pickle=True)
    _expect(path, lambda: NYUv2MTAN(mtan_root, "train", TASKS), match="dtype")


def test_not_an_npy_file(mtan_root: Path) -> None:
    path = mtan_root / "train" / "image" / "1.npy"
    path.write_bytes(b"garbage")
    _expect(path, lambda: NYUv2MTAN(mtan_root, "train", TASKS), match="not a valid .npy")


@pytest.mark.parametrize("bad", [13, -2, 0.5])
def test_label_out_of_range(mtan_root: Path, bad: float) -> None:
    path = mtan_root / "train" / "label" / "1.npy"
    label = np.load(path)
    label[3, 4] = bad
    np.save(path, label)
    ds = NYUv2MTAN(mtan_root, "train", TASKS)  # values are checked when the sample is read
    assert ds[0]["seg"].shape == (H, W)
    _expect(path, lambda: ds[1], match="expected")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_bad_depth_values(mtan_root: Path, bad: float) -> None:
    path = mtan_root / "val" / "depth" / "0.npy"
    depth = np.load(path)
    depth[5, 5, 0] = bad
    np.save(path, depth)
    ds = NYUv2MTAN(mtan_root, "val", TASKS)
    _expect(path, lambda: ds[0], match="depth")


def test_nan_normal_and_out_of_range_image(mtan_root: Path) -> None:
    n_path = mtan_root / "val" / "normal" / "1.npy"
    normal = np.load(n_path)
    normal[0, 0, 0] = np.nan
    np.save(n_path, normal)
    i_path = mtan_root / "val" / "image" / "0.npy"
    np.save(i_path, np.full((H, W, 3), 255.0))
    ds = NYUv2MTAN(mtan_root, "val", TASKS)
    _expect(n_path, lambda: ds[1], match="NaN")
    _expect(i_path, lambda: ds[0], match="[0, 1]")


def test_takes_int_like_indices_and_rejects_batch_tensors(mtan_root: Path) -> None:
    ds = NYUv2MTAN(mtan_root, "train", TASKS)
    assert torch.equal(ds[torch.tensor(2)]["seg"], ds[2]["seg"])
    assert torch.equal(ds[np.int64(1)]["image"], ds[1]["image"])
    with pytest.raises(TypeError, match="gather"):
        ds[torch.arange(2)]
    with pytest.raises(IndexError):
        ds[3]
