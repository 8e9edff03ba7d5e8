"""``cen-train``: the training package's command line.

Each sub-command lives in ``cen_training.commands.<name>`` and provides
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments. Any of the package's errors (``cen_training.errors``, ``CliError``) or a
missing file ends the program with one readable line and exit status 2 (``EXIT_ERROR``); this
is the only place that turns errors into exit codes. ``EXIT_STATUS_HELP`` lists the statuses.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, TrainingError

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


EXIT_STATUS_HELP = """\
exit status of every command:
  0    done; or the check or gate passed
  1    it ran, and a gate or check says no (compare: the new model fails the gate;
       gpu-check: a part failed)
  2    an error: bad options or input, a missing or unreadable file (one line on stderr;
       also argparse's usage errors)
  130  interrupted (Ctrl-C)
gpu-check also ends with 3 when there is no CUDA GPU to check, and 4 when what ran passed but
some parts could not run here."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cen-train",
        description="Train, evaluate and export CEN / AsymFusion RGB-D segmentation networks.",
        epilog=EXIT_STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        return EXIT_ERROR
    except FileNotFoundError as exc:
        print(f"cen-train {args.command}: error: {exc.filename or exc}: file not found",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"cen-train {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or EXIT_OK)


if __name__ == "__main__":
    sys.exit(main())
