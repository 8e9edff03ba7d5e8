"""``cen-train``: the training package's command line.

Each sub-command lives in ``cen_training.commands.<name>`` and provides
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments. Any of the package's errors (``cen_training.errors``, ``CliError``) or a
missing file ends the program with one readable line and a non-zero exit status; this is the
only place that turns errors into exit codes.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import TrainingError

# In the order `cen-train --help` lists them.
COMMANDS = (
    "synth",
    "check_data",
    "train",
    "eval",
    "export",
    "build_engine",
    "gpu_check",
    "import_official",
    "import_imagenet",
    "bench",
    "bench_fusion",
    "extract_frames",
    "import_labels",
    "select_frames",
    "export_labels",
    "compare",
    "translate",
    "bench_translation",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cen-train",
        description="Train, evaluate and export CEN / AsymFusion RGB-D segmentation networks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cen_training.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except TrainingError as exc:
        print(f"cen-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"cen-train {args.command}: error: {exc.filename or exc}: file not found",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cen-train {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
