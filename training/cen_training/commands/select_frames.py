"""``cen-train select-frames``: the frames of a recorded bag most worth labelling, pre-labelled.

Runs the current model over every synchronized RGB-D pair of the bag (the engine through
``cen_perception.engines``, as the node runs it; colour and depth topics may be compressed),
scores each frame by the model's uncertainty (``cen_training.retraining.selection``: softmax
entropy where the engine has logits, else 1 - mean confidence, over pixels with valid depth), and
keeps the ``--budget`` best, greedily by score, no two closer than ``--min-gap`` seconds. Writes::

    OUT_DIR/rgb/<stem>.png      colour, 8-bit            (the generic dataset layout)
    OUT_DIR/depth/<stem>.png    depth, 16-bit mm, at the colour size
    OUT_DIR/labels/<stem>.png   the model's labels (class ids): pre-labels to correct
    OUT_DIR/preview/<stem>.png  colour | labels in the model card's palette
    OUT_DIR/classes.yaml        the model card's class names and palette
    OUT_DIR/train.txt  val.txt  the picks in time order; val is the last part
    OUT_DIR/frames.csv          stem, colour and depth header stamps (ns)
    OUT_DIR/selection.csv       rank, stem, stamp_ns, score, score_kind, reason (best first)
    OUT_DIR/cvat/  cvat.zip     the pre-labels as CVAT "Segmentation mask 1.1" (upload the
                                zip as annotations of a task made from OUT_DIR/rgb/)

Stems are ``<bag name>_<pair index>`` as ``extract-frames`` names them. The bag is read twice
(scores, then the picked frames) and never written.
"""
from __future__ import annotations

import argparse
import csv
import pathlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from cen_perception.bags.pairing import BagError, add_pairing_arguments, check_pairing

from ..data.frames import write_frame_lists, write_png, write_rgbd_frame
from ..errors import CliError
from ..files import check_new_dataset_folder
from ..retraining.bag_pairs import BagPairs, bag_module, no_frames_message

OUTPUT_FILES = ("train.txt", "val.txt", "frames.csv", "selection.csv", "classes.yaml",
                "cvat.zip")
OUTPUT_DIRS = ("rgb", "depth", "labels", "preview", "cvat")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select-frames",
        help="pick the frames of a bag the current model is least sure of, with pre-labels",
        description="Run an engine over a ROS 2 bag's synchronized RGB-D pairs, score each "
                    "frame by the model's uncertainty over pixels with valid depth (entropy: "
                    "mean softmax entropy / ln C, when the engine has logits; confidence: "
                    "1 - mean confidence, when it has only a confidence output; an engine with "
                    "neither is refused), and write the --budget best, no two closer than "
                    "--min-gap seconds, in the generic dataset layout with the model's labels "
                    "as pre-labels (labels/, preview/, a CVAT 'Segmentation mask 1.1' export) "
                    "and a ranked selection.csv.")
    p.add_argument("bag", type=pathlib.Path, metavar="BAG")
    p.add_argument("out_dir", type=pathlib.Path, metavar="OUT_DIR")
    p.add_argument("--engine", required=True, type=pathlib.Path,
                   help="the current model: .onnx (ONNX Runtime) or a TensorRT engine")
    p.add_argument("--budget", required=True, type=int, metavar="N",
                   help="how many frames to pick")
    p.add_argument("--min-gap", type=float, default=1.0, metavar="S",
                   help="least time between two picks, in seconds of header stamp "
                        "(default %(default)s)")
    p.add_argument("--score", choices=("auto", "entropy", "confidence"), default="auto",
                   help="uncertainty score: entropy needs the engine's logits (export "
                        "--logits), confidence its confidence output (export --confidence); "
                        "auto takes entropy when it can (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the picks, the latest, listed in val.txt "
                        "(default %(default)s)")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"))
    p.add_argument("--no-progress", dest="progress", action="store_false")
    add_pairing_arguments(p)
    p.set_defaults(func=run)


def open_scorer(args: argparse.Namespace):
    """The engine and its scorer; every problem as one line."""
    from cen_perception.engines import EngineError, open_engine
    from cen_perception.model_card import ModelCardError

    from ..retraining.selection import UncertaintyScorer

    try:
        engine = open_engine(args.engine, backend=args.backend)
    except (EngineError, ModelCardError) as exc:
        raise CliError(str(exc)) from None
    try:
        return engine, UncertaintyScorer(engine, args.score, str(args.engine))
    except BaseException:
        engine.close()
        raise


@dataclass
class Scored:
    """One scored pair: its index in the bag's pairs, its stamps, its score (no labels)."""
    index: int
    rgb_stamp_ns: int
    depth_stamp_ns: int
    frame: Any


def score_only(scorer, pair):
    """The pair's score; its labels dropped (pass 1 keeps only scores and stamps)."""
    frame = scorer(pair.rgb, pair.depth)
    frame.labels = None
    return frame


def check_arguments(args: argparse.Namespace) -> None:
    if args.budget < 1:
        raise CliError(f"--budget must be >= 1, got {args.budget}")
    if args.min_gap < 0:
        raise CliError(f"--min-gap must be >= 0 seconds, got {args.min_gap}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise CliError(f"--val-fraction must lie in [0, 1), got {args.val_fraction}")
    try:
        check_pairing(args.slop, args.depth_scale)
    except BagError as exc:
        raise CliError(str(exc)) from None
    check_new_dataset_folder(args.out_dir, OUTPUT_FILES, OUTPUT_DIRS, "select")


def run(args: argparse.Namespace) -> int:
    from ..data.classes import ClassList
    from ..retraining.cvat import check_writable
    from ..retraining.selection import spread_picks

    check_arguments(args)
    bag = bag_module()
    out_dir: pathlib.Path = args.out_dir
    engine, scorer = open_scorer(args)
    card = engine.card
    classes = ClassList(names=list(card.class_names), palette=[list(c) for c in card.palette],
                        dataset_name=out_dir.name)
    try:
        check_writable(classes)  # the CVAT export would fail at the end otherwise
        with bag.RecordedBag(args.bag) as recorded:
            pairs = BagPairs(recorded, args, progress=args.progress)
            # Pass 1: score every pair (only scores and stamps are kept).
            counts = bag.PairCounts()
            scored = [Scored(index, pair.rgb_stamp_ns, pair.depth_stamp_ns,
                             score_only(scorer, pair))
                      for index, pair in pairs("scoring", counts)]
            if not scored:
                raise CliError(no_frames_message(args.bag, counts))
            picks = spread_picks([s.rgb_stamp_ns for s in scored],
                                 [s.frame.score for s in scored], args.budget, args.min_gap)
            ranked = [scored[i] for i in picks]
            # Pass 2: the picked frames again, written with their labels.
            labels = write_picked(pairs, ranked, scorer, out_dir, card.palette)
    except bag.BagError as exc:
        raise CliError(str(exc)) from None
    finally:
        engine.close()
    train, val = write_selection(out_dir, pairs, ranked, labels, classes, args.val_fraction)
    report(args, scorer.kind, pairs, counts, len(scored), ranked, train, val)
    return 0


def write_picked(pairs: BagPairs, ranked: list[Scored], scorer, out_dir: pathlib.Path,
                 palette) -> dict[int, np.ndarray]:
    """Colour, depth, labels and preview of the picked pairs; their labels by pair index."""
    wanted = {s.index for s in ranked}
    for sub in OUTPUT_DIRS[:4]:
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    labels_by_index = {}
    for index, pair in pairs("writing"):
        if index not in wanted:
            continue
        labels = scorer(pair.rgb, pair.depth).labels
        write_frame(out_dir, pairs.stem(index), pair.rgb, pair.depth, labels, palette)
        labels_by_index[index] = labels
        if len(labels_by_index) == len(wanted):
            break
    return labels_by_index


def write_selection(out_dir: pathlib.Path, pairs: BagPairs, ranked: list[Scored],
                    labels: dict[int, np.ndarray], classes,
                    val_fraction: float) -> tuple[list[str], list[str]]:
    """The lists (train, val, frames.csv), the ranked selection.csv, classes.yaml and the
    CVAT export of the picks; returns (train, val)."""
    from ..retraining.cvat import write_cvat_masks, zip_folder

    in_time = sorted(ranked, key=lambda s: s.index)
    train, val = write_frame_lists(
        out_dir, [(pairs.stem(s.index), s.rgb_stamp_ns, s.depth_stamp_ns) for s in in_time],
        val_fraction)
    with open(out_dir / "selection.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "stem", "stamp_ns", "score", "score_kind", "reason"])
        for rank, s in enumerate(ranked, start=1):
            writer.writerow([rank, pairs.stem(s.index), s.rgb_stamp_ns, f"{s.frame.score:.6f}",
                             s.frame.kind, s.frame.reason])
    classes.save(out_dir / "classes.yaml")
    write_cvat_masks(out_dir / "cvat",
                     ((pairs.stem(s.index), labels[s.index]) for s in in_time), classes)
    zip_folder(out_dir / "cvat", out_dir / "cvat.zip")
    return train, val


def report(args: argparse.Namespace, kind: str, pairs: BagPairs, counts, scored: int,
           ranked: list[Scored], train: list[str], val: list[str]) -> None:
    out_dir = args.out_dir
    print(f"scored {scored} pairs from {counts.rgb} colour ({pairs.rgb_topic}) and "
          f"{counts.depth} depth ({pairs.depth_topic}) messages by {kind} "
          f"({'mean softmax entropy / ln C' if kind == 'entropy' else '1 - mean confidence'} "
          "over pixels with valid depth)")
    if len(ranked) < args.budget:
        print(f"  --min-gap {args.min_gap:g} s left room for {len(ranked)} of the "
              f"{args.budget} frames asked for (picked greedily by score)")
    best, worst = ranked[0].frame.score, ranked[-1].frame.score
    print(f"picked {len(ranked)} frames, scores {best:.4f} .. {worst:.4f}, into {out_dir}: "
          f"{len(train)} in train.txt, {len(val)} in val.txt; ranked in selection.csv")
    print(f"pre-labels: {out_dir / 'labels'} (class ids), {out_dir / 'preview'} (pictures), "
          f"{out_dir / 'cvat.zip'} (CVAT 'Segmentation mask 1.1'); correct them, then "
          "`cen-train import-labels`")


def write_frame(out_dir: pathlib.Path, stem: str, rgb: np.ndarray, depth: np.ndarray,
                labels: np.ndarray, palette) -> None:
    """The colour, depth (mm, at the colour size), label and preview files of one frame."""
    from cen_perception.visualize import colorize

    bgr, _ = write_rgbd_frame(out_dir, stem, rgb, depth)
    write_png(out_dir / "labels" / f"{stem}.png", labels)
    write_png(out_dir / "preview" / f"{stem}.png", np.concatenate(
        [bgr, cv2.cvtColor(colorize(labels, palette), cv2.COLOR_RGB2BGR)], axis=1))
