"""``cen-train build-engine``: a TensorRT engine and its sidecar card from an exported model."""
from __future__ import annotations

import argparse
import pathlib

from ..tensorrt_build import build_engine, default_cache_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-engine", help="build a TensorRT engine from an exported ONNX model",
        description="Build a TensorRT engine for this machine's GPU from an ONNX model made by "
                    "`cen-train export`, and write its model card beside it as <engine>.json. "
                    "Engines are cached by ONNX hash, TensorRT version, GPU, precision and input "
                    "shape; the same build again reuses the cached engine.")
    parser.add_argument("onnx", type=pathlib.Path, help="the exported .onnx model")
    parser.add_argument("-o", "--output", type=pathlib.Path,
                        help="engine file to write (default: the ONNX path with .engine)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    precision.add_argument("--int8", action="store_true",
                           help="allow INT8 kernels, calibrated on --calib-data")
    parser.add_argument("--calib-data", type=pathlib.Path, metavar="DIR",
                        help="dataset folder in the generic layout (rgb/, depth/ 16-bit mm PNG) "
                             "for INT8 calibration")
    parser.add_argument("--calib-limit", type=int, default=500, metavar="N",
                        help="calibrate on at most N frames spread over the folder (default 500)")
    parser.add_argument("--workspace-gb", type=float, default=4.0, metavar="N",
                        help="builder workspace memory limit in GiB (default 4)")
    parser.add_argument("--cache-dir", type=pathlib.Path, metavar="DIR",
                        help=f"engine cache (default {default_cache_dir()})")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even when the cache holds an engine for these settings")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import CliError

    if args.calib_data is not None and not args.int8:
        raise CliError("--calib-data is only used with --int8")
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    output = args.output or args.onnx.with_suffix(".engine")
    engine = build_engine(args.onnx, output, precision=precision, workspace_gb=args.workspace_gb,
                          calib_data=args.calib_data, calib_limit=args.calib_limit,
                          cache_dir=args.cache_dir, force=args.force, device=args.device)
    print(f"wrote {engine} and its model card {engine.name}.json")
    return 0
