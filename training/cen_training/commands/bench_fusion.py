"""``cen-train bench-fusion``: what fusion buys, on data where one modality is not enough.

Trains RGB only, depth only, early fusion, shared convs without exchange, CEN, CEN with
modality dropout (depth blanked in a fraction ``--dropout`` of the training samples) and
AsymFusion with the same recipe and the same training budget (wall-clock minutes per model, or
optimiser steps with ``--steps``) on the synthetic dataset of ``cen-train synth`` (made in
OUT/data unless --data names one), then validates each on the full validation images, as they
are and with the depth removed (every depth pixel 0, what the node feeds the network when a
camera's depth is missing), and prints one table of val mIoU (the model's final, ensemble,
output). Each model is an ordinary ``cen-train train`` run in OUT/runs/<model>/ (checkpoints,
metrics.csv, train.log); ``--jobs`` of them run at a time, each on ``--threads`` CPU threads
(one thread per run keeps a busy machine from stalling on threads that wait for each other);
the evaluations without depth run after all training, on as many threads, so that they take
no model's training time. Results go to OUT/results.json and OUT/results.md.
"""
from __future__ import annotations

import pathlib
import sys

from ..errors import CliError
from .help_format import HelpFormatter

# name -> (arch, modalities, what it is); "cen-dropout" also trains with --modality-dropout.
MODELS = {
    "rgb": ("single", ["rgb"], "RGB only"),
    "depth": ("single", ["depth"], "depth only"),
    "early": ("early", ["rgb", "depth"], "early fusion (inputs concatenated)"),
    "shared": ("shared", ["rgb", "depth"], "shared convs, private BNs, no exchange"),
    "cen": ("cen", ["rgb", "depth"], "CEN (channel exchange)"),
    "cen-dropout": ("cen", ["rgb", "depth"], "CEN, trained with depth dropout"),
    "asymfusion": ("asymfusion", ["rgb", "depth"], "AsymFusion (shuffle + pixel shift)"),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-fusion", help="compare single-modality, early, shared, CEN and AsymFusion models",
        description=__doc__.split("\n\n")[1], formatter_class=HelpFormatter)
    p.add_argument("--data", type=pathlib.Path, default=None,
                   help="dataset folder [default: make the synthetic set in OUT/data]")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench_fusion"))
    p.add_argument("--budget-minutes", type=float, default=28.0,
                   help="training time for the whole table; each model trains for "
                        "budget x jobs / models minutes")
    p.add_argument("--steps", type=int, default=None,
                   help="instead of a time budget, train every model for this many steps")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--jobs", type=int, default=2, help="models trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per model")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--decoder", default="light")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--scale", type=float, nargs=2, default=(0.75, 1.5), metavar=("MIN", "MAX"))
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=1e-3, help="encoder and decoder learning rate")
    p.add_argument("--lamda", type=float, default=2e-4, help="CEN's L1 weight")
    p.add_argument("--dropout", type=float, default=0.3, metavar="P",
                   help="cen-dropout: fraction of training samples whose depth is blanked "
                        "(cen-train train --modality-dropout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=300, help="synthetic training scenes")
    p.add_argument("--num-val", type=int, default=60, help="synthetic validation scenes")
    p.add_argument("--height", type=int, default=96, help="synthetic image height")
    p.add_argument("--width", type=int, default=128, help="synthetic image width")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def train_command(args, name: str, data: pathlib.Path, run_dir: pathlib.Path,
                  minutes: float | None) -> list[str]:
    """The ``cen-train train`` command line of one model of the table."""
    arch, modalities, _ = MODELS[name]
    command = [sys.executable, "-m", "cen_training.cli", "train", "--data", str(data),
               "--out", str(run_dir), "--arch", arch, "--modalities", *modalities,
               "--backbone", args.backbone, "--decoder", args.decoder,
               # One long stage, cut by the budget; validated once, at the end.
               "--stages", "1", "--epochs", "1000000", "--val-every", "1000000",
               "--batch-size", str(args.batch_size), "--crop", str(args.crop),
               "--scale", str(args.scale[0]), str(args.scale[1]), "--optimizer", args.optimizer,
               "--lr-enc", str(args.lr), "--lr-dec", str(args.lr), "--lamda", str(args.lamda),
               "--no-freeze-bn", "--workers", "0", "--seed", str(args.seed),
               "--skip-data-check", "--no-progress"]
    if name == "cen-dropout":
        command += ["--modality-dropout", str(args.dropout)]
    return command + (["--max-steps", str(args.steps)] if args.steps
                      else ["--max-minutes", f"{minutes:.4f}"])


def run(args) -> int:
    from ..benchmarks import comparative

    comparative.check_options(args)
    if not 0 < args.dropout <= 1:
        raise CliError(f"--dropout {args.dropout}: need a fraction in (0, 1]")
    if len(set(args.models)) != len(args.models):
        raise CliError("--models names a model twice")
    data = prepare_data(args)
    each = comparative.budget(args, len(args.models))
    budget = each.describe(digits=1)
    runs = comparative.train_models(
        args, list(args.models), each, budget,
        lambda name, run_dir: train_command(args, name, data, run_dir, each.minutes),
        lambda name: MODELS[name][2])
    results = {name: model_result(args, name, run_dir, minutes)
               for name, run_dir, minutes in runs}
    results = {name: results[name] for name in args.models}
    print("evaluating without depth ...", flush=True)
    for name, result in results.items():
        final = miou_without_depth(args.out / "runs" / name / "last.pt", data, args.threads)
        result["miou_without_depth"] = final["miou"]
        result["per_class_iou_without_depth"] = final["per_class_iou"]
    table = markdown_table(results)
    summary = " ".join(part for part in (cen_margin(results), depth_loss(results)) if part)
    text = (f"Validation mIoU (%) on {data} ({args.backbone}, {args.decoder} decoder, "
            f"{budget}):\n\n{table}\n\n{summary}\n")
    comparative.write_results(args, data, results, text, summary=summary)
    return 0


def prepare_data(args) -> pathlib.Path:
    """``--data``, or the synthetic dataset made in ``OUT/data`` (once); checked."""
    from ..data import validate_dataset
    from ..data.synthetic import write_dataset

    data = args.data
    if data is None:
        data = args.out / "data"
        if not (data / "classes.yaml").is_file():
            write_dataset(data, args.num_train, args.num_val, args.height, args.width,
                          seed=args.seed, progress=args.progress)
    validate_dataset(data, ["train", "val"], progress=args.progress)
    return data


def model_result(args, name: str, run_dir: pathlib.Path, minutes: float) -> dict:
    """One row of the table: a trained model's final validation scores and its budget."""
    from ..checkpoint import load_checkpoint, load_model

    ckpt = load_checkpoint(run_dir / "last.pt")
    final = ckpt["card"]["metrics"]["ensemble"]
    arch, modalities, what = MODELS[name]
    if name == "cen-dropout":
        what = f"{what} ({100 * args.dropout:g}% of samples)"
    result = {"arch": arch, "modalities": modalities, "description": what,
              "miou": final["miou"], "pixel_acc": final["pixel_acc"],
              "mean_acc": final["mean_acc"], "per_class_iou": final["per_class_iou"],
              "steps": ckpt["step"], "epochs": ckpt["epoch"], "minutes": minutes}
    if arch == "cen":
        result["slim_fraction"] = load_model(run_dir / "last.pt").slim_fraction()
    print(f"  {name}: val mIoU {final['miou']:.1f} after {ckpt['step']} steps", flush=True)
    return result


def miou_without_depth(checkpoint: pathlib.Path, data: pathlib.Path, threads: int) -> dict:
    """Scores of a checkpoint's ensemble output on the full validation images with every depth
    pixel set to 0 (invalid), on ``threads`` CPU threads."""
    import torch
    from torch.utils.data import DataLoader

    from ..checkpoint import load_model
    from ..data import RGBDSegmentationDataset
    from ..data.transforms import blank_depth
    from ..segmentation.evaluate import evaluate

    model = load_model(checkpoint)
    val_set = RGBDSegmentationDataset(data, "val", transform=blank_depth)
    loader = DataLoader(val_set, batch_size=1, num_workers=0)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        meter = evaluate(model, loader, val_set.num_classes)
    finally:
        torch.set_num_threads(threads_before)
    return meter.scores(val_set.classes.names)["ensemble"]


def markdown_table(results: dict) -> str:
    class_names = list(next(iter(results.values()))["per_class_iou"])
    header = (["model", "what", "val mIoU", "val mIoU without depth (change)", "pixel acc",
               "mean acc"] + [f"IoU {c}" for c in class_names] + ["steps", "epochs", "minutes"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results.items():
        ious = [("-" if r["per_class_iou"][c] is None else f"{r['per_class_iou'][c]:.1f}")
                for c in class_names]
        without = r["miou_without_depth"]
        cells = ([name, r["description"], f"**{r['miou']:.1f}**",
                  f"{without:.1f} ({without - r['miou']:+.1f})", f"{r['pixel_acc']:.1f}",
                  f"{r['mean_acc']:.1f}"] + ious
                 + [str(r["steps"]), str(r["epochs"]), f"{r['minutes']:.1f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cen_margin(results: dict) -> str:
    singles = {n: results[n]["miou"] for n in ("rgb", "depth") if n in results}
    if "cen" not in results or not singles:
        return ""
    best = max(singles, key=singles.get)
    margin = results["cen"]["miou"] - singles[best]
    slim = results["cen"].get("slim_fraction")
    slim_text = ("" if slim is None else f"; {100 * slim:.1f}% of CEN's exchange-BN scaling "
                 "factors are below the threshold (their channels exchanged)")
    return (f"CEN {results['cen']['miou']:.1f} vs the better single modality ({best}) "
            f"{singles[best]:.1f}: {margin:+.1f} mIoU points{slim_text}.")


def depth_loss(results: dict) -> str:
    """One sentence: what the fusion models lose when depth is removed at test time."""
    parts = [f"{name} {r['miou']:.1f} -> {r['miou_without_depth']:.1f}"
             for name, r in results.items() if MODELS[name][1] == ["rgb", "depth"]]
    if not parts:
        return ""
    return ("Without depth at test time (every depth pixel 0), val mIoU: " + ", ".join(parts)
            + ".")
