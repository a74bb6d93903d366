"""The real 50-image NYUv2 PNG sample: locating it, decoding it, and its known value ranges."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import DataConfig
from pipeline.data import TASKS, MultiTaskTensorDataset, build_dataset, dataset_fingerprint, find_realdata
from pipeline.data.nyuv2_png import load_nyuv2_png, load_sample, read_index
from pipeline.errors import DataError

REALDATA = find_realdata()
needs_realdata = pytest.mark.skipif(
    REALDATA is None,
    reason="real NYUv2 sample not found (no shared/realdata/nyuv2_test50 above the project root or the cwd)",
)


@pytest.fixture(scope="module")
def real() -> MultiTaskTensorDataset:
    """All 50 samples at the default 64x80, loaded once for the module (root=None: located automatically)."""
    assert REALDATA is not None
    ds = build_dataset(DataConfig(name="nyuv2_png", root=None), "val", TASKS)
    assert isinstance(ds, MultiTaskTensorDataset)
    return ds


@needs_realdata
def test_shapes_and_metadata(real: MultiTaskTensorDataset) -> None:
    assert len(real) == 50 and real.name == "nyuv2_png" and real.num_classes == 13
    assert real.class_names[0] == "bed" and real.class_names[11] == "wall"
    s = real[0]
    assert set(s) == {"image", *TASKS}
    assert s["image"].shape == (3, 64, 80) and s["image"].dtype == torch.float32
    assert s["seg"].shape == (64, 80) and s["seg"].dtype == torch.int64
    assert s["depth"].shape == (1, 64, 80) and s["normal"].shape == (3, 64, 80)
    assert real.meta["labeled_idx0"][:3] == [0, 1, 8]
    assert Path(str(real.meta["root"])) == REALDATA


@needs_realdata
def test_value_ranges(real: MultiTaskTensorDataset) -> None:
    batch = next(iter(torch.utils.data.DataLoader(real, batch_size=50)))
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    seg = batch["seg"]
    assert int(seg.min()) == -1 and int(seg.max()) == 12
    assert 0.12 < float((seg == -1).float().mean()) < 0.25  # README: 17.8 % unlabelled
    assert set(seg.unique().tolist()) == set(range(-1, 13))  # all 13 classes present
    depth = batch["depth"]
    assert 0.7 <= float(depth.min()) and float(depth.max()) <= 10.0
    length = batch["normal"].norm(dim=1)
    valid = length > 0.5
    assert torch.allclose(length[valid], torch.ones(()), atol=1e-5)
    assert (length[~valid] == 0).all()
    frac = valid.float().mean(dim=(1, 2))
    assert 0.44 <= float(frac.min()) and float(frac.max()) <= 0.78  # README: 0.468-0.756 per image
    # Floors (class 4) face up in the camera frame: y (down) component strongly negative on average.
    floor = (seg == 4) & valid
    assert float(batch["normal"][:, 1][floor].mean()) < -0.7


@needs_realdata
def test_native_resolution_matches_the_index() -> None:
    assert REALDATA is not None
    rows = read_index(REALDATA)
    for row in rows[:2]:
        s = load_sample(REALDATA, row, TASKS)
        assert s["image"].shape == (3, 480, 640)
        valid = float((s["normal"].norm(dim=0) > 0.5).float().mean())
        assert abs(valid - float(row["normal_valid_frac"])) < 0.005


@needs_realdata
def test_train_split_is_refused() -> None:
    with pytest.raises(DataError, match="evaluation-only"):
        build_dataset(DataConfig(name="nyuv2_png", root=str(REALDATA)), "train", TASKS)


@needs_realdata
def test_fingerprint() -> None:
    fp = dataset_fingerprint(DataConfig(name="nyuv2_png", root="auto"))
    assert fp.startswith("nyuv2_png-")
    assert fp == dataset_fingerprint(DataConfig(name="nyuv2_png", root=str(REALDATA)))
    assert fp != dataset_fingerprint(DataConfig(name="nyuv2_png", root="auto", height=32))


def test_find_realdata_walks_up_parents(tmp_path: Path) -> None:
    # a real shared/ above the temp dir (some CI layouts) would be found first: only then is None not expected
    above = any((p / "shared" / "realdata" / "nyuv2_test50" / "index.csv").exists() for p in tmp_path.parents)
    if not above:
        assert find_realdata(tmp_path) is None
    target = tmp_path / "shared" / "realdata" / "nyuv2_test50"
    target.mkdir(parents=True)
    (target / "index.csv").write_text("labeled_idx0\n")
    clone = tmp_path / "ci" / "checkout"
    clone.mkdir(parents=True)
    assert find_realdata(clone) == target.resolve()


@needs_realdata
def test_bad_files_name_the_file(tmp_path: Path) -> None:
    assert REALDATA is not None
    root = tmp_path / "nyuv2_test50"
    rows = read_index(REALDATA)[:2]
    for row in rows:
        for col in ("rgb", "depth_mm", "seg13", "normal_derived"):
            (root / row[col]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REALDATA / row[col], root / row[col])
    with open(root / "index.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    small = load_nyuv2_png(root, ["depth"], 24, 32)
    assert len(small) == 2 and set(small[0]) == {"image", "depth"} and small[0]["depth"].shape == (1, 24, 32)

    seg_path = root / rows[1]["seg13"]
    np_seg = np.zeros((480, 640), dtype=np.uint8)
    np_seg[0, 0] = 14
    Image.fromarray(np_seg).save(seg_path)
    with pytest.raises(DataError, match=re.escape(str(seg_path))):
        load_nyuv2_png(root, TASKS, 24, 32)

    depth_path = root / rows[0]["depth_mm"]
    Image.fromarray(np.zeros((480, 640, 3), dtype=np.uint8)).save(depth_path)
    with pytest.raises(DataError, match="uint16"):
        load_nyuv2_png(root, ["depth"], 24, 32)

    (root / rows[0]["rgb"]).unlink()
    with pytest.raises(DataError, match="missing"):
        load_nyuv2_png(root, ["depth"], 24, 32)


def test_missing_folder_or_index(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_nyuv2_png(tmp_path / "nope", TASKS)
    with pytest.raises(DataError, match="index.csv"):
        load_nyuv2_png(tmp_path, TASKS)
