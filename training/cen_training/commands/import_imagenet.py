"""``cen-train import-imagenet``: a new checkpoint with its encoder initialised from ImageNet."""
from __future__ import annotations

import argparse
import pathlib

from ..card import default_card
from ..checkpoint import save_checkpoint
from ..errors import CliError
from ..models import ARCHS, BACKBONES, DECODERS, ModelConfig, build_model, init_from_imagenet


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-imagenet",
        help="initialise a model's encoder from torchvision ImageNet weights",
        description="Build a model and copy a torchvision-layout ResNet state dict into its "
                    "encoder (each conv into the shared conv, each BN into every branch's BN). "
                    "SOURCE is a local .pth file, or an http(s) URL / 'torchvision' to download "
                    "through torch.hub (only then is anything downloaded).")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("out", type=pathlib.Path, metavar="OUT.pt")
    p.add_argument("--arch", choices=ARCHS, default="cen")
    p.add_argument("--backbone", choices=BACKBONES, default="resnet101")
    p.add_argument("--decoder", choices=DECODERS, default="official")
    p.add_argument("--modalities", nargs="+", default=["rgb", "depth"])
    p.add_argument("--num-classes", type=int, default=40)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = ModelConfig(arch=args.arch, backbone=args.backbone, decoder=args.decoder,
                             modalities=args.modalities, num_classes=args.num_classes)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    model = build_model(config)
    keys = init_from_imagenet(model, args.source, args.backbone)
    card = default_card(args.num_classes)
    card["dataset"] = {"name": "imagenet-init", "source": str(args.source)}
    save_checkpoint(args.out, model, config, card)
    print(f"wrote {args.out}: {len(keys)} encoder tensors from {args.source}")
    return 0
