"""A synthetic RGB-D segmentation dataset on which neither modality alone suffices.

Each scene is a textured wall (possibly turned away from the camera) above a textured floor,
seen by a pinhole camera, with a few objects of three kinds drawn on top:

* ``poster`` -- a flat, brightly coloured patch lying on the wall or the floor. Visible in
  colour only: its depth is the surface's.
* ``relief`` -- a block or bump standing out of the wall or floor, painted exactly like the
  surface behind it. Visible in depth only.
* ``box`` -- the same shapes, sizes and depth profiles as reliefs, coloured like posters.
  Colour alone confuses it with a poster, depth alone with a relief: it takes both.

Objects are rectangles or ellipses with the same size distribution whatever their kind, and
their depth is z-buffered, so occlusions are consistent. The depth channel looks like a
structured-light sensor's: noise growing with the square of the distance, millimetre
quantisation, holes (zeros) in blobs, out of range, in the shadows beside raised objects and
at random pixels. The colour channel gets lighting changes (gain, white balance, a gradient)
and sensor noise. Everything is drawn with vectorised numpy on a full-image grid.

Written in the generic dataset layout (``rgb/``, ``depth/`` 16-bit mm, ``labels/``,
``train.txt``, ``val.txt``, ``classes.yaml``); the same seed always gives the same files.
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np

from cen_perception.sequence import (BOX, FLOOR, MAX_RANGE_M, POSTER, RELIEF, WALL, hsv_colour,
                                     surface_texture)

from .data.classes import ClassList

# The scene vocabulary and texture helpers are shared with the runtime's synthetic sequences.
CLASSES = ClassList(
    names=["wall", "floor", "poster", "relief", "box"],
    palette=[[128, 128, 128], [139, 90, 43], [230, 25, 200], [0, 190, 255], [255, 200, 0]],
    dataset_name="synthetic-rgbd")


def render_scene(rng: np.random.Generator, height: int = 120, width: int = 160):
    """One scene: ``rgb`` uint8 [H,W,3], ``depth_mm`` uint16 [H,W] (0 = invalid), ``labels``
    uint8 [H,W] with ids from :data:`CLASSES`."""
    h, w = height, width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    focal = 0.9 * w
    cx = (w - 1) / 2

    # Wall: a plane at distance D turned by `yaw` about the vertical axis.
    wall_distance = rng.uniform(2.0, 4.0)
    yaw = np.tan(np.radians(rng.uniform(-25, 25)))
    wall_depth = wall_distance / (1.0 - yaw * (xs - cx) / focal)
    # Floor: camera `camera_height` above it; the horizon row moves with the camera's pitch.
    camera_height = rng.uniform(1.0, 1.6)
    horizon = rng.uniform(0.15, 0.4) * h
    below = np.maximum(ys - horizon, 1e-3)
    floor_depth = np.where(ys > horizon, focal * camera_height / below, np.inf)
    is_floor = floor_depth < wall_depth
    depth = np.where(is_floor, floor_depth, wall_depth).astype(np.float32)
    labels = np.where(is_floor, FLOOR, WALL).astype(np.uint8)

    wall_rgb = surface_texture(rng, h, w, hsv_colour(rng, (0.0, 0.25), (0.35, 0.9)))
    floor_rgb = surface_texture(rng, h, w, hsv_colour(rng, (0.1, 0.35), (0.25, 0.75)))
    rgb = np.where(is_floor[..., None], floor_rgb, wall_rgb)

    # Rows where each surface lies entirely: objects stay inside their surface, so a relief
    # never shows the wall's texture over the floor (which would give it away in colour).
    first_floor_row = np.where(is_floor, ys, h).min(axis=0)  # per column
    wall_bottom, floor_top = int(first_floor_row.min()), int(first_floor_row.max())
    surfaces = [(WALL, 0, wall_bottom)]
    if h - floor_top >= 0.2 * h:
        surfaces.append((FLOOR, floor_top, h))

    # Flat posters first, then raised objects in z-buffer order.
    kinds = rng.choice([POSTER, RELIEF, BOX], size=rng.integers(3, 8))
    kinds = sorted(kinds, key=lambda k: k != POSTER)
    shadows = np.zeros((h, w), bool)
    for kind in kinds:
        surface, top, bottom = surfaces[rng.integers(len(surfaces))]
        if bottom - top < 8:
            continue
        half_h = min(rng.uniform(0.06, 0.18) * h, (bottom - top) / 2 - 1)
        half_w = np.clip(half_h * rng.uniform(0.6, 1.8), 3, 0.3 * w)
        centre_y = rng.uniform(top + half_h, bottom - half_h)
        centre_x = rng.uniform(half_w, w - half_w)
        u, v = (xs - centre_x) / half_w, (ys - centre_y) / half_h
        ellipse = rng.random() < 0.5
        radius = np.sqrt(u * u + v * v) if ellipse else np.maximum(np.abs(u), np.abs(v))
        shape = radius <= 1.0
        surface_rgb = wall_rgb if surface == WALL else floor_rgb
        colour = surface_texture(rng, h, w, hsv_colour(rng, (0.6, 1.0), (0.45, 1.0)))

        if kind == POSTER:
            drawn = shape & (labels == surface)
            rgb[drawn] = colour[drawn]
            labels[drawn] = POSTER
            continue
        # Raised: a flat front or a dome (at least 8 cm proud at its rim), parallel to the wall,
        # or upright on the floor at the depth of the floor under its lowest row.
        if surface == FLOOR:
            behind = float(floor_depth[min(int(centre_y + half_h), h - 1), int(centre_x)])
        else:
            behind = wall_depth
        offset = rng.uniform(0.2, 0.6)
        if rng.random() < 0.5:
            object_depth = behind - offset + np.zeros_like(depth)
        else:
            bulge = np.sqrt(np.clip(1.0 - radius * radius, 0.0, 1.0))
            object_depth = behind - (0.08 + (offset - 0.08) * bulge)
        drawn = shape & (object_depth < depth)
        depth[drawn] = object_depth[drawn]
        rgb[drawn] = (surface_rgb if kind == RELIEF else colour)[drawn]
        labels[drawn] = kind
        # The projector's shadow: a strip left of the object, as wide as it stands out.
        shift = max(1, int(round(offset * 8 * w / 160)))
        left_edge = shape & ~np.roll(shape, 1, axis=1)
        strip = np.zeros_like(shape)
        for dx in range(1, shift + 1):
            strip |= np.roll(left_edge, -dx, axis=1)
        shadows |= strip & ~drawn & (rng.random() < 0.7)

    # Colour: lighting (gain, white balance, a gradient across the image) and sensor noise.
    gradient = 1.0 + rng.uniform(-0.25, 0.25) * (xs / w - 0.5) + rng.uniform(-0.25, 0.25) * (
        ys / h - 0.5)
    lighting = rng.uniform(0.6, 1.3) * rng.uniform(0.85, 1.15, 3)
    rgb = rgb * gradient[..., None] * lighting + rng.normal(0, rng.uniform(2, 6), rgb.shape)
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    # Depth: Kinect-like axial noise, holes, then millimetres.
    depth = depth + rng.standard_normal(depth.shape).astype(np.float32) * (
        0.0012 + 0.0019 * (depth - 0.4) ** 2)
    holes = shadows | (depth > MAX_RANGE_M) | (rng.random((h, w)) < 0.01)
    for _ in range(rng.integers(0, 4)):
        hy, hx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.03, 0.12) * h, rng.uniform(0.03, 0.12) * w
        holes |= ((ys - hy) / ry) ** 2 + ((xs - hx) / rx) ** 2 <= 1.0
    depth_mm = np.where(holes, 0, np.clip(np.rint(depth * 1000), 1, 65535)).astype(np.uint16)
    return rgb, depth_mm, labels


def write_dataset(out_dir: str | pathlib.Path, num_train: int = 300, num_val: int = 60,
                  height: int = 120, width: int = 160, seed: int = 0,
                  progress: bool = True) -> pathlib.Path:
    """Write ``num_train + num_val`` scenes in the generic layout; returns ``out_dir``."""
    from tqdm import tqdm

    out = pathlib.Path(out_dir)
    for sub in ("rgb", "depth", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    splits = {"train": [f"train_{i:05d}" for i in range(num_train)],
              "val": [f"val_{i:05d}" for i in range(num_val)]}
    stems = splits["train"] + splits["val"]
    # One independent stream per scene: scene i is the same whatever the other counts are.
    streams = np.random.SeedSequence([seed, height, width]).spawn(2)
    seeds = {"train": streams[0].spawn(num_train), "val": streams[1].spawn(num_val)}
    scene_seeds = seeds["train"] + seeds["val"]
    for stem, scene_seed in tqdm(list(zip(stems, scene_seeds)), desc="synth", unit="scene",
                                 disable=not progress):
        rgb, depth_mm, labels = render_scene(np.random.default_rng(scene_seed), height, width)
        cv2.imwrite(str(out / "rgb" / f"{stem}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / "depth" / f"{stem}.png"), depth_mm)
        cv2.imwrite(str(out / "labels" / f"{stem}.png"), labels)
    for split, names in splits.items():
        (out / f"{split}.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    CLASSES.save(out / "classes.yaml")
    return out
