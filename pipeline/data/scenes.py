"""Procedural multitask scenes: small indoor-like box rooms rendered by vectorised ray casting.

Each image is a pinhole view from inside a box room (floor, four walls, ceiling) holding a few objects (boxes, some
yaw-rotated; spheres, some resting on boxes; vertical cylinders). Per pixel it gives RGB, a class label, the metric
z-depth and the analytic surface normal in the camera frame, so labels are exact by construction.

What keeps it a learning problem rather than a lookup:
- object classes come in pairs that share a base colour and differ only in texture (stripes / checker, noise / dots,
  ...), colours are jittered per object, and walls or floors sometimes borrow an object colour;
- each class has a preferred shape but uses another one 40 % of the time;
- room sizes (3-8 m), camera height, yaw and pitch vary, so depth spans roughly 0.5-11 m;
- objects are placed inside the view cone at random distances, so they overlap and occlude each other;
- Lambertian shading from a point light with hard shadows, ambient light, exposure/white-balance jitter and sensor
  noise.

Conventions:
- World frame: y up, floor at y = 0, the room spans [0, Wx] x [0, Hc] x [0, Dz].
- Camera frame: x right, y down, z forward (OpenCV). Rays are built with a camera-frame z component of 1, so the ray
  parameter t of a hit *is* its z-depth.
- Pixel (row v, column u) looks through the pixel centre (u + 0.5, v + 0.5); intrinsics are NYU-like
  (fx = fy = 0.81 * width, principal point at the image centre).
- Normals are unit, in the camera frame, and face the camera (n . ray < 0).

Reproducibility: image `i` of split `s` is rendered from `SeedSequence([seed, split_id(s), i])` only, so it does not
depend on any other image, and train/val never share a stream. Generated splits are cached as `.npz` under
`<root>/<hash of the generation parameters>/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.config import DataConfig

log = logging.getLogger(__name__)

# Bump whenever the rendering or sampling changes: it is part of the cache key and the dataset fingerprint.
GENERATOR_VERSION = 1

SPLIT_IDS = {"train": 0, "val": 1}
FLOOR, WALL, CEILING = 0, 1, 2
FIRST_OBJECT_CLASS = 3
# Horizontal focal length as a fraction of the width (NYUv2: 518.86 / 640), so the field of view is ~63 degrees.
FOCAL_FRACTION = 0.81
# Offset applied along the normal before casting shadow rays, against self-intersection ("shadow acne").
_SHADOW_BIAS = 2e-3
_EPS_T = 1e-6

Texture = Literal["plain", "stripes", "checker", "noise", "dots"]
Shape = Literal["box", "sphere", "cylinder"]

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


# ---------------------------------------------------------------------------------------------------------
# scene description


@dataclass(frozen=True)
class Appearance:
    """Procedural albedo: `colour` mixed with `accent` by a solid (3-D) texture pattern in [0, 1].

    Solid textures are evaluated at the surface point in the object's local frame (world frame for the room), so
    patterns stick to objects, have a metric scale and shrink with distance: a monocular depth cue.

    Attributes:
        colour: base albedo RGB.
        accent: second albedo RGB where the pattern is 1.
        texture: pattern kind.
        scale: pattern period in metres.
        waves: for stripes (first wave) and noise (all waves): (kx, ky, kz, phase), k in radians per metre.
        offset: shift of the checker/dots lattice in metres.
    """

    colour: tuple[float, float, float]
    accent: tuple[float, float, float]
    texture: Texture
    scale: float
    waves: tuple[tuple[float, float, float, float], ...] = ()
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def albedo(self, q: np.ndarray) -> np.ndarray:
        """Albedo `[M, 3]` at local surface points `q` `[M, 3]` (metres)."""
        p = self.pattern(q)[:, None]
        return np.asarray(self.colour) * (1.0 - p) + np.asarray(self.accent) * p

    def pattern(self, q: np.ndarray) -> np.ndarray:
        """Pattern value in [0, 1] at points `q` `[M, 3]`."""
        if self.texture == "plain" or len(q) == 0:
            return np.zeros(len(q))
        if self.texture == "stripes":
            kx, ky, kz, phase = self.waves[0]
            s = np.sin(q @ np.array([kx, ky, kz]) + phase)
            return np.clip(0.5 + 1.5 * s, 0.0, 1.0)  # sharpened sine: stripes with soft (less aliased) edges
        if self.texture == "noise":
            w = np.asarray(self.waves)
            s = np.sin(q @ w[:, :3].T + w[:, 3]).mean(axis=1)
            return np.clip(0.5 + 1.2 * s, 0.0, 1.0)
        cell = (q + np.asarray(self.offset)) / self.scale
        if self.texture == "checker":
            return (np.floor(cell).sum(axis=1) % 2.0).astype(np.float64)
        if self.texture == "dots":
            dist = np.linalg.norm(cell - np.floor(cell) - 0.5, axis=1)
            return np.clip((0.36 - dist) * 12.0, 0.0, 1.0)
        raise ValueError(f"unknown texture {self.texture!r}")


@dataclass(frozen=True)
class SceneObject:
    """One object of the scene.

    Attributes:
        kind: "box" (centre, half extents, yaw about the vertical axis), "sphere" (centre, radius) or "cylinder"
            (vertical axis through the centre, radius, half height).
        class_id: semantic class (>= FIRST_OBJECT_CLASS).
        center: world position of the centre (metres).
        half_extents: box half sizes (x, y, z) in its local frame; unused otherwise.
        radius: sphere/cylinder radius.
        half_height: cylinder half height.
        yaw: box rotation about world y (radians); local -> world is `rot_y(yaw)`.
        appearance: procedural albedo.
    """

    kind: Shape
    class_id: int
    center: tuple[float, float, float]
    appearance: Appearance
    half_extents: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 0.0
    half_height: float = 0.0
    yaw: float = 0.0

    def footprint(self) -> float:
        """Radius of a vertical cylinder around the centre that contains the object (for placement checks)."""
        if self.kind == "box":
            return float(math.hypot(self.half_extents[0], self.half_extents[2]))
        return self.radius

    def top(self) -> float:
        """Highest world y of the object."""
        if self.kind == "box":
            return self.center[1] + self.half_extents[1]
        if self.kind == "sphere":
            return self.center[1] + self.radius
        return self.center[1] + self.half_height

    # -- ray casting ----------------------------------------------------------------------------------------

    def intersect(self, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit in front of the origin, `inf` where the ray misses.

        Args:
            origin: `[3]` or `[M, 3]` ray origins (world).
            direction: `[M, 3]` ray directions (world, not necessarily unit).

        Returns:
            `[M]` float64 array of t (hit point = origin + t * direction).
        """
        c = np.asarray(self.center)
        if self.kind == "sphere":
            oc = origin - c
            a = np.einsum("ij,ij->i", direction, direction)
            b = 2.0 * (oc * direction).sum(axis=-1)
            cc = (np.atleast_2d(oc) ** 2).sum(axis=1) - self.radius**2
            return _nearest_root(a, b, cc)
        if self.kind == "cylinder":
            o = np.broadcast_to(origin, direction.shape)
            ox, oz = o[:, 0] - c[0], o[:, 2] - c[2]
            dx, dz = direction[:, 0], direction[:, 2]
            t_side = _nearest_root(
                dx * dx + dz * dz, 2.0 * (ox * dx + oz * dz), ox * ox + oz * oz - self.radius**2
            )
            y = o[:, 1] + t_side * direction[:, 1]
            with np.errstate(invalid="ignore"):  # inf * 0 for misses is masked anyway
                t_side = np.where(np.abs(y - c[1]) <= self.half_height, t_side, np.inf)
            t = t_side
            inv_dy = _safe_inverse(direction[:, 1])
            for cap_y in (c[1] + self.half_height, c[1] - self.half_height):
                t_cap = (cap_y - o[:, 1]) * inv_dy
                px, pz = ox + t_cap * dx, oz + t_cap * dz
                ok = (t_cap > _EPS_T) & (px * px + pz * pz <= self.radius**2)
                t = np.where(ok & (t_cap < t), t_cap, t)
            return t
        # box: slab test in the box's local frame
        rot = rot_y(self.yaw)
        o_local = (origin - c) @ rot
        d_local = direction @ rot
        inv = _safe_inverse(d_local)
        h = np.asarray(self.half_extents)
        t1 = (-h - o_local) * inv
        t2 = (h - o_local) * inv
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        return np.where((t_near <= t_far) & (t_near > _EPS_T), t_near, np.inf)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outward unit normals (world) and local texture coordinates at surface points `[M, 3]`."""
        c = np.asarray(self.center)
        if self.kind == "sphere":
            q = points - c
            return q / self.radius, q
        if self.kind == "cylinder":
            q = points - c
            radial = np.stack([q[:, 0], np.zeros(len(q)), q[:, 2]], axis=1) / self.radius
            # On a cap the height offset is at +-half_height; on the side the radial distance is the radius.
            on_cap = np.abs(np.abs(q[:, 1]) - self.half_height) < np.abs(
                np.hypot(q[:, 0], q[:, 2]) - self.radius
            )
            cap = np.zeros_like(q)
            cap[:, 1] = np.sign(q[:, 1])
            return np.where(on_cap[:, None], cap, radial), q
        rot = rot_y(self.yaw)
        q = (points - c) @ rot
        axis = np.argmax(np.abs(q) / np.asarray(self.half_extents), axis=1)
        n_local = np.zeros_like(q)
        rows = np.arange(len(q))
        n_local[rows, axis] = np.sign(q[rows, axis])
        return n_local @ rot.T, q


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: position, yaw (about world y, 0 looks along +z), pitch (positive looks up) and intrinsics."""

    position: tuple[float, float, float]
    yaw: float
    pitch: float
    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation `R` (columns: camera x right, y down, z forward in world coordinates).

        World points map to the camera as `R.T @ (P - position)`; camera vectors to the world as `R @ v`.
        """
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        forward = np.array([cp * math.sin(self.yaw), sp, cp * math.cos(self.yaw)])
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return np.stack([right, down, forward], axis=1)

    def camera_rays(self) -> np.ndarray:
        """`[H*W, 3]` camera-frame ray directions through pixel centres, with z = 1 (row-major pixel order)."""
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        x = (u.ravel() + 0.5 - self.cx) / self.fx
        y = (v.ravel() + 0.5 - self.cy) / self.fy
        return np.stack([x, y, np.ones_like(x)], axis=1)


@dataclass(frozen=True)
class SceneParams:
    """Everything that defines one rendered image (the sampled scene plus its noise seed).

    Attributes:
        room: (Wx, Hc, Dz) room size in metres; the room spans [0, Wx] x [0, Hc] x [0, Dz].
        camera: the pinhole camera.
        objects: the objects, in placement order.
        floor, wall, ceiling: appearance of the room surfaces.
        light: point-light world position.
        light_power: diffuse gain of the light.
        ambient: ambient term added to every pixel's shading.
        exposure: per-channel gain (exposure and white balance).
        noise: std of the additive Gaussian sensor noise on RGB in [0, 1].
        noise_seed: seed of the sensor noise, so `render_scene` is a pure function of the params.
    """

    room: tuple[float, float, float]
    camera: Camera
    objects: tuple[SceneObject, ...]
    floor: Appearance
    wall: Appearance
    ceiling: Appearance
    light: tuple[float, float, float]
    light_power: float
    ambient: float
    exposure: tuple[float, float, float]
    noise: float
    noise_seed: int


@dataclass
class RenderedScene:
    """Per-pixel outputs of `render_scene` (H x W) plus the params that produced them.

    Attributes:
        image: float32 `[H, W, 3]` RGB in [0, 1].
        seg: int64 `[H, W]` class labels.
        depth: float32 `[H, W]` z-depth in metres (> 0).
        normal: float32 `[H, W, 3]` unit normals in the camera frame, facing the camera.
        object_index: int64 `[H, W]`: index into `params.objects` of the visible object, -1 for the room.
        params: the scene description.
    """

    image: np.ndarray
    seg: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    object_index: np.ndarray
    params: SceneParams = field(repr=False)


def rot_y(angle: float) -> np.ndarray:
    """Rotation matrix about the world y axis (maps local to world coordinates for a box with this yaw)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _safe_inverse(x: np.ndarray) -> np.ndarray:
    """1/x with exact zeros replaced by a tiny signed value, so slab tests give +-inf-like values without warnings."""
    return 1.0 / np.where(np.abs(x) < 1e-12, 1e-12, x)


def _nearest_root(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smallest root t > eps of a t^2 + b t + c = 0 (entering hit from outside), `inf` where none."""
    disc = b * b - 4.0 * a * c
    ok = (disc >= 0.0) & (a > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    denom = np.where(ok, 2.0 * a, 1.0)
    t = (-b - sq) / denom
    return np.where(ok & (t > _EPS_T), t, np.inf)


# ---------------------------------------------------------------------------------------------------------
# classes and sampling


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
    wx, _, dz = room
    cam = np.asarray(camera.position)
    half_fov = math.atan(camera.width / (2.0 * camera.fx))
    max_dist = math.hypot(wx, dz)
    objects: list[SceneObject] = []
    for _ in range(count):
        k = int(rng.integers(num_object_classes))
        colour, texture, preferred = _class_style(k)
        shape: Shape = preferred if rng.random() < 0.6 else _OBJECT_SHAPES[rng.integers(3)]
        app = _appearance(rng, colour, texture, "dark" if rng.random() < 0.7 else "light")
        class_id = FIRST_OBJECT_CLASS + k
        placed = None
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
                    placed = SceneObject("sphere", class_id, (x, y, z), app, radius=radius)
                    break
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
                placed = SceneObject(
                    "box", class_id, (x, half[1], z), app, half_extents=tuple(half.tolist()), yaw=yaw
                )
            elif shape == "sphere":
                placed = SceneObject("sphere", class_id, (x, radius, z), app, radius=radius)
            else:
                hh = float(rng.uniform(0.2, 0.9))
                placed = SceneObject("cylinder", class_id, (x, hh, z), app, radius=radius, half_height=hh)
            break
        if placed is not None:
            objects.append(placed)
    return tuple(objects)


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
    cam_xz = rng.uniform([0.3, 0.3], [wx - 0.3, dz - 0.3])
    cam_y = float(rng.uniform(0.7, min(1.8, hc - 0.4)))
    # Look towards the farthest of a few random points in the room, so the view is rarely a wall at arm's length.
    targets = rng.uniform([0.0, 0.0], [wx, dz], size=(4, 2))
    target = targets[np.argmax(np.linalg.norm(targets - cam_xz, axis=1))]
    yaw = math.atan2(target[0] - cam_xz[0], target[1] - cam_xz[1]) + rng.uniform(-0.35, 0.35)
    pitch = math.radians(rng.uniform(-35.0, 5.0))
    f = FOCAL_FRACTION * width
    camera = Camera(
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


# ---------------------------------------------------------------------------------------------------------
# rendering

# Inward normals of the room faces, indexed by (axis, hit the upper face); class of each face.
_ROOM_NORMALS = np.array(
    [
        [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
        [[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]],
        [[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]],
    ]
)
_ROOM_CLASSES = np.array([[WALL, WALL], [FLOOR, CEILING], [WALL, WALL]])


def render_scene(params: SceneParams) -> RenderedScene:
    """Ray-cast a scene: RGB, labels, z-depth and camera-frame normals for every pixel.

    All pixels are processed at once (arrays of H*W rays); the loops run over objects only.

    Args:
        params: the scene, e.g. from `make_scene` or `sample_scene`.

    Returns:
        The rendered arrays and the params.
    """
    cam = params.camera
    h, w = cam.height, cam.width
    rot = cam.rotation
    origin = np.asarray(cam.position)
    rays = cam.camera_rays() @ rot.T  # world directions; camera-frame z = 1 so t is the z-depth
    n = len(rays)
    rows = np.arange(n)

    # Room, seen from inside: the exit point of the box is the first hit.
    lo = np.zeros(3)
    hi = np.asarray(params.room)
    upper = rays > 0
    t_axes = (np.where(upper, hi, lo) - origin) * _safe_inverse(rays)
    t_axes = np.where(np.abs(rays) < 1e-12, np.inf, t_axes)
    axis = np.argmin(t_axes, axis=1)
    t_best = t_axes[rows, axis]
    face_upper = upper[rows, axis].astype(np.int64)
    obj_idx = np.full(n, -1, dtype=np.int64)
    for k, obj in enumerate(params.objects):
        t = obj.intersect(origin, rays)
        closer = t < t_best
        t_best = np.where(closer, t, t_best)
        obj_idx[closer] = k

    points = origin + t_best[:, None] * rays
    normal_w = _ROOM_NORMALS[axis, face_upper].copy()
    seg = _ROOM_CLASSES[axis, face_upper].astype(np.int64)
    albedo = np.empty((n, 3))
    room = obj_idx < 0
    for cls, app in ((FLOOR, params.floor), (WALL, params.wall), (CEILING, params.ceiling)):
        m = room & (seg == cls)
        albedo[m] = app.albedo(points[m])
    for k, obj in enumerate(params.objects):
        m = obj_idx == k
        if not m.any():
            continue
        nk, qk = obj.surface(points[m])
        normal_w[m] = nk
        albedo[m] = obj.appearance.albedo(qk)
        seg[m] = obj.class_id

    # Numerically the analytic normals face the camera; enforce it exactly (e.g. at silhouette edges).
    facing = (normal_w * rays).sum(axis=1)
    normal_w[facing > 0] *= -1.0

    # Lambertian point light with inverse-square-like falloff and hard shadows from the objects.
    to_light = np.asarray(params.light) - points
    dist = np.linalg.norm(to_light, axis=1)
    cos = np.maximum((normal_w * to_light).sum(axis=1) / dist, 0.0)
    lit = cos > 0
    if params.objects and lit.any():
        idx = np.flatnonzero(lit)
        shadow_origin = points[idx] + _SHADOW_BIAS * normal_w[idx]
        seg_dir = to_light[idx]  # t in (0, 1) lies between the point and the light
        blocked = np.zeros(len(idx), dtype=bool)
        for obj in params.objects:
            blocked |= obj.intersect(shadow_origin, seg_dir) < 1.0
        lit[idx[blocked]] = False
    shade = params.ambient + 1.6 * params.light_power * cos * lit / (1.0 + (dist / 3.0) ** 2)
    rgb = albedo * shade[:, None] * np.asarray(params.exposure)
    if params.noise > 0:
        rgb = rgb + np.random.default_rng(params.noise_seed).normal(0.0, params.noise, size=rgb.shape)
    rgb = np.clip(rgb, 0.0, 1.0)

    normal_c = normal_w @ rot  # R.T @ n for row vectors
    return RenderedScene(
        image=rgb.reshape(h, w, 3).astype(np.float32),
        seg=seg.reshape(h, w),
        depth=t_best.reshape(h, w).astype(np.float32),
        normal=normal_c.reshape(h, w, 3).astype(np.float32),
        object_index=obj_idx.reshape(h, w),
        params=params,
    )


# ---------------------------------------------------------------------------------------------------------
# splits and the on-disk cache

_ARRAY_SPECS = {  # key -> (dtype, trailing shape after [N, H, W])
    "image": (np.uint8, (3,)),
    "seg": (np.int16, ()),
    "depth": (np.float32, ()),
    "normal": (np.float16, (3,)),
}


def generation_params(cfg: DataConfig) -> dict[str, object]:
    """The settings that determine the pixels of a scenes split (the cache key), split sizes excluded."""
    return {
        "generator_version": GENERATOR_VERSION,
        "height": cfg.height,
        "width": cfg.width,
        "num_classes": cfg.num_classes,
        "min_objects": cfg.min_objects,
        "max_objects": cfg.max_objects,
        "noise": float(cfg.noise),
        "seed": cfg.seed,
    }


def params_hash(cfg: DataConfig) -> str:
    """Short stable hash of `generation_params(cfg)`."""
    blob = json.dumps(generation_params(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir(cfg: DataConfig) -> Path:
    """Folder holding the cached splits: `<root or ./.cache/scenes>/scenes_v<version>_<hash>`."""
    root = Path(cfg.root) if cfg.root is not None else Path.cwd() / ".cache" / "scenes"
    return root / f"scenes_v{GENERATOR_VERSION}_{params_hash(cfg)}"


def split_size(cfg: DataConfig, split: str) -> int:
    """Number of images of `split` ("train" or "val")."""
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_IDS)}")
    return cfg.num_train if split == "train" else cfg.num_val


def generate_split(cfg: DataConfig, split: str, count: int | None = None) -> dict[str, np.ndarray]:
    """Render a whole split into the compact storage arrays.

    Args:
        cfg: generation settings.
        split: "train" or "val".
        count: number of images (default: the split size from `cfg`).

    Returns:
        image uint8 `[N, H, W, 3]`, seg int16 `[N, H, W]`, depth float32 `[N, H, W]`, normal float16
        `[N, H, W, 3]`.
    """
    n = split_size(cfg, split) if count is None else count
    shape = (n, cfg.height, cfg.width)
    out = {key: np.empty(shape + extra, dtype=dtype) for key, (dtype, extra) in _ARRAY_SPECS.items()}
    start = time.perf_counter()
    for i in range(n):
        r = render_scene(make_scene(cfg, split, i))
        # Quantise RGB to uint8 (what a camera gives anyway); 4x smaller cache and in-memory dataset.
        out["image"][i] = np.rint(r.image * 255.0).astype(np.uint8)
        out["seg"][i] = r.seg
        out["depth"][i] = r.depth
        # float16 keeps ~11 bits per component: < 0.05 degrees after renormalisation (checked by the tests).
        out["normal"][i] = r.normal
    log.info("rendered %d %s scenes in %.1f s", n, split, time.perf_counter() - start)
    return out


def _cache_valid(arrays: dict[str, np.ndarray], n: int, cfg: DataConfig) -> bool:
    for key, (dtype, extra) in _ARRAY_SPECS.items():
        a = arrays.get(key)
        if a is None or a.dtype != dtype or a.shape != (n, cfg.height, cfg.width) + extra:
            return False
    return True


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz next to `path` and rename it into place, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            # Compressed: labels and normals shrink 10-70x, the whole cache ~2.5x, for ~1 s per 1,000 images.
            np.savez_compressed(fh, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared between users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_generate(cfg: DataConfig, split: str) -> tuple[dict[str, np.ndarray], bool]:
    """Storage arrays of a split, from the cache when present, otherwise rendered and cached.

    A cache file that cannot be read or has the wrong content is treated as a miss and rewritten.

    Returns:
        (arrays as in `generate_split`, whether they came from the cache).
    """
    n = split_size(cfg, split)
    path = cache_dir(cfg) / f"{split}_{n}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            if _cache_valid(arrays, n, cfg):
                return arrays, True
            log.warning("scene cache %s has unexpected content; regenerating", path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            log.warning("scene cache %s is unreadable (%s); regenerating", path, e)
    arrays = generate_split(cfg, split, n)
    try:
        _write_atomic(path, arrays)
    except OSError as e:  # a read-only or full disk should not stop a run: the data is in memory already
        log.warning("could not write scene cache %s: %s", path, e)
    return arrays, False
