"""What both training loops share: segmentation (``segmentation.train``) and translation
(``translation.train``).

A run's process and device (one CPU/GPU, or one of ``torchrun``'s processes), its RNG state,
the data loaders, the step and time limits, the validation schedule, ``RUN_DIR/last.pt`` and
``best.pt`` (save and resume) and the metric log (``metrics.csv`` and TensorBoard), so that
each loop reads as its recipe: set-up, then per epoch train, validate, log and save.
"""
from __future__ import annotations

import csv
import math
import os
import pathlib
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, ConfigError, TrainingError


@dataclass(frozen=True)
class Process:
    """This process's place in the run (one of ``world`` under ``torchrun``)."""
    rank: int
    world: int
    device: torch.device
    joined_group: bool  # this process joined the process group here, and leaves it at the end

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def log(self, message: str) -> None:
        if self.is_main:
            print(message)


# -- process, device and randomness ----------------------------------------------------------

def setup_distributed() -> Process:
    """This process's rank, world size and device; joins the process group when run by
    ``torchrun`` (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    joined = world > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(rank=dist.get_rank() if world > 1 else 0, world=world, device=device,
                   joined_group=joined)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (np_state[0], np_state[1].tolist(), *map(int, np_state[2:4]),
                       float(np_state[4])),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def wrap_ddp(model: torch.nn.Module, proc: Process,
             find_unused_parameters: bool = False) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when the run has more than one process."""
    if proc.world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[proc.device.index] if proc.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters)


def make_scaler(config, proc: Process) -> torch.amp.GradScaler:
    """Mixed precision's loss scaler: enabled on CUDA unless ``config.amp`` is off."""
    return torch.amp.GradScaler("cuda", enabled=config.amp and proc.device.type == "cuda")


def make_loaders(train_set: Dataset, val_set: Dataset, config,
                 proc: Process) -> tuple[DataLoader, DataLoader]:
    """Training batches shared out over the processes (``batch_size`` in all), and each
    process's share of the validation images, one at a time."""
    if config.batch_size % proc.world:
        raise ConfigError(f"--batch-size {config.batch_size} is not divisible by {proc.world} "
                          "processes")
    sampler = DistributedSampler(train_set, num_replicas=proc.world, rank=proc.rank,
                                 shuffle=True, seed=config.seed, drop_last=True)
    train_loader = DataLoader(train_set, batch_size=config.batch_size // proc.world,
                              sampler=sampler, num_workers=config.workers,
                              pin_memory=proc.device.type == "cuda", drop_last=True)
    if len(train_loader) == 0:
        raise ConfigError(f"{len(train_set)} training samples make no batch of "
                          f"{config.batch_size}")
    val_loader = DataLoader(Subset(val_set, range(proc.rank, len(val_set), proc.world)),
                            batch_size=1, num_workers=config.workers,
                            pin_memory=proc.device.type == "cuda")
    return train_loader, val_loader


# -- the schedule ----------------------------------------------------------------------------

def limit_reached(config, step: int, start_time: float, proc: Process) -> bool:
    """Whether ``max_steps`` or ``max_minutes`` ends training after this step; every process
    gets the same answer."""
    if config.max_steps is not None and step >= config.max_steps:
        return True
    if config.max_minutes is None:
        return False
    over = torch.tensor(float(time.monotonic() - start_time > 60 * config.max_minutes))
    if proc.world > 1:  # every process must stop after the same step
        over = over.to(proc.device)
        dist.all_reduce(over, op=dist.ReduceOp.MAX)
    return bool(over.item())


def validation_due(epoch: int, val_every: int, last_epoch: bool, stopped: bool) -> bool:
    """Every ``val_every`` epochs, after the last epoch (of a stage, or of the run), and when a
    limit stops the run."""
    return epoch % val_every == 0 or last_epoch or stopped


def check_finite(losses: dict[str, float], epoch: int) -> None:
    """``TrainingError`` when an epoch's mean loss is not finite: the run diverged."""
    if not all(math.isfinite(v) for v in losses.values()):
        shown = ", ".join(f"{k} {v}" for k, v in losses.items())
        raise TrainingError(f"training diverged: {shown} in epoch {epoch}")


def end_run(proc: Process, config, state, start_time: float, stopped: bool,
            model: torch.nn.Module, metric_log: MetricLog | None) -> None:
    """Say why a run stopped early, check that every process ends with the same weights,
    leave the process group and close the logs."""
    if stopped:
        limit = "step" if config.max_steps and state.step >= config.max_steps else "time"
        proc.log(f"stopped at the {limit} limit: epoch {state.epoch}, step {state.step}, "
                 f"{(time.monotonic() - start_time) / 60:.1f} min")
    if proc.world > 1:
        check_ranks_agree(model, proc)
        if proc.joined_group:
            dist.destroy_process_group()
    if metric_log is not None:
        metric_log.close()


def check_ranks_agree(model, proc: Process) -> None:
    """Every process must end with the same parameters; raise if they differ."""
    flat = torch.cat([p.detach().flatten().float() for p in model.parameters()]).to(proc.device)
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    difference = max(float((g - gathered[0]).abs().max()) for g in gathered)
    if difference != 0.0:
        raise TrainingError(f"processes disagree: parameters differ by up to {difference:g}")
    proc.log(f"parameters identical on all {dist.get_world_size()} processes")


# -- checkpoints -----------------------------------------------------------------------------

def check_new_run(out_dir: pathlib.Path, resume: bool) -> None:
    """A run that does not resume must not write over an earlier one."""
    if not resume and (out_dir / "last.pt").exists():
        raise ConfigError(f"{out_dir} already holds a run (last.pt): continue it with --resume "
                          "or choose another --out")


def read_last_checkpoint(out_dir: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """``RUN_DIR/last.pt`` (its path and contents), to continue the run; each loop then checks
    that it holds the model its options build."""
    path = out_dir / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: nothing to resume")
    return path, load_checkpoint(path)


def restore_training_state(optimizers: list[torch.optim.Optimizer],
                           scaler: torch.amp.GradScaler, resumed: dict) -> None:
    """Optimisers, loss scaler and RNG states as ``resumed`` (a ``last.pt``) left them."""
    for optimizer, saved in zip(optimizers, resumed["optimizers"]):
        optimizer.load_state_dict(saved)
    scaler.load_state_dict(resumed["scaler"])
    set_rng_state(resumed["rng"])


def training_entries(config_dict: dict, state, **extra: Any) -> dict:
    """What every ``last.pt`` holds beside the model: the run's options, counters, best scores,
    optimisers, loss scaler and RNG states (loop-specific entries in ``extra``)."""
    return {"train_config": config_dict, "epoch": state.epoch, "step": state.step,
            "best_scores": state.best_scores, **extra,
            "optimizers": [o.state_dict() for o in state.optimizers],
            "scaler": state.scaler.state_dict(), "rng": rng_state()}


def save_checkpoints(out_dir: pathlib.Path, model, model_config, card: dict, entries: dict,
                     improved: bool) -> None:
    """``last.pt`` after every epoch, and ``best.pt`` when validation improved."""
    save_checkpoint(out_dir / "last.pt", model, model_config, card, **entries)
    if improved:
        save_checkpoint(out_dir / "best.pt", model, model_config, card, **entries)


# -- the metric log --------------------------------------------------------------------------

class MetricLog:
    """``RUN_DIR/metrics.csv`` (a row per epoch, ``columns``) and TensorBoard logs
    (``RUN_DIR/tensorboard``); written by rank 0 only. A resumed run keeps the rows and events
    up to its checkpoint (``epoch``, ``step``)."""

    def __init__(self, out_dir: pathlib.Path, columns: list[str], epoch: int, step: int,
                 resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.writer = SummaryWriter(str(out_dir / "tensorboard"),
                                    purge_step=step if step else None)
        self.csv_path = out_dir / "metrics.csv"
        self.columns = columns
        kept_rows = []
        if resumed and self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:  # drop rows past the checkpoint
                kept_rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epoch]
        with open(self.csv_path, "w", newline="") as f:
            csv_writer = csv.DictWriter(f, fieldnames=self.columns)
            csv_writer.writeheader()
            csv_writer.writerows(kept_rows)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """TensorBoard scalars, by tag."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def scores(self, scores: dict[str, dict[str, float]], keys, step: int, row: dict,
               digits: int) -> None:
        """Validation ``scores`` (output -> metric -> value): the ``keys`` of each output into
        ``row`` (column ``<output>_<key>``) and TensorBoard (tag ``val_<key>/<output>``)."""
        for name, values in scores.items():
            for key in keys or values:
                row[f"{name}_{key}"] = f"{values[key]:.{digits}f}"
                self.writer.add_scalar(f"val_{key}/{name}", values[key], step)

    def write_row(self, row: dict) -> None:
        """One row of ``metrics.csv``; flushes the TensorBoard events with it."""
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(row)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
