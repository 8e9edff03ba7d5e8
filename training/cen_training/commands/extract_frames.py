"""``cen-train extract-frames``: synchronized RGB-D frames of a recorded bag, as a dataset to label.

Writes the generic dataset layout (see ``cen_training.data.datasets``)::

    OUT_DIR/rgb/<stem>.png     colour, 8-bit
    OUT_DIR/depth/<stem>.png   depth, 16-bit millimetres (0 = invalid), at the colour size
    OUT_DIR/labels/            left empty: label the frames, then `cen-train import-labels`
    OUT_DIR/train.txt  val.txt one stem per line; val is the last part of the sequence, so
                               validation frames are not near copies of training frames
    OUT_DIR/frames.csv         stem, colour and depth header stamps (ns), for tracing back
    OUT_DIR/classes.yaml       only when --classes names a class list

Stems are ``<bag name>_<pair index>``, the index counting every synchronized pair of the bag,
so the same frame gets the same stem whatever ``--every`` is.

Colour and depth topics may be ``sensor_msgs/Image`` or image_transport's compressed topics
(``CompressedImage``: JPEG/PNG colour, ``compressedDepth`` depth), read by their recorded type.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil

from cen_perception.bags.pairing import BagError, add_pairing_arguments, check_pairing

from ..data.frames import write_frame_lists, write_rgbd_frame
from ..errors import CliError
from ..files import check_new_dataset_folder
from ..retraining.bag_pairs import BagPairs, bag_module, no_frames_message

SPLIT_FILES = ("train.txt", "val.txt", "frames.csv", "classes.yaml")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract-frames",
        help="write a recorded bag's synchronized RGB-D frames as a dataset to label",
        description="Read a ROS 2 bag (sqlite3 or MCAP), pair colour and depth images by "
                    "header stamp, and write every N-th pair in the generic dataset layout "
                    "(rgb/, depth/ in 16-bit mm, empty labels/, train.txt, val.txt). Topics "
                    "may hold sensor_msgs/Image or CompressedImage (JPEG/PNG colour, "
                    "compressedDepth depth).")
    p.add_argument("bag", type=pathlib.Path, metavar="BAG")
    p.add_argument("out_dir", type=pathlib.Path, metavar="OUT_DIR")
    p.add_argument("--every", type=int, default=1, help="keep every N-th pair (default 1)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the frames, from the end, listed in val.txt "
                        "(default %(default)s)")
    p.add_argument("--classes", type=pathlib.Path,
                   help="class list (YAML) to copy in as classes.yaml")
    add_pairing_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.every < 1:
        raise CliError(f"--every must be >= 1, got {args.every}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise CliError(f"--val-fraction must lie in [0, 1), got {args.val_fraction}")
    classes = None
    if args.classes is not None:
        from ..data.classes import load_class_list
        classes = load_class_list(args.classes)  # checked before any file is written
    bag = bag_module()
    try:
        check_pairing(args.slop, args.depth_scale)
    except BagError as exc:
        raise CliError(str(exc)) from None
    out_dir: pathlib.Path = args.out_dir
    check_new_dataset_folder(out_dir, SPLIT_FILES, ("rgb", "depth", "labels"), "extract")

    counts = bag.PairCounts()
    frames: list[tuple[str, int, int]] = []  # stem, colour stamp, depth stamp
    depth_resized = 0
    try:
        with bag.RecordedBag(args.bag) as recorded:
            pairs = BagPairs(recorded, args)
            for sub in ("rgb", "depth", "labels"):
                (out_dir / sub).mkdir(parents=True, exist_ok=True)
            for index, pair in pairs("extracting", counts):
                if index % args.every:
                    continue
                stem = pairs.stem(index)
                depth_resized += write_rgbd_frame(out_dir, stem, pair.rgb, pair.depth)[1]
                frames.append((stem, pair.rgb_stamp_ns, pair.depth_stamp_ns))
    except bag.BagError as exc:
        written = f" ({len(frames)} frames were written before)" if frames else ""
        raise CliError(f"{exc}{written}") from None

    if not frames:
        raise CliError(no_frames_message(args.bag, counts))
    train, val = write_frame_lists(out_dir, frames, args.val_fraction)
    if classes is not None:
        shutil.copyfile(args.classes, out_dir / "classes.yaml")

    print(f"{counts.pairs} pairs from {counts.rgb} colour ({pairs.rgb_topic}) and {counts.depth} "
          f"depth ({pairs.depth_topic}) messages; unmatched: {counts.unmatched_rgb} colour, "
          f"{counts.unmatched_depth} depth; bad messages: {counts.bad_rgb} colour, "
          f"{counts.bad_depth} depth")
    for problem in counts.problems[:1]:
        print(f"  first bad message: {problem}")
    if depth_resized:
        print(f"  depth resized to the colour size (nearest) in {depth_resized} frames")
    print(f"wrote {len(frames)} frames to {out_dir}: {len(train)} in train.txt, "
          f"{len(val)} in val.txt; label them into {out_dir / 'labels'} or import them with "
          "`cen-train import-labels`")
    return 0

