"""A synthetic RGB-D sequence, recorded as a ROS 2 bag, for demos and tests.

One scene of the project's synthetic world (``synthetic_world.SyntheticScene``, the world of
``cen-train synth`` too, so a model trained there segments this sequence): posters (colour
only), reliefs (depth only) and boxes (both) on a wall and a floor, here sliding sideways from
frame to frame, bouncing at the image borders, in front of a static camera. Class ids are
those of the training data: wall 0, floor 1, poster 2, relief 3, box 4.

``write_synthetic_sequence(path)`` writes it the way a camera driver records it: ``rgb8``
colour on ``/camera/color/image_raw`` and registered ``16UC1`` depth (millimetres, 0 = no
reading) on ``/camera/depth/image_raw``, with matching header stamps (depth jittered by up
to 3 ms, as two drivers' clocks would be) and the colour camera's intrinsics
(``sensor_msgs/CameraInfo``) on ``/camera/color/camera_info``, optionally the true labels
(mono8) on ``/camera/labels/ground_truth``.
``python -m cen_perception_dev.synthetic_sequence OUT_BAG`` does the same from the command line.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from .synthetic_world import SyntheticScene

COLOR_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_raw"
LABELS_TOPIC = "/camera/labels/ground_truth"
CAMERA_INFO_TOPIC = "/camera/color/camera_info"
COLOR_FRAME = "camera_color_optical_frame"
DEPTH_FRAME = "camera_depth_optical_frame"
# Nanoseconds since the epoch of the first frame: a fixed date so bags are reproducible.
START_STAMP_NS = 1_700_000_000 * 10**9

def write_synthetic_sequence(path: str | pathlib.Path, frames: int = 60, height: int = 120,
                             width: int = 160, rate_hz: float = 10.0, storage: str = "sqlite3",
                             seed: int = 0, ground_truth: bool = False) -> pathlib.Path:
    """Write a moving RGB-D scene as a new ROS 2 bag at ``path`` (which must not exist).

    Colour and depth messages share the frame's stamp up to a jitter of at most 3 ms; each
    is logged a few milliseconds after its stamp, as a recorder would. ``ground_truth`` adds
    the true labels (mono8, the colour image's header) on ``LABELS_TOPIC``. Returns ``path``.
    """
    # rosbags is only needed here, not for rendering
    from cen_perception.bags.recorded import CAMERA_INFO_TYPE, TYPESTORE, BagWriter, make_header
    from cen_perception.image_codec import encode

    CameraInfo = TYPESTORE.types[CAMERA_INFO_TYPE]

    if frames < 1 or height < 16 or width < 16 or rate_hz <= 0:
        raise ValueError("frames must be >= 1, height and width >= 16, rate_hz > 0")
    scene = SyntheticScene(seed, height, width)
    rng = np.random.default_rng([seed, 1])
    period_ns = int(round(1e9 / rate_hz))
    path = pathlib.Path(path)
    roi = TYPESTORE.types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    camera_info = dict(scene.camera_info_fields(), binning_x=0, binning_y=0, roi=roi)
    with BagWriter(path, storage) as writer:
        topics = [COLOR_TOPIC, DEPTH_TOPIC] + ([LABELS_TOPIC] if ground_truth else [])
        for topic in topics:
            writer.add_topic(topic)
        writer.add_topic(CAMERA_INFO_TOPIC, CAMERA_INFO_TYPE)
        for i in range(frames):
            stamp = START_STAMP_NS + i * period_ns
            depth_stamp = stamp + int(rng.integers(-3_000_000, 3_000_001))
            rgb, depth_mm, labels = scene.render(i, rng)
            color_header = make_header(stamp, COLOR_FRAME)
            writer.write(COLOR_TOPIC, stamp + 6_000_000,
                         encode(rgb, "rgb8", color_header, writer.image_class))
            writer.write(CAMERA_INFO_TOPIC, stamp + 6_000_000,
                         CameraInfo(header=color_header, **camera_info))
            writer.write(DEPTH_TOPIC, depth_stamp + 4_000_000,
                         encode(depth_mm, "16UC1", make_header(depth_stamp, DEPTH_FRAME),
                                writer.image_class))
            if ground_truth:
                writer.write(LABELS_TOPIC, stamp + 6_000_000,
                             encode(labels, "mono8", color_header, writer.image_class))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cen_perception_dev.synthetic_sequence",
        description="Write a synthetic RGB-D sequence (posters, reliefs and boxes sliding over "
                    "a wall and a floor) as a ROS 2 bag.")
    parser.add_argument("out_bag", type=pathlib.Path, help="bag to create (must not exist)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ground-truth", action="store_true",
                        help=f"also write the true labels on {LABELS_TOPIC}")
    args = parser.parse_args(argv)
    from cen_perception.bags.recorded import BagError

    try:
        write_synthetic_sequence(args.out_bag, args.frames, args.height, args.width, args.rate,
                                 args.storage, args.seed, args.ground_truth)
    except (BagError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.frames} RGB-D frames to {args.out_bag} ({args.storage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
