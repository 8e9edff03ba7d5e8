"""Hostile camera messages for the decoder and node fuzz tests: every encoding and codec the
node takes, raw and compressed, each cut, corrupted, filled with random bytes or lying about its
size in its header."""
import struct
import zlib
from types import SimpleNamespace

import numpy as np

from cen_perception.image_codec import encode, encode_compressed_color, encode_compressed_depth


def raw_msg(encoding, height, width, step, data, is_bigendian=0):
    return SimpleNamespace(header=None, height=height, width=width, encoding=encoding,
                           is_bigendian=is_bigendian, step=step, data=data)


def compressed_msg(fmt, data):
    return SimpleNamespace(header=None, format=fmt, data=data)


def raw_fields(msg):
    """An rclpy Image as a plain object with ``bytes`` data (cheap to copy and alter)."""
    return raw_msg(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data),
                   msg.is_bigendian)


def rvl_words(values):
    """RVL stream of the given values: 4-bit codes, 8 to a little-endian word, top first."""
    nibbles = []
    for value in values:
        while True:
            nibbles.append((value & 7) | (8 if value >> 3 else 0))
            value >>= 3
            if not value:
                break
    nibbles += [0] * (-len(nibbles) % 8)
    words = [sum(n << (28 - 4 * i) for i, n in enumerate(nibbles[k:k + 8]))
             for k in range(0, len(nibbles), 8)]
    return struct.pack(f"<{len(words)}I", *words)


def png_with_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` with its IHDR width and height replaced, the chunk's CRC made to match."""
    ihdr = bytearray(png[12:29])  # type, then 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    return png[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def jpeg_frame_offset(jpeg: bytes) -> int:
    """Offset of the SOF0/SOF2 marker (found by walking the marker segments)."""
    offset = 2
    while jpeg[offset + 1] not in (0xC0, 0xC2):
        offset += 2 + int.from_bytes(jpeg[offset + 2:offset + 4], "big")
    return offset


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    at = jpeg_frame_offset(jpeg) + 5
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4:]


def smooth_rgb(height=24, width=32):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 7 % 256, y * 9 % 256, (x + y) * 3 % 256], -1).astype(np.uint8)


def good_messages():
    """(kind, message) of every raw encoding and compressed format the decoders take."""
    rgb = smooth_rgb()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    mm = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 37 % 9000).astype(np.uint16)
    mm[::5, ::3] = 0
    metres = np.where(mm > 300, mm / np.float32(1000), 0).astype(np.float32)
    raw = [encode(rgb, "rgb8"), encode(bgr, "bgr8"), encode(np.dstack([rgb, alpha]), "rgba8"),
           encode(np.dstack([bgr, alpha]), "bgra8"), encode(rgb[:, :, 0].copy(), "mono8"),
           encode(mm, "16UC1"), encode(metres, "32FC1")]
    compressed = [encode_compressed_color(rgb, "jpeg"), encode_compressed_color(rgb, "png"),
                  encode_compressed_color(rgb[:, :, 1].copy(), "jpeg"),
                  encode_compressed_color(rgb[:, :, 1].copy(), "png")]
    compressed += [encode_compressed_depth(image, encoding, codec=codec)
                   for image, encoding in ((mm, "16UC1"), (metres, "32FC1"))
                   for codec in ("png", "rvl")]
    return ([("raw", raw_fields(msg)) for msg in raw]
            + [("compressed", compressed_msg(msg.format, bytes(msg.data))) for msg in compressed])


LIES = (0, 1, 2, 23, 33, 300, 5000, 46000, 65535, 2**31 - 1, 2**32 - 1)


def hostile_raw(msg, rng):
    data, choice = msg.data, rng.integers(6)
    fields = dict(height=msg.height, width=msg.width, step=msg.step, data=data)
    if choice == 0:
        fields["data"] = data[:rng.integers(len(data))]
    elif choice == 1:
        fields["data"] = rng.bytes(rng.integers(0, 2 * len(data)))
    else:  # one size field lies, or two
        for name in rng.choice(["height", "width", "step"], 1 + (choice > 3), replace=False):
            fields[name] = int(rng.choice(LIES)) if rng.random() < 0.7 else \
                fields[name] + int(rng.integers(-3, 4))
    encoding = msg.encoding if rng.random() < 0.9 else str(rng.choice(["rgb8", "16UC1", "32FC1"]))
    return raw_msg(encoding, fields["height"], fields["width"], fields["step"], fields["data"],
                   int(rng.integers(2)))


def size_lie(data, rng):
    """``data`` with the size in its header (PNG IHDR, JPEG frame, RVL) replaced by a lie."""
    width, height = (int(rng.choice(LIES)) for _ in range(2))
    start = 12 if data[12:16] == b"\x89PNG" or data[:12] == bytes(12) else 0
    body = data[start:]
    if body[:4] == b"\x89PNG":
        lied = png_with_size(body, width, height)
        if rng.random() < 0.3:  # a lie that its CRC gives away
            lied = body[:16] + lied[16:29] + body[29:]
    elif body[:2] == b"\xff\xd8":
        lied = jpeg_with_size(body, width & 0xFFFF, height & 0xFFFF)
    else:
        lied = struct.pack("<II", width, height) + body[8:]
    return data[:start] + lied


def hostile_compressed(msg, rng):
    data, choice = msg.data, rng.integers(5)
    if choice == 0:
        hostile = rng.bytes(rng.integers(0, 400))
        if rng.random() < 0.5:  # behind a well-formed prefix, to get past the first checks
            hostile = data[:rng.choice([2, 8, 12, 20, 33])] + hostile
    elif choice == 1:
        hostile = data[:rng.integers(len(data))]
    elif choice == 2:
        at = rng.integers(len(data))
        hostile = data[:at] + bytes([rng.integers(256)]) + data[at + 1:]
    elif choice == 3:
        hostile = size_lie(data, rng)
    else:  # the compressedDepth header or the format lies
        hostile = rng.bytes(12) + data[12:] if msg.format.find("compressedDepth") > 0 else data
        return compressed_msg(str(rng.choice(["16UC1; compressedDepth rvl", "png", "jpeg",
                                              "32FC1; compressedDepth png"])), hostile)
    return compressed_msg(msg.format, hostile)


