"""Datasets for multimodal image-to-image translation: Taskonomy as the official CEN code reads
it, and a generic layout for a robot's own modalities.

Taskonomy layout (the official sample building)::

    ROOT/<domain>/point_<p>_view_<v>_domain_<domain>.png     one folder per domain
    ROOT/train_domain.txt  ROOT/val_domain.txt   (or train.txt / val.txt)
        one path per line with a ``{domain}`` placeholder, relative to ROOT, e.g.
        {domain}/point_12_view_3_domain_{domain}.png

Generic layout (what ``cen-train synth --translation`` writes)::

    ROOT/<modality>/<stem>.png|.jpg    one folder per modality, the same stems in each
    ROOT/train.txt  ROOT/val.txt       one stem per line

Reading (``read_domain_image``), the official rules: a grey image is repeated to 3 channels;
a 16-bit image of a domain whose name contains ``depth`` becomes ``log(1 + raw)`` (Taskonomy:
raw in 1/512 m; the rule maps any 16-bit range, millimetres too, to 0 .. 11.1); then a 16-bit
image of a domain with a known maximum is scaled to 0..255 as ``x * 255 / max`` (11.1 for
depth domains, 11355 for ``edge_texture``, 11584 for ``edge_occlusion``); then uint8. Other
16-bit images are scaled by 255 / 65535; values are clipped to 0..255 (the official cast
wraps out-of-range values instead; within range the two agree). 8-bit images are taken as
they are.

Transforms (``TranslationTransform``): training resizes every image to 286x286 (bilinear, as
PIL does it), takes the same random 256x256 crop of every domain and flips all of them with
probability 0.5; validation resizes to 256x256. The dataset hands out uint8 ``[H, W, 3]``
images; normalisation happens inside the model.
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from ..errors import DatasetError

TRANSLATION_LAYOUTS = ("taskonomy", "generic")
# Domain ids of the official command line (the last one given is the target).
DOMAIN_IDS = {0: "rgb", 1: "normal", 2: "reshading", 3: "depth_euclidean", 4: "depth_zbuffer",
              5: "principal_curvature", 6: "edge_occlusion", 7: "edge_texture",
              8: "segment_unsup2d", 9: "segment_unsup25d"}
# Scaling to 0..255 of 16-bit images, x * 255 / max (after log(1 + raw) for depth domains).
KNOWN_MAXIMA = {"depth_euclidean": 11.1, "depth_zbuffer": 11.1, "edge_texture": 11355.0,
                "edge_occlusion": 11584.0}
LOG_DEPTH_MAX = 11.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_FILES = {"taskonomy": "{split}_domain.txt", "generic": "{split}.txt"}


def domain_name(token: str | int) -> str:
    """A domain given by name or by its official id (``2`` -> ``reshading``)."""
    text = str(token).strip()
    if text.isdigit():
        if int(text) not in DOMAIN_IDS:
            raise DatasetError(f"unknown domain id {text} (ids: " + ", ".join(
                f"{k} {v}" for k, v in DOMAIN_IDS.items()) + ")")
        return DOMAIN_IDS[int(text)]
    return text


def read_domain_image(path: str | pathlib.Path, domain: str) -> np.ndarray:
    """One image of ``domain`` as uint8 ``[H, W, 3]`` (RGB order), by the official rules."""
    path = pathlib.Path(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"{path}: missing or not a readable image")
    if raw.ndim == 3:
        raw = raw[..., :3][..., ::-1]  # drop alpha; BGR -> RGB
        if raw.shape[2] == 1:
            raw = raw[..., 0]
    if raw.dtype == np.uint16:
        x = raw.astype(np.float64)
        is_depth = "depth" in domain
        if is_depth:
            x = np.log1p(x)
        maximum = KNOWN_MAXIMA.get(domain, LOG_DEPTH_MAX if is_depth else 65535.0)
        image = np.clip(x * (255.0 / maximum), 0, 255).astype(np.uint8)
    elif raw.dtype == np.uint8:
        image = raw
    else:
        raise DatasetError(f"{path}: {raw.dtype} pixels; expected 8- or 16-bit")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image)


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 to ``size x size``, bilinear as PIL (and so torchvision) does it."""
    if image.shape[:2] == (size, size):
        return image
    return np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))


@dataclass
class TranslationTransform:
    """Official augmentation. Training: resize to ``load_size`` (286), the same random
    ``size`` (256) crop and horizontal flip (p = 0.5) for every domain; validation
    (``train=False``): resize to ``size``."""
    size: int = 256
    load_size: int = 286
    train: bool = True
    flip: bool = True

    def __call__(self, images: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        if not self.train:
            return [resize_bilinear(im, self.size) for im in images]
        images = [resize_bilinear(im, self.load_size) for im in images]
        top = int(rng.integers(0, self.load_size - self.size + 1))
        left = int(rng.integers(0, self.load_size - self.size + 1))
        images = [im[top:top + self.size, left:left + self.size] for im in images]
        if self.flip and rng.random() < 0.5:
            images = [im[:, ::-1] for im in images]
        return [np.ascontiguousarray(im) for im in images]


def detect_translation_layout(root: pathlib.Path) -> str:
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    for split in ("train", "val"):
        if (root / SPLIT_FILES["taskonomy"].format(split=split)).is_file():
            return "taskonomy"
        path = root / f"{split}.txt"
        if path.is_file():
            return "taskonomy" if "{domain}" in path.read_text(encoding="utf-8") else "generic"
    raise DatasetError(f"{root}: no split list (train_domain.txt / val_domain.txt for "
                       "Taskonomy, train.txt / val.txt)")


def translation_split_path(root: pathlib.Path, split: str, layout: str) -> pathlib.Path:
    candidates = [root / SPLIT_FILES[layout].format(split=split), root / f"{split}.txt"]
    if split == "val":
        candidates += [root / SPLIT_FILES[layout].format(split="test"), root / "test.txt"]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError(f"{root}: split list {candidates[0].name} not found")


def _find_generic(root: pathlib.Path, domain: str, stem: str) -> pathlib.Path:
    for suffix in IMAGE_SUFFIXES:
        path = root / domain / f"{stem}{suffix}"
        if path.is_file():
            return path
    return root / domain / f"{stem}.png"


class TranslationDataset(torch.utils.data.Dataset):
    """One split of a translation dataset. ``dataset[i]`` is a dict: ``inputs`` (a list of
    uint8 ``[H, W, 3]`` tensors, one per input domain), ``target`` (uint8 ``[H, W, 3]``) and
    ``name``. The transform's random numbers come from (seed, epoch, index), so augmentation
    does not depend on data-loading workers; call :meth:`set_epoch` each epoch."""

    def __init__(self, root: str | pathlib.Path, split: str, inputs: list[str], target: str,
                 transform: TranslationTransform | None = None, layout: str = "auto",
                 seed: int = 0) -> None:
        self.root = pathlib.Path(root)
        self.split = split
        self.inputs = [domain_name(d) for d in inputs]
        self.target = domain_name(target)
        self.domains = self.inputs + [self.target]
        self.layout = detect_translation_layout(self.root) if layout == "auto" else layout
        if self.layout not in TRANSLATION_LAYOUTS:
            raise DatasetError(f"unknown layout {self.layout!r} (choose from "
                               f"{', '.join(TRANSLATION_LAYOUTS)})")
        self.transform = transform or TranslationTransform(train=False)
        self.seed, self.epoch = seed, 0
        self.samples = self._list_samples()

    def _list_samples(self) -> list[dict[str, pathlib.Path]]:
        list_path = translation_split_path(self.root, self.split, self.layout)
        lines = [line.strip() for line in list_path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not lines:
            raise DatasetError(f"{list_path}: empty split list")
        missing_folders = [d for d in self.domains if not (self.root / d).is_dir()]
        if missing_folders:
            present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise DatasetError(f"{self.root}: no folder for domain(s) {', '.join(missing_folders)}"
                               f" (folders here: {', '.join(present) or 'none'})")
        samples = []
        for line in lines:
            if self.layout == "taskonomy":
                if "{domain}" not in line:
                    raise DatasetError(f"{list_path}: line {line!r} has no {{domain}} placeholder")
                samples.append({d: self.root / line.replace("{domain}", d) for d in self.domains})
            else:
                samples.append({d: _find_generic(self.root, d, line) for d in self.domains})
        missing = [str(p) for s in samples for p in s.values() if not p.is_file()]
        if missing:
            raise DatasetError(f"{self.root}: {len(missing)} file(s) of the {self.split} split "
                               f"missing, e.g. {', '.join(missing[:3])}")
        return samples

    def name(self, index: int) -> str:
        return self.samples[index][self.target].stem

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        files = self.samples[index]
        images = [read_domain_image(files[d], d) for d in self.domains]
        shapes = {im.shape[:2] for im in images}
        if len(shapes) > 1:
            raise DatasetError(f"{self.name(index)}: the domains' images differ in size "
                               f"({', '.join(f'{h}x{w}' for h, w in sorted(shapes))})")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images = [torch.from_numpy(im) for im in self.transform(images, rng)]
        return {"inputs": images[:-1], "target": images[-1], "name": self.name(index)}

    def describe(self) -> dict:
        return {"name": self.root.name, "layout": self.layout, "inputs": self.inputs,
                "target": self.target}
