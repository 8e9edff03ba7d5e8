"""``cen-train compare``: an old and a new model side by side, and a gate for the new one.

Per-class IoU, mIoU, pixel and mean accuracy of both on one split, median latency on this
machine with the same threads, how often they agree, and a picture of the frames where they
differ most (rgb | old | new | ground truth); ``OUT/report.md``, ``report.json`` and
``differences.png``. Exit status 0 when NEW passes the gate (its mIoU at least OLD's minus
``--max-drop`` points), 1 when it does not, 2 on an error. See
``cen_training.retraining.comparison``.
"""
from __future__ import annotations

import os
import pathlib

from ..errors import EXIT_OK, EXIT_REFUSED, CliError
from .eval import add_split_arguments, open_split
from .help_format import HelpFormatter

GATE_FAILED = EXIT_REFUSED


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare two models on a dataset and gate the new one on its mIoU",
        description="Score OLD and NEW (checkpoints .pt, or engine files: .onnx in fp32, fp16 "
                    "or INT8, run through cen_perception's engine as on the robot, or TensorRT "
                    "engines) on one split: per-class IoU, mIoU, pixel accuracy, median "
                    "latency here (same threads, the two in turns), label agreement, and the "
                    "frames where they differ most. Writes OUT/report.md, report.json and "
                    "differences.png. Exit status 1 when NEW's mIoU is below OLD's by more "
                    "than --max-drop points, 0 when it is not.",
        formatter_class=HelpFormatter)
    p.add_argument("old", type=pathlib.Path, metavar="OLD")
    p.add_argument("new", type=pathlib.Path, metavar="NEW")
    add_split_arguments(p)
    p.add_argument("--old-class-map", type=pathlib.Path, metavar="MAP.yaml",
                   help="map OLD's predictions into the data's classes (an OLD trained on "
                        "other classes)")
    p.add_argument("--new-class-map", type=pathlib.Path, metavar="MAP.yaml",
                   help="map NEW's predictions into the data's classes")
    p.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                   help="largest mIoU drop (percentage points) NEW may show against OLD; "
                        "negative: NEW must gain that much")
    p.add_argument("--out", required=True, type=pathlib.Path, metavar="OUT",
                   help="folder for report.md, report.json and differences.png")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both models (PyTorch and ONNX Runtime) [default: every "
                        "core]")
    p.add_argument("--pictures", type=int, default=4,
                   help="frames in differences.png")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"),
                   help="for engine files")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..retraining.comparison import (
        Side,
        compare,
        gate,
        open_predictor,
        prediction_map,
        write_report,
    )

    threads = args.threads or os.cpu_count() or 1
    if threads < 1 or args.pictures < 0:
        raise CliError("--threads must be >= 1 and --pictures >= 0")
    torch.set_num_threads(threads)
    dataset = open_split(args)
    sides = []
    try:
        for role, path, map_path in (("old", args.old, args.old_class_map),
                                     ("new", args.new, args.new_class_map)):
            predictor = open_predictor(path, threads, args.backend)
            sides.append(Side(role, path, predictor))
            sides[-1].class_map = prediction_map(role, predictor, map_path, dataset.classes)
        report = compare(sides, dataset, pictures=args.pictures, progress=args.progress)
    finally:
        for side in sides:
            side.predictor.close()
    verdict = gate(report, args.max_drop)
    written = write_report(report, verdict, args.out, threads, dataset.classes.palette)

    for role in ("old", "new"):
        side = report[role]
        s, latency = side["scores"], side["latency_ms"]["median"]
        print(f"{role.upper():>3} {side['path']} ({side['kind']}): mIoU {s['miou']:6.2f}  "
              f"pixel acc {s['pixel_acc']:6.2f}  latency {latency:.1f} ms (median)")
    print(f"agreement {report['agreement']:.2f}% of pixels; report: "
          f"{', '.join(str(p) for p in written)}")
    change, allowed = verdict["miou_change"], verdict["max_drop"]
    if verdict["passed"]:
        print(f"PASS: NEW's mIoU {change:+.2f} points against OLD (allowed drop {allowed:g})")
        return EXIT_OK
    print(f"FAIL: NEW's mIoU {change:+.2f} points against OLD, more than the allowed drop of "
          f"{allowed:g}")
    return GATE_FAILED
