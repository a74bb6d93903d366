"""Scene description and ray intersection: appearances, objects, camera, scene parameters, rendered arrays.

Conventions (see the package docstring): world frame y up with the floor at y = 0; camera frame x right, y down,
z forward; ray parameter t of a hit is its z-depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

FLOOR, WALL, CEILING = 0, 1, 2
FIRST_OBJECT_CLASS = 3
_EPS_T = 1e-6

Texture = Literal["plain", "stripes", "checker", "noise", "dots"]
Shape = Literal["box", "sphere", "cylinder"]

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
            inv_dy = safe_inverse(direction[:, 1])
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
        inv = safe_inverse(d_local)
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


def safe_inverse(x: np.ndarray) -> np.ndarray:
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
