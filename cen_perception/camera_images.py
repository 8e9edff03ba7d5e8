"""Camera images as they came, converted only at the size they are used.

A decoded message is kept in its own layout (colour in the camera's channel order, depth in
its stored unit): the network wants it at a few hundred pixels, the pictures for people at
``display_width``, and only the labelled cloud at the camera's size. Converting after the
resize gives the same pixels as converting first, for far less work: a bilinear resize treats
each channel alone, so swapping channels commutes with it, and a nearest resize picks pixels,
so any per-pixel conversion (units to metres, invalid values to 0) commutes with it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

Size = tuple[int, int]   # (height, width)


def resize(image: np.ndarray, size_hw: Size, interpolation: int) -> np.ndarray:
    """``image`` at ``size_hw``: C-contiguous, and the same object only when it already is
    that size and contiguous."""
    if image.shape[:2] == tuple(size_hw):
        return np.ascontiguousarray(image)
    if interpolation == cv2.INTER_NEAREST and size_hw[0] > image.shape[0]:
        return _enlarge_nearest(image, size_hw)
    return cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=interpolation)


def _enlarge_nearest(image: np.ndarray, size_hw: Size) -> np.ndarray:
    """OpenCV's nearest resize, in about half its time when rows are repeated (labels back to
    camera size): OpenCV resizes the columns of the few source rows, then whole rows are
    copied, picked as OpenCV picks them."""
    columns = cv2.resize(image, (size_hw[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.take(columns, _nearest_rows(image.shape[0], size_hw[0]), axis=0)


@functools.lru_cache(maxsize=16)
def _nearest_rows(source_rows: int, rows: int) -> np.ndarray:
    """The source row of each output row in OpenCV's nearest resize, asked of OpenCV itself."""
    index = np.arange(source_rows, dtype=np.int32).reshape(-1, 1)
    return cv2.resize(index, (1, rows), interpolation=cv2.INTER_NEAREST).ravel().astype(np.intp)


@dataclass(frozen=True)
class ColorImage:
    """uint8 pixels in the camera's layout (``[H, W]`` grey, ``[H, W, 3]`` or ``[H, W, 4]``;
    possibly a view of the message's buffer) and the OpenCV conversion to RGB (None: RGB).

    ``camera_hw`` is the camera's image size when the pixels are smaller: a JPEG decoded at
    1/2, 1/4 or 1/8 of its size (libjpeg scales while it decodes) for outputs that need no
    more. Sizes asked for are the camera's; everything drawn from the image follows them."""

    pixels: np.ndarray
    to_rgb: Optional[int] = None
    camera_hw: Optional[Size] = None

    @property
    def size_hw(self) -> Size:
        """The camera's image size (``camera_hw``, else the pixels')."""
        return self.camera_hw or (self.pixels.shape[0], self.pixels.shape[1])

    @property
    def reduced(self) -> bool:
        return self.size_hw != self.pixels.shape[:2]

    def rgb(self, size_hw: Optional[Size] = None) -> np.ndarray:
        """uint8 ``[h, w, 3]`` RGB, C-contiguous, resized bilinearly to ``size_hw`` (default:
        the camera's size) before its channels are converted."""
        size_hw = size_hw or self.size_hw
        pixels = self.pixels if size_hw == self.pixels.shape[:2] else resize(
            self.pixels, size_hw, cv2.INTER_LINEAR)
        if self.to_rgb is None:
            return np.ascontiguousarray(pixels)
        return cv2.cvtColor(pixels, self.to_rgb)


@dataclass(frozen=True)
class DepthImage:
    """``[H, W]`` depth as stored (uint16 units or float32; native byte order; possibly a view
    of the message's buffer) and the per-pixel function that turns it into float32 metres with
    0 for invalid pixels (None: already metres)."""

    stored: np.ndarray
    to_metres: Optional[Callable[[np.ndarray], np.ndarray]] = None

    @property
    def size_hw(self) -> Size:
        return self.stored.shape[0], self.stored.shape[1]

    def metres(self, size_hw: Optional[Size] = None, via_hw: Optional[Size] = None
               ) -> np.ndarray:
        """float32 ``[h, w]`` metres at ``size_hw`` (default: as stored), resized by nearest
        neighbour first (through ``via_hw`` when given, as two resizes pick other pixels than
        one) and converted after."""
        stored = self.stored
        for size in (via_hw, size_hw):
            if size is not None:
                stored = resize(stored, size, cv2.INTER_NEAREST)
        if self.to_metres is None:
            return np.ascontiguousarray(stored, dtype=np.float32)
        return self.to_metres(stored)


__all__ = ["ColorImage", "DepthImage", "resize"]
