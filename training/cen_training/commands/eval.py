"""``cen-train eval``: score a checkpoint on a dataset split, per branch and for the ensemble.

Writes a JSON report ``{"ensemble": {...}, "<branch>": {...}, ...}``, one key per output with
the branches named by modality, each holding ``pixel_acc``, ``mean_acc``, ``miou`` (percent) and
``per_class_iou`` (class name -> percent, null for a class absent from both labels and
predictions); and pictures: the ensemble's confusion matrix and a few samples (RGB, depth,
ground truth, each output's prediction over the RGB).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from ..errors import CliError
from .help_format import HelpFormatter

NUM_SAMPLE_PICTURES = 6


def add_split_arguments(p) -> None:
    """The split to score and how its labels are read (as ``train`` reads them)."""
    from ..data import LAYOUTS

    p.add_argument("--data", required=True, type=pathlib.Path, help="dataset folder")
    p.add_argument("--split", default="val", help="split list to score (val, test, train)")
    p.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS))
    p.add_argument("--classes", type=pathlib.Path, metavar="CLASSES.yaml",
                   help="score in this class list (as train --classes) [default: the data's]")
    p.add_argument("--class-map", type=pathlib.Path, metavar="MAP.yaml",
                   help="read the data's labels through this class map into --classes (as "
                        "train --class-map)")


def open_split(args):
    """The split of ``add_split_arguments``, every file checked first, labels read through
    the class map when one is given."""
    from ..data import RGBDSegmentationDataset, dataset_class_map, validate_dataset

    class_map = dataset_class_map(args.data, args.layout, args.class_map, args.classes)
    validate_dataset(args.data, args.split, layout=args.layout, progress=args.progress,
                     class_map=class_map)
    return RGBDSegmentationDataset(args.data, args.split, layout=args.layout,
                                   class_map=class_map)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: pixel acc, mean acc, mIoU per branch and ensemble",
        description="Evaluate a checkpoint on full images (single-scale by default, as the "
                    "official validation). Writes the JSON report and pictures.",
        formatter_class=HelpFormatter)
    p.add_argument("checkpoint", type=pathlib.Path, metavar="CKPT")
    add_split_arguments(p)
    p.add_argument("--out", required=True, type=pathlib.Path, metavar="REPORT.json")
    p.add_argument("--multi-scale", action="store_true",
                   help="average over input scales 0.5, 0.75, 1, 1.25, 1.5, 1.75")
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help="input scales to average (overrides --multi-scale)")
    p.add_argument("--flip", action="store_true", help="also average the mirrored input")
    p.add_argument("--pictures", type=pathlib.Path, default=None, metavar="DIR",
                   help="folder for the pictures [default: beside the report]")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from torch.utils.data import DataLoader

    from ..checkpoint import load_model
    from ..segmentation.evaluate import evaluate, output_names

    scales = tuple(args.scales) if args.scales else (
        (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) if args.multi_scale else (1.0,))
    if any(s <= 0 for s in scales):
        raise CliError("--scales must be positive")
    model = load_model(args.checkpoint, task="segmentation")
    dataset = open_split(args)
    class_names = model.card.get("class_names") or dataset.classes.names
    palette = model.card.get("palette") or dataset.classes.palette
    if dataset.num_classes != model.config.num_classes:
        mapped = " (through --class-map)" if dataset.class_map is not None else ""
        raise CliError(f"{args.checkpoint} predicts {model.config.num_classes} classes but "
                       f"{args.data} has {dataset.num_classes}{mapped}; a model trained on "
                       "other classes is scored with --classes and --class-map")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    loader = DataLoader(dataset, batch_size=1, num_workers=args.workers)

    pictures_dir = args.pictures or args.out.with_suffix("").parent / (args.out.stem + "_pictures")
    pictures_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(model)
    sample_pictures = []

    def keep_pictures(batch, predictions):
        if len(sample_pictures) < NUM_SAMPLE_PICTURES:
            sample_pictures.append((batch["name"][0], batch["rgb"][0].numpy(),
                                    batch["depth"][0].numpy(), batch["labels"][0].numpy(),
                                    [p[0].numpy() for p in predictions]))

    meter = evaluate(model, loader, dataset.num_classes, device, scales=scales, flip=args.flip,
                     progress=args.progress, on_batch=keep_pictures)
    scores = meter.scores(class_names)
    report = {"ensemble": scores["ensemble"], **{n: scores[n] for n in names if n != "ensemble"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    save_confusion_picture(meter.matrices["ensemble"], class_names,
                           pictures_dir / "confusion_ensemble.png")
    for index, (name, rgb, depth, labels, predictions) in enumerate(sample_pictures):
        save_sample_picture(rgb, depth, labels, predictions, names, palette,
                            pictures_dir / f"sample_{index:02d}_{name}.png")

    print(f"{args.checkpoint} on {args.data} ({args.split}, {len(dataset)} samples, "
          f"scales {', '.join(f'{v:g}' for v in scales)}{', flipped too' if args.flip else ''}):")
    for name in names:
        s = scores[name]
        print(f"{name:>10}: pixel acc {s['pixel_acc']:6.2f}  mean acc {s['mean_acc']:6.2f}  "
              f"mIoU {s['miou']:6.2f}")
    print(f"report: {args.out}; pictures: {pictures_dir}")
    return 0


def save_confusion_picture(matrix: np.ndarray, class_names: list[str], path: pathlib.Path) -> None:
    """The confusion matrix, each row normalised to the ground-truth class's pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, np.float64), where=rows > 0)
    n = len(class_names)
    size = max(4.0, 0.3 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7 if n > 20 else 9)
    ax.set_yticks(range(n), class_names, fontsize=7 if n > 20 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion (rows normalised)")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if normalised[i, j] < 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_sample_picture(rgb, depth, labels, predictions, names, palette, path) -> None:
    """RGB | depth | ground truth | one overlay per output, side by side."""
    import cv2
    try:
        from cen_perception.visualize import colorize_depth, contact_sheet, overlay
    except ImportError:  # a training-only installation
        colorize_depth = contact_sheet = overlay = None

    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    labels = labels.astype(np.uint8)
    if overlay is not None:
        images = [rgb, colorize_depth(depth), overlay(rgb, labels, palette, 0.6)]
        images += [overlay(rgb, p.astype(np.uint8), palette, 0.6) for p in predictions]
        sheet = contact_sheet(images, columns=len(images),
                              titles=["rgb", "depth", "ground truth"] + list(names))
    else:
        depth_u8 = np.clip(depth / max(float(depth.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
        images = [rgb, np.repeat(depth_u8[..., None], 3, axis=2),
                  (0.4 * rgb + 0.6 * lut[labels]).astype(np.uint8)]
        images += [(0.4 * rgb + 0.6 * lut[p.astype(np.uint8)]).astype(np.uint8)
                   for p in predictions]
        sheet = np.concatenate(images, axis=1)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
