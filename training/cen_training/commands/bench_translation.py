"""``cen-train bench-translation``: CEN against the baselines on multimodal translation.

Trains CEN (channel exchange), shared convs without exchange, early fusion (inputs
concatenated), late fusion (a generator per input, outputs averaged) and one single-input
generator per input with the same recipe and the same budget (wall-clock minutes per model, or
optimiser steps with ``--steps``) on the synthetic translation modalities of ``cen-train synth
--translation`` (made in OUT/data unless --data names one; default task shading +
texture edges -> RGB, the official one), then prints one table of every output's validation
L1, PSNR and SSIM (and FID / KID with ``--inception-weights``), the steps each model made, and
CEN's share of exchanged channels. By default the images are 64x64 and the U-Net has 6 levels
and ngf 32, so that a CPU trains it in minutes: that is *not* the official generator (256x256,
8 levels, ngf 64: ``--size 256 --ngf 64``). Each model is an ordinary ``cen-train translate
train`` run in OUT/runs/<model>/ (checkpoints, metrics.csv, pictures, train.log); ``--jobs`` of
them run at a time, each on ``--threads`` CPU threads. Results go to OUT/results.json and
OUT/results.md.
"""
from __future__ import annotations

import pathlib
import sys

from ..errors import CliError
from .help_format import HelpFormatter


def model_specs(inputs: list[str]) -> dict[str, tuple[str, list[str], str]]:
    """name -> (arch, inputs, what it is)."""
    specs = {"cen": ("cen", inputs, "CEN (channel exchange)"),
             "shared": ("shared", inputs, "shared convs, private INs, no exchange"),
             "early": ("early", inputs, "early fusion (inputs concatenated)"),
             "late": ("late", inputs, "late fusion (a generator per input, averaged)")}
    for name in inputs:
        specs[f"single-{name}"] = ("single", [name], f"{name} only")
    return specs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-translation", help="compare CEN with early, late, shared and single-input "
                                  "generators on image-to-image translation",
        description=__doc__.split("\n\n")[1], formatter_class=HelpFormatter)
    p.add_argument("--data", type=pathlib.Path, default=None,
                   help="dataset folder [default: make the synthetic set in OUT/data]")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench_translation"))
    p.add_argument("--inputs", nargs="+", default=["shading", "edge_texture"])
    p.add_argument("--target", default="rgb")
    p.add_argument("--models", nargs="+", default=None,
                   help="[default: cen shared early late and single-<input> for each input]")
    p.add_argument("--budget-minutes", type=float, default=12.0,
                   help="training time for the whole table; each model trains for "
                        "budget x jobs / models minutes")
    p.add_argument("--steps", type=int, default=None,
                   help="instead of a time budget, train every model for this many steps")
    p.add_argument("--jobs", type=int, default=2, help="models trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per model")
    p.add_argument("--size", type=int, default=64,
                   help="generator input side (256: the official generator)")
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--ndf", type=int, default=32)
    p.add_argument("--inception-weights", default=None, metavar="PTH",
                   help="pytorch-fid's Inception weights (local file): adds FID and KID")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=200, help="synthetic training scenes")
    p.add_argument("--num-val", type=int, default=40, help="synthetic validation scenes")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def train_command(args, spec: tuple, data: pathlib.Path, run_dir: pathlib.Path,
                  minutes: float | None) -> list[str]:
    """The ``cen-train translate train`` command line of one model of the table."""
    arch, inputs, _ = spec
    command = [sys.executable, "-m", "cen_training.cli", "translate", "train",
               "--data", str(data), "--out", str(run_dir), "--arch", arch, "--inputs", *inputs,
               "--target", args.target, "--size", str(args.size), "--ngf", str(args.ngf),
               "--ndf", str(args.ndf), "--epochs", "100000", "--val-every", "100000",
               "--seed", str(args.seed), "--workers", "0", "--no-progress"]
    if args.steps:
        command += ["--max-steps", str(args.steps)]
    else:
        command += ["--max-minutes", f"{minutes:.4f}"]
    if args.inception_weights:
        command += ["--inception-weights", str(args.inception_weights)]
    return command


def run(args) -> int:
    from ..benchmarks import comparative

    specs = model_specs(list(args.inputs))
    models = args.models or list(specs)
    unknown = [m for m in models if m not in specs]
    if unknown:
        raise CliError(f"unknown model(s) {', '.join(unknown)} (choose from {', '.join(specs)})")
    comparative.check_options(args)
    data, val_count = prepare_data(args)
    each = comparative.budget(args, len(models))
    budget = each.describe(digits=2)
    runs = comparative.train_models(
        args, list(models), each, budget,
        lambda name, run_dir: train_command(args, specs[name], data, run_dir, each.minutes),
        lambda name: specs[name][2])
    results = {name: model_result(specs[name], name, run_dir, minutes)
               for name, run_dir, minutes in runs}
    results = {name: results[name] for name in models}
    generator = ("the official generator" if args.size == 256 and args.ngf == 64 else
                 f"{args.size}x{args.size}, ngf {args.ngf}: a reduced U-Net, not the official "
                 "generator")
    header = (f"{' + '.join(args.inputs)} -> {args.target} on {data} ({val_count} validation "
              f"images; {generator}; {budget}, {each.jobs} at a time on {args.threads} "
              "thread(s))")
    table = markdown_table(results, bool(args.inception_weights))
    note = exchange_note(results)
    text = f"{header}:\n\n{table}\n" + (f"\n{note}\n" if note else "")
    comparative.write_results(args, data, results, text)
    return 0


def prepare_data(args) -> tuple[pathlib.Path, int]:
    """``--data``, or the synthetic translation set made in ``OUT/data`` (once), and its
    number of validation images."""
    from ..data.synthetic import write_dataset
    from ..data.taskonomy import TranslationDataset
    from ..translation.synthetic_modalities import write_translation_modalities

    data = args.data
    if data is None:
        data = args.out / "data"
        if not (data / "val.txt").is_file():
            # Native size = the training resize (286/256 of the crop), as Taskonomy's 512
            # views are to the official 286.
            side = round(args.size * 286 / 256)
            write_dataset(data, args.num_train, args.num_val, side, side, seed=args.seed,
                          progress=args.progress)
            write_translation_modalities(data, progress=args.progress)
    return data, len(TranslationDataset(data, "val", args.inputs, args.target))


def model_result(spec: tuple, name: str, run_dir: pathlib.Path, minutes: float) -> dict:
    """One model of the table: every output's best validation scores and its budget."""
    from ..checkpoint import load_checkpoint, load_model

    ckpt = load_checkpoint(run_dir / "last.pt")
    scores = {k: v for k, v in ckpt["best_scores"].items() if isinstance(v, dict)}
    arch, inputs, what = spec
    result = {"arch": arch, "inputs": inputs, "description": what,
              "scores": scores, "steps": ckpt["step"], "minutes": minutes}
    if arch == "cen":
        result["exchanged_fraction"] = load_model(run_dir / "last.pt").slim_fraction()
    print(f"  {name}: ensemble L1 {scores['ensemble']['l1']:.4f} after "
          f"{ckpt['step']} steps", flush=True)
    return result


def markdown_table(results: dict, fid: bool) -> str:
    """One row per model and output (one for a single-branch model, whose ensemble is its
    branch): L1 on [-1, 1], PSNR and SSIM on [0, 1]; the row a user would take in bold."""
    columns = ["L1", "PSNR dB", "SSIM"] + (["FID", "KID x100"] if fid else [])
    lines = ["| model | output | " + " | ".join(columns) + " | steps |",
             "|---|---|" + "---:|" * (len(columns) + 1)]
    for result in results.values():
        outputs = dict(result["scores"])
        if len(outputs) == 2:  # one branch: its image is the ensemble; one row
            outputs.pop("ensemble")
        for output, s in outputs.items():
            cells = [f"{s['l1']:.4f}", f"{s['psnr']:.2f}", f"{s['ssim']:.3f}"]
            if fid:
                cells += [f"{s.get('fid', float('nan')):.1f}", f"{s.get('kid', float('nan')):.2f}"]
            bold = output == "ensemble" or len(outputs) == 1
            label = f"**{output}**" if bold else output
            lines.append(f"| {result['description']} | {label} | " + " | ".join(cells)
                         + f" | {result['steps']} |")
    return "\n".join(lines)


def exchange_note(results: dict) -> str:
    cen = results.get("cen")
    if cen is None or "exchanged_fraction" not in cen:
        return ""
    share = 100 * cen["exchanged_fraction"]
    return (f"CEN exchanged {share:.1f}% of its encoder channels (InstanceNorm |gamma| below "
            "the threshold 1e-2) at the end of training"
            + (": Adam moves a scaling factor by at most its learning rate per step, so from 1 a "
               "factor needs about 5,000 steps to get there; in this budget CEN differs from "
               "`shared` only by its sparsity term." if share == 0 else "."))
