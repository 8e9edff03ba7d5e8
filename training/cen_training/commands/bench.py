"""``cen-train bench``: inference latency of the training graph, the folded graph and its ONNX
export in each precision, side by side (see ``cen_training.benchmarks.inference``)."""
from __future__ import annotations

import argparse
import pathlib

from ..errors import CliError


def register(sub: argparse._SubParsersAction) -> None:
    from ..benchmarks.inference import DEFAULT_SAMPLES, MAX_PLAUSIBLE_DEPTH_M
    from ..models import ARCHS, BACKBONES, DECODERS

    p = sub.add_parser(
        "bench",
        help="benchmark inference: PyTorch, folded graph, ONNX Runtime fp32, fp16 and INT8",
        description="Time raw inputs -> labels through the PyTorch training graph, the folded "
                    "inference graph, ONNX Runtime on the fp32 export and (--fp16, --int8) on "
                    "its fp16 and INT8 versions as `cen-train export --precision` makes them, "
                    "with the same threads and input frame, and print one markdown "
                    "table: latency median/p90, GFLOP per frame (counted on each ONNX graph), "
                    "GFLOP/s and its share of a 4096^3 SGEMM measured in the same run, peak "
                    "memory of inference, speed relative to the training graph and label "
                    "agreement on real frames.")
    p.add_argument("checkpoint", type=pathlib.Path, nargs="?", metavar="CKPT",
                   help="checkpoint to benchmark; or build a fresh model with --arch etc.")
    p.add_argument("--arch", choices=ARCHS, help="benchmark a freshly built model of this arch "
                   "(random weights) instead of a checkpoint")
    p.add_argument("--backbone", choices=BACKBONES, default="resnet50",
                   help="with --arch (default: resnet50)")
    p.add_argument("--decoder", choices=DECODERS, default="official",
                   help="with --arch (default: official)")
    p.add_argument("--num-classes", type=int, default=40, help="with --arch (default: 40)")
    p.add_argument("--height", type=int, required=True, help="input height (multiple of 32)")
    p.add_argument("--width", type=int, required=True, help="input width (multiple of 32)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for PyTorch, ONNX Runtime and the SGEMM (default: 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per graph (default: 1)")
    p.add_argument("--iters", type=int, default=5, help="timed runs per graph (default: 5)")
    p.add_argument("--fp16", action="store_true",
                   help="also time the fp16 version of the export (--precision fp16)")
    p.add_argument("--int8", action="store_true",
                   help="also quantize the export to INT8 both ways and time them: "
                        "--precision int8-ort (uint8 activations, for ONNX Runtime) and "
                        "--precision int8 (signed symmetric Q/DQ, for TensorRT)")
    p.add_argument("--calib-data", type=pathlib.Path, metavar="DIR",
                   help="frames to calibrate INT8 on: a dataset in the generic layout (rgb/, "
                        "depth/); default: rendered synthetic scenes")
    p.add_argument("--calib-frames", type=int, default=8,
                   help="how many calibration frames (default: 8)")
    p.add_argument("--real-data", type=pathlib.Path, metavar="DIR",
                   help="real frames for the timed input and the label agreement: a generic-"
                        "layout dataset or sub-folders with rgb.png|jpg and depth.png "
                        f"(default: {DEFAULT_SAMPLES} when present, else synthetic scenes); "
                        f"frames whose median depth is beyond {MAX_PLAUSIBLE_DEPTH_M:g} m (not "
                        "millimetres) are left out of the agreement and named")
    p.add_argument("--real-frames", type=int, default=4,
                   help="at most this many real frames (default: 4)")
    p.add_argument("--save-models", type=pathlib.Path, metavar="DIR",
                   help="keep the ONNX files (fp32 and each other precision) in DIR")
    p.add_argument("--out", type=pathlib.Path, metavar="TABLE.md",
                   help="also write the table to this file")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def _model(args: argparse.Namespace):
    if (args.checkpoint is None) == (args.arch is None):
        raise CliError("give either CKPT or --arch (with --backbone/--decoder/--num-classes)")
    if args.checkpoint is not None:
        from ..checkpoint import load_model
        return load_model(args.checkpoint, task="segmentation"), str(args.checkpoint)
    import torch

    from ..models import ModelConfig, build_model
    try:
        config = ModelConfig(arch=args.arch, backbone=args.backbone, decoder=args.decoder,
                             num_classes=args.num_classes,
                             modalities=["depth"] if args.arch == "single" else ["rgb", "depth"])
    except ValueError as exc:
        raise CliError(str(exc)) from None
    torch.manual_seed(0)
    return build_model(config).eval(), "fresh weights"


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.inference import DEFAULT_SAMPLES, load_frames, run_bench

    if args.height % 32 or args.width % 32 or args.height <= 0 or args.width <= 0:
        raise CliError(f"--height and --width must be positive multiples of 32 "
                       f"(got {args.height}x{args.width})")
    if args.calib_frames < 1 or args.real_frames < 1:
        raise CliError("--calib-frames and --real-frames must be >= 1")
    if args.calib_data is not None and not args.int8:
        raise CliError("--calib-data needs --int8")
    size = (args.height, args.width)
    real_dir = args.real_data
    if real_dir is None and DEFAULT_SAMPLES.is_dir():
        real_dir = DEFAULT_SAMPLES
    real = load_frames(real_dir, size, args.real_frames) if real_dir is not None else None
    calib = (load_frames(args.calib_data, size, args.calib_frames)
             if args.calib_data is not None else None)
    model, source = _model(args)
    report = run_bench(model, args.height, args.width, threads=args.threads,
                       warmup=args.warmup, iters=args.iters, int8=args.int8, fp16=args.fp16,
                       calib_frames=calib, real_frames=real, calib_count=args.calib_frames,
                       workdir=args.save_models, progress=args.progress)
    report.title += f" ({source})"
    table = report.markdown()
    print(table, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
