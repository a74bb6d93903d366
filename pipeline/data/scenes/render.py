"""Vectorised ray casting of a scene: every pixel at once, loops over objects only."""

from __future__ import annotations

import numpy as np

from pipeline.data.scenes.geometry import CEILING, FLOOR, WALL, RenderedScene, SceneParams, safe_inverse

# Offset applied along the normal before casting shadow rays, against self-intersection ("shadow acne").
_SHADOW_BIAS = 2e-3

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
    t_best, axis, face_upper, obj_idx = _first_hits(params, origin, rays)
    points = origin + t_best[:, None] * rays
    normal_w, albedo, seg = _surfaces(params, points, axis, face_upper, obj_idx)

    # Numerically the analytic normals face the camera; enforce it exactly (e.g. at silhouette edges).
    facing = (normal_w * rays).sum(axis=1)
    normal_w[facing > 0] *= -1.0

    rgb = _shade(params, points, normal_w, albedo)
    normal_c = normal_w @ rot  # R.T @ n for row vectors
    return RenderedScene(
        image=rgb.reshape(h, w, 3).astype(np.float32),
        seg=seg.reshape(h, w),
        depth=t_best.reshape(h, w).astype(np.float32),
        normal=normal_c.reshape(h, w, 3).astype(np.float32),
        object_index=obj_idx.reshape(h, w),
        params=params,
    )


def _first_hits(
    params: SceneParams, origin: np.ndarray, rays: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit per ray: (t, room face axis, whether the upper face, object index or -1 for the room)."""
    n = len(rays)
    rows = np.arange(n)
    # Room, seen from inside: the exit point of the box is the first hit.
    lo = np.zeros(3)
    hi = np.asarray(params.room)
    upper = rays > 0
    t_axes = (np.where(upper, hi, lo) - origin) * safe_inverse(rays)
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
    return t_best, axis, face_upper, obj_idx


def _surfaces(
    params: SceneParams, points: np.ndarray, axis: np.ndarray, face_upper: np.ndarray, obj_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World normal, albedo and class label at every hit point."""
    n = len(points)
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
    return normal_w, albedo, seg


def _shade(params: SceneParams, points: np.ndarray, normal_w: np.ndarray, albedo: np.ndarray) -> np.ndarray:
    """Lambertian point light with inverse-square-like falloff and hard shadows from the objects; exposure and
    sensor noise; RGB clipped to [0, 1]."""
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
    return np.clip(rgb, 0.0, 1.0)
