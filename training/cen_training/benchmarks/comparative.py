"""What the comparative benchmarks (``bench-fusion``, ``bench-translation``) share: their option
checks, the training budget of each model, the training runs side by side and the results
files (``OUT/results.json`` and ``OUT/results.md``)."""
from __future__ import annotations

import argparse
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Callable, Iterator

from ..errors import CliError
from .side_by_side import run_side_by_side


@dataclass(frozen=True)
class Budget:
    """How long each model of a table trains: ``steps`` each, or ``minutes`` each (the
    table's minutes shared out over the models, ``jobs`` of them training at a time)."""
    jobs: int
    steps: int | None
    minutes: float | None

    def describe(self, digits: int) -> str:
        return (f"{self.steps} steps each" if self.steps
                else f"{self.minutes:.{digits}f} min of training each")


def check_options(args: argparse.Namespace) -> None:
    """``CliError`` for an earlier benchmark in ``--out`` or a budget, job or thread count that
    cannot work."""
    runs_dir = args.out / "runs"
    if runs_dir.exists() and any(runs_dir.iterdir()):
        raise CliError(f"{args.out} holds an earlier benchmark; choose another --out")
    if args.budget_minutes <= 0 or (args.steps is not None and args.steps < 1):
        raise CliError("--budget-minutes and --steps must be positive")
    if args.jobs < 1 or args.threads < 1:
        raise CliError("--jobs and --threads must be >= 1")


def budget(args: argparse.Namespace, models: int) -> Budget:
    """Each of ``models`` models' share of ``--budget-minutes`` (or ``--steps``)."""
    jobs = min(args.jobs, models)
    minutes = None if args.steps else args.budget_minutes * jobs / models
    return Budget(jobs=jobs, steps=args.steps, minutes=minutes)


def train_models(args: argparse.Namespace, models: list[str], each: Budget, budget_text: str,
                 command: Callable[[str, pathlib.Path], list[str]],
                 describe: Callable[[str], str]) -> Iterator[tuple[str, pathlib.Path, float]]:
    """Train every model (``command(name, run_dir)``) in ``OUT/runs/<name>/``, ``each.jobs`` at
    a time on ``--threads`` threads each; yields ``(name, run_dir, minutes)`` as each ends."""
    runs_dir = args.out / "runs"
    print(f"training {len(models)} models, {each.jobs} at a time on {args.threads} thread(s) "
          f"each, {budget_text}; logs in {runs_dir}/<model>/train.log")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    yield from run_side_by_side(list(models), command, runs_dir, each.jobs, env, describe)


def write_results(args: argparse.Namespace, data: pathlib.Path, results: dict, text: str,
                  **extra) -> None:
    """``OUT/results.json`` (the options, ``results`` and ``extra``), ``OUT/results.md``
    (``text``), and ``text`` on the terminal."""
    settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()
                if k != "func"}
    (args.out / "results.json").write_text(json.dumps(
        {"settings": {**settings, "data": str(data)}, "results": results, **extra}, indent=2)
        + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(text, encoding="utf-8")
    print("\n" + text)
