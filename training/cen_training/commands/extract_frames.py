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

import cv2
import numpy as np

from cen_perception.tools.pairing import BagError, add_pairing_arguments, check_pairing

from .. import CliError
from ..bags import bag_module
from ..io import check_new_dataset_folder

SPLIT_FILES = ("train.txt", "val.txt", "frames.csv", "classes.yaml")
MAX_DEPTH_MM = 65534  # 65535 reads back as "no measurement"


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


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres (0 = invalid) to uint16 millimetres, rounded to the nearest millimetre."""
    mm = np.rint(np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0)
    return np.clip(mm, 0, MAX_DEPTH_MM).astype(np.uint16)


def split_stems(stems: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val): the last ``val_fraction`` of the sequence is validation (at least one
    frame when the fraction is positive and there are two frames or more)."""
    n_val = int(round(len(stems) * val_fraction))
    if val_fraction > 0 and len(stems) >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(stems) - 1) if stems else 0
    return stems[:len(stems) - n_val], stems[len(stems) - n_val:]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

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
    stems: list[str] = []
    rows: list[str] = []
    depth_resized = 0
    try:
        with bag.RecordedBag(args.bag) as recorded:
            rgb_topic, depth_topic = recorded.resolve_rgbd_topics(args.rgb_topic,
                                                                  args.depth_topic)
            name = recorded.path.stem if recorded.path.is_file() else recorded.path.name
            for sub in ("rgb", "depth", "labels"):
                (out_dir / sub).mkdir(parents=True, exist_ok=True)
            total = recorded.topics[rgb_topic].count + recorded.topics[depth_topic].count
            with tqdm(total=total, unit="msg", desc="extracting") as bar:
                pairs = bag.rgbd_pairs(recorded, rgb_topic, depth_topic, slop=args.slop,
                                       counts=counts, on_message=lambda _: bar.update(1),
                                       depth_scale=args.depth_scale)
                for index, pair in enumerate(pairs):
                    if index % args.every:
                        continue
                    stem = f"{name}_{index:06d}"
                    depth = pair.depth
                    if depth.shape != pair.rgb.shape[:2]:
                        height, width = pair.rgb.shape[:2]
                        depth = cv2.resize(depth, (width, height),
                                           interpolation=cv2.INTER_NEAREST)
                        depth_resized += 1
                    _write_png(out_dir / "rgb" / f"{stem}.png",
                               cv2.cvtColor(np.ascontiguousarray(pair.rgb), cv2.COLOR_RGB2BGR))
                    _write_png(out_dir / "depth" / f"{stem}.png", depth_to_mm(depth))
                    stems.append(stem)
                    rows.append(f"{stem},{pair.rgb_stamp_ns},{pair.depth_stamp_ns}")
    except bag.BagError as exc:
        written = f" ({len(stems)} frames were written before)" if stems else ""
        raise CliError(f"{exc}{written}") from None

    if not stems:
        raise CliError(f"{args.bag}: no synchronized frames ({counts.rgb} colour, {counts.depth} "
                       f"depth messages); check the topics and --slop")
    train, val = split_stems(stems, args.val_fraction)
    (out_dir / "train.txt").write_text("".join(f"{s}\n" for s in train), encoding="utf-8")
    (out_dir / "val.txt").write_text("".join(f"{s}\n" for s in val), encoding="utf-8")
    (out_dir / "frames.csv").write_text(
        "stem,rgb_stamp_ns,depth_stamp_ns\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    if classes is not None:
        shutil.copyfile(args.classes, out_dir / "classes.yaml")

    print(f"{counts.pairs} pairs from {counts.rgb} colour ({rgb_topic}) and {counts.depth} "
          f"depth ({depth_topic}) messages; unmatched: {counts.unmatched_rgb} colour, "
          f"{counts.unmatched_depth} depth; bad messages: {counts.bad_rgb} colour, "
          f"{counts.bad_depth} depth")
    for problem in counts.problems[:1]:
        print(f"  first bad message: {problem}")
    if depth_resized:
        print(f"  depth resized to the colour size (nearest) in {depth_resized} frames")
    print(f"wrote {len(stems)} frames to {out_dir}: {len(train)} in train.txt, "
          f"{len(val)} in val.txt; label them into {out_dir / 'labels'} or import them with "
          "`cen-train import-labels`")
    return 0


def _write_png(path: pathlib.Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise CliError(f"{path}: could not write the image")
