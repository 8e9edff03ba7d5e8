"""``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` <-> numpy, without cv_bridge.

Works on any object with the message fields (Image: ``header, height, width, encoding,
is_bigendian, step, data``; CompressedImage: ``header, format, data``): rclpy messages and the
messages ``rosbags`` deserializes alike. ``data`` may be ``bytes``, ``array.array``, a list or
a numpy ``uint8`` array.

Colour decodes to a view of the message buffer where the layout allows (row padding from
``step`` is sliced off, BGR is reversed with a negative stride), so treat the result as
read-only. Depth always decodes to a new float32 array in metres with every invalid pixel set
to 0; ``scale`` (metres per stored unit) defaults to REP 118: ``16UC1`` in millimetres,
``32FC1`` in metres.

Compressed images are read as image_transport's plugins write them:

- ``compressed`` (colour): ``format`` like ``"rgb8; jpeg compressed bgr8"``,
  ``"mono8; png compressed mono8"`` or the older plain ``"jpeg"`` / ``"png"``; ``data`` is a
  JPEG or PNG file that OpenCV decodes to BGR (grey, BGRA), whatever the original encoding.
  A JPEG without its end-of-image marker is refused: a cut-off JPEG would otherwise decode
  with its lower part grey (libjpeg only warns). Damage inside the entropy-coded data cannot be
  told apart cheaply and decodes with artefacts.
- ``compressedDepth`` (depth): ``format`` like ``"16UC1; compressedDepth png"``,
  ``"32FC1; compressedDepth rvl"``, the older ``"16UC1; compressedDepth"`` or just
  ``"16UC1"``; ``data`` is a 12-byte header (little-endian int32 ``format``, 0 = inverse depth,
  and float32 ``depthParam[2]``) followed by a PNG or an RVL stream (uint32 width, height, then
  32-bit words of 4-bit variable-length codes, Wilson 2017). 16UC1 holds millimetres as they
  are; 32FC1 holds quantized inverse depth ``q``, with depth ``= a / (q - b)`` (``a, b`` =
  ``depthParam``) and ``q = 0`` invalid. A 16-bit PNG sent by the plain ``compressed`` plugin
  (``"16UC1; png compressed"``) decodes as depth too.

Every decoder reads the image size from the message before it allocates anything (the raw
``Image`` fields against its data; the PNG IHDR chunk; the JPEG frame header; the RVL size
header) and refuses an image of more than ``max_pixels`` pixels (default ``MAX_IMAGE_PIXELS``,
4096x3072) or, for depth, one wider or taller than ``max_size`` (the colour image it must be
registered to). Any failure on damaged bytes is an ``ImageCodecError``.

``decode_color_message`` / ``decode_depth_message`` pick the raw or the compressed decoder by
the message having a ``format`` field (CompressedImage) or an ``encoding`` field (Image).
``color_image_from_message`` / ``depth_image_from_message`` decode as far as the camera's own
layout (channel order, stored depth unit) and leave the conversion for after a resize (see
``camera_images``).
An encoding or format the codec does not handle raises ``UnsupportedImageError``; a message
that is damaged raises ``ImageCodecError`` (its base class), so callers can tell a wrong topic
from one bad message.

rclpy is imported only when an encoder needs the default message class.
"""
from __future__ import annotations

import array
import dataclasses
import functools
import struct
import sys
import zlib
from typing import Any, Iterator, Optional

import cv2
import numpy as np

from .camera_images import ColorImage, DepthImage
from .errors import CenPerceptionError

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
# The default limit on a decoded image: a 12-megapixel camera, beyond any RGB-D sensor's.
MAX_IMAGE_PIXELS = 4096 * 3072
# Many depth cameras (Kinect v2 among them) write the largest 16-bit value where they have
# no measurement; a real 65.535 m reading does not occur indoors.
DEPTH_16U_INVALID = 65535


class ImageCodecError(CenPerceptionError, ValueError):
    """An image message this module cannot decode or an array it cannot encode."""


class UnsupportedImageError(ImageCodecError):
    """An encoding or compressed format this module does not decode (not a damaged message)."""


def _as_bytes_array(data: Any) -> np.ndarray:
    """The message buffer as a flat uint8 array, without copying where possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else \
            np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageCodecError(f"image data is not a sequence of bytes ({exc})") from None


def _check_size(width: int, height: int, claim: str, max_pixels: int,
                max_size: Optional[tuple[int, int]] = None) -> None:
    """Refuse ``width x height`` beyond ``max_pixels`` or ``max_size`` (width, height);
    ``claim`` starts the message ("RVL header claims")."""
    if width <= 0 or height <= 0:
        raise ImageCodecError(f"{claim} {width}x{height}, an empty image")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageCodecError(f"{claim} {width}x{height} ({pixels} pixels), over the limit of "
                              f"{max_pixels} pixels")
    if max_size is not None and (width > max_size[0] or height > max_size[1]):
        raise ImageCodecError(f"{claim} {width}x{height}, larger than the largest allowed "
                              f"{max_size[0]}x{max_size[1]}")


def _rows(msg: Any, pixel_bytes: int, max_pixels: int,
          max_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """The pixel rows as a ``[height, width * pixel_bytes]`` uint8 view (step padding cut),
    after checking the size fields against the limits and the data."""
    encoding = msg.encoding
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageCodecError(f"{encoding} image has zero size ({width}x{height})")
    _check_size(width, height, f"{encoding} image is", max_pixels, max_size)
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


def decode_color(msg: Any, contiguous: bool = False, *,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """uint8 ``[H, W, 3]`` in RGB order from rgb8, bgr8, rgba8, bgra8 or mono8.

    By default a view of the message buffer (read-only in spirit); mono8 is broadcast to three
    channels. ``contiguous=True`` returns a C-contiguous array instead, converted by OpenCV in
    one pass (a copy unless the message already is unpadded rgb8); later OpenCV and ONNX
    Runtime calls on such an array avoid a slow element-wise copy of a strided view each.
    An image of more than ``max_pixels`` pixels is refused.
    """
    if contiguous:
        return _raw_color_image(msg, max_pixels).rgb()
    pixels = _raw_color_image(msg, max_pixels).pixels
    if pixels.ndim == 2:
        return np.broadcast_to(pixels[:, :, None], pixels.shape + (3,))
    return pixels[:, :, 2::-1] if COLOR_ENCODINGS[msg.encoding][1] else pixels[:, :, :3]


def _raw_color_image(msg: Any, max_pixels: int) -> ColorImage:
    """An Image's pixels as a view of its buffer (step padding cut), size checked."""
    encoding = msg.encoding
    if encoding not in COLOR_ENCODINGS:
        raise UnsupportedImageError(
            f"unsupported colour encoding '{encoding}' "
            f"(expected one of {', '.join(COLOR_ENCODINGS)})")
    channels = COLOR_ENCODINGS[encoding][0]
    rows = _rows(msg, channels, max_pixels)
    shape = (rows.shape[0], int(msg.width)) + ((channels,) if channels > 1 else ())
    return ColorImage(rows.reshape(shape), _TO_RGB.get(encoding))


def decode_depth(msg: Any, scale: Optional[float] = None, *, max_pixels: int = MAX_IMAGE_PIXELS,
                 max_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """float32 ``[H, W]`` in metres from 16UC1 or 32FC1; invalid pixels are 0.

    ``scale``: metres per stored unit; None = REP 118 (16UC1 millimetres: 0.001, 32FC1 metres:
    1.0); e.g. 0.0001 for a camera writing tenths of a millimetre. Invalid: 0, NaN, +-inf,
    negative, and 65535 in 16UC1 (the "no reading" value of many sensors). An image of more
    than ``max_pixels`` pixels, or wider or taller than ``max_size`` (width, height), is refused.
    """
    return _raw_depth_image(msg, scale, max_pixels, max_size).metres()


def _raw_depth_image(msg: Any, scale: Optional[float], max_pixels: int,
                     max_size: Optional[tuple[int, int]]) -> DepthImage:
    """An Image's depth values as a view of its buffer (a copy when not in this machine's
    byte order), size checked, with their conversion to metres."""
    encoding = msg.encoding
    if encoding not in DEPTH_ENCODINGS:
        raise UnsupportedImageError(
            f"unsupported depth encoding '{encoding}' "
            f"(expected one of {', '.join(DEPTH_ENCODINGS)})")
    kind, default_scale = DEPTH_ENCODINGS[encoding]
    scale = _check_scale(scale, default_scale)
    dtype = np.dtype((">" if msg.is_bigendian else "<") + kind)
    stored = _rows(msg, dtype.itemsize, max_pixels, max_size).view(dtype)
    if not dtype.isnative:
        stored = stored.astype(dtype.newbyteorder("="))
    if encoding == "16UC1":
        return DepthImage(stored, functools.partial(_depth_from_u16, scale=scale))
    return DepthImage(stored, functools.partial(_depth_from_f32, scale=scale))


def _depth_from_f32(stored: np.ndarray, scale: float) -> np.ndarray:
    # fmax returns a new array (the message buffer stays untouched) and turns NaN, -inf and
    # negative values into 0 in one pass; only +inf is left to clear.
    depth = np.fmax(stored, np.float32(0.0), dtype=np.float32)
    if scale != 1.0:
        depth = _scaled(depth, scale)
    depth[depth == np.inf] = 0.0
    return depth


def _check_scale(scale: Optional[float], default: float) -> float:
    if scale is None:
        return default
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ImageCodecError(f"depth scale must be a positive number of metres per unit, "
                              f"got {scale}")
    return scale


def _scaled(values: np.ndarray, scale: float) -> np.ndarray:
    """``values * scale`` as float32; a scale of 1/N divides by N, so that whole metres stay
    exact (2000 mm -> 2.0 m, where multiplying by 0.001 gives 2.0000002)."""
    inverse = 1.0 / scale
    if abs(inverse - round(inverse)) <= 1e-9 * inverse:
        return np.divide(values, float(round(inverse)), dtype=np.float32)
    return np.multiply(values, scale, dtype=np.float32)


def _depth_from_u16(raw: np.ndarray, scale: float) -> np.ndarray:
    depth = _scaled(raw, scale)  # 0 stays 0
    np.copyto(depth, 0.0, where=raw == DEPTH_16U_INVALID)
    return depth


def _default_image_class():
    from sensor_msgs.msg import Image  # rclpy only when it is really needed
    return Image


def _rosbags_header(msg_cls) -> Any:
    """A zero header for a ``rosbags`` Image class, from the same type store module."""
    module = sys.modules[msg_cls.__module__]
    time_cls = module.builtin_interfaces__msg__Time
    header_cls = module.std_msgs__msg__Header
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


# -- compressed images (image_transport's `compressed` and `compressedDepth` plugins) -----------
COMPRESSED_CODECS = ("jpeg", "png")  # the `compressed` plugin's formats this module decodes
DEPTH_CODECS = ("png", "rvl")  # the `compressedDepth` plugin's
# compressedDepth's ConfigHeader: int32 format (enum compressionFormat), float32 depthParam[2];
# little-endian, as on every machine ROS 2 runs on.
DEPTH_HEADER = struct.Struct("<iff")
DEPTH_HEADER_INV_DEPTH = 0  # compressionFormat::INV_DEPTH, the only value the plugin writes
RVL_SIZE = struct.Struct("<II")  # width, height before an RVL stream
# The compressedDepth publisher's defaults (parameters depth_max, depth_quantization, png_level).
DEPTH_MAX_M = 10.0
DEPTH_QUANTIZATION = 100.0
DEPTH_PNG_LEVEL = 9
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


@dataclasses.dataclass(frozen=True)
class CompressedFormat:
    """What a CompressedImage ``format`` string says."""

    encoding: str  # the original image's encoding; "" when the format does not name it
    codec: str  # "jpeg", "png" or "rvl"
    depth_header: bool  # compressedDepth: a 12-byte ConfigHeader precedes the payload


def parse_compressed_format(fmt: str) -> CompressedFormat:
    """Parse a CompressedImage ``format`` as image_transport's plugins write and read it.

    Raises ``UnsupportedImageError`` for anything else.
    """
    text = str(fmt).strip()
    encoding, sep, rest = text.partition(";")
    encoding, words = encoding.strip(), rest.split()
    if not sep:
        if text.lower() in COMPRESSED_CODECS:  # the `compressed` plugin before it named encodings
            return CompressedFormat("", text.lower(), False)
        if text in DEPTH_ENCODINGS:  # compressedDepth before it named its codec: PNG
            return CompressedFormat(text, "png", True)
    elif words and words[0] == "compressedDepth":
        # As the plugin's decoder: "compressedDepth" alone (older publishers) means PNG.
        codec = words[1] if len(words) > 1 else "png"
        if codec in DEPTH_CODECS:
            return CompressedFormat(encoding, codec, True)
    elif words and words[0] in COMPRESSED_CODECS and words[1:2] in ([], ["compressed"]):
        return CompressedFormat(encoding, words[0], False)
    raise UnsupportedImageError(
        f"unsupported compressed image format '{text}' (expected image_transport's "
        "'<encoding>; jpeg|png compressed <encoding>', '<encoding>; compressedDepth png|rvl', "
        "'jpeg' or 'png')")


def is_compressed(msg: Any) -> bool:
    """Whether ``msg`` is a CompressedImage (it has ``format`` and no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def compressed_kind(fmt: str) -> Optional[str]:
    """"color", "depth" or None (unsupported) for a CompressedImage ``format``."""
    try:
        parsed = parse_compressed_format(fmt)
    except UnsupportedImageError:
        return None
    if parsed.depth_header or parsed.encoding in DEPTH_ENCODINGS:
        return "depth"
    return "color"


def _imdecode(buf: np.ndarray, what: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    try:
        image = cv2.imdecode(buf, flags)
    except (cv2.error, MemoryError) as exc:  # an empty buffer fails an assertion, for one
        raise ImageCodecError(f"{what} does not decode ({' '.join(str(exc).split())})") from None
    if image is None:
        raise ImageCodecError(f"{what} does not decode ({buf.size} bytes of damaged or "
                              "unknown image data)")
    return image


# PNG and JPEG headers are read here (see _png_header for why), only as far as the size.
PNG_CHUNK = struct.Struct(">I4s")  # length, type; the data and a CRC-32 follow
PNG_IHDR = struct.Struct(">IIBBBBB")  # width, height, bit depth, colour type, 3 methods
# PNG colour type -> the bit depths it allows (PNG spec, table 11.1)
PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# SOF0..SOF15 start a frame, except DHT (C4), JPG (C8) and DAC (CC) in the same range.
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_LONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length


def _png_header(buf: np.ndarray, what: str) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) of a PNG whose chunk structure is whole.

    Why not let OpenCV say: it allocates the image as soon as it has read the header, bounded
    only by ``OPENCV_IO_MAX_IMAGE_PIXELS`` (2^30 pixels unless set in the environment before
    the first decode; one value for the whole process), so a few hundred bytes claiming
    30000x30000 cost gigabytes before the data is found short. The header read here lets every
    call have its own limit. Every chunk up to IEND must also be complete with a matching CRC:
    a cut or damaged file is refused in words instead of libpng printing its error on stderr.
    """
    data, offset, header = memoryview(buf), len(PNG_SIGNATURE), None
    if bytes(data[:offset]) != PNG_SIGNATURE:
        raise ImageCodecError(f"{what}: the image data is not a PNG")
    while True:
        if offset + 12 > len(data):
            raise ImageCodecError(f"{what} does not decode (PNG cut off after {len(data)} "
                                  "bytes, before its IEND chunk)")
        length, kind = PNG_CHUNK.unpack_from(data, offset)
        end = offset + 12 + length
        if end > len(data):
            raise ImageCodecError(f"{what} does not decode (PNG cut off after {len(data)} "
                                  f"bytes, inside a {length}-byte chunk {kind!r})")
        if zlib.crc32(data[offset + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            raise ImageCodecError(f"{what} does not decode (PNG chunk {kind!r} at byte "
                                  f"{offset} is damaged: its CRC does not match)")
        if header is None:
            if kind != b"IHDR" or length != PNG_IHDR.size:
                raise ImageCodecError(f"{what} does not decode (PNG without its IHDR header)")
            header = PNG_IHDR.unpack_from(data, offset + 8)
        if kind == b"IEND":
            break
        offset = end
    width, height, bits, colour, compression, filtering, interlace = header
    if (bits not in PNG_BIT_DEPTHS.get(colour, ()) or compression or filtering
            or interlace > 1):
        raise ImageCodecError(f"{what} does not decode (PNG header with bit depth {bits}, "
                              f"colour type {colour}, methods {compression}/{filtering}/"
                              f"{interlace})")
    return width, height, bits, colour


def _jpeg_size(buf: np.ndarray, what: str) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOF0..SOF15, baseline to progressive),
    read before OpenCV allocates the image (see ``_png_header``)."""
    data, offset = memoryview(buf), len(JPEG_SOI)
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise ImageCodecError(f"{what} does not decode (no JPEG marker at byte {offset})")
        marker = data[offset + 1]
        if marker == 0xFF or marker in JPEG_LONE_MARKERS:  # a fill byte, or no length
            offset += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if marker in JPEG_FRAME_MARKERS:
            if length < 8 or offset + 9 > len(data):
                raise ImageCodecError(f"{what} does not decode (damaged JPEG frame header)")
            height, width = struct.unpack_from(">HH", data, offset + 5)
            if height == 0:  # to be given later by a DNL marker, which libjpeg refuses
                raise ImageCodecError(f"{what} does not decode (JPEG frame of height 0)")
            return width, height
        if marker in (0xDA, 0xD9) or length < 2:  # a scan or the end before any frame
            break
        offset += 2 + length
    raise ImageCodecError(f"{what} does not decode (JPEG without a frame header)")


def _check_jpeg_complete(buf: np.ndarray, what: str) -> None:
    # Entropy-coded JPEG data never holds 0xFFD9 (0xFF is always stuffed), so an end-of-image
    # marker near the end means the file is whole; some encoders pad a few bytes after it.
    if JPEG_EOI not in bytes(buf[-32:]):
        raise ImageCodecError(f"{what}: JPEG without its end-of-image marker (cut off after "
                              f"{buf.size} bytes)")


def decode_compressed_color(msg: Any, contiguous: bool = True, *,
                            max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB from a CompressedImage written by image_transport's
    ``compressed`` plugin (JPEG or PNG; 1, 3 or 4 channels taken as grey, BGR, BGRA).

    Always a new C-contiguous array; ``contiguous`` is accepted for symmetry with
    ``decode_color``. An image of more than ``max_pixels`` pixels is refused from its header.
    """
    del contiguous  # a decoded image is always a fresh contiguous array
    return _compressed_color_image(msg, max_pixels).rgb()


def _compressed_color_image(msg: Any, max_pixels: int,
                            least_hw: Optional[tuple[int, int]] = None) -> ColorImage:
    """A CompressedImage decoded into OpenCV's channel order, its header checked first (a
    JPEG reduced as far as ``least_hw`` allows)."""
    fmt = parse_compressed_format(msg.format)
    what = f"compressed image '{msg.format}'"
    if fmt.depth_header or fmt.encoding in DEPTH_ENCODINGS:
        raise UnsupportedImageError(f"{what} is a depth image, not colour")
    buf = _as_bytes_array(msg.data)
    if buf.size == 0:
        raise ImageCodecError(f"{what} has no data")
    if bytes(buf[:2]) == JPEG_SOI:
        _check_jpeg_complete(buf, what)
        width, height = _jpeg_size(buf, what)
    elif bytes(buf[:8]) == PNG_SIGNATURE:
        width, height, bits, _ = _png_header(buf, what)
        if bits == 16:
            raise UnsupportedImageError(f"{what} holds a uint16 image; colour must be 8-bit")
    else:
        raise ImageCodecError(f"{what} does not decode (the data is neither a JPEG nor a PNG)")
    _check_size(width, height, f"{what}: header claims", max_pixels)
    flags = cv2.IMREAD_UNCHANGED
    if least_hw is not None and bytes(buf[:2]) == JPEG_SOI:
        flags = _jpeg_reduced_flags(height, width, least_hw)
    image = _imdecode(buf, what, flags)
    if image.dtype != np.uint8:
        raise UnsupportedImageError(f"{what} holds a {image.dtype.name} image; colour must be "
                                    "8-bit")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in _DECODED_TO_RGB:
        raise UnsupportedImageError(f"{what} has {channels} channels (expected 1, 3 or 4)")
    camera_hw = (height, width) if flags != cv2.IMREAD_UNCHANGED else None
    return ColorImage(image.reshape(image.shape[:2]) if channels == 1 else image,
                      _DECODED_TO_RGB[channels], camera_hw)


# libjpeg decodes at 1/n of the size for these n, ceil(size / n) pixels (IGNORE_ORIENTATION:
# the JPEG's pixels as stored, as IMREAD_UNCHANGED gives them).
_JPEG_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                 (2, cv2.IMREAD_REDUCED_COLOR_2))


def _jpeg_reduced_flags(height: int, width: int, least_hw: tuple[int, int]) -> int:
    """imdecode flags for the smallest reduced decoding at least ``least_hw`` in size."""
    for n, flags in _JPEG_REDUCED:
        if height // n >= least_hw[0] and width // n >= least_hw[1]:
            return flags | cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.IMREAD_UNCHANGED


# OpenCV decodes to grey, BGR or BGRA.
_DECODED_TO_RGB = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}


def decode_compressed_depth(msg: Any, scale: Optional[float] = None, *,
                            max_pixels: int = MAX_IMAGE_PIXELS,
                            max_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """float32 ``[H, W]`` metres (0 = invalid) from a CompressedImage written by
    image_transport's ``compressedDepth`` plugin (16UC1 or 32FC1; PNG or RVL), or a 16-bit PNG
    from the ``compressed`` plugin (``"16UC1; png compressed"``).

    ``scale`` as in ``decode_depth``: metres per stored unit of the original image; None =
    REP 118. Invalid: 0 and 65535 in 16UC1; quantized 0, non-finite or non-positive in 32FC1.
    An image of more than ``max_pixels`` pixels, or wider or taller than ``max_size`` (width,
    height), is refused from its header.
    """
    return _compressed_depth_image(msg, scale, max_pixels, max_size).metres()


def _compressed_depth_image(msg: Any, scale: Optional[float], max_pixels: int,
                            max_size: Optional[tuple[int, int]]) -> DepthImage:
    """A compressed depth image decoded to its stored values, its headers checked first."""
    fmt = parse_compressed_format(msg.format)
    what = f"compressed depth '{msg.format}'"
    if fmt.encoding not in DEPTH_ENCODINGS:
        raise UnsupportedImageError(
            f"{what}: unsupported depth encoding '{fmt.encoding}' (expected "
            f"{' or '.join(DEPTH_ENCODINGS)} with compressedDepth png or rvl)")
    if not fmt.depth_header and (fmt.encoding != "16UC1" or fmt.codec != "png"):
        raise UnsupportedImageError(f"{what}: a depth image must come as compressedDepth "
                                    "(or as a 16UC1 PNG)")
    _, default_scale = DEPTH_ENCODINGS[fmt.encoding]
    scale = _check_scale(scale, default_scale)
    buf = _as_bytes_array(msg.data)
    if buf.size == 0:
        raise ImageCodecError(f"{what} has no data")
    quant_a = quant_b = 0.0
    if fmt.depth_header:
        quant_a, quant_b = _depth_config(buf, fmt.encoding, what)
        buf = buf[DEPTH_HEADER.size:]
    if fmt.codec == "rvl":
        stored = _rvl_decode_image(buf, what, max_pixels, max_size)
    else:
        stored = _depth_png_decode(buf, what, max_pixels, max_size)
    if fmt.encoding == "16UC1":
        return DepthImage(stored, functools.partial(_depth_from_u16, scale=scale))
    return DepthImage(stored, functools.partial(_depth_from_inverse, quant=(quant_a, quant_b),
                                                scale=scale))


def _depth_from_inverse(stored: np.ndarray, quant: tuple[float, float], scale: float
                        ) -> np.ndarray:
    """compressedDepth's 32FC1: quantized inverse depth, decoded in float32 as the plugin
    does."""
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant[0]) / (stored.astype(np.float32) - np.float32(quant[1]))
    depth[(stored == 0) | ~np.isfinite(depth) | (depth <= 0)] = 0.0
    return depth if scale == 1.0 else _scaled(depth, scale)


def _depth_config(buf: np.ndarray, encoding: str, what: str) -> tuple[float, float]:
    """The quantization ``(a, b)`` from compressedDepth's 12-byte ConfigHeader, checked."""
    if buf.size <= DEPTH_HEADER.size:
        raise ImageCodecError(f"{what}: {buf.size} bytes, too short for the "
                              f"{DEPTH_HEADER.size}-byte compressedDepth header and an image")
    header_format, quant_a, quant_b = DEPTH_HEADER.unpack_from(buf)
    if header_format != DEPTH_HEADER_INV_DEPTH:
        hint = (" (the data starts with a PNG, but compressedDepth puts a 12-byte header "
                "first)" if bytes(buf[:8]) == PNG_SIGNATURE else "")
        raise ImageCodecError(f"{what}: bad compressedDepth header (format {header_format},"
                              f" expected {DEPTH_HEADER_INV_DEPTH}){hint}")
    if encoding == "32FC1" and not (np.isfinite(quant_a) and np.isfinite(quant_b)
                                    and quant_a > 0):
        raise ImageCodecError(f"{what}: bad compressedDepth header (depth quantization "
                              f"a={quant_a}, b={quant_b})")
    return quant_a, quant_b


def _depth_png_decode(buf: np.ndarray, what: str, max_pixels: int,
                      max_size: Optional[tuple[int, int]]) -> np.ndarray:
    """The uint16 image of a depth PNG, its header checked before decoding."""
    width, height, bits, colour = _png_header(buf, what)
    if bits != 16 or colour != 0:
        raise ImageCodecError(f"{what}: the PNG holds a {bits}-bit image of colour type "
                              f"{colour}, expected 16-bit grey")
    _check_size(width, height, f"{what}: PNG header claims", max_pixels, max_size)
    stored = _imdecode(buf, what)
    if stored.dtype != np.uint16 or stored.ndim != 2:
        raise ImageCodecError(f"{what}: the PNG holds a {stored.dtype.name} image with "
                              f"{1 if stored.ndim == 2 else stored.shape[2]} channels, "
                              "expected 16-bit grey")
    return stored


def claimed_size(msg: Any, kind: str, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) that a colour (``kind="color"``) or depth message claims, checked
    against its data and ``max_pixels`` without decoding: what a camera callback can afford.

    Raw images: encoding, size fields against the data. Compressed: the format string, the
    compressedDepth header, and the size in the JPEG frame header, the PNG IHDR chunk or the
    RVL header (a JPEG must also be whole). Decoding checks the rest.
    """
    if not is_compressed(msg):
        encodings = COLOR_ENCODINGS if kind == "color" else DEPTH_ENCODINGS
        if msg.encoding not in encodings:
            raise UnsupportedImageError(f"unsupported {'colour' if kind == 'color' else kind} "
                                        f"encoding '{msg.encoding}' (expected one of "
                                        f"{', '.join(encodings)})")
        pixel_bytes = (COLOR_ENCODINGS[msg.encoding][0] if kind == "color"
                       else np.dtype(DEPTH_ENCODINGS[msg.encoding][0]).itemsize)
        _rows(msg, pixel_bytes, max_pixels)
        return int(msg.width), int(msg.height)
    fmt = parse_compressed_format(msg.format)
    what = f"compressed {'image' if kind == 'color' else 'depth'} '{msg.format}'"
    buf = _as_bytes_array(msg.data)
    if buf.size == 0:
        raise ImageCodecError(f"{what} has no data")
    width, height = (_claimed_depth_size(buf, fmt, what) if kind == "depth"
                     else _claimed_color_size(buf, fmt, what))
    _check_size(width, height, f"{what}: header claims", max_pixels)
    return width, height


def _claimed_color_size(buf: np.ndarray, fmt: CompressedFormat, what: str) -> tuple[int, int]:
    if fmt.depth_header or fmt.encoding in DEPTH_ENCODINGS:
        raise UnsupportedImageError(f"{what} is a depth image, not colour")
    if bytes(buf[:2]) == JPEG_SOI:
        _check_jpeg_complete(buf, what)
        return _jpeg_size(buf, what)
    return _png_ihdr_size(buf, what)


def _claimed_depth_size(buf: np.ndarray, fmt: CompressedFormat, what: str) -> tuple[int, int]:
    if fmt.encoding not in DEPTH_ENCODINGS:
        raise UnsupportedImageError(f"{what}: unsupported depth encoding '{fmt.encoding}'")
    if fmt.depth_header:
        _depth_config(buf, fmt.encoding, what)
        buf = buf[DEPTH_HEADER.size:]
    if fmt.codec != "rvl":
        return _png_ihdr_size(buf, what)
    if buf.size < RVL_SIZE.size:
        raise ImageCodecError(f"{what}: RVL data too short for its size header")
    return RVL_SIZE.unpack_from(buf)


def _png_ihdr_size(buf: np.ndarray, what: str) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk alone (``_png_header`` walks every chunk)."""
    start = len(PNG_SIGNATURE)
    if bytes(buf[:start]) != PNG_SIGNATURE:
        raise ImageCodecError(f"{what} does not decode (the data is neither a JPEG nor a PNG)")
    if buf.size < start + 8 + PNG_IHDR.size or bytes(buf[start + 4:start + 8]) != b"IHDR":
        raise ImageCodecError(f"{what} does not decode (PNG without its IHDR header)")
    width, height = PNG_IHDR.unpack_from(buf, start + 8)[:2]
    return width, height


def color_image_from_message(msg: Any, *, max_pixels: int = MAX_IMAGE_PIXELS,
                             least_hw: Optional[tuple[int, int]] = None) -> ColorImage:
    """An Image's or CompressedImage's colour pixels, not yet converted to RGB (see
    ``camera_images``): a raw image stays a view of its buffer. A JPEG is decoded at 1/2, 1/4
    or 1/8 of its size where that is still at least ``least_hw`` (height, width) in both
    directions; the image keeps the JPEG's size as its ``camera_hw``."""
    if is_compressed(msg):
        return _compressed_color_image(msg, max_pixels, least_hw)
    return _raw_color_image(msg, max_pixels)


def depth_image_from_message(msg: Any, scale: Optional[float] = None, *,
                             max_pixels: int = MAX_IMAGE_PIXELS,
                             max_size: Optional[tuple[int, int]] = None) -> DepthImage:
    """An Image's or CompressedImage's depth values, not yet converted to metres (see
    ``camera_images``); arguments as in ``decode_depth``."""
    if is_compressed(msg):
        return _compressed_depth_image(msg, scale, max_pixels, max_size)
    return _raw_depth_image(msg, scale, max_pixels, max_size)


def decode_color_message(msg: Any, contiguous: bool = False, *,
                         max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """RGB from an Image or a CompressedImage (told apart by ``is_compressed``)."""
    if is_compressed(msg):
        return decode_compressed_color(msg, max_pixels=max_pixels)
    return decode_color(msg, contiguous=contiguous, max_pixels=max_pixels)


def decode_depth_message(msg: Any, scale: Optional[float] = None, *,
                         max_pixels: int = MAX_IMAGE_PIXELS,
                         max_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Metres from an Image or a CompressedImage (told apart by ``is_compressed``)."""
    if is_compressed(msg):
        return decode_compressed_depth(msg, scale, max_pixels=max_pixels, max_size=max_size)
    return decode_depth(msg, scale, max_pixels=max_pixels, max_size=max_size)


# -- RVL (Wilson 2017, "Fast Lossless Depth Image Compression"), as compressedDepth writes it --
# Values are variable-length codes of 4-bit nibbles (3 data bits, low bits first, the high bit
# says "more follows"), packed 8 to a little-endian 32-bit word from its top nibble down. The
# stream is (zeros, nonzeros, nonzeros zig-zag deltas to the previous nonzero pixel) repeated.
# Written with numpy rather than a per-pixel loop: only the runs are walked in Python.
RVL_MAX_BYTES_PER_PIXEL = 3  # a nonzero pixel's delta takes at most 6 nibbles; runs fewer
RVL_CHUNK_BYTES = 1 << 16  # stream bytes turned into values at a time (a few MiB of work)


def _rvl_decode_image(buf: np.ndarray, what: str, max_pixels: int = MAX_IMAGE_PIXELS,
                      max_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    if buf.size < RVL_SIZE.size:
        raise ImageCodecError(f"{what}: RVL data too short for its size header")
    width, height = RVL_SIZE.unpack_from(buf)
    stream = buf[RVL_SIZE.size:]
    count = width * height
    if count == 0 or count > 2**31 - 1:  # the plugin's bound (an int pixel count)
        raise ImageCodecError(f"{what}: RVL data reports an impossible size {width}x{height}")
    _check_size(width, height, f"{what}: RVL header claims", max_pixels, max_size)
    if stream.size > RVL_MAX_BYTES_PER_PIXEL * count + 16:
        raise ImageCodecError(f"{what}: RVL stream of {stream.size} bytes, more than a "
                              f"{width}x{height} image can take")
    return _rvl_decode(stream, count, what).reshape(height, width)


def _rvl_value_chunks(stream: np.ndarray, what: str) -> Iterator[np.ndarray]:
    """The stream's variable-length values as int64 arrays, a chunk of the stream at a time."""
    usable = stream.size - stream.size % 4
    carry = np.empty(0, np.uint8)  # the first nibbles of a value cut by a chunk's end
    for begin in range(0, usable, RVL_CHUNK_BYTES):
        # Nibbles in stream order: each little-endian word from its top byte down, high first.
        word_bytes = stream[begin:min(begin + RVL_CHUNK_BYTES, usable)].reshape(-1, 4)[:, ::-1]
        nibbles = np.empty(word_bytes.shape + (2,), np.uint8)
        np.right_shift(word_bytes, 4, out=nibbles[:, :, 0])
        np.bitwise_and(word_bytes, 0xF, out=nibbles[:, :, 1])
        nibbles = np.concatenate((carry, nibbles.reshape(-1)))
        ends = np.flatnonzero(nibbles < 8)  # the last nibble of each value (no "more" bit)
        carry = nibbles[ends[-1] + 1:] if ends.size else nibbles
        starts = np.concatenate(([0], ends[:-1] + 1)) if ends.size else ends
        lengths = ends - starts + 1
        longest = max(int(lengths.max(initial=0)), carry.size)
        if longest > 11:  # 33 bits: more than any count or delta needs
            raise ImageCodecError(f"{what}: damaged RVL stream (a value of {longest} nibbles)")
        data = nibbles & 7
        values = data[starts].astype(np.int64)
        longer = np.flatnonzero(lengths > 1)
        for k in range(1, int(lengths.max(initial=1))):  # most values are 1 or 2 nibbles long
            values[longer] |= data[starts[longer] + k].astype(np.int64) << (3 * k)
            longer = longer[lengths[longer] > k + 1]
        yield values


class _RvlValues:
    """An RVL stream's values, read in order and decoded only as far as they are read."""

    def __init__(self, stream: np.ndarray, what: str):
        self._chunks = _rvl_value_chunks(stream, what)
        self._chunk, self._at = np.empty(0, np.int64), 0

    def take(self, count: int) -> Optional[np.ndarray]:
        """The next ``count`` values, or None when the stream ends before them."""
        pieces = []
        while count > self._chunk.size - self._at:
            pieces.append(self._chunk[self._at:])
            count -= self._chunk.size - self._at
            self._chunk, self._at = next(self._chunks, None), 0
            if self._chunk is None:
                return None
        pieces.append(self._chunk[self._at:self._at + count])
        self._at += count
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _rvl_decode(stream: np.ndarray, count: int, what: str) -> np.ndarray:
    # The runs (zeros, nonzeros, deltas...) are walked in Python as their values are decoded,
    # so a stream that cannot fill the image fails before the rest of it is decoded, and the
    # image is allocated only once the runs are seen to fill it exactly. The encoder never
    # writes an empty pair, so each pair fills at least one pixel: at most ``count`` steps.
    values, runs, deltas, filled = _RvlValues(stream, what), [], [], 0
    while filled < count:
        pair = values.take(2)
        if pair is None:
            raise ImageCodecError(f"{what}: RVL stream ends after {filled} of {count} pixels")
        zeros, nonzeros = pair.tolist()
        filled += zeros
        if zeros + nonzeros == 0 or filled + nonzeros > count:
            problem = "an empty run" if zeros + nonzeros == 0 else f"runs overflow {count} pixels"
            raise ImageCodecError(f"{what}: damaged RVL stream ({problem})")
        run = values.take(nonzeros)
        if run is None:
            raise ImageCodecError(f"{what}: RVL stream ends after {filled} of {count} pixels")
        runs.append((filled, nonzeros))
        deltas.append(run)
        filled += nonzeros
    pixel_mask = np.zeros(count, bool)
    for first_pixel, nonzeros in runs:
        pixel_mask[first_pixel:first_pixel + nonzeros] = True
    zigzag = np.concatenate(deltas)
    out = np.zeros(count, np.uint16)
    out[pixel_mask] = np.cumsum((zigzag >> 1) ^ -(zigzag & 1)) & 0xFFFF
    return out


def _rvl_encode(pixels: np.ndarray) -> bytes:
    """RVL stream of a flat uint16 array, as the plugin's CompressRVL writes it."""
    nonzero = pixels != 0
    if pixels.size == 0:
        return b""
    edges = np.flatnonzero(np.diff(nonzero.view(np.int8))) + 1
    bounds = np.concatenate(([0], edges, [pixels.size]))
    runs = np.diff(bounds)
    if nonzero[0]:
        runs = np.concatenate(([0], runs))  # every pair starts with a (maybe empty) zero run
    if runs.size % 2:
        runs = np.concatenate((runs, [0]))  # a trailing zero run is followed by nonzeros = 0
    zeros, nonzeros = runs[0::2], runs[1::2]
    current = pixels[nonzero].astype(np.int64)
    deltas = np.diff(current, prepend=0)
    zigzag = (deltas << 1) ^ (deltas >> 63)
    # values: zeros_k, nonzeros_k, then the run's deltas, for each pair k
    offsets = 2 * np.arange(zeros.size) + np.concatenate(([0], np.cumsum(nonzeros)[:-1]))
    values = np.zeros(2 * zeros.size + int(nonzeros.sum()), np.int64)
    values[offsets], values[offsets + 1] = zeros, nonzeros
    keep = np.ones(values.size, bool)
    keep[offsets] = keep[offsets + 1] = False
    values[keep] = zigzag
    counts = 1 + sum((values >> (3 * k) > 0).astype(np.int64) for k in range(1, 11))
    value_index = np.repeat(np.arange(values.size), counts)
    position = np.arange(value_index.size) - np.repeat(np.cumsum(counts) - counts, counts)
    nibbles = (values[value_index] >> (3 * position)) & 7
    nibbles |= np.where(position < counts[value_index] - 1, 8, 0)
    nibbles = np.concatenate((nibbles, np.zeros(-nibbles.size % 8, np.int64)))
    words = (nibbles.reshape(-1, 8) << np.arange(28, -4, -4)).sum(axis=1)
    return words.astype("<u4").tobytes()


# -- encoders (tests, bench, player) --------------------------------------------------------
def _default_compressed_class():
    from sensor_msgs.msg import CompressedImage  # rclpy only when it is really needed
    return CompressedImage


def _compressed_message(msg_cls: Optional[type], header: Optional[Any], fmt: str,
                        data: bytes) -> Any:
    msg_cls = msg_cls or _default_compressed_class()
    if dataclasses.is_dataclass(msg_cls):  # rosbags message classes
        return msg_cls(header=header if header is not None else _rosbags_header(msg_cls),
                       format=fmt, data=np.frombuffer(data, np.uint8).copy())
    msg = msg_cls()
    if header is not None:
        msg.header = header
    msg.format = fmt
    buffer = array.array("B")
    buffer.frombytes(data)
    msg.data = buffer
    return msg


def _imencode(extension: str, image: np.ndarray, params: list[int]) -> bytes:
    ok, encoded = cv2.imencode(extension, image, params)
    if not ok:
        raise ImageCodecError(f"OpenCV could not encode a {image.dtype.name}"
                              f"{list(image.shape)} image as {extension[1:]}")
    return encoded.tobytes()


def encode_compressed_color(rgb: np.ndarray, fmt: str = "jpeg", header: Optional[Any] = None,
                            msg_cls: Optional[type] = None, quality: int = 90,
                            png_level: int = 1) -> Any:
    """A CompressedImage as image_transport's ``compressed`` plugin publishes an rgb8 image.

    ``rgb``: uint8 ``[H, W, 3]`` RGB (or ``[H, W]`` grey, written as mono8). Format
    ``"rgb8; jpeg compressed bgr8"`` or ``"rgb8; png compressed bgr8"``. ``quality`` is the JPEG
    quality, ``png_level`` the PNG compression level (the plugin's defaults: 95 and 1).
    ``msg_cls`` as in ``encode``.
    """
    if fmt not in COMPRESSED_CODECS:
        raise ImageCodecError(f"cannot compress as '{fmt}' (expected jpeg or png)")
    image = np.asarray(rgb)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3
                                                           and image.shape[2] == 3)):
        raise ImageCodecError(f"compressed colour needs a uint8 [H, W, 3] RGB or [H, W] array, "
                              f"got {image.dtype.name}{list(image.shape)}")
    if 0 in image.shape[:2]:
        raise ImageCodecError(f"image has zero size ({image.shape[1]}x{image.shape[0]})")
    if image.ndim == 3:
        image, text = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), "rgb8"
        target = "bgr8"
    else:
        text = target = "mono8"
    params = ([cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg"
              else [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    data = _imencode(".jpg" if fmt == "jpeg" else ".png", image, params)
    return _compressed_message(msg_cls, header, f"{text}; {fmt} compressed {target}", data)


def encode_compressed_depth(depth: np.ndarray, encoding: str = "16UC1",
                            header: Optional[Any] = None, msg_cls: Optional[type] = None,
                            depth_max: float = DEPTH_MAX_M,
                            depth_quantization: float = DEPTH_QUANTIZATION,
                            png_level: int = DEPTH_PNG_LEVEL, codec: str = "png") -> Any:
    """A CompressedImage as image_transport's ``compressedDepth`` plugin publishes a depth image.

    ``depth``: uint16 ``[H, W]`` millimetres for 16UC1, float32 ``[H, W]`` metres for 32FC1.
    Format ``"<encoding>; compressedDepth png"`` (or ``rvl``), data = the 12-byte header and
    the image, as the plugin writes them (parameters ``depth_max``, ``depth_quantization``,
    ``png_level`` with its defaults). Like the plugin, 16UC1 values beyond ``depth_max`` become
    0; 32FC1 is quantized to 16-bit inverse depth with ``a = z0 (z0 + 1)``,
    ``b = 1 - a / depth_max`` (``z0 = depth_quantization``), depths at or beyond ``depth_max``,
    NaN and non-positive ones becoming 0. Depths too near for 16 bits (below
    ``a / (65535 - b)``, 0.15 m with the defaults) are written as 0 too, where the plugin's
    float-to-integer conversion is undefined.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ImageCodecError(f"cannot compress depth as '{encoding}' (expected 16UC1 or 32FC1)")
    if codec not in DEPTH_CODECS:
        raise ImageCodecError(f"cannot compress depth with '{codec}' (expected png or rvl)")
    dtype = np.uint16 if encoding == "16UC1" else np.float32
    image = np.asarray(depth)
    if image.ndim != 2 or image.dtype != dtype:
        raise ImageCodecError(f"{encoding} needs a {np.dtype(dtype).name} [H, W] array, "
                              f"got {image.dtype.name}{list(image.shape)}")
    if 0 in image.shape:
        raise ImageCodecError(f"image has zero size ({image.shape[1]}x{image.shape[0]})")
    if encoding == "16UC1":
        stored = np.where(image > np.uint16(min(depth_max * 1000.0, 65535)), 0,
                          image).astype(np.uint16)
        header_bytes = DEPTH_HEADER.pack(DEPTH_HEADER_INV_DEPTH, 0.0, 0.0)
    else:
        z0, far = np.float32(depth_quantization), np.float32(depth_max)
        quant_a = np.float32(z0 * (z0 + np.float32(1.0)))
        quant_b = np.float32(np.float32(1.0) - quant_a / far)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inverse = quant_a / image + quant_b
        valid = (image > 0) & (image < far) & (inverse < 65536)
        stored = np.where(valid, inverse, 0).astype(np.uint16)  # truncation, as the C++ cast
        header_bytes = DEPTH_HEADER.pack(DEPTH_HEADER_INV_DEPTH, float(quant_a), float(quant_b))
    if codec == "png":
        payload = _imencode(".png", stored, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    else:
        height, width = stored.shape
        payload = RVL_SIZE.pack(width, height) + _rvl_encode(stored.reshape(-1))
    return _compressed_message(msg_cls, header, f"{encoding}; compressedDepth {codec}",
                               header_bytes + payload)


__all__ = ["ImageCodecError", "UnsupportedImageError", "decode_color", "decode_depth", "encode",
           "color_image_from_message", "depth_image_from_message", "CompressedFormat",
           "parse_compressed_format", "is_compressed", "compressed_kind",
           "decode_compressed_color", "decode_compressed_depth", "decode_color_message",
           "decode_depth_message", "encode_compressed_color", "encode_compressed_depth",
           "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "ENCODE_FORMATS", "MAX_IMAGE_PIXELS"]
