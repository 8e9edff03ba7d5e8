"""``cen-train import-official``: convert a checkpoint written by the official CEN/AsymFusion code."""
from __future__ import annotations

import argparse
import copy
import pathlib

from cen_perception.model_card import OFFICIAL_NORMALIZATION, SUNRGBD_NORMALIZATION

from .. import CliError
from ..card import default_card
from ..checkpoint import import_official, save_checkpoint
from ..models import ModelConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official",
        help="convert an official CEN/AsymFusion checkpoint into ours",
        description="Convert a checkpoint saved by the official CEN or AsymFusion training code "
                    "({'segmenter': state_dict} with 'module.' prefixes, or a bare state dict) "
                    "into a cen_perception checkpoint. Every key and shape must match; the "
                    "official input normalisation is recorded (RGB ImageNet mean/std; depth "
                    "mm/5000 repeated to 3 channels, or per-image min-max for SUN-RGBD).")
    p.add_argument("src", type=pathlib.Path, metavar="SRC.pth")
    p.add_argument("out", type=pathlib.Path, metavar="OUT.pt")
    p.add_argument("--arch", choices=("cen", "asymfusion"), required=True)
    p.add_argument("--backbone", choices=("resnet50", "resnet101", "resnet152"), required=True)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--dataset", choices=("nyudv2", "sunrgbd"), default="nyudv2",
                   help="training dataset: sets class names, palette and depth normalisation "
                        "(default: nyudv2)")
    p.add_argument("--bn-threshold", type=float, default=2e-2,
                   help="CEN exchange threshold used in training (default: 2e-2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    norm = SUNRGBD_NORMALIZATION if args.dataset == "sunrgbd" else OFFICIAL_NORMALIZATION
    try:
        config = ModelConfig(arch=args.arch, backbone=args.backbone, modalities=["rgb", "depth"],
                             num_classes=args.num_classes, decoder="official",
                             bn_threshold=args.bn_threshold, normalization=copy.deepcopy(norm))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    model, info = import_official(args.src, config)
    card = default_card(args.num_classes, dataset=args.dataset)
    card["dataset"] = {"name": args.dataset, "source": "official checkpoint " + args.src.name, **info}
    save_checkpoint(args.out, model, config, card)
    print(f"wrote {args.out} ({args.arch} {args.backbone}, {args.num_classes} classes, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    return 0
