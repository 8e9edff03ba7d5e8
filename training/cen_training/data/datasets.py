"""RGB-D segmentation datasets on disk: NYUDv2 and SUN RGB-D in the official preprocessed
layout, and a generic layout for a robot's own data.

Official layout (as the CEN code reads NYUDv2; SUN RGB-D likewise)::

    ROOT/rgb/000003.png  ROOT/depth/000003.png (16-bit, mm)  ROOT/masks/000003.png
    ROOT/train.txt  ROOT/val.txt (or test.txt)
        one line per sample: rgb/000003.png<TAB>masks/000003.png<TAB>depth/000003.png

Generic layout::

    ROOT/rgb/<stem>.png|.jpg  ROOT/depth/<stem>.png (16-bit, mm)  ROOT/labels/<stem>.png
    ROOT/train.txt  ROOT/val.txt   one sample stem per line
    ROOT/classes.yaml              names and colours (see ``classes.py``)

Labels are single-channel class ids, 255 = ignore. The dataset hands out raw uint8 RGB, depth
in metres (millimetres / 1000, 0 = invalid) and int64 labels; normalisation happens inside the
model. With a class map (``classes.ClassMap``) the labels are mapped into another class list as
they are read; the files stay as they are.
"""
from __future__ import annotations

import collections
import concurrent.futures
import pathlib
import struct
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ..errors import DatasetError
from .classes import (
    IGNORE_INDEX,
    ClassList,
    ClassMap,
    load_class_list,
    load_class_map,
    parse_class_map,
)

LAYOUTS = ("nyudv2", "sunrgbd", "generic")
RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
# Sample counts of the official splits, to tell SUN RGB-D from NYUDv2 by its lists.
SUNRGBD_SPLIT_SIZES = (5285, 5050)


class ColorLabelsError(DatasetError):
    """A label image in colour where single-channel class ids were expected."""


@dataclass(frozen=True)
class SampleFiles:
    """The three files of one sample; ``name`` identifies it in messages."""
    name: str
    rgb: pathlib.Path
    depth: pathlib.Path
    labels: pathlib.Path


# -- layout and split lists ----------------------------------------------------------------

def split_path(root: str | pathlib.Path, split: str) -> pathlib.Path:
    """``ROOT/<split>.txt``; ``val`` and ``test`` stand in for each other when one is missing."""
    root = pathlib.Path(root)
    path = root / f"{split}.txt"
    if not path.is_file():
        other = {"val": "test", "test": "val"}.get(split)
        if other and (root / f"{other}.txt").is_file():
            return root / f"{other}.txt"
        raise DatasetError(f"{root}: split list {split}.txt not found")
    return path


def _split_lines(path: pathlib.Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def detect_layout(root: str | pathlib.Path) -> str:
    """``generic``, ``nyudv2`` or ``sunrgbd``, from what the folder holds."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if (root / "classes.yaml").is_file() and (root / "labels").is_dir():
        return "generic"
    lists = [p for p in (root / f"{s}.txt" for s in ("train", "val", "test")) if p.is_file()]
    for path in lists:
        lines = _split_lines(path)
        if lines and len(lines[0].split()) >= 3:
            if "sun" in root.resolve().name.lower() or any(
                    len(_split_lines(p)) in SUNRGBD_SPLIT_SIZES for p in lists):
                return "sunrgbd"
            return "nyudv2"
    raise DatasetError(
        f"{root}: not a dataset: expected rgb/, depth/, labels/, classes.yaml and train.txt "
        "(generic layout) or rgb/, depth/, masks/ with tab-separated split lists "
        "(official NYUDv2 / SUN RGB-D layout)")


def load_dataset_classes(root: str | pathlib.Path, layout: str) -> ClassList:
    """``ROOT/classes.yaml`` when present (required for the generic layout), else the built-in
    list of the official dataset."""
    path = pathlib.Path(root) / "classes.yaml"
    if path.is_file():
        return load_class_list(path)
    if layout == "generic":
        raise DatasetError(f"{path}: class list not found")
    return load_class_list(layout)


def dataset_class_map(root: str | pathlib.Path, layout: str,
                      map_path: str | pathlib.Path | None,
                      classes_path: str | pathlib.Path | None) -> ClassMap | None:
    """How the dataset's labels are read for the class list ``classes_path``: through the class
    map ``map_path``; or, without one, as they are (an identity map, for the colours of
    ``classes_path``), which needs ``classes_path`` to list the dataset's own classes. None
    when neither is given."""
    if map_path is not None and classes_path is None:
        raise DatasetError("a class map needs the class list it maps into (--classes)")
    if classes_path is None:
        return None
    layout = detect_layout(root) if layout == "auto" else layout
    own, wanted = load_dataset_classes(root, layout), load_class_list(classes_path)
    if map_path is not None:
        return load_class_map(map_path, own, wanted)
    if own.names != wanted.names:
        raise DatasetError(f"{classes_path} lists other classes than {root} "
                           f"({wanted.num_classes} vs {own.num_classes}); map the dataset's "
                           "classes into it with --class-map")
    return parse_class_map({"map": {n: n for n in own.names}}, own, wanted, str(classes_path))


def list_samples(root: str | pathlib.Path, layout: str, split: str) -> list[SampleFiles]:
    """The files of every sample in a split, in list order (files are not opened)."""
    root = pathlib.Path(root)
    path = split_path(root, split)
    samples = []
    for number, line in enumerate(_split_lines(path), start=1):
        if layout == "generic":
            stem = line.split()[0]
            rgb = next((root / "rgb" / (stem + s) for s in RGB_SUFFIXES
                        if (root / "rgb" / (stem + s)).is_file()), root / "rgb" / (stem + ".png"))
            samples.append(SampleFiles(stem, rgb, root / "depth" / (stem + ".png"),
                                       root / "labels" / (stem + ".png")))
        else:
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 3:
                raise DatasetError(f"{path}:{number}: expected 'rgb<TAB>mask<TAB>depth', "
                                   f"got {line!r}")
            rgb, labels, depth = (root / f.strip().lstrip("/") for f in fields[:3])
            samples.append(SampleFiles(pathlib.Path(fields[0]).stem, rgb, depth, labels))
    if not samples:
        raise DatasetError(f"{path}: split list is empty")
    return samples


# -- reading files ---------------------------------------------------------------------------

def _require(files: SampleFiles) -> None:
    for kind in ("rgb", "depth", "labels"):
        path = getattr(files, kind)
        if not path.is_file():
            raise DatasetError(f"sample {files.name}: {kind} file {path} not found")


def read_rgb(path: pathlib.Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: cannot read image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth_mm(path: pathlib.Path) -> np.ndarray:
    """A 16-bit depth PNG in millimetres, as uint16 ``[H, W]``."""
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise DatasetError(f"{path}: cannot read depth image")
    if depth.ndim == 3:  # some tools write grey depth as three equal channels
        depth = depth[..., 0]
    if depth.dtype != np.uint16:
        raise DatasetError(f"{path}: depth must be a 16-bit PNG in millimetres, got {depth.dtype}")
    return depth


def read_labels(path: pathlib.Path) -> np.ndarray:
    """Class ids as uint8 ``[H, W]``; indexed-colour PNGs give their indices."""
    header = _png_header(path)
    if header is not None and header[3] == 3:  # palette PNG: OpenCV would expand it to colours
        from PIL import Image
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.uint8).copy()
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DatasetError(f"{path}: cannot read label image")
    if labels.ndim == 3:
        if not (np.array_equal(labels[..., 0], labels[..., 1])
                and np.array_equal(labels[..., 0], labels[..., 2])):
            raise ColorLabelsError(f"{path}: labels must be single-channel class ids, got a "
                                   "colour image")
        labels = labels[..., 0]
    if labels.dtype != np.uint8:
        if labels.max() > 255:
            raise DatasetError(f"{path}: label id {int(labels.max())} does not fit 0..255")
        labels = labels.astype(np.uint8)
    return labels


def _png_header(path: pathlib.Path) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR, or None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height, head[24], head[25]


def image_size(path: pathlib.Path) -> tuple[int, int]:
    """(height, width) of an image, from the PNG header when possible (no decoding)."""
    header = _png_header(path)
    if header is not None:
        return header[1], header[0]
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: cannot read image")
    return image.shape[:2]


def read_sample(files: SampleFiles) -> dict:
    """One sample as numpy arrays: ``rgb`` uint8 [H,W,3], ``depth`` float32 metres [H,W],
    ``labels`` uint8 [H,W], and its ``name``."""
    _require(files)
    rgb, depth, labels = read_rgb(files.rgb), read_depth_mm(files.depth), read_labels(files.labels)
    if not rgb.shape[:2] == depth.shape == labels.shape:
        raise DatasetError(f"sample {files.name}: sizes differ: rgb {rgb.shape[1]}x{rgb.shape[0]}, "
                           f"depth {depth.shape[1]}x{depth.shape[0]}, "
                           f"labels {labels.shape[1]}x{labels.shape[0]}")
    return {"rgb": rgb, "depth": depth.astype(np.float32) / 1000.0, "labels": labels,
            "name": files.name}


# -- the dataset -----------------------------------------------------------------------------

class RGBDSegmentationDataset(torch.utils.data.Dataset):
    """One split of an RGB-D segmentation dataset.

    ``dataset[i]`` is a dict: ``rgb`` uint8 tensor [H,W,3] (RGB order), ``depth`` float32
    tensor [H,W] in metres (0 = invalid), ``labels`` int64 tensor [H,W] (255 = ignore) and
    ``name``. ``transform(sample, rng)`` (e.g. :class:`TrainTransform`) is applied to the numpy
    sample first; its generator is seeded from (seed, epoch, index), so augmentation is
    reproducible and independent of data-loading workers. Call :meth:`set_epoch` each epoch.

    ``class_map`` (from the dataset's classes, see :func:`dataset_class_map`) maps the labels
    as they are read; ``classes`` is then its target list and ``source_classes`` the
    dataset's own.
    """

    def __init__(self, root: str | pathlib.Path, split: str = "train", transform=None,
                 layout: str = "auto", seed: int = 0, class_map: ClassMap | None = None):
        self.root = pathlib.Path(root)
        self.split = split
        self.layout = detect_layout(self.root) if layout == "auto" else layout
        if self.layout not in LAYOUTS:
            raise DatasetError(f"unknown dataset layout {layout!r}; choose from "
                               f"{', '.join(LAYOUTS)}")
        self.source_classes = self.classes = load_dataset_classes(self.root, self.layout)
        self.class_map = class_map
        if class_map is not None:
            if class_map.source.names != self.source_classes.names:
                raise DatasetError(f"{class_map.path}: made for other source classes than "
                                   f"those of {self.root}")
            self.classes = class_map.target
        self.samples = list_samples(self.root, self.layout, split)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def name(self) -> str:
        return self.classes.dataset_name or self.layout

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict:
        """The untransformed sample as numpy arrays (see :func:`read_sample`), its labels
        mapped through the class map if there is one."""
        sample = read_sample(self.samples[index])
        if self.class_map is not None:
            sample["labels"] = self.class_map.apply(sample["labels"])
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = self.load(index)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = self.transform(sample, rng)
        return {"rgb": torch.from_numpy(np.ascontiguousarray(sample["rgb"])),
                "depth": torch.from_numpy(np.ascontiguousarray(sample["depth"], np.float32)),
                "labels": torch.from_numpy(sample["labels"].astype(np.int64)),
                "name": sample["name"]}

    def describe(self) -> dict:
        """What a model card records about its training data."""
        described = {"name": self.name, "layout": self.layout, "path": str(self.root.resolve())}
        if self.class_map is not None:
            described["class_map"] = str(pathlib.Path(self.class_map.path).resolve())
            described["source_classes"] = self.source_classes.names
        return described


# -- statistics ------------------------------------------------------------------------------

def training_depth_range(dataset: RGBDSegmentationDataset, max_frames: int = 200,
                         percentiles: tuple[float, float] = (1.0, 99.0),
                         progress: bool = False) -> list[float]:
    """``[low, high]`` metres: the 1st and 99th percentile of the valid (non-zero) depth of a
    split, for the model card (the node warns when a camera's depth falls far outside it).

    Reads at most ``max_frames`` depth images, evenly spaced over the split (all of them when
    it has fewer), untransformed. The percentiles come from a histogram of the millimetre
    values (the smallest value whose cumulative share reaches the percentile, numpy's
    ``inverted_cdf``), exact to the millimetre and needing no memory per pixel. Empty when the
    frames hold no valid depth or only one value (no range to speak of).
    """
    from tqdm import tqdm

    count = len(dataset.samples)
    indices = np.unique(np.linspace(0, count - 1, min(count, max_frames)).round().astype(int))
    histogram = np.zeros(65536, np.int64)
    for index in tqdm(indices, desc="depth range", unit="frame", disable=not progress,
                      leave=False):
        histogram += np.bincount(read_depth_mm(dataset.samples[index].depth).ravel(),
                                 minlength=65536)
    histogram[0] = 0  # invalid
    total = int(histogram.sum())
    if total == 0:
        return []
    cumulative = np.cumsum(histogram)
    low, high = (int(np.searchsorted(cumulative, total * p / 100.0)) for p in percentiles)
    if low >= high:
        return []
    return [low / 1000.0, high / 1000.0]


# -- validation ------------------------------------------------------------------------------

@dataclass
class SplitSummary:
    split: str
    num_samples: int = 0
    sizes: collections.Counter = field(default_factory=collections.Counter)  # (H, W) -> count
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))


def _check_sample(files: SampleFiles, num_classes: int) -> tuple[tuple[int, int], np.ndarray]:
    """Check one sample's files; returns its size and label histogram (256 bins)."""
    _require(files)
    rgb_size = image_size(files.rgb)
    header = _png_header(files.depth)
    if header is None or header[2] != 16 or header[3] not in (0, 2):
        depth = read_depth_mm(files.depth)  # decodes, and names the file if it is not 16-bit
        depth_size = depth.shape
    else:
        depth_size = (header[1], header[0])
    labels = read_labels(files.labels)
    if not rgb_size == depth_size == labels.shape:
        raise DatasetError(f"sample {files.name}: sizes differ: rgb {rgb_size[1]}x{rgb_size[0]}, "
                           f"depth {depth_size[1]}x{depth_size[0]}, "
                           f"labels {labels.shape[1]}x{labels.shape[0]}")
    histogram = np.bincount(labels.ravel(), minlength=256)
    bad = np.flatnonzero(histogram[num_classes:IGNORE_INDEX])
    if bad.size:
        raise DatasetError(f"sample {files.name}: label id {int(bad[0]) + num_classes} in "
                           f"{files.labels} is out of range (classes 0..{num_classes - 1}, "
                           f"{IGNORE_INDEX} = ignore)")
    return rgb_size, histogram


def validate_dataset(root: str | pathlib.Path, splits: str | list[str] = ("train", "val"),
                     layout: str = "auto", progress: bool = True, workers: int = 4,
                     class_map: ClassMap | None = None) -> dict:
    """Check every sample of the given splits before anything trains on them.

    A missing file, RGB/depth/label images of different sizes, depth that is not 16-bit, or a
    label id that is neither below the number of classes nor 255 raises :class:`DatasetError`
    naming the sample. Returns ``{"layout", "classes" (ClassList), "splits": {split:
    SplitSummary}}``. With ``class_map`` the label ids are checked against the dataset's own
    classes, and ``classes`` and the class histograms are the map's target classes.
    """
    from tqdm import tqdm

    root = pathlib.Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    classes = load_dataset_classes(root, layout)
    if class_map is not None and class_map.source.names != classes.names:
        raise DatasetError(f"{class_map.path}: made for other source classes than those of "
                           f"{root}")
    summaries = {}
    for split in [splits] if isinstance(splits, str) else list(splits):
        samples = list_samples(root, layout, split)
        summary = SplitSummary(split=split, num_samples=len(samples))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        try:
            results = pool.map(lambda f: _check_sample(f, classes.num_classes), samples)
            for size, histogram in tqdm(results, total=len(samples), desc=f"checking {split}",
                                        disable=not progress, leave=False):
                summary.sizes[size] += 1
                if class_map is not None:  # source id i's pixels count for target lut[i]
                    histogram = np.bincount(class_map.lut, weights=histogram,
                                            minlength=256).astype(np.int64)
                summary.class_pixels += histogram
        finally:  # on the first problem, stop without checking the rest
            pool.shutdown(cancel_futures=True)
        summaries[split] = summary
    if class_map is not None:
        classes = class_map.target
    return {"layout": layout, "classes": classes, "splits": summaries}
