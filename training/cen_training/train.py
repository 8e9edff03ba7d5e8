"""Training: the official CEN recipe in one loop, on one CPU/GPU or under ``torchrun``.

Recipe (defaults; Wang et al., NeurIPS 2020, and the authors' code):

* stages (3 by default), each with fresh optimisers and its own constant learning rates;
  encoder and decoder get separate SGD optimisers (momentum 0.9, weight decay 1e-5), LRs
  encoder 5e-4 / 2.5e-4 / 1e-4 and decoder 3e-3 / 1.5e-3 / 7e-4; ``epochs`` is per stage;
* loss: the sum over all M + 1 outputs (each branch, then the ensemble) of the NLL of the
  log-softmax of the logits upsampled bilinearly to the label size, ignoring 255, plus
  ``lamda * model.sparsity_penalty()`` once per output (the L1 on CEN's exchange-BN scaling
  factors; zero for other archs);
* BatchNorm running statistics frozen (``model.freeze_bn_stats()`` after ``model.train()``)
  when starting from pretrained weights, as the recipe does with ImageNet weights;
* augmentation: random scale 0.5-2.0, pad, mirror, random crop (500 for NYUDv2/SUN RGB-D);
  validation single-scale on full images.

Beyond the recipe, ``modality_dropout`` P > 0 (default 0) blanks the whole depth map (0 metres,
what the node feeds the network when depth is missing) in a fraction P of the training
samples, after the other augmentations, so that a model degrades gracefully when a robot's
depth camera drops out.

The model card of every checkpoint records the training data (and the dropout), and
``depth_range_m``: the 1st and 99th percentile of the training split's valid depth (from up to
200 frames; ``data.datasets.training_depth_range``), computed once at the start of a run.

Each epoch writes ``RUN_DIR/last.pt`` (atomically), and ``best.pt`` when the validation
ensemble mIoU improves; ``metrics.csv`` and TensorBoard logs (``RUN_DIR/tensorboard``) record
loss, learning rates, the fraction of scaling factors below the exchange threshold and the
validation scores of every branch and the ensemble. ``resume=True`` continues from ``last.pt``
exactly where the last completed epoch left off: model, optimisers, AMP scaler, stage, epoch,
step, RNG states. Sample order and augmentation derive from (seed, epoch, index), so they do
not depend on the number of data-loading workers either.

Under ``torchrun`` every process trains on its share of each batch (DistributedDataParallel;
NCCL on GPUs, gloo on CPUs) and only rank 0 writes files. On a GPU the forward pass runs in
mixed precision (``torch.autocast`` float16 with a ``GradScaler``); on a CPU in float32.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .errors import CheckpointError, ConfigError
from .checkpoint import load_checkpoint, save_checkpoint
from .data import IGNORE_INDEX, RGBDSegmentationDataset, TrainTransform, validate_dataset
from .data.datasets import image_size, training_depth_range
from .evaluate import evaluate, output_names
from .models import ModelConfig, build_model, init_from_imagenet

SGD_LRS = {"enc": (5e-4, 2.5e-4, 1e-4), "dec": (3e-3, 1.5e-3, 7e-4)}
# Adam is not part of the official recipe; these suit short runs from scratch.
ADAM_LRS = {"enc": (1e-3, 5e-4, 2.5e-4), "dec": (1e-3, 5e-4, 2.5e-4)}


@dataclass
class TrainConfig:
    """Everything a training run needs; stored in its checkpoints."""
    data: str
    out: str
    arch: str = "cen"
    backbone: str = "resnet101"
    decoder: str = "official"
    modalities: list[str] = field(default_factory=lambda: ["rgb", "depth"])
    layout: str = "auto"
    stages: int = 3
    epochs: list[int] | None = None  # per stage; None: 100 (150 for resnet152), as official
    batch_size: int = 6
    crop: int | None = None  # None: 500 (official layouts) or the images' shorter side
    scale_range: tuple[float, float] = (0.5, 2.0)
    # Fraction of training samples whose depth is blanked (0 = invalid); 0 = official recipe.
    modality_dropout: float = 0.0
    optimizer: str = "sgd"  # sgd | adam
    lr_enc: list[float] | None = None  # per stage; None: the optimiser's defaults above
    lr_dec: list[float] | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-5
    lamda: float = 2e-4
    bn_threshold: float = 2e-2
    freeze_bn: bool | None = None  # None: frozen when starting from pretrained weights
    imagenet: str | None = None
    init: str | None = None
    resume: bool = False
    workers: int = 2
    seed: int = 0
    amp: bool = True  # only where CUDA is used
    val_every: int = 1
    # Limits: stop (then validate and save) after this much training time or this many
    # optimiser steps; a run so stopped counts its last epoch as done if resumed.
    max_minutes: float | None = None
    max_steps: int | None = None
    check_data: bool = True
    progress: bool = True


# -- set-up helpers ------------------------------------------------------------------------

def setup_distributed() -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether this call joined the process group); joins it when
    run by ``torchrun``."""
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
    return (dist.get_rank() if world > 1 else 0), world, device, joined


def per_stage(values, stages: int, what: str) -> list:
    """One value per stage: a single value repeats; otherwise exactly ``stages`` values."""
    values = list(values)
    if len(values) == 1:
        return values * stages
    if len(values) < stages:
        raise ConfigError(f"{what}: {len(values)} values for {stages} stages")
    return values[:stages]


def resolve(config: TrainConfig, train_set: RGBDSegmentationDataset) -> TrainConfig:
    """Fill the defaults that depend on the data, the backbone or the optimiser."""
    lrs = ADAM_LRS if config.optimizer == "adam" else SGD_LRS
    if config.optimizer not in ("sgd", "adam"):
        raise ConfigError(f"unknown optimizer {config.optimizer!r}; choose sgd or adam")
    if not 0.0 <= config.modality_dropout <= 1.0:
        raise ConfigError(f"--modality-dropout {config.modality_dropout}: need a fraction in 0..1")
    if config.modality_dropout > 0 and not {"depth", "normals"} & set(config.modalities):
        raise ConfigError("--modality-dropout blanks the depth input, which "
                          f"{' + '.join(config.modalities)} does not use")
    epochs = config.epochs or [150 if config.backbone == "resnet152" else 100]
    crop = config.crop
    if crop is None:
        crop = 500 if train_set.layout != "generic" else min(image_size(train_set.samples[0].rgb))
    freeze_bn = config.freeze_bn
    if freeze_bn is None:
        freeze_bn = bool(config.imagenet or config.init)
    return dataclasses.replace(
        config, epochs=per_stage(epochs, config.stages, "--epochs"),
        lr_enc=per_stage(config.lr_enc or lrs["enc"], config.stages, "--lr-enc"),
        lr_dec=per_stage(config.lr_dec or lrs["dec"], config.stages, "--lr-dec"),
        crop=crop, freeze_bn=freeze_bn)


def make_model_config(config: TrainConfig, train_set: RGBDSegmentationDataset) -> ModelConfig:
    from cen_perception.model_card import OFFICIAL_NORMALIZATION, SUNRGBD_NORMALIZATION
    # SUN RGB-D: the official code scales each depth image to 0..255 (min-max).
    normalization = (SUNRGBD_NORMALIZATION if train_set.layout == "sunrgbd"
                     else OFFICIAL_NORMALIZATION)
    try:
        return ModelConfig(arch=config.arch, backbone=config.backbone,
                           modalities=config.modalities, num_classes=train_set.num_classes,
                           decoder=config.decoder, bn_threshold=config.bn_threshold,
                           normalization=dict(normalization))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def init_weights(model, config: TrainConfig, log) -> None:
    """ImageNet encoder weights (``--imagenet``) or a checkpoint's weights (``--init``)."""
    if config.imagenet:
        loaded = init_from_imagenet(model, config.imagenet, config.backbone)
        log(f"ImageNet weights from {config.imagenet}: {len(loaded)} tensors")
    if config.init:
        state = load_checkpoint(config.init)["model"]
        own = model.state_dict()
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not fits:
            raise CheckpointError(f"{config.init}: no weights fit this model")
        model.load_state_dict(fits, strict=False)
        skipped = sorted(set(own) - set(fits))
        log(f"weights from {config.init}: {len(fits)} tensors"
            + (f"; kept fresh: {', '.join(skipped[:4])}{' ...' if len(skipped) > 4 else ''}"
               if skipped else ""))


def make_optimizers(model, config: TrainConfig, stage: int):
    """The official pair: one optimiser for the encoder, one for the decoder."""
    groups = ((model.encoder_parameters(), config.lr_enc[stage]),
              (model.decoder_parameters(), config.lr_dec[stage]))
    if config.optimizer == "adam":
        return [torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
                for params, lr in groups]
    return [torch.optim.SGD(params, lr=lr, momentum=config.momentum,
                            weight_decay=config.weight_decay) for params, lr in groups]


def segmentation_loss(outputs: list[torch.Tensor], labels: torch.Tensor,
                      penalty: torch.Tensor, lamda: float) -> torch.Tensor:
    """Sum over outputs of the NLL (ignoring 255) plus ``lamda * penalty`` once per output."""
    valid = (labels != IGNORE_INDEX).sum().clamp(min=1)
    loss = labels.new_zeros((), dtype=torch.float32)
    for out in outputs:
        out = F.interpolate(out.float(), size=labels.shape[-2:], mode="bilinear",
                            align_corners=False)
        # Sum / valid count = the mean NLL, but 0 rather than NaN for an all-ignored crop.
        nll = F.nll_loss(F.log_softmax(out, dim=1), labels, ignore_index=IGNORE_INDEX,
                         reduction="sum")
        loss = loss + nll / valid + lamda * penalty
    return loss


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


def metric_columns(names: list[str]) -> list[str]:
    return [f"{n}_{k}" for n in names for k in ("miou", "pixel_acc", "mean_acc")]


# -- the loop --------------------------------------------------------------------------------

def train(config: TrainConfig, on_epoch_end=None) -> dict:
    """Train as ``config`` says; returns the best validation scores (every output).

    ``on_epoch_end(state)`` is called after each epoch's checkpoint with a dict of ``epoch``,
    ``stage``, ``step``, ``loss`` and ``scores``.
    """
    rank, world, device, joined_process_group = setup_distributed()
    is_main = rank == 0
    log = print if is_main else (lambda *a, **k: None)
    out_dir = pathlib.Path(config.out)
    use_amp = config.amp and device.type == "cuda"
    if not config.resume and (out_dir / "last.pt").exists():
        raise ConfigError(f"{out_dir} already holds a run (last.pt): continue it with --resume "
                          "or choose another --out")

    # Data: check every file first, so a broken sample stops the run before it starts.
    if config.check_data:
        validate_dataset(config.data, ["train", "val"], layout=config.layout,
                         progress=config.progress and is_main)
    train_set = RGBDSegmentationDataset(config.data, "train", layout=config.layout,
                                        seed=config.seed)
    val_set = RGBDSegmentationDataset(config.data, "val", layout=train_set.layout)
    config = resolve(config, train_set)
    train_set.transform = TrainTransform(config.crop, tuple(config.scale_range),
                                         depth_dropout=config.modality_dropout)

    # Model, optimisers, scaler; then the state of an interrupted run, if resuming.
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model_config = make_model_config(config, train_set)
    model = build_model(model_config).to(device)
    stage, stage_epoch, epoch, step, best_miou, best_scores = 0, 0, 0, 0, -1.0, {}
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    resume_state = None
    if config.resume:
        if not (out_dir / "last.pt").is_file():
            raise CheckpointError(f"{out_dir / 'last.pt'}: nothing to resume")
        resume_state = load_checkpoint(out_dir / "last.pt")
        if ModelConfig.from_dict(resume_state["config"]) != model_config:
            raise CheckpointError(f"{out_dir / 'last.pt'}: the checkpoint's model differs from "
                                  "this run's options (arch, backbone, decoder, classes)")
        model.load_state_dict(resume_state["model"])
        stage, stage_epoch = resume_state["stage"], resume_state["stage_epoch"]
        epoch, step = resume_state["epoch"], resume_state["step"]
        best_miou, best_scores = resume_state["best_miou"], resume_state["best_scores"]
        log(f"resuming {out_dir / 'last.pt'}: stage {stage + 1}, epoch {epoch} done")
        before = resume_state.get("train_config", {}).get("modality_dropout", 0.0)
        if before != config.modality_dropout:
            log(f"note: the run so far used --modality-dropout {before}; it continues with "
                f"{config.modality_dropout}")
    else:
        init_weights(model, config, log)
    optimizers = make_optimizers(model, config, stage)
    if resume_state is not None:
        for optimizer, state in zip(optimizers, resume_state["optimizers"]):
            optimizer.load_state_dict(state)
        scaler.load_state_dict(resume_state["scaler"])
        set_rng_state(resume_state["rng"])
    model_without_ddp = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    if config.batch_size % world:
        raise ConfigError(f"--batch-size {config.batch_size} is not divisible by {world} "
                          "processes")
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    train_loader = DataLoader(train_set, batch_size=config.batch_size // world, sampler=sampler,
                              num_workers=config.workers, pin_memory=device.type == "cuda",
                              drop_last=True)
    if len(train_loader) == 0:
        raise ConfigError(f"{len(train_set)} training samples make no batch of "
                          f"{config.batch_size}")
    val_loader = DataLoader(Subset(val_set, range(rank, len(val_set), world)), batch_size=1,
                            num_workers=config.workers, pin_memory=device.type == "cuda")

    names = output_names(model_without_ddp)
    depth_range = []  # only rank 0 writes cards
    if is_main:
        depth_range = (resume_state["card"].get("depth_range_m") if resume_state is not None
                       else None)
        if depth_range is None:
            depth_range = training_depth_range(train_set, progress=config.progress)
    card = {"class_names": train_set.classes.names, "palette": train_set.classes.palette,
            "dataset": {**train_set.describe(), "train_samples": len(train_set),
                        "val_samples": len(val_set)},
            "training": {"recipe": "cen", "optimizer": config.optimizer, "crop": config.crop,
                         "epochs": config.epochs, "lr_enc": config.lr_enc,
                         "lr_dec": config.lr_dec, "lamda": config.lamda,
                         "freeze_bn": config.freeze_bn,
                         "modality_dropout": config.modality_dropout},
            "depth_range_m": depth_range,
            "metrics": best_scores}
    writer = None
    csv_path = out_dir / "metrics.csv"
    columns = (["epoch", "stage", "step", "loss", "lr_enc", "lr_dec", "slim_fraction", "seconds"]
               + metric_columns(names))
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=step if step else None)
        kept_rows = []
        if resume_state is not None and csv_path.is_file():
            with open(csv_path, newline="") as f:  # drop rows past the checkpoint
                kept_rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epoch]
        with open(csv_path, "w", newline="") as f:
            csv_writer = csv.DictWriter(f, fieldnames=columns)
            csv_writer.writeheader()
            csv_writer.writerows(kept_rows)
    log(f"{model_config.arch} {model_config.backbone} ({model_config.decoder} decoder) on "
        f"{train_set.name}: {len(train_set)} train / {len(val_set)} val samples, "
        f"{train_set.num_classes} classes; {world} process(es) on {device}; crop {config.crop}, "
        f"batch {config.batch_size}, epochs per stage {config.epochs}, "
        f"BN statistics {'frozen' if config.freeze_bn else 'learned'}"
        + (f", depth dropped in {100 * config.modality_dropout:g}% of samples"
           if config.modality_dropout else "")
        + (f"; training depth {depth_range[0]:g}-{depth_range[1]:g} m (1st-99th percentile)"
           if depth_range else ""))

    from tqdm import tqdm
    start_time = time.monotonic()
    stop_early = False  # a time or step limit was reached
    while stage < config.stages and not stop_early:
        if stage_epoch >= config.epochs[stage]:  # stage finished: next one, fresh optimisers
            stage, stage_epoch = stage + 1, 0
            if stage < config.stages:
                optimizers = make_optimizers(model_without_ddp, config, stage)
            continue
        # One epoch.
        epoch_start = time.monotonic()
        scores = {}  # this epoch's validation scores, if it validates
        model.train()
        if config.freeze_bn:
            model_without_ddp.freeze_bn_stats()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        loss_sum, batches = 0.0, 0
        bar = tqdm(train_loader, desc=f"stage {stage + 1} epoch {epoch + 1}", unit="batch",
                   disable=not (config.progress and is_main), leave=False)
        for batch in bar:
            rgb = batch["rgb"].to(device, non_blocking=True)
            depth = batch["depth"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                outputs = model(rgb, depth)
            penalty = model_without_ddp.sparsity_penalty()
            loss = segmentation_loss(outputs, labels, penalty, config.lamda)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            for optimizer in optimizers:
                scaler.step(optimizer)
            scaler.update()
            step += 1
            batches += 1
            loss_sum += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if is_main and step % 10 == 0:
                writer.add_scalar("train/loss_step", loss.item(), step)
            if config.max_steps is not None and step >= config.max_steps:
                stop_early = True
                break
            if config.max_minutes is not None:
                over = torch.tensor(float(time.monotonic() - start_time > 60 * config.max_minutes))
                if world > 1:  # every process must stop after the same step
                    over = over.to(device)
                    dist.all_reduce(over, op=dist.ReduceOp.MAX)
                if over.item():
                    stop_early = True
                    break
        bar.close()
        epoch += 1
        stage_epoch += 1
        mean_loss = torch.tensor([loss_sum, batches], dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(mean_loss)
        mean_loss = float(mean_loss[0] / mean_loss[1])
        if not math.isfinite(mean_loss):
            raise RuntimeError(f"training diverged: loss {mean_loss} in epoch {epoch}")

        # Validation: every `val_every` epochs, at the end of each stage and of the run.
        last_epoch = stop_early or (stage == config.stages - 1
                                     and stage_epoch >= config.epochs[stage])
        if epoch % config.val_every == 0 or stage_epoch >= config.epochs[stage] or last_epoch:
            meter = evaluate(model_without_ddp, val_loader, train_set.num_classes, device,
                             progress=config.progress and is_main)
            meter.all_reduce()
            scores = meter.scores(train_set.classes.names)
        slim = model_without_ddp.slim_fraction(config.bn_threshold)
        lrs = [optimizer.param_groups[0]["lr"] for optimizer in optimizers]
        improved = bool(scores) and scores["ensemble"]["miou"] > best_miou
        if improved:
            best_miou = scores["ensemble"]["miou"]
            best_scores = {"split": "val", "epoch": epoch, **scores}

        if is_main:
            seconds = time.monotonic() - epoch_start
            row = {"epoch": epoch, "stage": stage + 1, "step": step, "loss": f"{mean_loss:.6f}",
                   "lr_enc": lrs[0], "lr_dec": lrs[1], "slim_fraction": f"{slim:.6f}",
                   "seconds": f"{seconds:.1f}"}
            writer.add_scalar("train/loss", mean_loss, step)
            writer.add_scalar("train/lr_enc", lrs[0], step)
            writer.add_scalar("train/lr_dec", lrs[1], step)
            writer.add_scalar("train/slim_fraction", slim, step)
            for name, s in scores.items():
                for key in ("miou", "pixel_acc", "mean_acc"):
                    row[f"{name}_{key}"] = f"{s[key]:.4f}"
                    writer.add_scalar(f"val_{key}/{name}", s[key], step)
            with open(csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=columns).writerow(row)
            writer.flush()
            card["metrics"] = best_scores
            state = {"train_config": dataclasses.asdict(config), "stage": stage,
                     "stage_epoch": stage_epoch, "epoch": epoch, "step": step,
                     "best_miou": best_miou, "best_scores": best_scores,
                     "optimizers": [o.state_dict() for o in optimizers],
                     "scaler": scaler.state_dict(), "rng": rng_state()}
            save_checkpoint(out_dir / "last.pt", model_without_ddp, model_config, card, **state)
            if improved:
                save_checkpoint(out_dir / "best.pt", model_without_ddp, model_config, card,
                                **state)
            val_text = ""
            if scores:
                val_text = " | val mIoU " + ", ".join(
                    f"{n} {scores[n]['miou']:.1f}" for n in names)
            log(f"stage {stage + 1} epoch {epoch}: loss {mean_loss:.4f}, lr {lrs[0]:.2g}/"
                f"{lrs[1]:.2g}, slim {slim:.3f}{val_text} ({seconds:.0f} s)"
                + (" *" if improved else ""))
        if on_epoch_end is not None:
            on_epoch_end({"epoch": epoch, "stage": stage, "step": step, "loss": mean_loss,
                          "scores": scores})

    if stop_early:
        log(f"stopped at the {'step' if config.max_steps and step >= config.max_steps else 'time'}"
            f" limit: epoch {epoch}, step {step}, {(time.monotonic() - start_time) / 60:.1f} min")
    if world > 1:
        check_ranks_agree(model_without_ddp, device, log)
        if joined_process_group:
            dist.destroy_process_group()
    if is_main:
        writer.close()
        log(f"best val ensemble mIoU {best_miou:.2f}; checkpoints in {out_dir}")
    return {**best_scores, "steps": step, "epochs": epoch}


def check_ranks_agree(model, device: torch.device, log) -> None:
    """Every process must end with the same parameters; raise if they differ."""
    flat = torch.cat([p.detach().flatten().float() for p in model.parameters()]).to(device)
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    difference = max(float((g - gathered[0]).abs().max()) for g in gathered)
    if difference != 0.0:
        raise RuntimeError(f"processes disagree: parameters differ by up to {difference:g}")
    log(f"parameters identical on all {dist.get_world_size()} processes")
