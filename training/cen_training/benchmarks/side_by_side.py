"""Training runs side by side for the benchmark commands (``bench-fusion``,
``bench-translation``): each in a process and folder of its own, a few at a time."""
from __future__ import annotations

import pathlib
import subprocess
import time
from typing import Callable, Iterator

from ..errors import CliError


def run_side_by_side(names: list[str], command: Callable[[str, pathlib.Path], list[str]],
                     runs_dir: pathlib.Path, jobs: int, env: dict[str, str],
                     describe: Callable[[str], str]) -> Iterator[tuple[str, pathlib.Path, float]]:
    """Run ``command(name, run_dir)`` for every name, ``jobs`` at a time, each logging to
    ``runs_dir/<name>/train.log``; yields ``(name, run_dir, minutes)`` as each one finishes.

    A run that fails stops the others and raises ``CliError`` with its log's last line; so do
    an error in the caller and Ctrl-C.
    """
    waiting, running = list(names), {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.pop(0)
                run_dir = runs_dir / name
                run_dir.mkdir(parents=True)
                log = open(run_dir / "train.log", "w")
                process = subprocess.Popen(command(name, run_dir), stdout=log,
                                           stderr=subprocess.STDOUT, env=env)
                running[name] = (process, log, time.monotonic())
                print(f"  {name}: {describe(name)} ...", flush=True)
            time.sleep(0.5)
            for name, (process, log, started) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[name]
                run_dir = runs_dir / name
                if process.returncode != 0:
                    tail = (run_dir / "train.log").read_text().strip().splitlines()[-1:]
                    raise CliError(f"training {name} failed (exit {process.returncode}): "
                                   f"{tail[0] if tail else ''} (see {run_dir / 'train.log'})")
                yield name, run_dir, (time.monotonic() - started) / 60
    finally:  # on an error or Ctrl-C, stop the runs still going
        for process, log, _ in running.values():
            process.terminate()
            process.wait()
            log.close()
