"""``cen-train import-official``: convert a checkpoint written by the official CEN/AsymFusion code
(segmentation, or with ``--task translation`` the generator of the image-to-image translation
code)."""
from __future__ import annotations

import argparse
import copy
import pathlib

from cen_perception.model_card import OFFICIAL_NORMALIZATION, SUNRGBD_NORMALIZATION

from ..card import default_card
from ..checkpoint import import_official, import_official_translation, save_checkpoint
from ..errors import CliError
from ..models import ModelConfig
from ..models.translation import TranslationConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official",
        help="convert an official CEN/AsymFusion checkpoint into ours",
        description="Convert a checkpoint saved by the official CEN or AsymFusion training code "
                    "({'segmenter': state_dict} with 'module.' prefixes, or a bare state dict) "
                    "into a cen_perception checkpoint. Every key and shape must match; the "
                    "official input normalisation is recorded (RGB ImageNet mean/std; depth "
                    "mm/5000 repeated to 3 channels, or per-image min-max for SUN-RGBD). "
                    "--task translation: a generator saved by the official image-to-image "
                    "translation code (torch.save(G.state_dict()), e.g. checkpoint-gen.pkl).")
    p.add_argument("src", type=pathlib.Path, metavar="SRC.pth")
    p.add_argument("out", type=pathlib.Path, metavar="OUT.pt")
    p.add_argument("--task", choices=("segmentation", "translation"), default="segmentation")
    p.add_argument("--arch", choices=("cen", "asymfusion", "shared"), default=None,
                   help="segmentation: cen or asymfusion (required); translation: cen "
                        "(default) or shared (the official code run with --exchange 0)")
    p.add_argument("--backbone", choices=("resnet50", "resnet101", "resnet152"),
                   help="segmentation (required)")
    p.add_argument("--num-classes", type=int, help="segmentation (required)")
    p.add_argument("--inputs", nargs="+", default=["reshading", "edge_texture"],
                   help="translation: the input domains, in the official order (default: the "
                        "official reshading edge_texture)")
    p.add_argument("--target", default="rgb", help="translation: the target domain")
    p.add_argument("--dataset", choices=("nyudv2", "sunrgbd"), default="nyudv2",
                   help="training dataset: sets class names, palette and depth normalisation "
                        "(default: nyudv2)")
    p.add_argument("--bn-threshold", type=float, default=None,
                   help="CEN exchange threshold used in training (default: 2e-2; translation: "
                        "1e-2, on the InstanceNorms)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "translation":
        return run_translation(args)
    missing = [f"--{name.replace('_', '-')}" for name in ("arch", "backbone", "num_classes")
               if getattr(args, name) is None]
    if missing:
        raise CliError(f"segmentation needs {', '.join(missing)}")
    if args.arch == "shared":
        raise CliError("--arch shared is for --task translation; segmentation: cen or asymfusion")
    norm = SUNRGBD_NORMALIZATION if args.dataset == "sunrgbd" else OFFICIAL_NORMALIZATION
    try:
        config = ModelConfig(arch=args.arch, backbone=args.backbone, modalities=["rgb", "depth"],
                             num_classes=args.num_classes, decoder="official",
                             bn_threshold=2e-2 if args.bn_threshold is None else args.bn_threshold,
                             normalization=copy.deepcopy(norm))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    model, info = import_official(args.src, config)
    card = default_card(args.num_classes, dataset=args.dataset)
    card["dataset"] = {"name": args.dataset, "source": "official checkpoint " + args.src.name,
                       **info}
    save_checkpoint(args.out, model, config, card)
    print(f"wrote {args.out} ({args.arch} {args.backbone}, {args.num_classes} classes, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    return 0


def run_translation(args: argparse.Namespace) -> int:
    from ..data.taskonomy import domain_name
    try:
        config = TranslationConfig(arch=args.arch or "cen",
                                   inputs=[domain_name(d) for d in args.inputs],
                                   target=domain_name(args.target),
                                   exchange_threshold=(1e-2 if args.bn_threshold is None
                                                       else args.bn_threshold))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if config.arch not in ("cen", "shared"):
        raise CliError(f"--arch {config.arch}: the official translation generator is cen or shared")
    model = import_official_translation(args.src, config)
    card = {"task": "translation", "inputs": config.inputs, "target": config.target,
            "dataset": {"name": "taskonomy", "source": "official checkpoint " + args.src.name},
            "normalization": "each input uint8 RGB, x / 255, mean 0.5, std 0.5; outputs in "
                             "[-1, 1]"}
    save_checkpoint(args.out, model, config, card)
    print(f"wrote {args.out} ({config.arch} generator, {' + '.join(config.inputs)} -> "
          f"{config.target}, {sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0
