"""``cen-train export``: a checkpoint to an ONNX file that meets the engine contract."""
from __future__ import annotations

import argparse
import pathlib

from .. import CliError
from ..checkpoint import load_model
from ..export import MIN_LABEL_AGREEMENT, export_and_verify
from ..tensorrt_build import find_calibration_pairs, load_calibration_frame


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
                    "before the export is written.")
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
    p.set_defaults(func=run)


def _real_frames(data: pathlib.Path | None, count: int, height: int, width: int):
    if data is None or count <= 0:
        return []
    pairs = find_calibration_pairs(data, limit=count)
    frames = []
    for rgb_path, depth_path in pairs:
        batch = load_calibration_frame(rgb_path, depth_path, (height, width))
        frames.append((rgb_path.name, batch["rgb"][0], batch["depth"][0]))
    return frames


def run(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint)
    data = args.data
    if data is None:
        recorded = model.card.get("dataset", {}).get("path")
        if recorded and pathlib.Path(recorded).is_dir():
            data = pathlib.Path(recorded)
    elif not data.is_dir():
        raise CliError(f"{data}: dataset folder not found")
    try:
        frames = _real_frames(data, args.parity_frames, args.height, args.width)
    except CliError:
        if args.data is not None:
            raise
        frames = []  # the recorded dataset is not in a layout with rgb/ and depth/
    _, report = export_and_verify(model, args.output, args.height, args.width,
                                  confidence=args.confidence, logits=args.logits,
                                  real_frames=frames, fused=not args.unfused)
    print(f"wrote {args.output} ({args.height}x{args.width}, outputs: labels"
          f"{', confidence' if args.confidence else ''}{', logits' if args.logits else ''})")
    print("parity with PyTorch (ONNX Runtime, CPU):")
    print(report.summary())
    if not frames:
        print("note: no real frames were available for the parity check (use --data DIR)")
    return 0
