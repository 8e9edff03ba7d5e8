"""``cen-train synth``: write the synthetic RGB-D dataset (see ``cen_training.data.synthetic``)."""
from __future__ import annotations

import pathlib

from ..errors import CliError
from .help_format import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="make a synthetic RGB-D segmentation dataset",
        description="Write a deterministic synthetic RGB-D dataset in the generic layout: "
                    "posters (colour only), reliefs (depth only) and boxes (colour and depth "
                    "together) on a wall and floor, with sensor-like depth holes and noise.",
        formatter_class=HelpFormatter)
    p.add_argument("out_dir", type=pathlib.Path, metavar="OUT_DIR")
    p.add_argument("--num-train", type=int, default=300)
    p.add_argument("--num-val", type=int, default=60)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--translation", action="store_true",
                   help="also write shading/, normal/ and edge_texture/ (8-bit PNGs derived "
                        "from the rgb and depth images) for `cen-train translate`")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.synthetic import CLASSES, write_dataset
    if args.num_train < 1 or args.num_val < 1:
        raise CliError("--num-train and --num-val must be >= 1")
    if args.height < 32 or args.width < 32:
        raise CliError("--height and --width must be >= 32")
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        raise CliError(f"{args.out_dir} exists and is not empty")
    write_dataset(args.out_dir, args.num_train, args.num_val, args.height, args.width,
                  args.seed, progress=args.progress)
    print(f"wrote {args.num_train} train + {args.num_val} val scenes of {args.width}x"
          f"{args.height} ({', '.join(CLASSES.names)}) to {args.out_dir}")
    if args.translation:
        from ..translation.synthetic_modalities import (
            TRANSLATION_MODALITIES,
            write_translation_modalities,
        )
        write_translation_modalities(args.out_dir, progress=args.progress)
        print(f"and the translation modalities {', '.join(TRANSLATION_MODALITIES)}")
    return 0
