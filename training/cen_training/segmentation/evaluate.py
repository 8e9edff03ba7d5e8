"""Evaluation: per-branch and ensemble predictions over a dataset, into confusion matrices.

Single-scale on full images by default, as the official validation does: the model's logits
(stride 4) are upsampled bilinearly (``align_corners=False``, as the engine contract does) to
the label size and the arg-max is compared with the labels. Optionally several input scales
and a left-right flip, whose softmax probabilities are averaged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import ConfusionMeter


def output_names(model: nn.Module) -> list[str]:
    """Names of the model's outputs in order: each branch's modality name, then ``ensemble``."""
    model = getattr(model, "module", model)
    return list(model.branch_names) + ["ensemble"]


def _resize_inputs(rgb: torch.Tensor, depth: torch.Tensor, scale: float):
    """Scale uint8 RGB [N,H,W,3] bilinearly and depth [N,H,W] by nearest neighbour."""
    if scale == 1.0:
        return rgb, depth
    h, w = rgb.shape[1:3]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    rgb = F.interpolate(rgb.permute(0, 3, 1, 2).float(), size=size, mode="bilinear",
                        align_corners=False)
    rgb = rgb.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    depth = F.interpolate(depth.unsqueeze(1), size=size, mode="nearest-exact").squeeze(1)
    return rgb, depth


@torch.no_grad()
def predict(model: nn.Module, rgb: torch.Tensor, depth: torch.Tensor,
            scales: tuple[float, ...] = (1.0,), flip: bool = False) -> list[torch.Tensor]:
    """Per-output class scores ``[N, C, H, W]`` at the input's size.

    With one scale and no flip these are the upsampled logits; otherwise the mean softmax
    probability over the scales and flips.
    """
    size = rgb.shape[1:3]
    single = len(scales) == 1 and scales[0] == 1.0 and not flip
    totals = None
    for scale in scales:
        scaled_rgb, scaled_depth = _resize_inputs(rgb, depth, scale)
        for mirrored in ((False, True) if flip else (False,)):
            r, d = ((scaled_rgb.flip(2), scaled_depth.flip(2)) if mirrored
                    else (scaled_rgb, scaled_depth))
            outputs = model(r, d)
            scores = []
            for out in outputs:
                out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
                if mirrored:
                    out = out.flip(3)
                scores.append(out if single else out.softmax(dim=1))
            totals = scores if totals is None else [a + b for a, b in zip(totals, scores)]
    return totals


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, device: torch.device | str = "cpu",
             scales: tuple[float, ...] = (1.0,), flip: bool = False, progress: bool = False,
             on_batch=None) -> ConfusionMeter:
    """Confusion matrices of every output over ``loader`` (batches from the datasets of
    :mod:`cen_training.data`). ``on_batch(batch, predictions)`` sees each batch's arg-max
    predictions (a list, one ``[N,H,W]`` tensor per output), e.g. to draw pictures.
    """
    from tqdm import tqdm

    names = output_names(model)
    meter = ConfusionMeter(names, num_classes)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress,
                          leave=False):
            rgb = batch["rgb"].to(device, non_blocking=True)
            depth = batch["depth"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            predictions = [s.argmax(dim=1) for s in predict(model, rgb, depth, scales, flip)]
            for name, prediction in zip(names, predictions):
                meter.update(name, labels, prediction)
            if on_batch is not None:
                on_batch(batch, [p.cpu() for p in predictions])
    finally:
        model.train(was_training)
    return meter
