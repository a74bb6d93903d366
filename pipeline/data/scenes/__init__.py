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

Modules: `geometry` (scene description, ray intersection), `sampling` (random scenes, per-image streams),
`render` (ray casting), `cache` (whole splits and the `.npz` cache).
"""

from pipeline.data.scenes.cache import (
    GENERATOR_VERSION,
    cache_dir,
    generate_split,
    generation_params,
    load_or_generate,
    params_hash,
    split_size,
)
from pipeline.data.scenes.geometry import (
    CEILING,
    FIRST_OBJECT_CLASS,
    FLOOR,
    WALL,
    Appearance,
    Camera,
    RenderedScene,
    SceneObject,
    SceneParams,
    Shape,
    Texture,
    rot_y,
)
from pipeline.data.scenes.render import render_scene
from pipeline.data.scenes.sampling import (
    FOCAL_FRACTION,
    SPLIT_IDS,
    make_scene,
    object_class_names,
    sample_scene,
    scene_rng,
)

__all__ = [
    "CEILING",
    "FIRST_OBJECT_CLASS",
    "FLOOR",
    "FOCAL_FRACTION",
    "GENERATOR_VERSION",
    "SPLIT_IDS",
    "WALL",
    "Appearance",
    "Camera",
    "RenderedScene",
    "SceneObject",
    "SceneParams",
    "Shape",
    "Texture",
    "cache_dir",
    "generate_split",
    "generation_params",
    "load_or_generate",
    "make_scene",
    "object_class_names",
    "params_hash",
    "render_scene",
    "rot_y",
    "sample_scene",
    "scene_rng",
    "split_size",
]
