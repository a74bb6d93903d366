"""Random scene sampling: class styles, appearances, room, camera and object placement, per-image streams."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from pipeline.config import DataConfig
from pipeline.data.scenes.geometry import (
    FIRST_OBJECT_CLASS,
    Appearance,
    Camera,
    SceneObject,
    SceneParams,
    Shape,
    Texture,
)

SPLIT_IDS = {"train": 0, "val": 1}
# Horizontal focal length as a fraction of the width (NYUv2: 518.86 / 640), so the field of view is ~63 degrees.
FOCAL_FRACTION = 0.81

# Object-class base colours. Consecutive object classes (pairs) share a colour and differ only in texture.
_OBJECT_PALETTE = np.array(
    [
        [0.78, 0.26, 0.20],  # red
        [0.22, 0.45, 0.78],  # blue
        [0.86, 0.72, 0.24],  # yellow
        [0.30, 0.62, 0.32],  # green
        [0.60, 0.36, 0.68],  # purple
        [0.92, 0.55, 0.22],  # orange
        [0.25, 0.68, 0.70],  # teal
        [0.55, 0.55, 0.55],  # grey
    ]
)
_OBJECT_TEXTURES: tuple[Texture, ...] = (
    "stripes",
    "checker",
    "noise",
    "dots",
    "plain",
    "stripes",
    "checker",
    "noise",
)
_OBJECT_SHAPES: tuple[Shape, ...] = ("box", "cylinder", "sphere")
# Pattern period in metres per texture: at 3 m one pixel of a 64x80 image covers ~4.6 cm, so these are 3-6 px.
_TEXTURE_SCALE = {"plain": 0.2, "stripes": 0.2, "checker": 0.16, "noise": 0.3, "dots": 0.22}
_OBJECT_NAMES = ["crate", "cabinet", "bin", "stool", "ball", "globe", "chest", "drum", "lamp", "pouf"]

_WALL_COLOURS = np.array([[0.86, 0.82, 0.72], [0.76, 0.76, 0.76], [0.62, 0.72, 0.82], [0.80, 0.70, 0.62]])
_FLOOR_COLOURS = np.array([[0.55, 0.38, 0.22], [0.45, 0.45, 0.48], [0.35, 0.30, 0.28], [0.68, 0.56, 0.40]])
_CEILING_COLOURS = np.array([[0.93, 0.93, 0.90], [0.88, 0.88, 0.86]])


def object_class_names(num_classes: int) -> list[str]:
    """Class names for a scenes dataset with `num_classes` classes (floor, wall, ceiling, then objects)."""
    names = ["floor", "wall", "ceiling"]
    for k in range(num_classes - FIRST_OBJECT_CLASS):
        names.append(_OBJECT_NAMES[k] if k < len(_OBJECT_NAMES) else f"object_{k}")
    return names


def _class_style(k: int) -> tuple[np.ndarray, Texture, Shape]:
    """Base colour, texture and preferred shape of object class `FIRST_OBJECT_CLASS + k`.

    Classes 2j and 2j+1 share colour and preferred shape, so only the texture separates them.
    """
    colour = _OBJECT_PALETTE[(k // 2) % len(_OBJECT_PALETTE)]
    texture = _OBJECT_TEXTURES[k % len(_OBJECT_TEXTURES)]
    shape = _OBJECT_SHAPES[(k // 2) % len(_OBJECT_SHAPES)]
    return colour, texture, shape


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _appearance(
    rng: np.random.Generator, colour: np.ndarray, texture: Texture, accent_mode: Literal["dark", "light"]
) -> Appearance:
    """Sample an appearance around a base colour: colour jitter, accent colour, texture scale and orientation."""
    colour = np.clip(colour * rng.uniform(0.85, 1.15, size=3), 0.03, 1.0)
    accent = (
        colour * rng.uniform(0.3, 0.5) if accent_mode == "dark" else np.clip(colour * 0.4 + 0.55, 0.0, 1.0)
    )
    scale = _TEXTURE_SCALE[texture] * rng.uniform(0.8, 1.25)
    waves: tuple[tuple[float, float, float, float], ...] = ()
    if texture == "stripes":
        k = _random_unit(rng) * (2.0 * math.pi / scale)
        waves = ((*k.tolist(), rng.uniform(0, 2 * math.pi)),)
    elif texture == "noise":
        waves = tuple(
            (
                *(_random_unit(rng) * (2.0 * math.pi / (scale * rng.uniform(0.6, 1.6)))).tolist(),
                rng.uniform(0, 6.3),
            )
            for _ in range(3)
        )
    offset = tuple(rng.uniform(0.0, scale, size=3).tolist())
    return Appearance(
        colour=tuple(colour.tolist()),
        accent=tuple(accent.tolist()),
        texture=texture,
        scale=float(scale),
        waves=waves,
        offset=offset,
    )


def _room_appearances(rng: np.random.Generator) -> tuple[Appearance, Appearance, Appearance]:
    """Floor, wall and ceiling appearance. Sometimes they borrow an object colour, so colour alone never decides."""
    if rng.random() < 0.3:
        wall_colour = _OBJECT_PALETTE[rng.integers(len(_OBJECT_PALETTE))] * 0.9 + 0.08
    else:
        wall_colour = _WALL_COLOURS[rng.integers(len(_WALL_COLOURS))]
    wall = _appearance(rng, wall_colour, "noise" if rng.random() < 0.3 else "plain", "light")
    if rng.random() < 0.25:
        floor_colour = _OBJECT_PALETTE[rng.integers(len(_OBJECT_PALETTE))] * 0.8
    else:
        floor_colour = _FLOOR_COLOURS[rng.integers(len(_FLOOR_COLOURS))]
    floor_texture: Texture = ("stripes", "checker", "noise", "plain")[rng.integers(4)]
    floor = _appearance(rng, floor_colour, floor_texture, "dark")
    if floor_texture in ("stripes", "checker"):
        # Floorboards and tiles are larger than object patterns and lie in the floor plane.
        scale = floor.scale * 2.5
        waves = floor.waves
        if floor_texture == "stripes":
            a = rng.uniform(0, math.pi)
            k = 2.0 * math.pi / scale
            waves = ((k * math.cos(a), 0.0, k * math.sin(a), rng.uniform(0, 6.3)),)
        floor = Appearance(floor.colour, floor.accent, floor.texture, scale, waves, floor.offset)
    ceiling = _appearance(rng, _CEILING_COLOURS[rng.integers(len(_CEILING_COLOURS))], "plain", "dark")
    return floor, wall, ceiling


def _place_objects(
    rng: np.random.Generator,
    room: tuple[float, float, float],
    camera: Camera,
    count: int,
    num_object_classes: int,
) -> tuple[SceneObject, ...]:
    """Place `count` objects inside the camera's view cone at random distances (so they overlap and occlude)."""
    objects: list[SceneObject] = []
    for _ in range(count):
        k = int(rng.integers(num_object_classes))
        colour, texture, preferred = _class_style(k)
        shape: Shape = preferred if rng.random() < 0.6 else _OBJECT_SHAPES[rng.integers(3)]
        app = _appearance(rng, colour, texture, "dark" if rng.random() < 0.7 else "light")
        placed = _place_one(rng, shape, FIRST_OBJECT_CLASS + k, app, objects, room, camera)
        if placed is not None:
            objects.append(placed)
    return tuple(objects)


def _place_one(
    rng: np.random.Generator,
    shape: Shape,
    class_id: int,
    app: Appearance,
    objects: list[SceneObject],
    room: tuple[float, float, float],
    camera: Camera,
) -> SceneObject | None:
    """Up to 20 attempts to size and place one object; None when every attempt collides or leaves the room."""
    wx, _, dz = room
    cam = np.asarray(camera.position)
    half_fov = math.atan(camera.width / (2.0 * camera.fx))
    max_dist = math.hypot(wx, dz)
    for _attempt in range(20):
        if shape == "box":
            half = rng.uniform([0.15, 0.15, 0.15], [0.6, 0.8, 0.6])
            radius = float(math.hypot(half[0], half[2]))
        elif shape == "sphere":
            radius = float(rng.uniform(0.15, 0.45))
        else:
            radius = float(rng.uniform(0.1, 0.35))
        # A sphere may rest on top of an earlier box that is wide enough to hold it.
        supports = [
            o for o in objects if o.kind == "box" and min(o.half_extents[0], o.half_extents[2]) >= 0.15
        ]
        if shape == "sphere" and supports and rng.random() < 0.35:
            base = supports[rng.integers(len(supports))]
            radius = float(min(radius, base.half_extents[0], base.half_extents[2]))
            x, z = base.center[0], base.center[2]
            y = base.top() + radius
            if (
                y + radius < room[1] - 0.3
            ):  # stay clear of the light, which hangs 0.15 m below the ceiling
                return SceneObject("sphere", class_id, (x, y, z), app, radius=radius)
            continue
        angle = camera.yaw + rng.uniform(-1.1, 1.1) * half_fov
        dist = rng.uniform(0.9, 0.8 * max_dist)
        x = cam[0] + dist * math.sin(angle)
        z = cam[2] + dist * math.cos(angle)
        margin = radius + 0.02
        if not (margin < x < wx - margin and margin < z < dz - margin):
            continue
        if math.hypot(x - cam[0], z - cam[2]) < radius + 0.35:
            continue  # keep the camera outside every object, with room for the near plane
        if shape == "box":
            yaw = 0.0 if rng.random() < 0.4 else float(rng.uniform(0, math.pi))
            return SceneObject("box", class_id, (x, half[1], z), app, half_extents=tuple(half.tolist()), yaw=yaw)
        if shape == "sphere":
            return SceneObject("sphere", class_id, (x, radius, z), app, radius=radius)
        hh = float(rng.uniform(0.2, 0.9))
        return SceneObject("cylinder", class_id, (x, hh, z), app, radius=radius, half_height=hh)
    return None


def _sample_camera(rng: np.random.Generator, room: tuple[float, float, float], height: int, width: int) -> Camera:
    """Camera position, yaw and pitch inside `room`, with the NYU-like intrinsics."""
    wx, hc, dz = room
    cam_xz = rng.uniform([0.3, 0.3], [wx - 0.3, dz - 0.3])
    cam_y = float(rng.uniform(0.7, min(1.8, hc - 0.4)))
    # Look towards the farthest of a few random points in the room, so the view is rarely a wall at arm's length.
    targets = rng.uniform([0.0, 0.0], [wx, dz], size=(4, 2))
    target = targets[np.argmax(np.linalg.norm(targets - cam_xz, axis=1))]
    yaw = math.atan2(target[0] - cam_xz[0], target[1] - cam_xz[1]) + rng.uniform(-0.35, 0.35)
    pitch = math.radians(rng.uniform(-35.0, 5.0))
    f = FOCAL_FRACTION * width
    return Camera(
        position=(float(cam_xz[0]), cam_y, float(cam_xz[1])),
        yaw=float(yaw),
        pitch=float(pitch),
        height=height,
        width=width,
        fx=f,
        fy=f,
        cx=width / 2.0,
        cy=height / 2.0,
    )


def sample_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_classes: int,
    min_objects: int,
    max_objects: int,
    noise: float,
) -> SceneParams:
    """Sample a random scene description.

    Args:
        rng: the random stream of this image.
        height, width: image size in pixels.
        num_classes: total classes (floor, wall, ceiling + num_classes - 3 object classes); at least 4.
        min_objects, max_objects: inclusive range of the number of objects to try to place.
        noise: sensor-noise std.

    Returns:
        The scene parameters (`render_scene` turns them into pixels).
    """
    if num_classes < 4:
        raise ValueError(
            f"num_classes = {num_classes}: scenes need at least 4 (floor, wall, ceiling, objects)"
        )
    room = (float(rng.uniform(3.0, 8.0)), float(rng.uniform(2.4, 3.2)), float(rng.uniform(3.0, 8.0)))
    wx, hc, dz = room
    camera = _sample_camera(rng, room, height, width)
    floor, wall, ceiling = _room_appearances(rng)
    count = int(rng.integers(min_objects, max_objects + 1))
    objects = _place_objects(rng, room, camera, count, num_classes - FIRST_OBJECT_CLASS)
    light = (float(rng.uniform(0.2, 0.8) * wx), hc - 0.15, float(rng.uniform(0.2, 0.8) * dz))
    return SceneParams(
        room=room,
        camera=camera,
        objects=objects,
        floor=floor,
        wall=wall,
        ceiling=ceiling,
        light=light,
        light_power=float(rng.uniform(0.9, 1.4)),
        ambient=float(rng.uniform(0.2, 0.4)),
        exposure=tuple((rng.uniform(0.9, 1.15) * rng.uniform(0.95, 1.05, size=3)).tolist()),
        noise=float(noise),
        noise_seed=int(rng.integers(2**63)),
    )


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of image `index` of `split`: independent of every other image, disjoint across splits."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_IDS)}")
    # SeedSequence needs non-negative entropy; fold negative seeds into the unsigned 64-bit range.
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, SPLIT_IDS[split], int(index)]))


def make_scene(cfg: DataConfig, split: str, index: int) -> SceneParams:
    """Scene parameters of image `index` of `split` for the generation settings in `cfg`."""
    return sample_scene(
        scene_rng(cfg.seed, split, index),
        cfg.height,
        cfg.width,
        cfg.num_classes,
        cfg.min_objects,
        cfg.max_objects,
        cfg.noise,
    )
