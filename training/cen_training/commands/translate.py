"""``cen-train translate train | eval | export``: multimodal image-to-image translation (the
CEN paper's second task; see ``cen_training.translation.train`` and ``models.translation``).

Multi-GPU (or multi-process CPU): ``torchrun --nproc_per_node N -m cen_training.cli translate
train ...``; ``--batch-size`` is the total over all processes.
"""
from __future__ import annotations

import json
import pathlib

from .help_format import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "translate", help="multimodal image-to-image translation: train | eval | export",
        description="Translate M input modalities of a view into a target modality with the "
                    "official CEN generator (shared convs, private InstanceNorms, channel "
                    "exchange) or a baseline.", formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="translate_command", metavar="ACTION", required=True)
    add_train(sub)
    add_eval(sub)
    add_export(sub)


def add_train(sub) -> None:
    from ..data.taskonomy import TRANSLATION_LAYOUTS
    from ..models.translation import TRANSLATION_ARCHS
    p = sub.add_parser(
        "train", help="train a generator with the official recipe",
        description="Train with the official CEN translation recipe (Adam 2e-4, betas 0.5/0.999, "
                    "L1 x 100 + GAN (BCE), discriminator first, 1e-3 L1 on alternating halves of "
                    "the encoder's InstanceNorm weights, batch 1, 286 -> 256 crops, flips, "
                    "N(0, 0.02) init, 300 epochs, validation every 5). Writes RUN_DIR/last.pt "
                    "every epoch, best.pt, metrics.csv, TensorBoard logs and picture grids.",
        formatter_class=HelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (Taskonomy or generic layout)")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--inputs", nargs="+", default=["reshading", "edge_texture"],
                   help="input domains, by name or official id (one branch each)")
    p.add_argument("--target", default="rgb", help="target domain, by name or official id")
    p.add_argument("--arch", default="cen", choices=TRANSLATION_ARCHS)
    p.add_argument("--layout", default="auto", choices=("auto", *TRANSLATION_LAYOUTS))
    p.add_argument("--size", type=int, default=256,
                   help="generator input side, a power of two; below 256 the U-Net has fewer "
                        "levels and is not the official generator")
    p.add_argument("--load-size", type=int, default=None,
                   help="training resize before the random crop [default: 286 for 256, "
                        "size * 286 / 256 otherwise]")
    p.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=1, help="total over all processes")
    p.add_argument("--lr-g", type=float, default=2e-4)
    p.add_argument("--lr-d", type=float, default=2e-4)
    p.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.999), metavar=("B1", "B2"))
    p.add_argument("--l1-weight", type=float, default=100.0)
    p.add_argument("--lamda", type=float, default=1e-3, help="weight of the L1 on InstanceNorm "
                   "scaling factors (CEN)")
    p.add_argument("--threshold", type=float, default=1e-2, help="exchange threshold")
    p.add_argument("--init-std", type=float, default=0.02)
    p.add_argument("--test-dropout", action="store_true",
                   help="keep dropout at inference (pix2pix's convention; random outputs)")
    p.add_argument("--val-every", type=int, default=5, help="epochs between validations")
    p.add_argument("--inception-weights", default=None, metavar="PTH",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (a local file): "
                        "adds FID and KID to validation; nothing is downloaded")
    p.add_argument("--fid-convention", default="direct", choices=("direct", "minmax"),
                   help="images for FID: direct uint8, or rescaled per image to 0..255 as the "
                        "official code saves them")
    p.add_argument("--pictures", type=int, default=4,
                   help="validation images in each picture grid (0: none)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt exactly")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="no mixed precision on CUDA")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (then validate and save) after this much training time")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from ..translation.train import TranslateConfig, train_translation
    config = TranslateConfig(
        data=args.data, out=args.out, inputs=args.inputs, target=args.target, arch=args.arch,
        layout=args.layout, size=args.size, load_size=args.load_size, flip=args.flip,
        ngf=args.ngf, ndf=args.ndf, epochs=args.epochs, batch_size=args.batch_size,
        lr_g=args.lr_g, lr_d=args.lr_d, betas=tuple(args.betas), l1_weight=args.l1_weight,
        lamda=args.lamda, exchange_threshold=args.threshold, init_std=args.init_std,
        test_dropout=args.test_dropout, val_every=args.val_every,
        inception_weights=args.inception_weights, fid_convention=args.fid_convention,
        pictures=args.pictures, resume=args.resume, workers=args.workers, seed=args.seed,
        amp=args.amp, max_minutes=args.max_minutes, max_steps=args.max_steps,
        progress=args.progress)
    train_translation(config)
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", help="score a translation checkpoint on a dataset split",
        description="L1, RMSE (on [-1, 1]), PSNR and SSIM (on [0, 1]) of every output (each "
                    "branch and the ensemble), and FID / KID (x100) with --inception-weights.",
        formatter_class=HelpFormatter)
    p.add_argument("checkpoint", type=pathlib.Path, metavar="CKPT")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--layout", default="auto")
    p.add_argument("--inception-weights", default=None, metavar="PTH")
    p.add_argument("--fid-convention", default="direct", choices=("direct", "minmax"))
    p.add_argument("--out", type=pathlib.Path, default=None, help="write the scores as JSON")
    p.add_argument("--pictures", type=pathlib.Path, default=None, metavar="DIR",
                   help="write one grid per image (inputs | branches | ensemble | target)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_eval)


def load_generator(path: pathlib.Path):
    from ..checkpoint import load_model
    return load_model(path, task="translation")


def run_eval(args) -> int:
    import cv2
    import torch
    from torch.utils.data import DataLoader

    from ..data.taskonomy import TranslationDataset, TranslationTransform
    from ..translation.train import evaluate_translation

    model = load_generator(args.checkpoint)
    config = model.config
    data = TranslationDataset(args.data, args.split, config.inputs, config.target,
                              transform=TranslationTransform(config.size, train=False),
                              layout=args.layout)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    inception = None
    if args.inception_weights:
        from ..translation.inception import load_inception
        inception = load_inception(args.inception_weights).to(device)
    names = list(model.branch_names) + ["ensemble"]
    loader = DataLoader(data, batch_size=1, num_workers=args.workers)
    scores = evaluate_translation(model, loader, names, device, inception,
                                  args.fid_convention, args.progress).scores()
    print(score_table(scores, len(data), args.split,
                      args.fid_convention if inception is not None else None))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    if args.pictures is not None:
        args.pictures.mkdir(parents=True, exist_ok=True)
        for index in range(len(data)):
            grid = picture_grid_one(model, data, index, device)
            cv2.imwrite(str(args.pictures / f"{data.name(index)}.png"),
                        cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return 0


def picture_grid_one(model, data, index: int, device):
    from torch.utils.data import Subset

    from ..translation.train import picture_grid
    return picture_grid(model, Subset(data, [index]), 1, device)


def score_table(scores: dict, count: int, split: str, fid_convention: str | None) -> str:
    """A markdown table: one row per output."""
    keys = ["l1", "rmse", "psnr", "ssim"] + (["fid", "kid"] if fid_convention else [])
    heads = {"l1": "L1", "rmse": "RMSE", "psnr": "PSNR dB", "ssim": "SSIM", "fid": "FID",
             "kid": "KID x100"}
    lines = [f"{split}: {count} images" + (f"; FID/KID on {fid_convention} uint8 images"
                                            if fid_convention else ""),
             "| output | " + " | ".join(heads[k] for k in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for name, s in scores.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{s[k]:.4f}" if k in ("l1", "rmse", "ssim") else f"{s[k]:.2f}" for k in keys) + " |")
    return "\n".join(lines)


def add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a translation generator to ONNX",
        description="ONNX (opset 17): inputs input0.. uint8 [1,S,S,3] RGB (one per input domain, "
                    "in the checkpoint's order), output 'image' uint8 [1,S,S,3], the ensemble. "
                    "The file is written only if ONNX Runtime reproduces PyTorch: at least "
                    "99.9% of output values within one grey level on every check frame.",
        formatter_class=HelpFormatter)
    p.add_argument("checkpoint", type=pathlib.Path, metavar="CKPT")
    p.add_argument("-o", "--output", type=pathlib.Path, required=True, metavar="OUT.onnx")
    p.add_argument("--data", default=None,
                   help="check on the first validation images of this dataset [default: "
                        "synthetic smooth images]")
    p.add_argument("--check-frames", type=int, default=2)
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from ..data.taskonomy import TranslationDataset, TranslationTransform
    from ..translation.export import check_frames, export_and_verify_translation

    model = load_generator(args.checkpoint)
    config = model.config
    if args.data:
        data = TranslationDataset(args.data, "val", config.inputs, config.target,
                                  transform=TranslationTransform(config.size, train=False))
        frames = [[x.numpy() for x in data[i]["inputs"]]
                  for i in range(min(args.check_frames, len(data)))]
    else:
        frames = check_frames(model, args.check_frames)
    report = export_and_verify_translation(model, args.output, frames)
    print(f"wrote {args.output}: {' + '.join(config.inputs)} -> {config.target}, "
          f"{config.size}x{config.size}; {report.summary()}")
    return 0
