"""``cen-train train``: train a CEN / AsymFusion / baseline network (see
``cen_training.segmentation.train``).

Multi-GPU (or multi-process CPU): ``torchrun --nproc_per_node N -m cen_training.cli train ...``;
``--batch-size`` is the total over all processes.
"""
from __future__ import annotations

import argparse

from ..errors import CliError
from .help_format import HelpFormatter


def register(subparsers) -> None:
    from ..data import LAYOUTS
    from ..models import ARCHS, BACKBONES, DECODERS
    p = subparsers.add_parser(
        "train", help="train a network on an RGB-D dataset",
        description="Train with the official CEN recipe (3 stages, SGD encoder/decoder LRs, "
                    "L1 on exchange-BN scaling factors). Writes RUN_DIR/last.pt every epoch, "
                    "best.pt (best val ensemble mIoU), metrics.csv and TensorBoard logs.",
        formatter_class=HelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (NYUDv2 / SUN RGB-D official "
                   "layout, or the generic layout; detected)")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="folder for checkpoints and logs")
    p.add_argument("--arch", default="cen", choices=ARCHS)
    p.add_argument("--backbone", default="resnet101", choices=BACKBONES)
    p.add_argument("--decoder", default="official", choices=DECODERS,
                   help="official: 3x3 convs everywhere (heavy); light: 1x1, half width")
    p.add_argument("--modalities", nargs="+", default=["rgb", "depth"],
                   help="branch inputs; one (rgb or depth) for --arch single")
    p.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS),
                   help="dataset layout")
    add_recipe_arguments(p)
    add_start_and_run_arguments(p)
    p.set_defaults(func=run)


def add_recipe_arguments(p) -> None:
    """The recipe: stages, epochs, batch, augmentation, optimiser, CEN's penalty."""
    p.add_argument("--stages", type=int, default=3, help="training stages (each with fresh "
                   "optimisers and its own LRs)")
    p.add_argument("--epochs", type=int, nargs="+", default=None,
                   help="epochs PER STAGE: one value for every stage or one per stage "
                        "[default: 100, 150 for resnet152]")
    p.add_argument("--batch-size", type=int, default=6, help="total over all processes")
    p.add_argument("--crop", type=int, default=None,
                   help="square training crop [default: 500 for NYUDv2/SUN RGB-D, else the "
                        "images' shorter side]")
    p.add_argument("--scale", type=float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"),
                   help="random scale range")
    p.add_argument("--modality-dropout", type=float, default=0.0, metavar="P",
                   help="blank the whole depth map (0 = invalid, as the node feeds it when a "
                        "camera's depth is missing) in a fraction P of the training samples, "
                        "after the other augmentations, so that the model copes without depth; "
                        "0 = the official recipe")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="adam suits short runs from scratch (not the official recipe)")
    p.add_argument("--lr-enc", type=float, nargs="+", default=None,
                   help="encoder LR per stage [sgd: 5e-4 2.5e-4 1e-4; adam: 1e-3 5e-4 2.5e-4]")
    p.add_argument("--lr-dec", type=float, nargs="+", default=None,
                   help="decoder LR per stage [sgd: 3e-3 1.5e-3 7e-4; adam: 1e-3 5e-4 2.5e-4]")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--lamda", type=float, default=2e-4,
                   help="weight of the L1 penalty on the exchange-BN scaling factors (CEN)")
    p.add_argument("--bn-threshold", type=float, default=2e-2,
                   help="CEN exchange threshold on |gamma|")
    p.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="keep BN running statistics fixed [default: yes when starting from "
                        "--imagenet or --init weights, no when training from scratch]")


def add_start_and_run_arguments(p) -> None:
    """Starting weights and classes, then how the run goes: resume, workers, limits."""
    p.add_argument("--imagenet", metavar="PATH", help="torchvision ResNet weights (.pth) for "
                   "the encoder")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights "
                   "(fine-tuning); every key must fit except the classifier "
                   "(decoder.clf_conv.*), which starts fresh when the class count differs")
    p.add_argument("--classes", metavar="CLASSES.yaml",
                   help="the class list to learn [default: the dataset's]; one that differs "
                        "from the dataset's needs --class-map")
    p.add_argument("--class-map", metavar="MAP.yaml",
                   help="merge or rename the dataset's classes into --classes as labels are "
                        "read (the files stay as they are); source classes it does not name "
                        "become 255 (ignored) or its 'other' class")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt exactly")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="no mixed precision on the GPU")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and at "
                   "the end of each stage)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much training time (then validate and save)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimiser steps (then validate and save)")
    p.add_argument("--skip-data-check", dest="check_data", action="store_false",
                   help="do not check every sample before training")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args) -> int:
    from ..segmentation.train import TrainConfig, train
    if args.batch_size < 1 or (args.crop is not None and args.crop < 8):
        raise CliError("--batch-size must be >= 1 and --crop >= 8")
    if args.scale[0] <= 0 or args.scale[0] > args.scale[1]:
        raise CliError(f"--scale {args.scale[0]} {args.scale[1]}: need 0 < MIN <= MAX")
    if args.val_every < 1 or args.stages < 1:
        raise CliError("--val-every and --stages must be >= 1")
    config = TrainConfig(
        data=args.data, out=args.out, arch=args.arch, backbone=args.backbone,
        decoder=args.decoder, modalities=args.modalities, layout=args.layout,
        stages=args.stages, epochs=args.epochs, batch_size=args.batch_size, crop=args.crop,
        scale_range=tuple(args.scale), modality_dropout=args.modality_dropout,
        optimizer=args.optimizer, lr_enc=args.lr_enc,
        lr_dec=args.lr_dec, momentum=args.momentum, weight_decay=args.weight_decay,
        lamda=args.lamda, bn_threshold=args.bn_threshold, freeze_bn=args.freeze_bn,
        imagenet=args.imagenet, init=args.init, classes=args.classes,
        class_map=args.class_map, resume=args.resume, workers=args.workers,
        seed=args.seed, amp=args.amp, val_every=args.val_every, max_minutes=args.max_minutes,
        max_steps=args.max_steps,
        check_data=args.check_data, progress=args.progress)
    train(config)
    return 0
