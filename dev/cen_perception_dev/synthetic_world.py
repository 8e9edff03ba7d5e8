"""The one synthetic world of this project: a room seen by an RGB-D camera.

``SyntheticScene`` draws it (the class docstring says what is in it); ``render_scene`` gives one
still scene as ``cen-train synth`` writes them; ``synthetic_sequence`` records a scene with moving
objects as a bag; the benchmarks render frames of it. Class ids: wall 0, floor 1, poster 2,
relief 3, box 4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from cen_perception.image_codec import DEPTH_16U_INVALID

CLASS_NAMES = ("wall", "floor", "poster", "relief", "box")
WALL, FLOOR, POSTER, RELIEF, BOX = range(5)
MAX_RANGE_M = 6.0  # the simulated sensor returns nothing beyond this


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Zero-mean smooth noise (roughly unit amplitude) varying over about ``cells`` cells."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def surface_texture(rng: np.random.Generator, height: int, width: int,
                    base_rgb: np.ndarray) -> np.ndarray:
    """A float RGB texture: a base colour modulated by two octaves of smooth noise."""
    shade = 1.0 + 0.12 * smooth_noise(rng, height, width, 4) + 0.06 * smooth_noise(
        rng, height, width, 16)
    tint = 8.0 * smooth_noise(rng, height, width, 6)[..., None] * rng.uniform(-1, 1, 3)
    return base_rgb[None, None, :] * shade[..., None] + tint


def hsv_colour(rng: np.random.Generator, saturation: tuple[float, float],
               value: tuple[float, float]) -> np.ndarray:
    """An RGB colour (float, 0..255) with a random hue and the given ranges."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255,
                      rng.uniform(*value) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


@dataclass
class SceneObject:
    """A poster, relief or box on the wall or the floor, sliding along the image rows."""

    kind: int
    surface: int
    half_h: float
    half_w: float
    ellipse: bool
    centre_y: float
    start_x: float
    speed: float  # pixels per frame; the object bounces off the image borders
    texture: Optional[np.ndarray]  # float RGB at image size (posters and boxes)
    offset: float  # metres proud of the surface (raised objects)
    dome: bool
    shadow: bool  # the projector's shadow falls beside it (raised objects)

    def centre_x(self, frame: int, width: int) -> float:
        lo, span = self.half_w, max(width - 2 * self.half_w, 1e-6)
        s = (self.start_x - lo + self.speed * frame) % (2 * span)  # a triangle wave
        return lo + (s if s <= span else 2 * span - s)


def pinhole_camera_info(width: int, height: int, fx: float, fy: float, cx: float,
                        cy: float) -> dict:
    """``sensor_msgs/CameraInfo`` fields (no header) of an undistorted pinhole camera."""
    k = np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float64)
    p = np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], np.float64)
    return dict(height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5), k=k,
                r=np.eye(3).reshape(-1), p=p)


class SyntheticScene:
    """A camera's view of one room: the one synthetic world of this project.

    ``cen-train synth`` renders still scenes of it (``render_scene``), the sequence bag of the
    demo renders one scene with its objects sliding (``render(frame, rng)``), the benchmarks
    render frames of it. A textured wall (at 2-4 m, turned by up to 25 degrees) above a textured
    floor (camera 1-1.6 m above it), and 3 to 8 objects: at least one poster (colour only), one
    relief (depth only) and one box (both), in z-buffer order. The depth looks like a
    structured-light sensor's: noise growing with the square of the distance, millimetre
    quantisation, holes out of range, in blobs, at random pixels, and in the projector's shadow
    (a contiguous strip beside a raised object, present or not as a whole); valid depth never
    reaches 65535, the codec's "no reading". Colour gets lighting (gain, white balance, a
    gradient) and sensor noise.
    """

    def __init__(self, seed: int = 0, height: int = 120, width: int = 160,
                 rng: Optional[np.random.Generator] = None) -> None:
        rng = np.random.default_rng(seed) if rng is None else rng
        h, w = self.height, self.width = height, width
        self.ys, self.xs = np.mgrid[0:h, 0:w].astype(np.float32)
        focal, cx = 0.9 * w, (w - 1) / 2
        wall_distance = rng.uniform(2.0, 4.0)
        yaw = np.tan(np.radians(rng.uniform(-25, 25)))
        self.wall_depth = wall_distance / (1.0 - yaw * (self.xs - cx) / focal)
        camera_height = rng.uniform(1.0, 1.6)
        horizon = rng.uniform(0.15, 0.4) * h
        below = np.maximum(self.ys - horizon, 1e-3)
        self.floor_depth = np.where(self.ys > horizon, focal * camera_height / below, np.inf)
        self.is_floor = self.floor_depth < self.wall_depth
        self.wall_rgb = surface_texture(rng, h, w, hsv_colour(rng, (0.0, 0.25), (0.35, 0.9)))
        self.floor_rgb = surface_texture(rng, h, w, hsv_colour(rng, (0.1, 0.35), (0.25, 0.75)))

        # Objects stay in the rows where their surface spans the whole image width, so a relief
        # never shows the wall's texture over the floor (which would give it away in colour).
        first_floor_row = np.where(self.is_floor, self.ys, h).min(axis=0)
        wall_bottom, floor_top = int(first_floor_row.min()), int(first_floor_row.max())
        surfaces = [(WALL, 0, wall_bottom)]
        if h - floor_top >= 0.2 * h:
            surfaces.append((FLOOR, floor_top, h))
        kinds = [POSTER, RELIEF, BOX] + list(rng.choice([POSTER, RELIEF, BOX],
                                                        size=rng.integers(0, 6)))
        self.objects: list[SceneObject] = []
        for kind in sorted(kinds, key=lambda k: k != POSTER):  # posters lie under the others
            surface, top, bottom = surfaces[rng.integers(len(surfaces))]
            if bottom - top < 8:
                surface, top, bottom = surfaces[0]
            half_h = min(rng.uniform(0.06, 0.18) * h, (bottom - top) / 2 - 1)
            half_w = float(np.clip(half_h * rng.uniform(0.6, 1.8), 3, 0.3 * w))
            texture = (surface_texture(rng, h, w, hsv_colour(rng, (0.6, 1.0), (0.45, 1.0)))
                       if kind != RELIEF else None)
            self.objects.append(SceneObject(
                kind, surface, half_h, half_w, ellipse=bool(rng.random() < 0.5),
                centre_y=float(rng.uniform(top + half_h, bottom - half_h)),
                start_x=float(rng.uniform(half_w, w - half_w)),
                speed=float(rng.uniform(0.6, 2.0) * w / 160 * rng.choice([-1, 1])),
                texture=texture, offset=float(rng.uniform(0.2, 0.6)),
                dome=bool(rng.random() < 0.5), shadow=bool(rng.random() < 0.7)))
        # Lighting of the room: gain, white balance and a gradient across the image.
        gradient = 1.0 + rng.uniform(-0.25, 0.25) * (self.xs / w - 0.5) + rng.uniform(
            -0.25, 0.25) * (self.ys / h - 0.5)
        self.lighting = gradient[..., None] * rng.uniform(0.6, 1.3) * rng.uniform(0.85, 1.15, 3)
        self.noise_sigma = rng.uniform(2, 6)
        # Blobs the sensor cannot see into (dark or shiny patches): they stay with the room.
        self.blind = np.zeros((h, w), bool)
        for _ in range(rng.integers(0, 4)):
            hy, hx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.03, 0.12) * h, rng.uniform(0.03, 0.12) * w
            self.blind |= ((self.ys - hy) / ry) ** 2 + ((self.xs - hx) / rx) ** 2 <= 1.0

    def camera_info_fields(self) -> dict:
        """The scene camera's pinhole model as ``sensor_msgs/CameraInfo`` fields (no header):
        focal length 0.9 x width in both directions, principal point at the image centre, no
        distortion."""
        focal = 0.9 * self.width
        return pinhole_camera_info(self.width, self.height, focal, focal,
                                   (self.width - 1) / 2, (self.height - 1) / 2)

    def render(self, frame: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rgb`` uint8 [H,W,3], ``depth_mm`` uint16 [H,W] (0 = invalid) and ``labels`` uint8
        [H,W] of frame ``frame``; ``rng`` draws the sensor noise."""
        h, w, xs, ys = self.height, self.width, self.xs, self.ys
        depth = np.where(self.is_floor, self.floor_depth, self.wall_depth).astype(np.float32)
        labels = np.where(self.is_floor, FLOOR, WALL).astype(np.uint8)
        rgb = np.where(self.is_floor[..., None], self.floor_rgb, self.wall_rgb)
        shadows = np.zeros((h, w), bool)
        for obj in self.objects:
            centre_x = obj.centre_x(frame, w)
            u, v = (xs - centre_x) / obj.half_w, (ys - obj.centre_y) / obj.half_h
            radius = np.sqrt(u * u + v * v) if obj.ellipse else np.maximum(np.abs(u), np.abs(v))
            shape = radius <= 1.0
            colour = None
            if obj.texture is not None:  # the paint moves with the object
                colour = np.roll(obj.texture, int(round(centre_x - obj.start_x)), axis=1)
            if obj.kind == POSTER:
                drawn = shape & (labels == obj.surface)
                rgb[drawn] = colour[drawn]
                labels[drawn] = POSTER
                continue
            if obj.surface == FLOOR:
                row = min(int(obj.centre_y + obj.half_h), h - 1)
                behind = float(self.floor_depth[row, int(np.clip(centre_x, 0, w - 1))])
            else:
                behind = self.wall_depth
            if obj.dome:
                bulge = np.sqrt(np.clip(1.0 - radius * radius, 0.0, 1.0))
                object_depth = behind - (0.08 + (obj.offset - 0.08) * bulge)
            else:
                object_depth = behind - obj.offset + np.zeros_like(depth)
            drawn = shape & (object_depth < depth)
            depth[drawn] = object_depth[drawn]
            surface_rgb = self.wall_rgb if obj.surface == WALL else self.floor_rgb
            rgb[drawn] = (surface_rgb if obj.kind == RELIEF else colour)[drawn]
            labels[drawn] = obj.kind
            if obj.shadow:  # the projector's shadow: a strip left of the object
                shift = max(1, int(round(obj.offset * 8 * w / 160)))
                left_edge = shape & ~np.roll(shape, 1, axis=1)
                strip = np.zeros_like(shape)
                for dx in range(1, shift + 1):
                    strip |= np.roll(left_edge, -dx, axis=1)
                shadows |= strip & ~drawn

        rgb = rgb * self.lighting + rng.normal(0, self.noise_sigma, rgb.shape)
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        # Kinect-like axial noise growing with distance, holes, then millimetres.
        depth = depth + rng.standard_normal(depth.shape).astype(np.float32) * (
            0.0012 + 0.0019 * (depth - 0.4) ** 2)
        holes = shadows | self.blind | (depth > MAX_RANGE_M) | (rng.random((h, w)) < 0.01)
        depth_mm = np.where(holes, 0, np.clip(np.rint(depth * 1000), 1,
                                              DEPTH_16U_INVALID - 1)).astype(np.uint16)
        return rgb, depth_mm, labels


def render_scene(rng: np.random.Generator, height: int = 120, width: int = 160
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One still scene of the synthetic world (``rgb``, ``depth_mm``, ``labels``), as
    ``cen-train synth`` writes them; ``rng`` draws the room and the sensor noise."""
    return SyntheticScene(height=height, width=width, rng=rng).render(0, rng)
