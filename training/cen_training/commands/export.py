"""``cen-train export``: a checkpoint to an ONNX file that meets the engine contract."""
from __future__ import annotations

import argparse
import pathlib

from .. import CliError
from ..checkpoint import load_model
from ..data.frames import find_rgbd_pairs, load_rgbd_frame
from ..deploy.export import (
    MIN_LABEL_AGREEMENT,
    MIN_PRECISION_AGREEMENT,
    check_min_agreement,
    export_and_verify,
)
from ..deploy.quantize import (
    CALIBRATION_METHODS,
    INT8_PRECISIONS,
    MAX_PLAUSIBLE_DEPTH_M,
    PRECISIONS,
)
from ..errors import TrainingError

_AGREEMENT_BARS = ", ".join(f"{p} {100 * v:.1f}%" for p, v in MIN_PRECISION_AGREEMENT.items())
PRECISION_HELP = f"""\
precision (--precision), the arithmetic inside the graph; inputs and outputs are the same for
all (uint8 rgb, float32 depth in; uint8 labels, float32 confidence/logits out):
  fp32      float32
  fp16      float16 (for TensorRT; ONNX Runtime runs it on a CPU too, not faster)
  int8      signed, symmetric Q/DQ as TensorRT's explicit quantization wants it: int8 weights
            per output channel, int8 activations per tensor, zero points 0, Q/DQ on the inputs
            of convolutions and additions; ONNX Runtime runs it too (on a CPU not faster than
            fp32). Calibrated on --calib-data.
  int8-ort  for ONNX Runtime on a CPU only (about 0.5x the fp32 latency): uint8 activations
            with zero points, int8 weights per output channel on 7 bits (no saturation on
            CPUs without VNNI); TensorRT refuses it. Calibrated on --calib-data.
The model card records fp32, fp16 or int8. Before the file is written, its labels must match
the fp32 export's (both in ONNX Runtime) on at least {_AGREEMENT_BARS}
of the pixels of real frames: ../shared/samples beside the repository when present and the
--data frames, else the calibration frames (fp16: rendered scenes). Frames whose median depth
is beyond {MAX_PLAUSIBLE_DEPTH_M:g} m (a depth file not in millimetres) are shown, not counted.
--min-agreement PCT sets another bar, e.g. to write a weak early model's int8 file anyway and
inspect it; the figures are printed either way.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (the engine contract) and verify it",
        description="Export CKPT to ONNX opset 17 with static shapes: uint8 RGB [1,H,W,3] and "
                    "float32 depth in metres [1,H,W] in, uint8 labels [1,H,W] out (optionally "
                    "confidence and per-branch/ensemble logits), normalisation, upsampling and "
                    "argmax inside the graph, the model card in the metadata. Batch norms, "
                    "exchange masks and ensemble weights are folded into an inference graph. "
                    "The file is checked (ONNX checker, engine contract, TensorRT parser "
                    "operators) and ONNX Runtime must reproduce the PyTorch model on random "
                    f"and real frames (labels on >= {100 * MIN_LABEL_AGREEMENT:.1f}% of pixels) "
                    "before the export is written; --precision fp16 / int8 / int8-ort then "
                    "convert it and check the labels against it.",
        epilog=PRECISION_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=pathlib.Path, metavar="CKPT")
    p.add_argument("-o", "--output", type=pathlib.Path, required=True, metavar="MODEL.onnx")
    p.add_argument("--height", type=int, required=True, help="input height (multiple of 32)")
    p.add_argument("--width", type=int, required=True, help="input width (multiple of 32)")
    p.add_argument("--confidence", action="store_true",
                   help="also output the max softmax probability per pixel")
    p.add_argument("--logits", action="store_true",
                   help="also output per-branch and ensemble logits at 1/4 resolution")
    p.add_argument("--data", type=pathlib.Path, metavar="DIR",
                   help="dataset folder (rgb/, depth/) whose frames the parity check also uses; "
                        "default: the checkpoint's training dataset if it is on this machine")
    p.add_argument("--parity-frames", type=int, default=4,
                   help="how many real frames the parity check uses (default: 4)")
    p.add_argument("--unfused", action="store_true",
                   help="export the training graph as it is, without folding (for comparison)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="arithmetic inside the graph (default: fp32); see below")
    p.add_argument("--calib-data", type=pathlib.Path, metavar="DIR",
                   help="INT8 (required): frames to calibrate on, like those the robot's camera "
                        "sees: a dataset in the generic layout (rgb/, depth/ 16-bit mm PNG)")
    p.add_argument("--calib-frames", type=int, default=32, metavar="N",
                   help="INT8: calibrate on N frames spread over --calib-data (default: 32)")
    p.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="minmax",
                   help="INT8: activation ranges from min/max (default) or clipped by a "
                        "percentile or entropy (slower, far more memory)")
    p.add_argument("--min-agreement", type=float, metavar="PCT",
                   help="fp16 / int8 / int8-ort: write the file if its labels agree with the fp32 "
                        "graph's on at least PCT%% of pixels (default: fp16 "
                        f"{100 * MIN_PRECISION_AGREEMENT['fp16']:g}, int8 and int8-ort "
                        f"{100 * MIN_PRECISION_AGREEMENT['int8']:g})")
    p.set_defaults(func=run)


def _real_frames(data: pathlib.Path | None, count: int, height: int, width: int):
    if data is None or count <= 0:
        return []
    pairs = find_rgbd_pairs(data, limit=count)
    frames = []
    for rgb_path, depth_path in pairs:
        batch = load_rgbd_frame(rgb_path, depth_path, (height, width))
        frames.append((rgb_path.name, batch["rgb"][0], batch["depth"][0]))
    return frames


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.inference import DEFAULT_SAMPLES, load_frames, synthetic_frames

    int8 = args.precision in INT8_PRECISIONS
    if int8 and args.calib_data is None:
        raise CliError(f"--precision {args.precision} needs --calib-data DIR: frames to "
                       "calibrate on, like those the robot's camera sees")
    if args.calib_data is not None and not int8:
        raise CliError("--calib-data is for --precision int8 or int8-ort")
    if args.calib_frames < 1:
        raise CliError("--calib-frames must be >= 1")
    min_agreement = None if args.min_agreement is None else args.min_agreement / 100
    check_min_agreement(args.precision, min_agreement)
    size = (args.height, args.width)
    calib = load_frames(args.calib_data, size, args.calib_frames) if int8 else None
    model = load_model(args.checkpoint, task="segmentation")
    data = args.data
    if data is None:
        dataset = model.card.get("dataset")   # a dict in checkpoints cen-train writes
        recorded = dataset.get("path") if isinstance(dataset, dict) else None
        if recorded and pathlib.Path(recorded).is_dir():
            data = pathlib.Path(recorded)
    elif not data.is_dir():
        raise CliError(f"{data}: dataset folder not found")
    try:
        frames = _real_frames(data, args.parity_frames, args.height, args.width)
    except TrainingError:
        if args.data is not None:
            raise
        frames = []  # the recorded dataset is not in a layout with rgb/ and depth/
    compared = []
    if args.precision != "fp32":
        samples = load_frames(DEFAULT_SAMPLES, size) if DEFAULT_SAMPLES.is_dir() else []
        # Real frames first; without any, the calibration frames (INT8) or rendered scenes.
        compared = samples + frames or calib or synthetic_frames(size, 4)
    _, report = export_and_verify(model, args.output, args.height, args.width,
                                  confidence=args.confidence, logits=args.logits,
                                  real_frames=frames, fused=not args.unfused,
                                  precision=args.precision, calib_frames=calib,
                                  precision_frames=compared, calibration=args.calib_method,
                                  progress=True, min_agreement=min_agreement)
    print(f"wrote {args.output} ({args.height}x{args.width}, {args.precision}, outputs: labels"
          f"{', confidence' if args.confidence else ''}{', logits' if args.logits else ''})")
    print("parity of the fp32 graph with PyTorch (ONNX Runtime, CPU):")
    print(report.summary())
    if report.precision is not None:
        print(f"{args.precision} labels against the fp32 graph's (ONNX Runtime, CPU"
              + (f"; calibrated on {len(calib)} frames of {args.calib_data}" if calib else "")
              + "):")
        print(report.precision.summary())
        default = MIN_PRECISION_AGREEMENT[args.precision]
        if report.precision.minimum < default:
            print(f"note: written with --min-agreement {args.min_agreement:g}, below the "
                  f"default {100 * default:.1f}%; check its labels before deploying it")
    if not frames:
        print("note: no real frames were available for the parity check (use --data DIR)")
    return 0
