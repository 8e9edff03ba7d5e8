"""One decoded frame through the engine into the node's outputs, without ROS.

``render_frame`` segments a ``DecodedPair`` with the engine in service and draws only the
outputs someone subscribes to: labels (mono8), confidence (32FC1), colour and overlay (rgb8),
and the labelled cloud's bytes. The node turns the arrays into messages and publishes them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np

from .camera_images import ColorImage
from .cloud import CloudBuilder, Intrinsics
from .engine_slot import LoadedEngine
from .pipeline import DecodedPair
from .visualize import colorize, overlay


@dataclass
class RenderedFrame:
    images: dict[str, tuple[np.ndarray, str]]   # kind -> (array, ROS encoding)
    cloud: Optional[np.ndarray] = None          # PointCloud2 data [rows, cols, point_step]
    with_confidence: bool = False               # the cloud carries a confidence field
    shape: tuple[int, int] = (0, 0)             # the outputs' [H, W] (the colour image's)
    depth_resized: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def display_size(camera_hw: tuple[int, int], display_width: int) -> tuple[int, int]:
    """(height, width) of the pictures for people: ``display_width`` wide with the camera's
    aspect, or the camera's size when that is 0 or not larger."""
    h, w = camera_hw
    if display_width <= 0 or display_width >= w:
        return h, w
    return max(1, round(h * display_width / w)), display_width


def least_color_size(camera_hw: tuple[int, int], engine_hw: tuple[int, int], wanted: set[str],
                     display_width: int) -> tuple[int, int]:
    """The smallest colour image the ``wanted`` outputs can be made from without losing
    detail: the engine's input, and the overlay's size; the camera's size for the cloud."""
    if "points" in wanted:
        return camera_hw
    if "overlay" not in wanted:
        return engine_hw
    overlay_hw = display_size(camera_hw, display_width)
    return max(engine_hw[0], overlay_hw[0]), max(engine_hw[1], overlay_hw[1])


def draw(image: ColorImage, labels: np.ndarray, palette: np.ndarray, wanted: set[str],
         alpha: float, display_width: int) -> dict[str, tuple[np.ndarray, str]]:
    """Colour and overlay pictures (as ``wanted``) at the display size: labels shrunk by
    nearest neighbour (the ids stay ids), the camera image bilinearly (area averaging costs
    six times as much at 1920x1080)."""
    size_hw = display_size(labels.shape, display_width)
    if size_hw != labels.shape:
        labels = cv2.resize(labels, size_hw[::-1], interpolation=cv2.INTER_NEAREST)
    color = colorize(labels, palette)
    pictures = {"color": (color, "rgb8")} if "color" in wanted else {}
    if "overlay" in wanted:
        pictures["overlay"] = (overlay(image.rgb(size_hw), labels, palette, alpha, color=color),
                               "rgb8")
    return pictures


def render_frame(decoded: DecodedPair, loaded: LoadedEngine, wanted: set[str],
                 overlay_alpha: float, intrinsics: Optional[Intrinsics],
                 cloud_builder: CloudBuilder, display_width: int = 0,
                 inferred: Callable[[], None] = lambda: None) -> RenderedFrame:
    """Segment ``decoded`` and draw the ``wanted`` outputs; ``intrinsics`` (for the camera
    info's size) is needed for the cloud, which is left out without it. Labels, confidence
    and the cloud keep the camera's size; colour and overlay are ``display_width`` wide."""
    want_cloud = "points" in wanted and intrinsics is not None
    result = loaded.segmenter.run_images(decoded.color, decoded.depth,
                                         with_confidence="confidence" in wanted or want_cloud)
    inferred()  # the rest is drawing: the next pair may be decoded meanwhile
    labels = {"labels": (result.labels, "mono8")} if "labels" in wanted else {}
    frame = RenderedFrame(labels, shape=result.labels.shape,
                          depth_resized=result.depth_resized, timings=dict(result.timings))
    if "confidence" in wanted and result.confidence is not None:
        frame.images["confidence"] = (result.confidence, "32FC1")
    start = time.perf_counter()
    if wanted & {"color", "overlay"}:
        frame.images.update(draw(decoded.color, result.labels, loaded.palette_lut, wanted,
                                 overlay_alpha, display_width))
    frame.timings["visualize"] = (time.perf_counter() - start) * 1e3
    if want_cloud:
        start = time.perf_counter()
        h, w = result.labels.shape
        frame.cloud = cloud_builder.build(result.depth, decoded.color.rgb(), result.labels,
                                          intrinsics.scaled_to(w, h), result.confidence)
        frame.with_confidence = result.confidence is not None
        frame.timings["cloud"] = (time.perf_counter() - start) * 1e3
    return frame
