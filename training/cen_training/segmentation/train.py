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

Fine-tuning (``init``) starts from a checkpoint's weights: every key must fit, except the
classifier (``decoder.clf_conv.*``), which starts fresh when the class count differs. The class
list the model learns is the dataset's, or ``classes`` (a YAML class list); ``class_map`` maps
the dataset's classes into it as labels are read (``data.classes.ClassMap``), e.g. NYUDv2's 40
into a robot's 8.

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

``train`` reads as the run does: set-up, then per epoch ``train_one_epoch``, ``validate`` and
``save_checkpoints`` (the plumbing both training loops share is ``cen_training.loop``);
``RunState`` is what the run carries from one epoch to the next.

Under ``torchrun`` every process trains on its share of each batch (DistributedDataParallel;
NCCL on GPUs, gloo on CPUs) and only rank 0 writes files. On a GPU the forward pass runs in
mixed precision (``torch.autocast`` float16 with a ``GradScaler``); on a CPU in float32.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..checkpoint import _check_keys, load_checkpoint
from ..data import (
    IGNORE_INDEX,
    ClassMap,
    RGBDSegmentationDataset,
    TrainTransform,
    dataset_class_map,
    validate_dataset,
)
from ..data.datasets import image_size, training_depth_range
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
from ..models import ModelConfig, build_model, init_from_imagenet
from .evaluate import evaluate, output_names

# The classifier's keys: the only ones that may differ in shape from an --init checkpoint.
CLASSIFIER_KEY = re.compile(r"(^|\.)decoder\.clf_conv\.")
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
    classes: str | None = None  # the class list to learn (YAML); None: the dataset's
    class_map: str | None = None  # dataset classes -> ``classes`` (YAML), applied as read
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


@dataclass
class RunState:
    """Where a run stands. ``last.pt`` keeps all of it (``checkpoint_entries``), so that a
    resumed run continues exactly."""
    optimizers: list[torch.optim.Optimizer]  # encoder, decoder; fresh in every stage
    scaler: torch.amp.GradScaler  # mixed precision (enabled on CUDA unless --no-amp)
    stage: int = 0  # from 0
    stage_epoch: int = 0  # epochs done in this stage
    epoch: int = 0  # epochs done in all
    step: int = 0  # optimiser steps done
    best_miou: float = -1.0  # best validation ensemble mIoU so far
    best_scores: dict = field(default_factory=dict)  # all its scores, for the model card

    def record(self, scores: dict) -> bool:
        """Keep ``scores`` (this epoch's validation, or empty) if they are the best yet;
        whether they were."""
        improved = bool(scores) and scores["ensemble"]["miou"] > self.best_miou
        if improved:
            self.best_miou = scores["ensemble"]["miou"]
            self.best_scores = {"split": "val", "epoch": self.epoch, **scores}
        return improved

    def checkpoint_entries(self, config: TrainConfig) -> dict:
        return training_entries(dataclasses.asdict(config), self, stage=self.stage,
                                stage_epoch=self.stage_epoch, best_miou=self.best_miou)


# -- the run -------------------------------------------------------------------------------

def train(config: TrainConfig, on_epoch_end=None) -> dict:
    """Train as ``config`` says; returns the best validation scores (every output), with
    ``steps`` and ``epochs``.

    ``on_epoch_end(state)`` is called after each epoch's checkpoint with a dict of ``epoch``,
    ``stage``, ``step``, ``loss`` and ``scores``.
    """
    proc = setup_distributed()
    out_dir = pathlib.Path(config.out)
    check_new_run(out_dir, config.resume)
    train_set, val_set, config = load_datasets(config, progress=config.progress and proc.is_main)

    seed_everything(config.seed)
    model_config = make_model_config(config, train_set)
    model = build_model(model_config).to(proc.device)
    resumed = read_resume_checkpoint(out_dir, model_config) if config.resume else None
    state = start_state(model, config, resumed, proc, train_set.classes.names)
    model_without_ddp, model = model, wrap_ddp(model, proc)
    train_loader, val_loader = make_loaders(train_set, val_set, config, proc)

    names = output_names(model_without_ddp)
    card = training_card(config, train_set, val_set, state, resumed, proc)
    metrics_log = MetricsLog(out_dir, names, state, resumed is not None) if proc.is_main else None
    proc.log(describe_run(config, model_config, train_set, val_set, proc, card["depth_range_m"]))
    if config.class_map is not None:
        proc.log(train_set.class_map.describe())

    start_time = time.monotonic()
    stopped = False  # a time or step limit was reached
    while state.stage < config.stages and not stopped:
        if state.stage_epoch >= config.epochs[state.stage]:
            start_next_stage(state, model_without_ddp, config)
            continue
        epoch_start = time.monotonic()
        loss, stopped = train_one_epoch(model, train_loader, state, config, proc, metrics_log,
                                        start_time)
        state.epoch += 1
        state.stage_epoch += 1
        check_finite({"loss": loss}, state.epoch)
        last_of_stage = state.stage_epoch >= config.epochs[state.stage]
        scores = (validate(model_without_ddp, val_loader, train_set, config, proc)
                  if validation_due(state.epoch, config.val_every, last_of_stage, stopped)
                  else {})
        slim = model_without_ddp.slim_fraction(config.bn_threshold)
        improved = state.record(scores)
        if proc.is_main:
            seconds = time.monotonic() - epoch_start
            metrics_log.log_epoch(state, loss, slim, scores, seconds)
            card["metrics"] = state.best_scores
            save_checkpoints(out_dir, model_without_ddp, model_config, card,
                             state.checkpoint_entries(config), improved)
            proc.log(epoch_summary(state, loss, slim, scores, names, seconds, improved))
        if on_epoch_end is not None:
            on_epoch_end({"epoch": state.epoch, "stage": state.stage, "step": state.step,
                          "loss": loss, "scores": scores})

    end_run(proc, config, state, start_time, stopped, model_without_ddp, metrics_log)
    proc.log(f"best val ensemble mIoU {state.best_miou:.2f}; checkpoints in {out_dir}")
    return {**state.best_scores, "steps": state.step, "epochs": state.epoch}


def start_next_stage(state: RunState, model, config: TrainConfig) -> None:
    """The next stage starts with fresh optimisers at its own learning rates."""
    state.stage, state.stage_epoch = state.stage + 1, 0
    if state.stage < config.stages:
        state.optimizers = make_optimizers(model, config, state.stage)


# -- one epoch -------------------------------------------------------------------------------

def train_one_epoch(model, loader: DataLoader, state: RunState, config: TrainConfig,
                    proc: Process, metrics_log: MetricsLog | None,
                    start_time: float) -> tuple[float, bool]:
    """One pass over the training batches, or up to the step or time limit; returns the mean
    loss (over every process) and whether a limit stopped the pass. ``model`` may be wrapped
    in DistributedDataParallel."""
    from tqdm import tqdm

    model_without_ddp = getattr(model, "module", model)
    model.train()
    if config.freeze_bn:
        model_without_ddp.freeze_bn_stats()
    loader.sampler.set_epoch(state.epoch)
    loader.dataset.set_epoch(state.epoch)
    use_amp = state.scaler.is_enabled()
    loss_sum, batches, stopped = 0.0, 0, False
    bar = tqdm(loader, desc=f"stage {state.stage + 1} epoch {state.epoch + 1}", unit="batch",
               disable=not (config.progress and proc.is_main), leave=False)
    for batch in bar:
        rgb = batch["rgb"].to(proc.device, non_blocking=True)
        depth = batch["depth"].to(proc.device, non_blocking=True)
        labels = batch["labels"].to(proc.device, non_blocking=True)
        with torch.autocast(device_type=proc.device.type, dtype=torch.float16, enabled=use_amp):
            outputs = model(rgb, depth)
        penalty = model_without_ddp.sparsity_penalty()
        loss = segmentation_loss(outputs, labels, penalty, config.lamda)
        for optimizer in state.optimizers:
            optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        for optimizer in state.optimizers:
            state.scaler.step(optimizer)
        state.scaler.update()
        state.step += 1
        batches += 1
        loss_sum += loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if metrics_log is not None and state.step % 10 == 0:
            metrics_log.log_step(state.step, loss.item())
        if limit_reached(config, state.step, start_time, proc):
            stopped = True
            break
    bar.close()
    total = torch.tensor([loss_sum, batches], dtype=torch.float64, device=proc.device)
    if proc.world > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1]), stopped


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


def validate(model, loader: DataLoader, train_set: RGBDSegmentationDataset,
             config: TrainConfig, proc: Process) -> dict:
    """Scores of every output on the validation split (each process scores its share)."""
    meter = evaluate(model, loader, train_set.num_classes, proc.device,
                     progress=config.progress and proc.is_main)
    meter.all_reduce()
    return meter.scores(train_set.classes.names)


def epoch_summary(state: RunState, loss: float, slim: float, scores: dict, names: list[str],
                  seconds: float, improved: bool) -> str:
    lrs = [optimizer.param_groups[0]["lr"] for optimizer in state.optimizers]
    val_text = ""
    if scores:
        val_text = " | val mIoU " + ", ".join(f"{n} {scores[n]['miou']:.1f}" for n in names)
    return (f"stage {state.stage + 1} epoch {state.epoch}: loss {loss:.4f}, lr {lrs[0]:.2g}/"
            f"{lrs[1]:.2g}, slim {slim:.3f}{val_text} ({seconds:.0f} s)"
            + (" *" if improved else ""))


SCORE_KEYS = ("miou", "pixel_acc", "mean_acc")


class MetricsLog(MetricLog):
    """The segmentation run's ``metrics.csv`` and TensorBoard logs (see ``loop.MetricLog``)."""

    def __init__(self, out_dir: pathlib.Path, names: list[str], state: RunState,
                 resumed: bool) -> None:
        columns = (["epoch", "stage", "step", "loss", "lr_enc", "lr_dec", "slim_fraction",
                    "seconds"] + metric_columns(names))
        super().__init__(out_dir, columns, state.epoch, state.step, resumed)

    def log_step(self, step: int, loss: float) -> None:
        self.writer.add_scalar("train/loss_step", loss, step)

    def log_epoch(self, state: RunState, loss: float, slim: float, scores: dict,
                  seconds: float) -> None:
        lr_enc, lr_dec = (optimizer.param_groups[0]["lr"] for optimizer in state.optimizers)
        row = {"epoch": state.epoch, "stage": state.stage + 1, "step": state.step,
               "loss": f"{loss:.6f}", "lr_enc": lr_enc, "lr_dec": lr_dec,
               "slim_fraction": f"{slim:.6f}", "seconds": f"{seconds:.1f}"}
        self.scalars({"train/loss": loss, "train/lr_enc": lr_enc, "train/lr_dec": lr_dec,
                      "train/slim_fraction": slim}, state.step)
        self.scores(scores, SCORE_KEYS, state.step, row, digits=4)
        self.write_row(row)


def metric_columns(names: list[str]) -> list[str]:
    return [f"{n}_{k}" for n in names for k in SCORE_KEYS]


# -- set-up ----------------------------------------------------------------------------------

def load_datasets(config: TrainConfig, progress: bool
                  ) -> tuple[RGBDSegmentationDataset, RGBDSegmentationDataset, TrainConfig]:
    """The training and validation splits, and ``config`` with the defaults that depend on
    them filled in. Every file is checked first, so a broken sample stops the run before it
    starts."""
    class_map = run_class_map(config)
    if config.check_data:
        validate_dataset(config.data, ["train", "val"], layout=config.layout, progress=progress,
                         class_map=class_map)
    train_set = RGBDSegmentationDataset(config.data, "train", layout=config.layout,
                                        seed=config.seed, class_map=class_map)
    val_set = RGBDSegmentationDataset(config.data, "val", layout=train_set.layout,
                                      class_map=class_map)
    config = resolve(config, train_set)
    train_set.transform = TrainTransform(config.crop, tuple(config.scale_range),
                                         depth_dropout=config.modality_dropout)
    return train_set, val_set, config


def run_class_map(config: TrainConfig) -> ClassMap | None:
    """How the run reads the dataset's labels: through ``class_map`` into ``classes``, as they
    are for a ``classes`` list of the dataset's own classes, or (None) as they are."""
    return dataset_class_map(config.data, config.layout, config.class_map, config.classes)


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


def per_stage(values, stages: int, what: str) -> list:
    """One value per stage: a single value repeats; otherwise exactly ``stages`` values."""
    values = list(values)
    if len(values) == 1:
        return values * stages
    if len(values) < stages:
        raise ConfigError(f"{what}: {len(values)} values for {stages} stages")
    return values[:stages]


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


def read_resume_checkpoint(out_dir: pathlib.Path, model_config: ModelConfig) -> dict:
    """``RUN_DIR/last.pt``, to continue; it must hold the model these options build."""
    path, ckpt = read_last_checkpoint(out_dir)
    if ModelConfig.from_dict(ckpt["config"]) != model_config:
        raise CheckpointError(f"{path}: the checkpoint's model differs from this run's options "
                              "(arch, backbone, decoder, classes)")
    return ckpt


def start_state(model, config: TrainConfig, resumed: dict | None, proc: Process,
                class_names: list[str] | None = None) -> RunState:
    """The weights and state a run starts from: those of ``resumed`` (its ``last.pt``: model,
    optimisers, scaler, counters and RNG states), or fresh ones after ``init_weights``."""
    scaler = make_scaler(config, proc)
    if resumed is None:
        init_weights(model, config, proc.log, class_names)
        return RunState(optimizers=make_optimizers(model, config, 0), scaler=scaler)
    model.load_state_dict(resumed["model"])
    state = RunState(optimizers=make_optimizers(model, config, resumed["stage"]), scaler=scaler,
                     stage=resumed["stage"], stage_epoch=resumed["stage_epoch"],
                     epoch=resumed["epoch"], step=resumed["step"],
                     best_miou=resumed["best_miou"], best_scores=resumed["best_scores"])
    proc.log(f"resuming {pathlib.Path(config.out) / 'last.pt'}: stage {state.stage + 1}, "
             f"epoch {state.epoch} done")
    before = resumed.get("train_config", {}).get("modality_dropout", 0.0)
    if before != config.modality_dropout:
        proc.log(f"note: the run so far used --modality-dropout {before}; it continues with "
                 f"{config.modality_dropout}")
    restore_training_state(state.optimizers, scaler, resumed)
    return state


def init_weights(model, config: TrainConfig, log, class_names: list[str] | None = None) -> None:
    """ImageNet encoder weights (``--imagenet``) or a checkpoint's weights (``--init``).

    Every key of the checkpoint must fit the model, except the classifier
    (``decoder.clf_conv.*``): when the class count differs it starts fresh (a new head), and
    the log says so. ``class_names`` (this run's) only serve that message.
    """
    if config.imagenet:
        loaded = init_from_imagenet(model, config.imagenet, config.backbone)
        log(f"ImageNet weights from {config.imagenet}: {len(loaded)} tensors")
    if config.init:
        ckpt = load_checkpoint(config.init)
        state, own = ckpt["model"], model.state_dict()
        head = sorted(k for k in set(own) & set(state)
                      if CLASSIFIER_KEY.search(k) and own[k].shape != state[k].shape)
        kept = {k: v for k, v in state.items() if k not in head}
        _check_keys({k: v for k, v in own.items() if k not in head}, kept,
                    f"{config.init} (--init; arch, backbone, decoder and modalities must be "
                    "this run's)")
        model.load_state_dict(kept, strict=False)
        old_names = ckpt["card"].get("class_names") or []
        log(f"weights from {config.init}: {len(kept)} of {len(own)} tensors")
        if head:
            old = int(state[head[0]].shape[0])
            log(f"new classifier head: {old} -> {int(own[head[0]].shape[0])} classes; "
                f"{', '.join(head)} start fresh")
        elif class_names and old_names and list(old_names) != list(class_names):
            log(f"note: {config.init} was trained on other class names "
                f"({', '.join(old_names[:4])}{' ...' if len(old_names) > 4 else ''}); its "
                "classifier is kept, class i for class i")


def make_optimizers(model, config: TrainConfig, stage: int):
    """The official pair: one optimiser for the encoder, one for the decoder."""
    groups = ((model.encoder_parameters(), config.lr_enc[stage]),
              (model.decoder_parameters(), config.lr_dec[stage]))
    if config.optimizer == "adam":
        return [torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
                for params, lr in groups]
    return [torch.optim.SGD(params, lr=lr, momentum=config.momentum,
                            weight_decay=config.weight_decay) for params, lr in groups]


def training_card(config: TrainConfig, train_set: RGBDSegmentationDataset,
                  val_set: RGBDSegmentationDataset, state: RunState, resumed: dict | None,
                  proc: Process) -> dict:
    """The model card of the run's checkpoints (its ``metrics`` follow the best epoch). Only
    rank 0 measures the training depth range, once per run (a resumed run keeps it)."""
    depth_range = []  # only rank 0 writes cards
    if proc.is_main:
        depth_range = resumed["card"].get("depth_range_m") if resumed is not None else None
        if depth_range is None:
            depth_range = training_depth_range(train_set, progress=config.progress)
    return {"class_names": train_set.classes.names, "palette": train_set.classes.palette,
            "dataset": {**train_set.describe(), "train_samples": len(train_set),
                        "val_samples": len(val_set)},
            "training": {"recipe": "cen", "optimizer": config.optimizer, "crop": config.crop,
                         "epochs": config.epochs, "lr_enc": config.lr_enc,
                         "lr_dec": config.lr_dec, "lamda": config.lamda,
                         "freeze_bn": config.freeze_bn,
                         "modality_dropout": config.modality_dropout},
            "depth_range_m": depth_range,
            "metrics": state.best_scores}


def describe_run(config: TrainConfig, model_config: ModelConfig,
                 train_set: RGBDSegmentationDataset, val_set: RGBDSegmentationDataset,
                 proc: Process, depth_range: list[float]) -> str:
    return (f"{model_config.arch} {model_config.backbone} ({model_config.decoder} decoder) on "
            f"{train_set.name}: {len(train_set)} train / {len(val_set)} val samples, "
            f"{train_set.num_classes} classes; {proc.world} process(es) on {proc.device}; "
            f"crop {config.crop}, batch {config.batch_size}, epochs per stage {config.epochs}, "
            f"BN statistics {'frozen' if config.freeze_bn else 'learned'}"
            + (f", depth dropped in {100 * config.modality_dropout:g}% of samples"
               if config.modality_dropout else "")
            + (f"; training depth {depth_range[0]:g}-{depth_range[1]:g} m (1st-99th percentile)"
               if depth_range else ""))
