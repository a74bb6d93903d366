"""Procedural scenes: determinism, cache, dataset contract, and labels that agree with the rendered geometry."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import DataConfig
from pipeline.data import TASKS, build_dataset, dataset_fingerprint, scenes
from pipeline.data.scenes import (
    CEILING,
    FLOOR,
    WALL,
    RenderedScene,
    cache_dir,
    generate_split,
    make_scene,
    render_scene,
    rot_y,
)
from pipeline.errors import ConfigError

# ---------------------------------------------------------------------------------------------------------
# helpers


def _render(cfg: DataConfig, split: str, index: int) -> RenderedScene:
    return render_scene(make_scene(cfg, split, index))


def _world_points(r: RenderedScene) -> np.ndarray:
    """Back-project the rendered z-depth through the pinhole model into world points `[H, W, 3]`."""
    cam = r.params.camera
    v, u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float64)
    z = r.depth.astype(np.float64)
    p_cam = np.stack([(u + 0.5 - cam.cx) / cam.fx * z, (v + 0.5 - cam.cy) / cam.fy * z, z], axis=-1)
    return p_cam @ cam.rotation.T + np.asarray(cam.position)


@pytest.fixture(scope="module")
def rendered() -> list[RenderedScene]:
    """30 scenes at 48x64 with 3-6 objects: enough pixels of every surface kind for the geometry checks."""
    cfg = DataConfig(height=48, width=64, min_objects=3, max_objects=6, seed=7)
    return [_render(cfg, "train", i) for i in range(30)]


# ---------------------------------------------------------------------------------------------------------
# determinism and seeding


def test_same_seed_gives_identical_arrays(tiny_cfg: DataConfig) -> None:
    a, b = _render(tiny_cfg, "train", 3), _render(tiny_cfg, "train", 3)
    for key in ("image", "seg", "depth", "normal", "object_index"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.params == b.params


def test_different_seed_split_or_index_differ(tiny_cfg: DataConfig) -> None:
    base = _render(tiny_cfg, "train", 0)
    others = [
        _render(dataclasses.replace(tiny_cfg, seed=1), "train", 0),
        _render(tiny_cfg, "val", 0),  # train and val use disjoint seed streams
        _render(tiny_cfg, "train", 1),
    ]
    for other in others:
        assert not np.array_equal(base.image, other.image)
        assert not np.array_equal(base.depth, other.depth)


def test_image_does_not_depend_on_split_size(tiny_cfg: DataConfig) -> None:
    small = generate_split(tiny_cfg, "val", count=2)
    large = generate_split(tiny_cfg, "val", count=4)
    for key in small:
        assert np.array_equal(small[key], large[key][:2]), key


def test_negative_seed_is_accepted(tiny_cfg: DataConfig) -> None:
    r = _render(dataclasses.replace(tiny_cfg, seed=-5), "train", 0)
    assert r.image.shape == (32, 40, 3)


def test_bad_arguments_raise(tiny_cfg: DataConfig) -> None:
    with pytest.raises(ValueError, match="split"):
        make_scene(tiny_cfg, "test", 0)
    with pytest.raises(ValueError, match="at least 4"):
        make_scene(dataclasses.replace(tiny_cfg, num_classes=3), "train", 0)
    with pytest.raises(ValueError, match="split"):
        build_dataset(tiny_cfg, "test", ["seg"])
    with pytest.raises(ConfigError, match="unknown task"):  # the one task check, pipeline.config.as_task_kinds
        build_dataset(tiny_cfg, "train", ["edges"])


# ---------------------------------------------------------------------------------------------------------
# cache


def test_cache_round_trip(tiny_cfg: DataConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_dataset(tiny_cfg, "train", TASKS)
    assert first.meta["from_cache"] is False
    path = cache_dir(tiny_cfg) / "train_8.npz"
    assert path.is_file()
    assert path.parent.parent == Path(tiny_cfg.root)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")], "temp file left behind"
    with np.load(path, allow_pickle=False) as npz:
        assert {k: npz[k].dtype for k in npz.files} == {
            "image": np.uint8,
            "seg": np.int16,
            "depth": np.float32,
            "normal": np.float16,
        }
        assert npz["image"].shape == (8, 32, 40, 3)

    def no_rendering(*args: object, **kwargs: object) -> None:
        raise AssertionError("the second build must load from the cache")

    monkeypatch.setattr(scenes, "generate_split", no_rendering)
    second = build_dataset(tiny_cfg, "train", TASKS)
    assert second.meta["from_cache"] is True
    assert len(first) == len(second) == 8
    for i in range(len(first)):
        for key, value in first[i].items():
            assert torch.equal(value, second[i][key]), (i, key)


def test_val_split_is_cached_separately(tiny_cfg: DataConfig) -> None:
    train = build_dataset(tiny_cfg, "train", ["seg"])
    val = build_dataset(tiny_cfg, "val", ["seg"])
    assert (len(train), len(val)) == (8, 4)
    assert sorted(p.name for p in cache_dir(tiny_cfg).iterdir()) == ["train_8.npz", "val_4.npz"]


def test_default_cache_location_is_cwd(
    tmp_path: Path, tiny_cfg: DataConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = dataclasses.replace(tiny_cfg, root=None, num_val=2)
    build_dataset(cfg, "val", ["depth"])
    folder = cache_dir(cfg)
    assert folder.parent == tmp_path / ".cache" / "scenes"
    assert (folder / "val_2.npz").is_file()


def test_corrupt_cache_is_regenerated(tiny_cfg: DataConfig) -> None:
    reference = build_dataset(tiny_cfg, "val", TASKS)
    path = cache_dir(tiny_cfg) / "val_4.npz"
    path.write_bytes(b"not a zip file")
    again = build_dataset(tiny_cfg, "val", TASKS)
    assert again.meta["from_cache"] is False
    assert torch.equal(reference[2]["image"], again[2]["image"])
    assert build_dataset(tiny_cfg, "val", TASKS).meta["from_cache"] is True  # rewritten


def test_cache_key_and_fingerprint(tiny_cfg: DataConfig) -> None:
    fp = dataset_fingerprint(tiny_cfg)
    assert fp == dataset_fingerprint(tiny_cfg)
    assert fp.startswith("scenes-")
    assert fp == dataset_fingerprint(dataclasses.replace(tiny_cfg, root="/elsewhere"))  # paths are not data
    for change in ({"seed": 1}, {"noise": 0.05}, {"num_train": 9}, {"height": 40}, {"num_classes": 8}):
        assert dataset_fingerprint(dataclasses.replace(tiny_cfg, **change)) != fp, change
    assert cache_dir(dataclasses.replace(tiny_cfg, noise=0.05)) != cache_dir(tiny_cfg)
    assert cache_dir(dataclasses.replace(tiny_cfg, num_train=9)) == cache_dir(
        tiny_cfg
    )  # same folder, new file


def test_float16_normals_are_accurate_enough(tiny_cfg: DataConfig) -> None:
    ds = build_dataset(tiny_cfg, "val", ["normal"])
    for i in range(len(ds)):
        exact = torch.from_numpy(_render(tiny_cfg, "val", i).normal).permute(2, 0, 1)
        stored = ds[i]["normal"]
        cos = (exact * stored).sum(dim=0).clamp(-1, 1)
        assert math.degrees(float(torch.arccos(cos).max())) < 0.1
        assert torch.allclose(stored.norm(dim=0), torch.ones(()), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# dataset contract


def test_samples_follow_the_contract(tiny_cfg: DataConfig) -> None:
    ds = build_dataset(tiny_cfg, "train", TASKS)
    assert ds.name == "scenes"
    assert ds.num_classes == tiny_cfg.num_classes == len(ds.class_names)
    assert ds.class_names[:3] == ["floor", "wall", "ceiling"]
    for i in range(len(ds)):
        s = ds[i]
        assert set(s) == {"image", *TASKS}
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 32, 40)
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        assert s["seg"].dtype == torch.int64 and s["seg"].shape == (32, 40)
        assert 0 <= int(s["seg"].min()) and int(s["seg"].max()) < ds.num_classes
        assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, 32, 40)
        assert float(s["depth"].min()) > 0.0 and torch.isfinite(s["depth"]).all()
        assert s["normal"].dtype == torch.float32 and s["normal"].shape == (3, 32, 40)
        assert torch.allclose(s["normal"].norm(dim=0), torch.ones(()), atol=1e-5)


def test_only_requested_tasks_are_returned(tiny_cfg: DataConfig) -> None:
    ds = build_dataset(tiny_cfg, "val", ["depth"])
    assert set(ds[0]) == {"image", "depth"}
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 40) and batch["depth"].shape == (4, 1, 32, 40)


def test_index_tensor_gives_a_batch(tiny_cfg: DataConfig) -> None:
    ds = build_dataset(tiny_cfg, "train", TASKS)
    idx = torch.tensor([5, 0, 3])
    batch = ds[idx]
    assert batch["image"].shape == (3, 3, 32, 40) and batch["seg"].dtype == torch.int64
    for j, i in enumerate(idx.tolist()):
        for key, value in ds[i].items():
            assert torch.equal(batch[key][j], value), (i, key)


@pytest.mark.parametrize("num_classes", [4, 13])
def test_class_count_is_respected(tiny_cfg: DataConfig, num_classes: int) -> None:
    cfg = dataclasses.replace(tiny_cfg, num_classes=num_classes)
    seg = generate_split(cfg, "train")["seg"]
    assert seg.min() >= 0 and seg.max() < num_classes
    assert len(scenes.object_class_names(num_classes)) == num_classes


# ---------------------------------------------------------------------------------------------------------
# labels agree with the geometry


def test_all_pixels_are_valid_and_face_the_camera(rendered: list[RenderedScene]) -> None:
    for r in rendered:
        cam = r.params.camera
        rays = cam.camera_rays().reshape(cam.height, cam.width, 3)
        assert (r.depth > 0.05).all() and np.isfinite(r.depth).all()
        assert np.allclose(np.linalg.norm(r.normal, axis=-1), 1.0, atol=1e-5)
        assert ((r.normal * rays).sum(axis=-1) < 0).all()
        assert r.image.dtype == np.float32 and 0.0 <= r.image.min() and r.image.max() <= 1.0


def test_room_surfaces_match_depth_and_normals(rendered: list[RenderedScene]) -> None:
    counts = {FLOOR: 0, WALL: 0, CEILING: 0}
    for r in rendered:
        wx, hc, dz = r.params.room
        rot = r.params.camera.rotation
        points = _world_points(r)
        normal_w = r.normal.astype(np.float64) @ rot.T
        room = r.object_index < 0
        floor = room & (r.seg == FLOOR)
        # The floor is the plane y = 0 seen from above: back-projected points lie on it, the normal is world up.
        assert np.abs(points[floor][:, 1]).max(initial=0) < 2e-3
        assert np.allclose(r.normal[floor], rot.T @ [0.0, 1.0, 0.0], atol=1e-5)
        ceiling = room & (r.seg == CEILING)
        assert np.abs(points[ceiling][:, 1] - hc).max(initial=0) < 2e-3
        assert np.allclose(r.normal[ceiling], rot.T @ [0.0, -1.0, 0.0], atol=1e-5)
        # Each wall pixel lies on the wall plane its (inward) normal names.
        wall = room & (r.seg == WALL)
        planes = [((1, 0, 0), 0, 0.0), ((-1, 0, 0), 0, wx), ((0, 0, 1), 2, 0.0), ((0, 0, -1), 2, dz)]
        matched = np.zeros(wall.sum(), dtype=bool)
        for n, axis, value in planes:
            on = np.abs(normal_w[wall] - n).max(axis=1) < 1e-4
            assert np.abs(points[wall][on][:, axis] - value).max(initial=0) < 2e-3
            matched |= on
        assert matched.all()
        for cls, mask in ((FLOOR, floor), (WALL, wall), (CEILING, ceiling)):
            counts[cls] += int(mask.sum())
    assert min(counts.values()) > 100, counts


def test_objects_match_depth_normals_and_labels(rendered: list[RenderedScene]) -> None:
    checked = {"box": 0, "sphere": 0, "cylinder": 0}
    for r in rendered:
        points = _world_points(r)
        normal_w = r.normal.astype(np.float64) @ r.params.camera.rotation.T
        for k, obj in enumerate(r.params.objects):
            mask = r.object_index == k
            if not mask.any():
                continue
            assert (r.seg[mask] == obj.class_id).all()
            p = points[mask] - np.asarray(obj.center)
            n = normal_w[mask]
            if obj.kind == "sphere":
                # The normal is (P - centre) / r with P back-projected from the depth.
                assert np.abs(np.linalg.norm(p, axis=1) - obj.radius).max() < 2e-3
                assert np.abs(n - p / obj.radius).max() < 1e-2
            elif obj.kind == "box":
                rot = rot_y(obj.yaw)
                q, n_local = p @ rot, n @ rot
                h = np.asarray(obj.half_extents)
                axis = np.argmax(np.abs(n_local), axis=1)
                rows = np.arange(len(q))
                assert np.allclose(np.abs(n_local[rows, axis]), 1.0, atol=1e-4)  # a face normal
                # The point lies on the face the normal names, and inside the box's other extents.
                assert np.abs(q[rows, axis] - np.sign(n_local[rows, axis]) * h[axis]).max() < 2e-3
                assert (np.abs(q) <= h + 2e-3).all()
            else:
                cap = np.abs(n[:, 1]) > 0.5
                radial = np.hypot(p[:, 0], p[:, 2])
                assert np.abs(np.abs(p[cap, 1]) - obj.half_height).max(initial=0) < 2e-3
                assert (radial[cap] <= obj.radius + 2e-3).all()
                side = ~cap
                assert np.abs(radial[side] - obj.radius).max(initial=0) < 2e-3
                expected = np.stack([p[side, 0], np.zeros(side.sum()), p[side, 2]], axis=1) / obj.radius
                assert np.abs(n[side] - expected).max(initial=0) < 1e-2
            checked[obj.kind] += int(mask.sum())
    assert min(checked.values()) > 50, checked


# ---------------------------------------------------------------------------------------------------------
# a learning problem: varied depth, occlusions, and classes that colour alone does not decide


def test_depth_varies_and_objects_occlude(rendered: list[RenderedScene]) -> None:
    depths = np.concatenate([r.depth.ravel() for r in rendered])
    assert depths.min() < 1.5 and depths.max() > 6.0
    occluded_scenes = 0
    for r in rendered:
        cam = r.params.camera
        rays = cam.camera_rays() @ cam.rotation.T
        idx = r.object_index.ravel()
        for k, obj in enumerate(r.params.objects):
            t = obj.intersect(np.asarray(cam.position), rays)
            behind_other = np.isfinite(t) & (idx >= 0) & (idx != k)
            if behind_other.any():
                occluded_scenes += 1
                break
    assert occluded_scenes >= 0.2 * len(rendered)


def test_colour_alone_does_not_decide_the_class() -> None:
    """A per-colour majority vote (512 RGB bins, fitted on train) must do clearly worse than a perfect labeller."""
    cfg = DataConfig(height=32, width=40, num_train=60, num_val=30, seed=3)
    train, val = generate_split(cfg, "train"), generate_split(cfg, "val")

    def bins(image: np.ndarray) -> np.ndarray:
        q = (image // 32).astype(np.int64)
        return (q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]).ravel()

    votes = np.zeros((512, cfg.num_classes))
    np.add.at(votes, (bins(train["image"]), train["seg"].ravel().astype(np.int64)), 1)
    pred = votes.argmax(axis=1)[bins(val["image"])]
    target = val["seg"].ravel()
    ious = []
    for c in range(cfg.num_classes):
        union = ((pred == c) | (target == c)).sum()
        if union:
            ious.append(((pred == c) & (target == c)).sum() / union)
    assert np.mean(ious) < 0.5
    assert len(ious) == cfg.num_classes  # every class occurs
