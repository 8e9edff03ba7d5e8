"""``cen-train build-engine``: a TensorRT engine and its sidecar card from an exported model."""
from __future__ import annotations

import argparse
import pathlib

from ..deploy.tensorrt import build_engine, default_cache_dir

EPILOG = """\
precision comes from the ONNX model: export it with
  cen-train export CKPT -o model_fp16.onnx --height H --width W --precision fp16
  cen-train export CKPT -o model_int8.onnx --height H --width W --precision int8 --calib-data DIR
and build it as it is. What build-engine asks TensorRT for:
  TensorRT 10.x, 11.x  a strongly typed network: each layer runs in the ONNX graph's type
  TensorRT 8.6         explicit batch; BuilderFlag FP16 for an fp16 graph, INT8 for a Q/DQ graph
  --fp16, --legacy-int8  weak typing on an fp32 graph, TensorRT 8.6-10.x only (11 removed it)
An fp32 graph is built with BuilderFlag.TF32 cleared (TensorRT enables it by default), so the
engine computes in fp32 (trtexec: --noTF32).
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-engine", help="build a TensorRT engine from an exported ONNX model",
        description="Build a TensorRT engine for this machine's GPU from an ONNX model made by "
                    "`cen-train export`, and write its model card beside it as <engine>.json. "
                    "The engine has the ONNX model's precision (fp32, fp16 or int8). Engines "
                    "are cached by ONNX hash, TensorRT version and pip package (tensorrt-cu12, "
                    "tensorrt-cu13), GPU, compute capability and multiprocessor count, "
                    "precision and input shape; the same build again reuses the cached engine.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=pathlib.Path, help="the exported .onnx model")
    parser.add_argument("-o", "--output", type=pathlib.Path,
                        help="engine file to write (default: the ONNX path with .engine)")
    legacy = parser.add_mutually_exclusive_group()
    legacy.add_argument("--fp16", action="store_true",
                        help="legacy weak typing (TensorRT 8.6-10.x): let TensorRT pick FP16 "
                             "kernels in an fp32 model; TensorRT 11 has no such mode, there "
                             "export with --precision fp16")
    legacy.add_argument("--legacy-int8", action="store_true",
                        help="legacy implicit INT8 (TensorRT 8.6-10.x; deprecated since 10.1): "
                             "TensorRT's entropy calibrator on --calib-data over an fp32 model; "
                             "prefer export --precision int8")
    legacy.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calib-data", type=pathlib.Path, metavar="DIR",
                        help="dataset folder in the generic layout (rgb/, depth/ 16-bit mm PNG) "
                             "for --legacy-int8; every frame is read and checked before the "
                             "build")
    parser.add_argument("--calib-limit", type=int, default=500, metavar="N",
                        help="calibrate on at most N frames spread over the folder (default 500)")
    parser.add_argument("--workspace-gb", type=float, default=4.0, metavar="N",
                        help="builder workspace memory limit in GiB (default 4)")
    parser.add_argument("--cache-dir", type=pathlib.Path, metavar="DIR",
                        help=f"engine cache (default {default_cache_dir()})")
    parser.add_argument("--force", action="store_true",
                        help="rebuild: discard the cached engine and INT8 calibration cache for "
                             "these settings")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import CliError
    from ..deploy.tensorrt import onnx_route

    if args.int8:
        raise CliError(f"--int8 is gone: an int8 ONNX model carries its precision ("
                       f"{onnx_route('int8')}); --legacy-int8 keeps TensorRT's calibrator on "
                       "TensorRT 8.6-10.x")
    output = args.output or args.onnx.with_suffix(".engine")
    engine = build_engine(args.onnx, output, fp16=args.fp16, legacy_int8=args.legacy_int8,
                          workspace_gb=args.workspace_gb, calib_data=args.calib_data,
                          calib_limit=args.calib_limit, cache_dir=args.cache_dir,
                          force=args.force, device=args.device, progress=args.progress)
    print(f"wrote {engine} and its model card {engine.name}.json")
    return 0
