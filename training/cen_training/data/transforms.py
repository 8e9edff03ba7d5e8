"""Augmentations for RGB-D segmentation samples, as the official CEN training applies them.

A sample is a dict of numpy arrays: ``rgb`` uint8 ``[H, W, 3]``, ``depth`` float32 ``[H, W]``
in metres (0 = invalid) and ``labels`` uint8 ``[H, W]`` (255 = ignore). Every function returns
a new sample with all three arrays transformed the same way, so pixels stay aligned.

Training (:class:`TrainTransform`): random scale (RGB bicubic, depth and labels nearest), pad
to the crop size, random mirror, random square crop; then, only when asked for (not part of the
official recipe), depth dropout: the whole depth map of a fraction of the samples set to 0, the
value the node feeds the network when a camera's depth is missing. Validation uses the full
image unchanged. Randomness comes from an explicit ``numpy.random.Generator``, so a sample's
augmentation is reproducible from a seed whatever the number of data-loading workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .classes import IGNORE_INDEX

# RGB padding value: the ImageNet mean colour, which the model's normalisation maps to zero, as
# the official Pad transform does. Depth pads with 0 (invalid), labels with the ignore id.
RGB_PAD_VALUE = (124, 116, 104)

# Nearest-neighbour with pixel centres aligned like the bicubic RGB resize (OpenCV's plain
# INTER_NEAREST is shifted by up to half a source pixel).
NEAREST = cv2.INTER_NEAREST_EXACT


def resize(sample: dict, scale: float) -> dict:
    """Scale all arrays by ``scale`` (RGB bicubic; depth and labels nearest)."""
    h, w = sample["labels"].shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    return dict(sample,
                rgb=cv2.resize(sample["rgb"], size, interpolation=cv2.INTER_CUBIC),
                depth=cv2.resize(sample["depth"], size, interpolation=NEAREST),
                labels=cv2.resize(sample["labels"], size, interpolation=NEAREST))


def random_scale(sample: dict, rng: np.random.Generator, scale_range=(0.5, 2.0),
                 min_shorter_side: int = 0) -> dict:
    """Resize by a factor drawn uniformly from ``scale_range``; if the shorter side would end
    up below ``min_shorter_side`` the factor is raised to reach it (official ResizeAndScale)."""
    scale = rng.uniform(*scale_range)
    shorter = min(sample["labels"].shape)
    if shorter * scale < min_shorter_side:
        scale = min_shorter_side / shorter
    return resize(sample, scale)


def pad_to(sample: dict, height: int, width: int) -> dict:
    """Pad (centred) to at least ``height`` x ``width``: RGB with the mean colour, depth with 0
    (invalid), labels with the ignore id."""
    h, w = sample["labels"].shape
    pad_h, pad_w = max(0, height - h), max(0, width - w)
    if pad_h == 0 and pad_w == 0:
        return sample
    top, left = pad_h // 2, pad_w // 2
    border = (top, pad_h - top, left, pad_w - left)
    return dict(sample,
                rgb=cv2.copyMakeBorder(sample["rgb"], *border, cv2.BORDER_CONSTANT,
                                       value=RGB_PAD_VALUE),
                depth=cv2.copyMakeBorder(sample["depth"], *border, cv2.BORDER_CONSTANT, value=0.0),
                labels=cv2.copyMakeBorder(sample["labels"], *border, cv2.BORDER_CONSTANT,
                                          value=IGNORE_INDEX))


def random_mirror(sample: dict, rng: np.random.Generator) -> dict:
    """Flip left-right with probability 1/2."""
    if rng.integers(2) == 0:
        return sample
    return {key: (value[:, ::-1].copy() if isinstance(value, np.ndarray) else value)
            for key, value in sample.items()}


def random_crop(sample: dict, rng: np.random.Generator, size: int) -> dict:
    """A random ``size`` x ``size`` window (smaller where the image is smaller)."""
    h, w = sample["labels"].shape
    crop_h, crop_w = min(h, size), min(w, size)
    top = int(rng.integers(0, h - crop_h + 1))
    left = int(rng.integers(0, w - crop_w + 1))
    window = (slice(top, top + crop_h), slice(left, left + crop_w))
    return dict(sample, rgb=sample["rgb"][window], depth=sample["depth"][window],
                labels=sample["labels"][window])


def blank_depth(sample: dict, rng: np.random.Generator | None = None) -> dict:
    """The sample with every depth pixel invalid (0 metres), as when a depth camera drops out."""
    return dict(sample, depth=np.zeros_like(sample["depth"]))


def random_depth_dropout(sample: dict, rng: np.random.Generator, probability: float) -> dict:
    """Blank the depth (:func:`blank_depth`) with ``probability``; 0 draws nothing and returns
    the sample as it is, 1 always blanks."""
    if probability <= 0:
        return sample
    return blank_depth(sample) if rng.random() < probability else sample


@dataclass
class TrainTransform:
    """Official CEN training augmentation: scale, pad, mirror, crop; then depth dropout with
    probability ``depth_dropout`` (default 0: none, the official recipe exactly).

    ``min_shorter_side`` defaults to 0.7 x ``crop_size``: the official recipe's 350 for a crop
    of 500, kept in proportion for other crop sizes.
    """
    crop_size: int = 500
    scale_range: tuple[float, float] = (0.5, 2.0)
    min_shorter_side: int | None = None
    depth_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.depth_dropout <= 1.0:
            raise ValueError(f"depth dropout must be a probability in 0..1, got "
                             f"{self.depth_dropout}")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        shorter_side = (round(0.7 * self.crop_size) if self.min_shorter_side is None
                        else self.min_shorter_side)
        sample = random_scale(sample, rng, self.scale_range, shorter_side)
        sample = pad_to(sample, self.crop_size, self.crop_size)
        sample = random_mirror(sample, rng)
        sample = random_crop(sample, rng, self.crop_size)
        # Last, so the draws above, and with them the official augmentation, do not change.
        return random_depth_dropout(sample, rng, self.depth_dropout)


def val_transform(sample: dict, rng: np.random.Generator | None = None) -> dict:
    """Validation: the full image, unchanged."""
    return sample
