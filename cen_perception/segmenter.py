"""The per-frame work of the node, without ROS: camera frames in, labels at camera size out.

``Segmenter(engine).run(rgb, depth)`` (``run_images`` takes the camera's images unconverted):
1. depth of another size than the RGB image is resized to it (nearest; flagged in the result);
2. both are resized to the engine's input size (RGB bilinear, depth nearest so that no depth
   is invented across object edges or next to invalid pixels), then converted to RGB and
   metres (the same pixels as converting first, at the cost of the small image);
3. ``engine.infer``;
4. where ``confidence < min_confidence`` the label becomes 255 (unlabeled), at the engine's
   resolution;
5. labels go back to the camera size with nearest-neighbour, confidence bilinearly.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from .camera_images import ColorImage, DepthImage, resize
from .engines import Engine
from .visualize import UNLABELED


@dataclass
class SegmentationResult:
    labels: np.ndarray                 # uint8 [H, W] at the RGB image's size, 255 = unlabeled
    confidence: Optional[np.ndarray]   # float32 [H, W] at the same size, or None
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    depth_resized: bool = False        # depth came at another size than the RGB image
    depth_image: Optional[DepthImage] = None  # the input depth, as it came

    @functools.cached_property
    def depth(self) -> Optional[np.ndarray]:
        """float32 ``[H, W]`` metres at the RGB image's size (converted when first asked)."""
        if self.depth_image is None:
            return None
        return self.depth_image.metres(self.labels.shape)


class Segmenter:
    """Runs ``engine`` on camera-sized RGB-D frames; see the module docstring for the steps."""

    def __init__(self, engine: Engine, min_confidence: float = 0.0) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence}")
        if min_confidence > 0 and not engine.has_confidence:
            raise ValueError("min_confidence > 0 needs an engine with a 'confidence' output")
        self.engine = engine
        self.min_confidence = float(min_confidence)

    @property
    def palette(self) -> list[list[int]]:
        return self.engine.card.palette

    @property
    def class_names(self) -> list[str]:
        return self.engine.card.class_names

    def run(self, rgb: np.ndarray, depth: np.ndarray,
            with_confidence: bool = True) -> SegmentationResult:
        """Segment one frame: ``rgb`` uint8 ``[H, W, 3]`` (RGB order), ``depth`` float32 metres.

        ``with_confidence=False`` skips resizing the confidence map back (it is then None in
        the result) for callers that have no use for it.
        """
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3
                and rgb.shape[2] == 3 and rgb.shape[0] > 0 and rgb.shape[1] > 0):
            raise ValueError(f"rgb must be uint8 [H, W, 3], got "
                             f"{getattr(rgb, 'dtype', type(rgb).__name__)}{list(np.shape(rgb))}")
        if not (isinstance(depth, np.ndarray) and depth.dtype == np.float32 and depth.ndim == 2
                and depth.size > 0):
            got = f"{getattr(depth, 'dtype', type(depth).__name__)}{list(np.shape(depth))}"
            raise ValueError(f"depth must be float32 [H, W] in metres, got {got}")
        return self.run_images(ColorImage(rgb), DepthImage(depth), with_confidence)

    def run_images(self, color: ColorImage, depth: DepthImage,
                   with_confidence: bool = True) -> SegmentationResult:
        """``run`` on images as the camera sent them: each is converted (to RGB, to metres)
        only after its resize to the engine's input, with the same result."""
        camera_hw = color.size_hw
        start = time.perf_counter()
        rgb_in, depth_in = self.engine_inputs(color, depth)
        resized = time.perf_counter()

        labels, confidence = self.engine.infer(rgb_in, depth_in)
        inferred = time.perf_counter()

        if self.min_confidence > 0 and confidence is not None:
            labels = np.where(confidence < self.min_confidence, np.uint8(UNLABELED), labels)
        labels = resize(labels, camera_hw, cv2.INTER_NEAREST)
        if not with_confidence:
            confidence = None
        elif confidence is not None:
            confidence = resize(confidence, camera_hw, cv2.INTER_LINEAR)
        done = time.perf_counter()

        timings = {"resize": (resized - start + done - inferred) * 1e3,
                   "infer": (inferred - resized) * 1e3}
        return SegmentationResult(labels, confidence, timings, depth.size_hw != camera_hw,
                                  depth)

    def engine_inputs(self, color: ColorImage, depth: DepthImage
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Steps 1 and 2: RGB and metres at the engine's input size, depth of another size
        than the colour image resized to it first."""
        camera_hw, engine_hw = color.size_hw, self.engine.input_size
        via_hw = camera_hw if depth.size_hw != camera_hw else None
        return color.rgb(engine_hw), depth.metres(engine_hw, via_hw=via_hw)


__all__ = ["Segmenter", "SegmentationResult"]
