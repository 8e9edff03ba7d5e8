"""Training for multimodal image-to-image translation: the official CEN recipe, on one CPU/GPU
or under ``torchrun``.

Recipe (defaults; the official ``image2image_translation`` code):

* generator ``models.translation.TranslationGenerator`` (pix2pix U-Net, ngf 64, shared convs,
  private InstanceNorms, CEN exchange with theta 1e-2) and the shared conditional PatchGAN
  discriminator (ndf 64); conv and transposed-conv weights N(0, 0.02);
* Adam for both, lr 2e-4, betas (0.5, 0.999); batch 1; 300 epochs;
* per step, the discriminator first:
  ``L_D = sum_m 0.5 * (BCE(D(x_m, y), 1) + BCE(D(x_m, G_m), 0))``, then the generator:
  ``L_G = sum_m BCE(D(x_m, G_m), 1) + 100 * sum over the M + 1 outputs of L1(out, y)
  + 1e-3 * sparsity``, the sparsity term being the L1 of alternating halves of the encoder's
  InstanceNorm weights (``TranslationGenerator.sparsity_penalty``; CEN only). Only the M
  branch outputs are judged, not the ensemble;
* data: resize 286, the same random 256 crop of every domain, random flip; validation resized
  to 256, every 5 epochs.

Two things differ from the official loop without changing what is optimised: the generator
runs once per step, its output feeding the discriminator's step (detached) and then its own
(the official code runs it twice, with two dropout masks); and the BCE is computed from the
discriminator's logits (``binary_cross_entropy_with_logits``, the same loss, stable in mixed
precision). Real and fake pairs go through the discriminator in one batch (InstanceNorm is
per image, so this is exact).

Each epoch writes ``RUN_DIR/last.pt`` (generator, discriminator, optimisers, RNG states;
``resume=True`` continues exactly), ``best.pt`` when the ensemble's validation score improves
(FID with Inception weights, else L1), ``metrics.csv``, TensorBoard logs, and at every
validation a picture grid ``RUN_DIR/pictures/epoch_NNNN.png`` (rows: validation images;
columns: inputs | each branch | ensemble | target).

``train_translation`` reads as the run does: set-up, then per epoch ``train_one_epoch``,
``validate`` and ``save_checkpoints`` (the plumbing both loops share is ``cen_training.loop``);
``TranslateState`` is what the run carries.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.taskonomy import TranslationDataset, TranslationTransform, domain_name
from ..errors import CheckpointError, ConfigError
from ..loop import (
    MetricLog,
    Process,
    check_finite,
    check_new_run,
    end_run,
    limit_reached,
    make_loaders,
    make_scaler,
    read_last_checkpoint,
    restore_training_state,
    save_checkpoints,
    seed_everything,
    setup_distributed,
    training_entries,
    validation_due,
    wrap_ddp,
)
from ..models.translation import (
    TranslationConfig,
    build_discriminator,
    build_translation_model,
    discriminator_inputs,
    normalize_images,
    to_uint8,
)
from .image_metrics import FID_CONVENTIONS, TranslationMeter


@dataclass
class TranslateConfig:
    """Everything a translation run needs; stored in its checkpoints."""
    data: str
    out: str
    inputs: list[str] = field(default_factory=lambda: ["reshading", "edge_texture"])
    target: str = "rgb"
    arch: str = "cen"
    layout: str = "auto"
    size: int = 256  # the generator's input side (official 256)
    load_size: int | None = None  # training resize before the crop; None: size * 286 / 256
    flip: bool = True
    ngf: int = 64
    ndf: int = 64
    epochs: int = 300
    batch_size: int = 1
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    l1_weight: float = 100.0
    lamda: float = 1e-3
    exchange_threshold: float = 1e-2
    init_std: float = 0.02
    test_dropout: bool = False
    val_every: int = 5
    inception_weights: str | None = None
    fid_convention: str = "direct"
    pictures: int = 4  # validation images in each picture grid
    resume: bool = False
    workers: int = 2
    seed: int = 0
    amp: bool = True  # only where CUDA is used
    max_minutes: float | None = None
    max_steps: int | None = None
    progress: bool = True


@dataclass
class TranslateState:
    """Where a run stands; ``last.pt`` keeps all of it, so that a resumed run continues
    exactly."""
    optimizers: list[torch.optim.Optimizer]  # generator, discriminator
    scaler: torch.amp.GradScaler
    epoch: int = 0  # epochs done
    step: int = 0  # optimiser steps done
    best: float = math.inf  # best validation score of the ensemble (lower is better)
    best_scores: dict = field(default_factory=dict)

    def record(self, scores: dict) -> bool:
        """Keep ``scores`` if the ensemble's FID (or L1 without FID) is the best yet."""
        if not scores:
            return False
        value = scores["ensemble"].get("fid", scores["ensemble"]["l1"])
        improved = value < self.best
        if improved:
            self.best = value
            self.best_scores = {"split": "val", "epoch": self.epoch, **scores}
        return improved

    def checkpoint_entries(self, config: TranslateConfig, discriminator) -> dict:
        return training_entries(dataclasses.asdict(config), self, best=self.best,
                                discriminator=discriminator.state_dict(), ndf=config.ndf)


# -- the run -------------------------------------------------------------------------------

def train_translation(config: TranslateConfig, on_epoch_end=None) -> dict:
    """Train as ``config`` says; returns the best validation scores (every output), with
    ``steps`` and ``epochs``."""
    proc = setup_distributed()
    out_dir = pathlib.Path(config.out)
    check_new_run(out_dir, config.resume)
    config = resolve(config)
    train_set, val_set = load_datasets(config)
    seed_everything(config.seed)
    model_config = make_model_config(config)
    generator = build_translation_model(model_config).to(proc.device)
    discriminator = build_discriminator(model_config, config.ndf).to(proc.device)
    resumed = read_resume_checkpoint(out_dir, model_config, config) if config.resume else None
    state = start_state(generator, discriminator, config, resumed, proc)
    g_plain, d_plain = generator, discriminator
    # Never-used InstanceNorms (as in the official model) get no gradients.
    generator = wrap_ddp(generator, proc, find_unused_parameters=True)
    discriminator = wrap_ddp(discriminator, proc, find_unused_parameters=True)
    train_loader, val_loader = make_loaders(train_set, val_set, config, proc)
    inception = None
    if config.inception_weights:
        from .inception import load_inception
        inception = load_inception(config.inception_weights).to(proc.device)

    names = list(g_plain.branch_names) + ["ensemble"]
    card = translation_card(config, model_config, train_set, val_set, state)
    metrics_log = TranslateLog(out_dir, names, state, resumed is not None) if proc.is_main else None
    proc.log(describe_run(config, model_config, train_set, val_set, proc))

    start_time = time.monotonic()
    stopped = False
    while state.epoch < config.epochs and not stopped:
        epoch_start = time.monotonic()
        losses, stopped = train_one_epoch(generator, discriminator, train_loader, state, config,
                                          proc, metrics_log, start_time)
        state.epoch += 1
        check_finite(losses, state.epoch)
        scores = {}
        if validation_due(state.epoch, config.val_every, state.epoch >= config.epochs, stopped):
            scores = validate(g_plain, val_loader, names, inception, config, proc)
            if proc.is_main and config.pictures > 0:
                grid = picture_grid(g_plain, val_set, config.pictures, proc.device)
                metrics_log.log_pictures(state, grid)
        slim = g_plain.slim_fraction() if model_config.arch == "cen" else 0.0
        improved = state.record(scores)
        if proc.is_main:
            seconds = time.monotonic() - epoch_start
            metrics_log.log_epoch(state, losses, slim, scores, seconds)
            card["metrics"] = state.best_scores
            save_checkpoints(out_dir, g_plain, model_config, card,
                             state.checkpoint_entries(config, d_plain), improved)
            proc.log(epoch_summary(state, losses, slim, scores, names, seconds, improved))
        if on_epoch_end is not None:
            on_epoch_end({"epoch": state.epoch, "step": state.step, "losses": losses,
                          "scores": scores, "slim_fraction": slim})

    end_run(proc, config, state, start_time, stopped, g_plain, metrics_log)
    proc.log(f"checkpoints in {out_dir}")
    return {**state.best_scores, "steps": state.step, "epochs": state.epoch}


# -- one epoch -------------------------------------------------------------------------------

def train_one_epoch(generator, discriminator, loader: DataLoader, state: TranslateState,
                    config: TranslateConfig, proc: Process, metrics_log, start_time: float
                    ) -> tuple[dict, bool]:
    """One pass over the training batches, or up to a limit; returns the mean losses (over
    every process) and whether a limit stopped the pass. The models may be DDP-wrapped."""
    from tqdm import tqdm

    generator.train()
    discriminator.train()
    loader.sampler.set_epoch(state.epoch)
    loader.dataset.set_epoch(state.epoch)
    totals = torch.zeros(4, dtype=torch.float64)  # loss_d, loss_g, l1, batches
    stopped = False
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{config.epochs}", unit="batch",
               disable=not (config.progress and proc.is_main), leave=False)
    for batch in bar:
        loss_d, loss_g, loss_l1 = train_step(generator, discriminator, batch, state, config,
                                             proc.device)
        state.step += 1
        totals += torch.tensor([loss_d.item(), loss_g.item(), loss_l1.item(), 1.0],
                               dtype=torch.float64)
        bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.2f}")
        if metrics_log is not None and state.step % 10 == 0:
            metrics_log.log_step(state.step, loss_d.item(), loss_g.item())
        if limit_reached(config, state.step, start_time, proc):
            stopped = True
            break
    bar.close()
    if proc.world > 1:
        totals = totals.to(proc.device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    batches = max(float(totals[3]), 1.0)
    return ({"loss_d": float(totals[0]) / batches, "loss_g": float(totals[1]) / batches,
             "l1": float(totals[2]) / batches}, stopped)


def train_step(generator, discriminator, batch: dict, state: TranslateState,
               config: TranslateConfig, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step of each network on ``batch``, the discriminator first; returns its
    loss, the generator's and the generator's L1 term."""
    g_plain = getattr(generator, "module", generator)
    d_plain = getattr(discriminator, "module", discriminator)
    optimizer_g, optimizer_d = state.optimizers
    use_amp = state.scaler.is_enabled()
    images = [x.to(device, non_blocking=True) for x in batch["inputs"]]
    target = normalize_images(batch["target"].to(device, non_blocking=True))
    conds = discriminator_inputs(g_plain, images)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        outputs = generator(*images)
        fakes = outputs[:len(conds)]  # the branches; the ensemble is not judged
        # Discriminator first: real and (detached) fake pairs in one batch.
        logits = discriminator([torch.cat([c, c]) for c in conds],
                               [torch.cat([target, f.detach()]) for f in fakes])
        loss_d = sum(0.5 * (bce(real, 1.0) + bce(fake, 0.0))
                     for real, fake in (lg.chunk(2) for lg in logits))
    optimizer_d.zero_grad(set_to_none=True)
    state.scaler.scale(loss_d).backward()
    state.scaler.step(optimizer_d)

    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        # The generator's step judges its images with the updated discriminator; the
        # plain module keeps DDP's reducer of the discriminator out of this backward.
        loss_gan = sum(bce(lg, 1.0) for lg in d_plain(conds, fakes))
        loss_l1 = sum(F.l1_loss(out.float(), target) for out in outputs)
    penalty = g_plain.sparsity_penalty()
    loss_g = loss_gan + config.l1_weight * loss_l1 + config.lamda * penalty
    optimizer_g.zero_grad(set_to_none=True)
    state.scaler.scale(loss_g).backward()
    state.scaler.step(optimizer_g)
    state.scaler.update()
    return loss_d, loss_g, loss_l1


def bce(logits: torch.Tensor, value: float) -> torch.Tensor:
    """The official ``BCELoss(sigmoid(logits), value)``, mean over patches, from the logits."""
    return F.binary_cross_entropy_with_logits(logits.float(),
                                              torch.full_like(logits.float(), value))


@torch.no_grad()
def evaluate_translation(generator, loader: DataLoader, names: list[str], device,
                         inception=None, fid_convention: str = "direct",
                         progress: bool = True) -> TranslationMeter:
    """Every output's scores over ``loader``'s images (in eval mode: InstanceNorm with each
    image's statistics, as the official validation; dropout off unless the config keeps it)."""
    from tqdm import tqdm

    was_training = generator.training
    generator.eval()
    meter = TranslationMeter(names, inception, fid_convention)
    for batch in tqdm(loader, desc="validate", unit="image", disable=not progress, leave=False):
        images = [x.to(device) for x in batch["inputs"]]
        target = normalize_images(batch["target"].to(device))
        meter.update(generator(*images), target)
    generator.train(was_training)
    return meter


def validate(generator, loader: DataLoader, names: list[str], inception,
             config: TranslateConfig, proc: Process) -> dict:
    meter = evaluate_translation(generator, loader, names, proc.device, inception,
                                 config.fid_convention, config.progress and proc.is_main)
    meter.all_reduce()
    return meter.scores()


@torch.no_grad()
def picture_grid(generator, dataset: TranslationDataset, count: int, device) -> np.ndarray:
    """uint8 ``[rows * S, columns * S, 3]``: the first ``count`` images of ``dataset``, one row
    each: inputs | each branch | ensemble | target."""
    was_training = generator.training
    generator.eval()
    rows = []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        images = [x.unsqueeze(0).to(device) for x in sample["inputs"]]
        outputs = [to_uint8(out)[0].cpu() for out in generator(*images)]
        rows.append(torch.cat([x[0].cpu() for x in images] + outputs + [sample["target"]], dim=1))
    generator.train(was_training)
    return torch.cat(rows, dim=0).numpy()


# -- checkpoints and logs --------------------------------------------------------------------

def epoch_summary(state: TranslateState, losses: dict, slim: float, scores: dict,
                  names: list[str], seconds: float, improved: bool) -> str:
    text = (f"epoch {state.epoch}: D {losses['loss_d']:.4f}, G {losses['loss_g']:.3f}, "
            f"L1 {losses['l1']:.4f}, exchanged {100 * slim:.1f}%")
    if scores:
        text += " | val L1 " + ", ".join(f"{n} {scores[n]['l1']:.4f}" for n in names)
        if "fid" in scores["ensemble"]:
            text += f", ensemble FID {scores['ensemble']['fid']:.2f}"
    return text + f" ({seconds:.0f} s)" + (" *" if improved else "")


SCORE_KEYS = ("l1", "rmse", "psnr", "ssim", "fid", "kid")


class TranslateLog(MetricLog):
    """The translation run's ``metrics.csv`` and TensorBoard logs (see ``loop.MetricLog``), and
    its picture grids (``RUN_DIR/pictures``)."""

    def __init__(self, out_dir: pathlib.Path, names: list[str], state: TranslateState,
                 resumed: bool) -> None:
        columns = (["epoch", "step", "loss_d", "loss_g", "l1", "slim_fraction", "seconds"]
                   + [f"{n}_{k}" for n in names for k in SCORE_KEYS])
        super().__init__(out_dir, columns, state.epoch, state.step, resumed)

    def log_step(self, step: int, loss_d: float, loss_g: float) -> None:
        self.writer.add_scalar("train/loss_d_step", loss_d, step)
        self.writer.add_scalar("train/loss_g_step", loss_g, step)

    def log_epoch(self, state: TranslateState, losses: dict, slim: float, scores: dict,
                  seconds: float) -> None:
        row = {"epoch": state.epoch, "step": state.step, "slim_fraction": f"{slim:.6f}",
               "seconds": f"{seconds:.1f}", **{k: f"{v:.6f}" for k, v in losses.items()}}
        self.scalars({**{f"train/{key}": value for key, value in losses.items()},
                      "train/slim_fraction": slim}, state.step)
        self.scores(scores, None, state.step, row, digits=6)
        self.write_row(row)

    def log_pictures(self, state: TranslateState, grid: np.ndarray) -> None:
        import cv2
        folder = self.out_dir / "pictures"
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"epoch_{state.epoch:04d}.png"),
                    cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        self.writer.add_image("val/pictures", grid, state.step, dataformats="HWC")


# -- set-up ----------------------------------------------------------------------------------

def resolve(config: TranslateConfig) -> TranslateConfig:
    """Check the options and fill the defaults that depend on others."""
    problems = []
    if config.fid_convention not in FID_CONVENTIONS:
        problems.append(f"--fid-convention {config.fid_convention!r}")
    for name in ("epochs", "batch_size", "val_every"):
        if getattr(config, name) < 1:
            problems.append(f"--{name.replace('_', '-')} {getattr(config, name)} (at least 1)")
    load_size = config.load_size or round(config.size * 286 / 256)
    if load_size < config.size:
        problems.append(f"--load-size {load_size} is smaller than --size {config.size}")
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(config, load_size=load_size,
                               inputs=[domain_name(d) for d in config.inputs],
                               target=domain_name(config.target))


def load_datasets(config: TranslateConfig) -> tuple[TranslationDataset, TranslationDataset]:
    train_set = TranslationDataset(
        config.data, "train", config.inputs, config.target, layout=config.layout,
        transform=TranslationTransform(config.size, config.load_size, train=True,
                                       flip=config.flip), seed=config.seed)
    val_set = TranslationDataset(config.data, "val", config.inputs, config.target,
                                 layout=train_set.layout,
                                 transform=TranslationTransform(config.size, train=False))
    return train_set, val_set


def make_model_config(config: TranslateConfig) -> TranslationConfig:
    try:
        return TranslationConfig(arch=config.arch, inputs=config.inputs, target=config.target,
                                 ngf=config.ngf, size=config.size,
                                 exchange_threshold=config.exchange_threshold,
                                 test_dropout=config.test_dropout)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def read_resume_checkpoint(out_dir: pathlib.Path, model_config: TranslationConfig,
                           config: TranslateConfig) -> dict:
    path, ckpt = read_last_checkpoint(out_dir)
    if ckpt.get("task") != "translation" or \
            TranslationConfig.from_dict(ckpt["config"]) != model_config:
        raise CheckpointError(f"{path}: the checkpoint's model differs from this run's options "
                              "(arch, inputs, target, ngf, size)")
    if ckpt.get("ndf") != config.ndf:
        raise CheckpointError(f"{path}: the checkpoint's discriminator has ndf {ckpt.get('ndf')}")
    return ckpt


def make_optimizers(generator, discriminator, config: TranslateConfig):
    return [torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=tuple(config.betas)),
            torch.optim.Adam(discriminator.parameters(), lr=config.lr_d,
                             betas=tuple(config.betas))]


def start_state(generator, discriminator, config: TranslateConfig, resumed: dict | None,
                proc: Process) -> TranslateState:
    """Fresh N(0, 0.02) weights, or everything ``resumed`` (its ``last.pt``) holds."""
    scaler = make_scaler(config, proc)
    if resumed is None:
        generator.init_weights(config.init_std)
        discriminator.init_weights(config.init_std)
        return TranslateState(optimizers=make_optimizers(generator, discriminator, config),
                              scaler=scaler)
    generator.load_state_dict(resumed["model"])
    discriminator.load_state_dict(resumed["discriminator"])
    state = TranslateState(optimizers=make_optimizers(generator, discriminator, config),
                           scaler=scaler, epoch=resumed["epoch"], step=resumed["step"],
                           best=resumed["best"], best_scores=resumed["best_scores"])
    restore_training_state(state.optimizers, scaler, resumed)
    proc.log(f"resuming {pathlib.Path(config.out) / 'last.pt'}: epoch {state.epoch} done")
    return state


def translation_card(config: TranslateConfig, model_config: TranslationConfig,
                     train_set: TranslationDataset, val_set: TranslationDataset,
                     state: TranslateState) -> dict:
    return {"task": "translation", "inputs": model_config.inputs, "target": model_config.target,
            "normalization": "each input uint8 RGB, x / 255, mean 0.5, std 0.5; outputs in "
                             "[-1, 1] (uint8 = (y + 1) * 127.5)",
            "dataset": {**train_set.describe(), "train_samples": len(train_set),
                        "val_samples": len(val_set)},
            "training": {"recipe": "cen-translation", "epochs": config.epochs,
                         "batch_size": config.batch_size, "lr_g": config.lr_g,
                         "lr_d": config.lr_d, "betas": list(config.betas),
                         "l1_weight": config.l1_weight, "lamda": config.lamda,
                         "size": config.size, "load_size": config.load_size,
                         "fid_convention": config.fid_convention},
            "metrics": state.best_scores}


def describe_run(config: TranslateConfig, model_config: TranslationConfig,
                 train_set: TranslationDataset, val_set: TranslationDataset,
                 proc: Process) -> str:
    official = "" if model_config.official else " (reduced: not the official generator)"
    return (f"{model_config.arch}: {' + '.join(model_config.inputs)} -> {model_config.target} "
            f"on {train_set.root} ({train_set.layout}): {len(train_set)} train / "
            f"{len(val_set)} val; {proc.world} process(es) on {proc.device}; size "
            f"{config.size}{official}, ngf {config.ngf}, batch {config.batch_size}, "
            f"{config.epochs} epochs")
