"""``cen-train import-labels``: bring label PNGs from an annotation tool into a dataset folder.

The dataset folder is one ``cen-train extract-frames`` wrote (generic layout: ``rgb/``,
``depth/``, ``labels/``, ``train.txt``, ``val.txt``). Label files are matched to frames by
stem (``LABEL_DIR/<stem>.png``) and written as single-channel class-id PNGs to
``OUT_DIR/labels/``. Three kinds of labels are understood:

* class ids: 8-bit single-channel (or indexed-colour, or grey saved as RGB) PNGs, 255 =
  unlabelled;
* with ``--color-map``: colour-coded RGB PNGs, each colour mapped to the class with that
  colour in the class list (``--ignore-color``, black by default, means unlabelled);
* a CVAT "Segmentation mask 1.1" export, the zip CVAT downloads or its unpacked folder
  (recognised by ``labelmap.txt`` beside ``SegmentationClass/``): colour masks mapped to class
  ids through ``labelmap.txt``, its labels matched to the classes by name (see
  ``cen_training.retraining.cvat``; ``select-frames`` and ``export-labels`` write the layout).

Every file is checked before anything is written; an unknown colour, a class id outside the
class list or a size that differs from the frame's stops the import with the file named.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import tempfile

import cv2
import numpy as np

from ..errors import CliError
from ..retraining.cvat import colors_to_ids

MAX_LISTED = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-labels",
        help="import label PNGs from an annotation tool into a dataset folder",
        description="Match LABEL_DIR/<stem>.png to the frames of OUT_DIR (made by "
                    "extract-frames or select-frames) and write them to OUT_DIR/labels/ as "
                    "class-id PNGs. Accepts 8-bit class-id PNGs, colour-coded RGB PNGs with "
                    "--color-map, or a CVAT 'Segmentation mask 1.1' export (zip or folder; "
                    "colours through its labelmap.txt, labels matched to classes by name).")
    p.add_argument("out_dir", type=pathlib.Path, metavar="OUT_DIR")
    p.add_argument("label_dir", type=pathlib.Path, metavar="LABEL_DIR",
                   help="folder of label PNGs, or a CVAT 'Segmentation mask 1.1' export (the "
                        "downloaded zip or its folder)")
    p.add_argument("--classes", type=pathlib.Path,
                   help="class list (YAML); default OUT_DIR/classes.yaml; copied there when "
                        "it is missing")
    p.add_argument("--color-map", action="store_true",
                   help="labels are colour-coded RGB images, mapped through the class colours")
    p.add_argument("--ignore-color", default="0,0,0", metavar="R,G,B",
                   help="colour meaning 'unlabelled' with --color-map (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace labels that OUT_DIR/labels/ already holds")
    p.set_defaults(func=run)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def dataset_stems(out_dir: pathlib.Path) -> list[str]:
    """The frames of a dataset folder, from its split lists, in list order."""
    stems: list[str] = []
    for name in ("train.txt", "val.txt"):
        path = out_dir / name
        if path.is_file():
            stems += [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines()
                      if line.strip() and not line.startswith("#")]
    if not stems:
        raise CliError(f"{out_dir}: no frames listed in train.txt / val.txt; make the folder "
                       "with `cen-train extract-frames`")
    return list(dict.fromkeys(stems))


def parse_color(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(not 0 <= v <= 255 for v in values):
        raise CliError(f"--ignore-color must be R,G,B with values in 0..255, got '{text}'")
    return values  # type: ignore[return-value]


def palette_lookup(palette: list[list[int]], ignore_color: tuple[int, int, int]
                   ) -> dict[tuple[int, int, int], int]:
    """``{colour: class id}`` of a class list, ``ignore_color`` meaning 255 (unless a class has
    that colour)."""
    lookup = {tuple(int(v) for v in color): class_id for class_id, color in enumerate(palette)}
    lookup.setdefault(tuple(ignore_color), 255)
    return lookup


def read_label_file(path: pathlib.Path, color_map: bool, palette: list[list[int]] | None,
                    ignore_color: tuple[int, int, int]) -> np.ndarray:
    if color_map:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # drops alpha, expands indexed colour
        if image is None:
            raise CliError(f"{path}: cannot read image")
        return colors_to_ids(cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
                             palette_lookup(palette, ignore_color), str(path),
                             "class colours come from the class list; --ignore-color sets the "
                             "unlabelled one")
    from ..data.datasets import ColorLabelsError, read_labels

    try:
        return read_labels(path)
    except ColorLabelsError as exc:
        raise CliError(f"{exc}; pass --color-map to map colours through the class "
                       "list") from None


def run(args: argparse.Namespace) -> int:
    from ..data.classes import load_class_list
    from ..retraining.cvat import CvatExport, is_cvat_export

    out_dir: pathlib.Path = args.out_dir
    label_dir: pathlib.Path = args.label_dir
    if not out_dir.is_dir():
        raise CliError(f"{out_dir}: dataset folder not found")
    cvat = is_cvat_export(label_dir)
    if not cvat and not label_dir.is_dir():
        raise CliError(f"{label_dir}: label folder not found"
                       + (" (a zip is read only as a CVAT 'Segmentation mask 1.1' export)"
                          if label_dir.is_file() else ""))
    ignore_color = parse_color(args.ignore_color)
    stems = dataset_stems(out_dir)

    dataset_classes = out_dir / "classes.yaml"
    classes_path = args.classes or (dataset_classes if dataset_classes.is_file() else None)
    classes = load_class_list(classes_path) if classes_path is not None else None
    if args.classes is not None and dataset_classes.is_file():
        existing = load_class_list(dataset_classes)
        if (existing.names, existing.palette) != (classes.names, classes.palette):
            raise CliError(f"{args.classes} differs from {dataset_classes}; the dataset keeps "
                           "one class list")
    if args.color_map and classes is None:
        raise CliError(f"--color-map needs the class colours: give --classes or put "
                       f"classes.yaml in {out_dir}")
    if cvat and classes is None:
        raise CliError(f"a CVAT export's labels are matched to classes by name: give --classes "
                       f"or put classes.yaml in {out_dir}")
    if cvat:
        with CvatExport(label_dir) as export:
            lookup = export.color_lookup(classes)  # every label checked before any mask
            return import_labels(args, stems, classes, export.masks,
                                 lambda member: export.read_labels(member, lookup),
                                 dataset_classes, f"{label_dir} (CVAT export)")
    label_files = {p.stem: p for p in sorted(label_dir.glob("*.png"))}
    return import_labels(
        args, stems, classes, label_files,
        lambda path: read_label_file(path, args.color_map, classes and classes.palette,
                                     ignore_color),
        dataset_classes, str(label_dir))


def import_labels(args: argparse.Namespace, stems: list[str], classes, label_files: dict,
                  read, dataset_classes: pathlib.Path, source: str) -> int:
    """Check and convert ``label_files`` (stem -> what ``read`` takes) for the frames
    ``stems``, then move them into ``OUT_DIR/labels/`` together."""
    from tqdm import tqdm

    from ..data.datasets import RGB_SUFFIXES, image_size

    out_dir: pathlib.Path = args.out_dir
    matched = [s for s in stems if s in label_files]
    missing = [s for s in stems if s not in label_files]
    extra = sorted(set(label_files) - set(stems))
    if not matched:
        raise CliError(f"{source}: no <stem>.png matches a frame of {out_dir} "
                       f"(frames look like {stems[0]}.png)")
    labels_dir = out_dir / "labels"
    existing_labels = [s for s in matched if (labels_dir / f"{s}.png").exists()]
    if existing_labels and not args.overwrite:
        raise CliError(f"{labels_dir} already holds labels for {_listing(existing_labels)}; "
                       "pass --overwrite to replace them")

    labels_dir.mkdir(exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".import-", dir=labels_dir))
    try:
        for stem in tqdm(matched, unit="label", desc="importing"):
            path = label_files[stem]
            ids = read(path)
            if not isinstance(path, pathlib.Path):  # a member of a CVAT export
                path = f"{source}: {path}"
            rgb_path = next((out_dir / "rgb" / f"{stem}{s}" for s in RGB_SUFFIXES
                             if (out_dir / "rgb" / f"{stem}{s}").is_file()), None)
            if rgb_path is not None and tuple(image_size(rgb_path)) != ids.shape:
                raise CliError(f"{path}: {ids.shape[1]}x{ids.shape[0]} labels for a "
                               f"{image_size(rgb_path)[1]}x{image_size(rgb_path)[0]} frame")
            if classes is not None:
                bad = sorted(int(v) for v in np.unique(ids)
                             if v != 255 and v >= classes.num_classes)
                if bad:
                    raise CliError(f"{path}: class ids {bad} outside the class list "
                                   f"(0..{classes.num_classes - 1}, 255 = unlabelled)")
            if not cv2.imwrite(str(staging / f"{stem}.png"), ids):
                raise CliError(f"{staging / stem}.png: could not write the labels")
        # Every file checked and converted: only now touch the dataset.
        for stem in matched:
            os.replace(staging / f"{stem}.png", labels_dir / f"{stem}.png")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if args.classes is not None and not dataset_classes.is_file():
        shutil.copyfile(args.classes, dataset_classes)

    print(f"imported {len(matched)} labels into {labels_dir}")
    if missing:
        print(f"{len(missing)} frames have no label file: {_listing(missing)}")
    if extra:
        print(f"{len(extra)} label files match no frame and were left out: {_listing(extra)}")
    return 0
