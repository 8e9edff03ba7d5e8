"""``cen-train check-data``: check a dataset folder and summarise it; with ``--class-map``, also
the class map (every source class mapped, ignored or caught by its ``other`` class; every name
in the class lists) and the histogram of the mapped classes."""
from __future__ import annotations

import pathlib

from ..errors import CliError
from .help_format import HelpFormatter


def register(subparsers) -> None:
    from ..data import LAYOUTS
    p = subparsers.add_parser(
        "check-data", help="check every sample of a dataset and print a summary",
        description="Check that every listed sample has its RGB, depth and label files, that "
                    "their sizes agree, that depth is 16-bit and that every label id is a "
                    "class id or 255; then print samples per split and a class histogram.",
        formatter_class=HelpFormatter)
    p.add_argument("data", type=pathlib.Path, metavar="DIR")
    p.add_argument("--splits", nargs="+", default=["train", "val"])
    p.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS))
    p.add_argument("--class-map", type=pathlib.Path, metavar="MAP.yaml",
                   help="check this class map (as `train --class-map` uses it) and summarise "
                        "the mapped classes; needs --classes")
    p.add_argument("--classes", type=pathlib.Path, metavar="CLASSES.yaml",
                   help="the class list the map maps into; alone, it must list the "
                        "dataset's own classes")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import dataset_class_map, validate_dataset
    if args.class_map is not None and args.classes is None:
        raise CliError("--class-map needs --classes: the class list it maps into")
    class_map = dataset_class_map(args.data, args.layout, args.class_map, args.classes)
    if args.class_map is not None:
        class_map.check_complete()
    result = validate_dataset(args.data, args.splits, layout=args.layout, progress=args.progress,
                              class_map=class_map)
    classes, splits = result["classes"], result["splits"]
    print(f"{args.data}: {result['layout']} layout, {classes.num_classes} classes: OK")
    if args.class_map is not None:
        print(f"  {class_map.describe()}: OK")
        unused = [n for i, n in enumerate(classes.names)
                  if not (class_map.lut[:class_map.source.num_classes] == i).any()]
        if unused:
            print(f"  no source class maps to {', '.join(unused)}: those classes get no "
                  "labelled pixels")
    for name, summary in splits.items():
        sizes = ", ".join(f"{w}x{h} ({n})" for (h, w), n in summary.sizes.most_common(3))
        more = f" and {len(summary.sizes) - 3} more sizes" if len(summary.sizes) > 3 else ""
        print(f"  {name}: {summary.num_samples} samples; sizes {sizes}{more}")
    rows = [(i, n) for i, n in enumerate(classes.names)] + [(255, "(ignore)")]
    width = max(len(n) for _, n in rows)
    print(f"  {'id':>3} {'class':<{width}}" + "".join(f"{s:>10}" for s in splits)
          + "   (share of pixels)")
    totals = {s: max(1, int(summary.class_pixels.sum())) for s, summary in splits.items()}
    for index, name in rows:
        print(f"  {index:>3} {name:<{width}}" + "".join(
            f"{100 * summary.class_pixels[index] / totals[s]:>9.2f}%"
            for s, summary in splits.items()))
    return 0
