"""The runtime's errors, the one-line form of any exception, and the exit statuses.

Library code raises these; only a console script's ``main`` (or the node at start-up) turns
them into one line and an exit status. ``CenPerceptionError`` is the root: every error the
package raises on purpose derives from it. Every console script of this repository (the
node, the bag commands, the developer tools, ``cen-train``) ends with the same statuses.
"""
from __future__ import annotations

import sys
from typing import Callable


class CenPerceptionError(Exception):
    """Base of every error this package raises on purpose; its message is one line."""


# Exit statuses of every console script.
EXIT_OK = 0  # done; or the check or gate passed
EXIT_REFUSED = 1  # ran, and a gate or check says no
EXIT_ERROR = 2  # could not do what was asked: bad options, input or environment
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


def one_line(exc: BaseException, with_type: bool = False) -> str:
    """An exception's message as one line, for messages that quote a library's error: its
    first non-empty line with runs of spaces collapsed (after its type name when
    ``with_type``), or the type name alone when the message is empty."""
    name = type(exc).__name__
    for line in str(exc).splitlines():
        if line.strip():
            text = " ".join(line.split())
            return f"{name}: {text}" if with_type else text
    return name


def run_command(prog: str, work: Callable[[], int]) -> int:
    """A console script's work: its exit status, or one line on stderr and ``EXIT_ERROR`` for
    an error of this package, ``EXIT_INTERRUPTED`` for Ctrl-C."""
    try:
        return work()
    except CenPerceptionError as exc:
        print(f"{prog}: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


__all__ = ["CenPerceptionError", "EXIT_OK", "EXIT_REFUSED", "EXIT_ERROR", "EXIT_INTERRUPTED",
           "one_line", "run_command"]
