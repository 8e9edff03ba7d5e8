"""``cen-perception-decode-costs``: what decoding a compressed camera pair costs, step by step.

A frame of the synthetic world at each ``--size``, compressed as image_transport's plugins
publish it (``compressed`` JPEG colour, ``compressedDepth`` 16-bit PNG depth), decoded the way
the node does and the ways it could: libjpeg's reduced (DCT-scaled) decoding, and the PNG
taken apart into its two costs, inflating the zlib stream (the standard library's zlib, and
ISA-L or libdeflate when ``isal`` or ``imagecodecs`` is installed) and undoing the row
filters in numpy; and the same depth as RVL, the plugin's other format. Each figure is the
fastest of ``--repeat`` runs, in milliseconds, on one core with nothing else running; the
node decodes colour and depth side by side while the model runs.

Example: ``cen-perception-decode-costs --size 1280x720 1920x1080``.
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from typing import Callable, Optional

import cv2
import numpy as np

from cen_perception.errors import run_command
from cen_perception.image_codec import (
    DEPTH_PNG_LEVEL,
    color_image_from_message,
    depth_image_from_message,
    encode_compressed_color,
    encode_compressed_depth,
)

from .errors import DevToolError
from .node_bench import format_table, synthetic_frame
from .transport_check import cpu_model, parse_size

NETWORK_INPUT_HW = (256, 320)   # the make demo model's input
COMPRESSED_DEPTH_HEADER = 12    # bytes before the PNG in a compressedDepth message
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DecodeCostError(DevToolError):
    """A measurement that cannot be made; the message is one line."""


def fastest_ms(work: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def png_stream(png: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, zlib stream) of a non-interlaced grey PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise DecodeCostError("not a PNG")
    offset, header, idat = len(PNG_SIGNATURE), None, []
    while offset + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[offset:offset + 8])
        body = png[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        offset += 12 + length
    if header is None or header[3] != 0 or header[6] != 0:
        raise DecodeCostError("expected a non-interlaced grey PNG")
    width, height, bit_depth = header[:3]
    return width, height, bit_depth // 8, b"".join(idat)


FILTER_NAMES = ("None", "Sub", "Up", "Average", "Paeth")


def filter_counts(rows: np.ndarray) -> str:
    """How many rows use each PNG filter: "Sub 300, Paeth 420"."""
    kinds, counts = np.unique(rows[:, 0], return_counts=True)
    return ", ".join(f"{FILTER_NAMES[k] if k < len(FILTER_NAMES) else k} {n}"
                     for k, n in zip(kinds.tolist(), counts.tolist()))


def unfilter_sub(rows: np.ndarray, height: int, width: int, pixel_bytes: int) -> np.ndarray:
    """PNG rows of the Sub filter, unfiltered: a running sum (mod 256) of each byte lane
    along the row. Up, Average and Paeth rows depend on the row above, pixel by pixel:
    numpy has no vector form of those."""
    lanes = rows[:, 1:].reshape(height, width, pixel_bytes)
    return np.cumsum(lanes, axis=1, dtype=np.uint8)


def optional_inflaters() -> dict[str, Callable[[bytes, int], bytes]]:
    """Faster inflaters that are installed: (stream, inflated size) -> bytes."""
    found = {}
    try:
        from isal import isal_zlib
        found["inflate, ISA-L (isal)"] = lambda stream, size: isal_zlib.decompress(stream)
    except ImportError:
        pass
    try:
        import imagecodecs
        found["inflate, libdeflate (imagecodecs)"] = (
            lambda stream, size: imagecodecs.deflate_decode(stream, out=size))
    except ImportError:
        pass
    return found


def jpeg_rows(bgr: np.ndarray, repeat: int) -> dict[str, str]:
    msg = encode_compressed_color(bgr[:, :, ::-1], "jpeg")
    data = np.frombuffer(bytes(msg.data), np.uint8)
    full = cv2.imdecode(data, cv2.IMREAD_COLOR)
    half = cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_2)
    size = NETWORK_INPUT_HW[::-1]
    difference = np.abs(cv2.resize(full, size).astype(np.int16)
                        - cv2.resize(half, size).astype(np.int16))
    return {
        "JPEG colour, the node's decoder":
            f"{fastest_ms(lambda: color_image_from_message(msg), repeat):.2f}",
        "JPEG colour, reduced to 1/2":
            f"{fastest_ms(lambda: cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_2), repeat):.2f}",
        "  network input, reduced vs full: mean (max) difference":
            f"{difference.mean():.1f} ({difference.max()})",
    }


def png_rows(depth_mm: np.ndarray, repeat: int) -> dict[str, str]:
    msg = encode_compressed_depth(depth_mm, "16UC1")
    png = bytes(msg.data)[COMPRESSED_DEPTH_HEADER:]
    width, height, pixel_bytes, stream = png_stream(png)
    inflated = np.frombuffer(zlib.decompress(stream), np.uint8).reshape(height, -1)
    encoded = np.frombuffer(png, np.uint8)
    rows = {
        "PNG depth, the node's decoder":
            fastest_ms(lambda: depth_image_from_message(msg, None), repeat),
        "PNG depth, cv2.imdecode alone":
            fastest_ms(lambda: cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED), repeat),
        "inflate, zlib (standard library)": fastest_ms(lambda: zlib.decompress(stream), repeat),
    }
    for name, inflate in optional_inflaters().items():
        if inflate(stream, inflated.size) != inflated.tobytes():
            raise DecodeCostError(f"{name} does not give the PNG's rows back")
        rows[name] = fastest_ms(lambda inflate=inflate: inflate(stream, inflated.size), repeat)
    # The Sub rows alone, as if every row were Sub: what a numpy decoder would spend at best.
    rows["unfilter, numpy, every row as Sub"] = fastest_ms(
        lambda: unfilter_sub(inflated, height, width, pixel_bytes), repeat)
    rvl = encode_compressed_depth(depth_mm, "16UC1", codec="rvl")
    rows["RVL depth (compressedDepth format rvl), the node's decoder"] = fastest_ms(
        lambda: depth_image_from_message(rvl, None), repeat)
    return {"PNG row filters (compressedDepth's default level "
            f"{DEPTH_PNG_LEVEL})": filter_counts(inflated),
            **{name: f"{ms:.2f}" for name, ms in rows.items()}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cen-perception-decode-costs",
        description="Time the decoding of a compressed camera pair (JPEG colour, "
                    "compressedDepth PNG depth) step by step, and the alternatives.")
    parser.add_argument("--size", nargs="+", default=["1280x720", "1920x1080"], metavar="WxH",
                        help="camera sizes (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=20, metavar="N",
                        help="runs per figure; the fastest is shown (default %(default)s)")
    return parser


def camera_size(text: str) -> tuple[int, int]:
    """``--size`` as (width, height), at least 8x8."""
    width, height = parse_size(text)
    if width < 8 or height < 8:
        raise DecodeCostError(f"--size {text}: at least 8x8")
    return width, height


def run(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise DecodeCostError(f"--repeat must be at least 1, got {args.repeat}")
    sizes = [camera_size(text) for text in args.size]
    columns: list[dict[str, str]] = []
    for width, height in sizes:
        bgr, depth_mm = synthetic_frame(height, width)
        columns.append({**jpeg_rows(bgr, args.repeat), **png_rows(depth_mm, args.repeat)})
    names = list(dict.fromkeys(name for column in columns for name in column))
    header = ["ms (fastest of %d)" % args.repeat] + [f"{w}x{h}" for w, h in sizes]
    rows = [[name] + [column.get(name, "-") for column in columns] for name in names]
    print(format_table(f"{cpu_model()}, OpenCV {cv2.__version__}", header, rows))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("cen-perception-decode-costs", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
