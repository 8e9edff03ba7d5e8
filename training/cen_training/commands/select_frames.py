"""``cen-train select-frames``: the frames of a recorded bag most worth labelling, pre-labelled.

Runs the current model over every synchronized RGB-D pair of the bag (the engine through
``cen_perception.engines``, as the node runs it; colour and depth topics may be compressed),
scores each frame by the model's uncertainty (``cen_training.selection``: softmax entropy
where the engine has logits, else 1 - mean confidence, over pixels with valid depth), and keeps
the ``--budget`` best, greedily by score, no two closer than ``--min-gap`` seconds. Writes::

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

import cv2
import numpy as np

from cen_perception.tools.pairing import BagError, add_pairing_arguments, check_pairing

from .. import CliError
from ..bags import bag_module
from ..io import check_new_dataset_folder
from .extract_frames import depth_to_mm, split_stems

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

    from ..selection import UncertaintyScorer

    try:
        engine = open_engine(args.engine, backend=args.backend)
    except (EngineError, ModelCardError) as exc:
        raise CliError(str(exc)) from None
    try:
        return engine, UncertaintyScorer(engine, args.score, str(args.engine))
    except BaseException:
        engine.close()
        raise


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.classes import ClassList
    from ..data.cvat import check_writable, write_cvat_masks, zip_folder
    from ..selection import spread_picks

    if args.budget < 1:
        raise CliError(f"--budget must be >= 1, got {args.budget}")
    if args.min_gap < 0:
        raise CliError(f"--min-gap must be >= 0 seconds, got {args.min_gap}")
    if not 0.0 <= args.val_fraction < 1.0:
        raise CliError(f"--val-fraction must lie in [0, 1), got {args.val_fraction}")
    bag = bag_module()
    try:
        check_pairing(args.slop, args.depth_scale)
    except BagError as exc:
        raise CliError(str(exc)) from None
    out_dir: pathlib.Path = args.out_dir
    check_new_dataset_folder(out_dir, OUTPUT_FILES, OUTPUT_DIRS, "select")
    engine, scorer = open_scorer(args)
    card = engine.card
    classes = ClassList(names=list(card.class_names), palette=[list(c) for c in card.palette],
                        dataset_name=out_dir.name)
    try:
        check_writable(classes)  # the CVAT export would fail at the end otherwise
        with bag.RecordedBag(args.bag) as recorded:
            rgb_topic, depth_topic = recorded.resolve_rgbd_topics(args.rgb_topic,
                                                                  args.depth_topic)
            name = recorded.path.stem if recorded.path.is_file() else recorded.path.name
            total = recorded.topics[rgb_topic].count + recorded.topics[depth_topic].count
            counts = bag.PairCounts()

            def pairs(desc: str, pair_counts):
                bar = tqdm(total=total, unit="msg", desc=desc, disable=not args.progress)
                try:
                    yield from enumerate(bag.rgbd_pairs(
                        recorded, rgb_topic, depth_topic, slop=args.slop, counts=pair_counts,
                        on_message=lambda _: bar.update(1), depth_scale=args.depth_scale))
                finally:
                    bar.close()

            # Pass 1: score every pair (only scores and stamps are kept).
            scored = []  # (pair index, rgb stamp, depth stamp, FrameScore without labels)
            for index, pair in pairs("scoring", counts):
                frame = scorer(pair.rgb, pair.depth)
                frame.labels = None
                scored.append((index, pair.rgb_stamp_ns, pair.depth_stamp_ns, frame))
            if not scored:
                raise CliError(f"{args.bag}: no synchronized frames ({counts.rgb} colour, "
                               f"{counts.depth} depth messages); check the topics and --slop")
            picks = spread_picks([s[1] for s in scored], [s[3].score for s in scored],
                                 args.budget, args.min_gap)
            wanted = {scored[i][0]: rank for rank, i in enumerate(picks)}

            # Pass 2: the picked frames again, written with their labels.
            for sub in OUTPUT_DIRS[:4]:
                (out_dir / sub).mkdir(parents=True, exist_ok=True)
            labels_by_stem = {}
            for index, pair in pairs("writing", None):
                if index not in wanted:
                    continue
                stem = f"{name}_{index:06d}"
                labels = scorer(pair.rgb, pair.depth).labels
                write_frame(out_dir, stem, pair.rgb, pair.depth, labels, card.palette)
                labels_by_stem[stem] = labels
                if len(labels_by_stem) == len(wanted):
                    break
    except bag.BagError as exc:
        raise CliError(str(exc)) from None
    finally:
        engine.close()

    ranked = [scored[i] for i in picks]
    stems = {entry[0]: f"{name}_{entry[0]:06d}" for entry in ranked}
    in_time = [stems[e[0]] for e in sorted(ranked, key=lambda e: e[0])]
    train, val = split_stems(in_time, args.val_fraction)
    (out_dir / "train.txt").write_text("".join(f"{s}\n" for s in train), encoding="utf-8")
    (out_dir / "val.txt").write_text("".join(f"{s}\n" for s in val), encoding="utf-8")
    (out_dir / "frames.csv").write_text(
        "stem,rgb_stamp_ns,depth_stamp_ns\n" + "".join(
            f"{stems[e[0]]},{e[1]},{e[2]}\n" for e in sorted(ranked, key=lambda e: e[0])),
        encoding="utf-8")
    with open(out_dir / "selection.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "stem", "stamp_ns", "score", "score_kind", "reason"])
        for rank, (index, stamp, _, frame) in enumerate(ranked, start=1):
            writer.writerow([rank, stems[index], stamp, f"{frame.score:.6f}", frame.kind,
                             frame.reason])
    classes.save(out_dir / "classes.yaml")
    write_cvat_masks(out_dir / "cvat", ((s, labels_by_stem[s]) for s in in_time), classes)
    zip_folder(out_dir / "cvat", out_dir / "cvat.zip")

    kind = scorer.kind
    print(f"scored {len(scored)} pairs from {counts.rgb} colour ({rgb_topic}) and "
          f"{counts.depth} depth ({depth_topic}) messages by {kind} "
          f"({'mean softmax entropy / ln C' if kind == 'entropy' else '1 - mean confidence'} "
          "over pixels with valid depth)")
    if len(picks) < args.budget:
        print(f"  --min-gap {args.min_gap:g} s left room for {len(picks)} of the "
              f"{args.budget} frames asked for (picked greedily by score)")
    best, worst = ranked[0][3].score, ranked[-1][3].score
    print(f"picked {len(picks)} frames, scores {best:.4f} .. {worst:.4f}, into {out_dir}: "
          f"{len(train)} in train.txt, {len(val)} in val.txt; ranked in selection.csv")
    print(f"pre-labels: {out_dir / 'labels'} (class ids), {out_dir / 'preview'} (pictures), "
          f"{out_dir / 'cvat.zip'} (CVAT 'Segmentation mask 1.1'); correct them, then "
          "`cen-train import-labels`")
    return 0


def write_frame(out_dir: pathlib.Path, stem: str, rgb: np.ndarray, depth: np.ndarray,
                labels: np.ndarray, palette) -> None:
    """The colour, depth (mm, at the colour size), label and preview files of one frame."""
    from cen_perception.visualize import colorize

    height, width = rgb.shape[:2]
    if depth.shape != (height, width):
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    preview = np.concatenate([bgr, cv2.cvtColor(colorize(labels, palette), cv2.COLOR_RGB2BGR)],
                             axis=1)
    for path, image in ((out_dir / "rgb" / f"{stem}.png", bgr),
                        (out_dir / "depth" / f"{stem}.png", depth_to_mm(depth)),
                        (out_dir / "labels" / f"{stem}.png", labels),
                        (out_dir / "preview" / f"{stem}.png", preview)):
        if not cv2.imwrite(str(path), image):
            raise CliError(f"{path}: could not write the image")
