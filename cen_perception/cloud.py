"""A labelled point cloud from the RGB-D pair the network saw (its messages built on demand).

Every colour pixel with valid depth becomes a point in the colour camera's optical frame
(x right, y down, z forward, metres), back-projected with the colour camera's pinhole
intrinsics: ``x = (u - cx) * z / fx``, ``y = (v - cy) * z / fy``. Depth must be registered to
the colour image (as the node already requires). The cloud is organized (rows x columns of the
image, every ``stride``-th pixel in both directions) with NaN coordinates where depth is
invalid or beyond ``max_range``, as ``depth_image_proc`` writes its clouds.

Point layout (``sensor_msgs/PointCloud2`` fields, little-endian like every ROS 2 platform):
``x y z`` float32 at 0, 4, 8; ``rgb`` float32 at 12 holding the bytes 0x00RRGGBB (the packing
RViz's RGB8 colour transformer reads); ``label`` uint8 at 16 (255 = unlabeled); with
confidence, ``confidence`` float32 at 20.
The point step is 20 bytes without confidence (3 padding bytes after the label), 24 with.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

# sensor_msgs/PointField datatypes
UINT8, FLOAT32 = 2, 7


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour camera for images of ``width`` x ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> "Intrinsics":
        """From a row-major 3x3 ``K`` (``sensor_msgs/CameraInfo.k``)."""
        k = [float(v) for v in k]
        if len(k) != 9 or k[0] <= 0 or k[4] <= 0 or width <= 0 or height <= 0:
            raise ValueError(f"camera info has no usable intrinsics (K={k}, {width}x{height})")
        return cls(k[0], k[4], k[2], k[5], int(width), int(height))

    def scaled_to(self, width: int, height: int) -> "Intrinsics":
        """The same camera for images resized to ``width`` x ``height`` (pixel centres kept)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, width, height)


def point_fields(with_confidence: bool) -> list[tuple[str, int, int]]:
    """(name, byte offset, PointField datatype) of each field, in order."""
    fields = [("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("rgb", 12, FLOAT32),
              ("label", 16, UINT8)]
    if with_confidence:
        fields.append(("confidence", 20, FLOAT32))
    return fields


def point_step(with_confidence: bool) -> int:
    return 24 if with_confidence else 20


class CloudBuilder:
    """Builds organized labelled clouds; keeps the pixel grids of the last image size."""

    def __init__(self, stride: int = 1, max_range: float = 0.0) -> None:
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_range < 0:
            raise ValueError(f"max_range must be >= 0 (0 = no limit), got {max_range}")
        self.stride = int(stride)
        self.max_range = float(max_range)
        self._grid_key: Optional[tuple] = None
        self._rays: Optional[tuple[np.ndarray, np.ndarray]] = None
        self._points: Optional[np.ndarray] = None

    def _rays_for(self, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
        """(u - cx) / fx per column and (v - cy) / fy per row of the strided grid."""
        key = (intrinsics, self.stride)
        if key != self._grid_key:
            s = self.stride
            u = np.arange(0, intrinsics.width, s, dtype=np.float32)
            v = np.arange(0, intrinsics.height, s, dtype=np.float32)
            self._rays = ((u - np.float32(intrinsics.cx)) / np.float32(intrinsics.fx),
                          (v - np.float32(intrinsics.cy)) / np.float32(intrinsics.fy))
            self._grid_key = key
        return self._rays

    def build(self, depth: np.ndarray, rgb: np.ndarray, labels: np.ndarray,
              intrinsics: Intrinsics, confidence: Optional[np.ndarray] = None) -> np.ndarray:
        """The cloud as a uint8 array ``[rows, cols, point_step]`` (the PointCloud2 data),
        valid until the next call (the buffer is reused).

        ``depth`` float32 metres, ``rgb`` uint8 RGB, ``labels`` uint8 and ``confidence``
        float32, all ``[H, W]`` at the colour image's size, which ``intrinsics`` describes
        (scale it with ``Intrinsics.scaled_to`` first if the camera info is for another size).
        """
        h, w = labels.shape
        if depth.shape != (h, w) or rgb.shape[:2] != (h, w) or (
                confidence is not None and confidence.shape != (h, w)):
            raise ValueError("depth, rgb, labels and confidence must share one [H, W] size")
        if (intrinsics.width, intrinsics.height) != (w, h):
            raise ValueError(f"intrinsics are for {intrinsics.width}x{intrinsics.height} images, "
                             f"the frame is {w}x{h}")
        s = self.stride
        z = depth[::s, ::s]
        rows, cols = z.shape
        ray_x, ray_y = self._rays_for(intrinsics)
        words = 6 if confidence is not None else 5
        # One buffer, reused while the size stays: fresh pages per frame cost more than the
        # arithmetic at camera sizes. The caller copies the bytes out before the next frame.
        if self._points is None or self._points.shape != (rows, cols, words):
            self._points = np.empty((rows, cols, words), np.float32)
        points = self._points
        invalid = ~(z > 0)  # NaN and 0 alike
        if self.max_range > 0:
            invalid |= z > self.max_range
        zv = np.where(invalid, np.float32(np.nan), z)
        np.multiply(zv, ray_x[None, :], out=points[:, :, 0])
        np.multiply(zv, ray_y[:, None], out=points[:, :, 1])
        points[:, :, 2] = zv
        # Whole 32-bit words: rgb as 0x00RRGGBB, and the label in the low byte of its word
        # (byte 16 on a little-endian machine) with the padding zeroed in the same write.
        words = points.view(np.uint32)
        bgra = cv2.cvtColor(np.ascontiguousarray(rgb[::s, ::s]), cv2.COLOR_RGB2BGRA)
        np.bitwise_and(bgra.view(np.uint32)[:, :, 0], np.uint32(0x00FFFFFF), out=words[:, :, 3])
        words[:, :, 4] = labels[::s, ::s]
        if confidence is not None:
            points[:, :, 5] = confidence[::s, ::s]
        as_bytes = points.view(np.uint8)
        return as_bytes


def point_cloud_message(data: np.ndarray, header, with_confidence: bool):
    """A ``sensor_msgs/PointCloud2`` around ``CloudBuilder.build``'s ``[rows, cols, step]``."""
    from sensor_msgs.msg import PointCloud2, PointField  # ROS only where a message is built

    rows, cols, step = data.shape
    msg = PointCloud2(header=header, height=rows, width=cols, is_bigendian=False,
                      point_step=step, row_step=cols * step, is_dense=False)
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in point_fields(with_confidence)]
    payload = array.array("B")
    payload.frombytes(data.reshape(-1))  # one copy; skips rclpy's per-byte field check
    msg.data = payload
    return msg


def camera_info_for(info, header, size_hw: tuple[int, int]):
    """``sensor_msgs/CameraInfo`` ``info`` with ``header``, its intrinsics scaled when the
    outputs are of another size than the camera info says."""
    from sensor_msgs.msg import CameraInfo

    h, w = size_hw
    out = CameraInfo(header=header, height=h, width=w, distortion_model=info.distortion_model,
                     d=list(info.d), k=list(info.k), r=list(info.r), p=list(info.p),
                     binning_x=info.binning_x, binning_y=info.binning_y, roi=info.roi)
    if (info.width, info.height) != (w, h) and info.width and info.height:
        sx, sy = w / info.width, h / info.height
        k, pr = list(info.k), list(info.p)
        for matrix, row_len in ((k, 3), (pr, 4)):
            matrix[0] *= sx
            matrix[row_len + 1] *= sy
            matrix[2] = (matrix[2] + 0.5) * sx - 0.5
            matrix[row_len + 2] = (matrix[row_len + 2] + 0.5) * sy - 0.5
        out.k, out.p = k, pr
    return out


__all__ = ["Intrinsics", "CloudBuilder", "point_fields", "point_step", "UINT8", "FLOAT32",
           "point_cloud_message", "camera_info_for"]
