"""``sensor_msgs/Image`` <-> numpy, without cv_bridge.

Works on any object with the ``sensor_msgs/Image`` fields (``header, height, width, encoding,
is_bigendian, step, data``): rclpy messages and the messages ``rosbags`` deserializes alike.
``data`` may be ``bytes``, ``array.array``, a list or a numpy ``uint8`` array.

Colour decodes to a view of the message buffer where the layout allows (row padding from
``step`` is sliced off, BGR is reversed with a negative stride), so treat the result as
read-only. Depth always decodes to a new float32 array in metres (REP 118: ``16UC1`` in
millimetres, ``32FC1`` in metres) with every invalid pixel set to 0.

rclpy is imported only when ``encode`` needs the default message class.
"""
from __future__ import annotations

import array
import dataclasses
import sys
from typing import Any, Optional

import cv2
import numpy as np

# encoding -> (channels, channel order reversed relative to RGB)
COLOR_ENCODINGS = {
    "rgb8": (3, False),
    "bgr8": (3, True),
    "rgba8": (4, False),
    "bgra8": (4, True),
    "mono8": (1, False),
}
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
           "mono8": cv2.COLOR_GRAY2RGB}
# encoding -> (element dtype without byte order, metres per unit)
DEPTH_ENCODINGS = {
    "16UC1": ("u2", 0.001),
    "32FC1": ("f4", 1.0),
}
# What ``encode`` writes: encoding -> (dtype, channels; 0 = a 2-D array).
ENCODE_FORMATS = {
    "mono8": (np.uint8, 0),
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "16UC1": (np.uint16, 0),
    "32FC1": (np.float32, 0),
}
# Many depth cameras (Kinect v2 among them) write the largest 16-bit value where they have
# no measurement; a real 65.535 m reading does not occur indoors.
DEPTH_16U_INVALID = 65535


class ImageCodecError(ValueError):
    """An image message this module cannot decode or an array it cannot encode."""


def _as_bytes_array(data: Any) -> np.ndarray:
    """The message buffer as a flat uint8 array, without copying where possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else \
            np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def _rows(msg: Any, pixel_bytes: int) -> np.ndarray:
    """The pixel rows as a ``[height, width * pixel_bytes]`` uint8 view (step padding cut)."""
    encoding = msg.encoding
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageCodecError(f"{encoding} image has zero size ({width}x{height})")
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageCodecError(
            f"{encoding} image {width}x{height}: step {step} is smaller than "
            f"width * {pixel_bytes} bytes = {row_bytes}")
    buf = _as_bytes_array(msg.data)
    if buf.size != height * step:
        raise ImageCodecError(
            f"{encoding} image {width}x{height}: data holds {buf.size} bytes, "
            f"expected height * step = {height} * {step} = {height * step}")
    return buf.reshape(height, step)[:, :row_bytes]


def decode_color(msg: Any, contiguous: bool = False) -> np.ndarray:
    """uint8 ``[H, W, 3]`` in RGB order from rgb8, bgr8, rgba8, bgra8 or mono8.

    By default a view of the message buffer (read-only in spirit); mono8 is broadcast to three
    channels. ``contiguous=True`` returns a C-contiguous array instead, converted by OpenCV in
    one pass (a copy unless the message already is unpadded rgb8); later OpenCV and ONNX
    Runtime calls on such an array avoid a slow element-wise copy of a strided view each.
    """
    encoding = msg.encoding
    if encoding not in COLOR_ENCODINGS:
        raise ImageCodecError(
            f"unsupported colour encoding '{encoding}' "
            f"(expected one of {', '.join(COLOR_ENCODINGS)})")
    channels, reversed_order = COLOR_ENCODINGS[encoding]
    rows = _rows(msg, channels)
    height, width = rows.shape[0], int(msg.width)
    if contiguous:
        pixels = rows.reshape(height, width, channels)
        if encoding == "rgb8":
            return np.ascontiguousarray(pixels)
        return cv2.cvtColor(pixels[:, :, 0] if channels == 1 else pixels, _TO_RGB[encoding])
    if channels == 1:
        return np.broadcast_to(rows[:, :, None], (height, width, 3))
    pixels = rows.reshape(height, width, channels)
    return pixels[:, :, 2::-1] if reversed_order else pixels[:, :, :3]


def decode_depth(msg: Any) -> np.ndarray:
    """float32 ``[H, W]`` in metres from 16UC1 (mm) or 32FC1 (m); invalid pixels are 0.

    Invalid: NaN, +-inf, negative, and 65535 in 16UC1 (the "no reading" value of many
    sensors).
    """
    encoding = msg.encoding
    if encoding not in DEPTH_ENCODINGS:
        raise ImageCodecError(
            f"unsupported depth encoding '{encoding}' "
            f"(expected one of {', '.join(DEPTH_ENCODINGS)})")
    kind, _ = DEPTH_ENCODINGS[encoding]
    dtype = np.dtype((">" if msg.is_bigendian else "<") + kind)
    rows = _rows(msg, dtype.itemsize)
    raw = rows.view(dtype)
    if encoding == "16UC1":
        # Division (not multiplication by 0.001) keeps whole metres exact: 2000 mm -> 2.0 m.
        depth = np.divide(raw, 1000.0, dtype=np.float32)
        np.copyto(depth, 0.0, where=raw == DEPTH_16U_INVALID)
        return depth
    # fmax returns a new array (the message buffer stays untouched) and turns NaN, -inf and
    # negative values into 0 in one pass; only +inf is left to clear.
    depth = np.fmax(raw, np.float32(0.0), dtype=np.float32)
    depth[depth == np.inf] = 0.0
    return depth


def _default_image_class():
    from sensor_msgs.msg import Image  # rclpy only when it is really needed
    return Image


def _rosbags_header(msg_cls) -> Any:
    """A zero header for a ``rosbags`` Image class, from the same type store module."""
    module = sys.modules[msg_cls.__module__]
    time_cls = getattr(module, "builtin_interfaces__msg__Time")
    header_cls = getattr(module, "std_msgs__msg__Header")
    return header_cls(stamp=time_cls(sec=0, nanosec=0), frame_id="")


def encode(image: np.ndarray, encoding: str, header: Optional[Any] = None,
           msg_cls: Optional[type] = None) -> Any:
    """An Image message holding ``image`` under ``encoding``.

    ``image`` is already in the encoding's layout: uint8 ``[H, W]`` for mono8, uint8
    ``[H, W, 3]`` for rgb8 (``[H, W, 3]`` BGR for bgr8, 4 channels for rgba8/bgra8), uint16
    ``[H, W]`` for 16UC1 (mm), float32 ``[H, W]`` for 32FC1 (m). Written in this machine's
    byte order, rows unpadded. ``msg_cls`` defaults to rclpy's ``sensor_msgs.msg.Image``; a
    ``rosbags`` Image class works too (built with keyword arguments, ``data`` as a numpy array).
    """
    if encoding not in ENCODE_FORMATS:
        raise ImageCodecError(
            f"cannot encode '{encoding}' (expected one of {', '.join(ENCODE_FORMATS)})")
    dtype, channels = ENCODE_FORMATS[encoding]
    image = np.asarray(image)
    want_ndim = 2 if channels == 0 else 3
    if (image.ndim != want_ndim or image.dtype != dtype
            or (channels and image.shape[2] != channels)):
        want = "[H, W]" if channels == 0 else f"[H, W, {channels}]"
        raise ImageCodecError(
            f"{encoding} needs a {np.dtype(dtype).name} {want} array, "
            f"got {image.dtype.name}{list(image.shape)}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ImageCodecError(f"{encoding} image has zero size ({width}x{height})")
    image = np.ascontiguousarray(image, dtype=np.dtype(dtype).newbyteorder("="))
    flat = image.reshape(-1).view(np.uint8)
    step = width * image.itemsize * max(channels, 1)
    fields = dict(height=int(height), width=int(width), encoding=encoding,
                  is_bigendian=int(sys.byteorder == "big"), step=int(step))
    msg_cls = msg_cls or _default_image_class()
    if dataclasses.is_dataclass(msg_cls):  # rosbags message classes
        return msg_cls(header=header if header is not None else _rosbags_header(msg_cls),
                       data=flat.copy(), **fields)
    msg = msg_cls()
    if header is not None:
        msg.header = header
    for name, value in fields.items():
        setattr(msg, name, value)
    data = array.array("B")
    data.frombytes(flat)  # one copy; an array.array skips rclpy's per-byte field check
    msg.data = data
    return msg


__all__ = ["ImageCodecError", "decode_color", "decode_depth", "encode",
           "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "ENCODE_FORMATS"]
