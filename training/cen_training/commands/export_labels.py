"""``cen-train export-labels``: a dataset's labels as a CVAT "Segmentation mask 1.1" export.

For correcting labels (or pre-labels) in CVAT: make a task from ``DIR/rgb/``, then upload
``OUT.zip`` as its annotations in the "Segmentation mask 1.1" format; export the task in the
same format when done and bring it back with ``cen-train import-labels DIR export.zip
--overwrite``. The layout and its rules are in ``cen_training.retraining.cvat``;
``select-frames`` writes the same export for its pre-labels.
"""
from __future__ import annotations

import argparse
import pathlib

from ..errors import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-labels",
        help="write a dataset's labels as a CVAT 'Segmentation mask 1.1' export (folder + zip)",
        description="Write the labels of a generic-layout dataset (every frame of its split "
                    "lists that has a label file) as colour masks in CVAT's 'Segmentation mask "
                    "1.1' layout (labelmap.txt from classes.yaml, ImageSets/Segmentation/"
                    "default.txt, SegmentationClass/, SegmentationObject/), and OUT.zip to "
                    "upload into CVAT. import-labels reads such an export back.")
    p.add_argument("data", type=pathlib.Path, metavar="DIR", help="dataset folder (generic layout)")
    p.add_argument("out", type=pathlib.Path, metavar="OUT", help="new folder for the export; "
                   "OUT.zip is written beside it")
    p.add_argument("--splits", nargs="+", default=["train", "val"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.datasets import detect_layout, list_samples, load_dataset_classes, read_labels
    from ..retraining.cvat import check_writable, write_cvat_masks, zip_folder

    if detect_layout(args.data) != "generic":
        raise CliError(f"{args.data}: export-labels reads the generic layout (rgb/, depth/, "
                       "labels/, classes.yaml, split lists)")
    classes = load_dataset_classes(args.data, "generic")
    check_writable(classes)
    zip_path = args.out.with_name(args.out.name + ".zip")
    if args.out.exists() or zip_path.exists():
        raise CliError(f"{args.out if args.out.exists() else zip_path} exists already; give a "
                       "new OUT")
    samples = {}
    for split in args.splits:
        for sample in list_samples(args.data, "generic", split):
            samples.setdefault(sample.name, sample)
    labelled = [s for s in samples.values() if s.labels.is_file()]
    if not labelled:
        raise CliError(f"{args.data}: no frame has a label file in labels/")
    names = write_cvat_masks(
        args.out, ((s.name, read_labels(s.labels))
                   for s in tqdm(labelled, unit="label", desc="exporting")), classes)
    zip_folder(args.out, zip_path)
    print(f"wrote {len(names)} masks ({classes.num_classes} classes) to {args.out} and "
          f"{zip_path}" + (f"; {len(samples) - len(labelled)} frames without labels left out"
                           if len(labelled) < len(samples) else ""))
    return 0
