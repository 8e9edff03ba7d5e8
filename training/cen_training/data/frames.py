"""RGB-D frames as files in the generic dataset layout: ``folder/rgb/<name>.png|jpg`` with
``folder/depth/<name>.png`` (16-bit millimetres; 0 and 65535 invalid), matched by file stem.
Read for export checks, calibration and benchmarks; written (with ``train.txt``, ``val.txt``
and ``frames.csv``) by the commands that take frames out of bags."""
from __future__ import annotations

import pathlib
from typing import Optional, Sequence

import cv2
import numpy as np

from cen_perception.image_codec import DEPTH_16U_INVALID

from ..errors import DatasetError
from .datasets import RGB_SUFFIXES


def find_rgbd_pairs(folder: str | pathlib.Path,
                    limit: Optional[int] = None) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """(rgb, depth) file pairs of a dataset in the generic layout, matched by file stem.

    ``folder/rgb/<name>.png|jpg`` and ``folder/depth/<name>.png`` (16-bit millimetres). Spread
    evenly over the dataset when ``limit`` is smaller than it.
    """
    folder = pathlib.Path(folder)
    rgb_dir, depth_dir = folder / "rgb", folder / "depth"
    if not rgb_dir.is_dir() or not depth_dir.is_dir():
        raise DatasetError(f"{folder}: needs rgb/ and depth/ folders "
                           "(the generic dataset layout)")
    depth_by_stem = {p.stem: p for p in depth_dir.glob("*.png")}
    pairs = sorted((p, depth_by_stem[p.stem]) for p in rgb_dir.iterdir()
                   if p.suffix.lower() in RGB_SUFFIXES and p.stem in depth_by_stem)
    if not pairs:
        raise DatasetError(f"{folder}: no rgb/depth image pairs with matching names")
    if limit is not None and 0 < limit < len(pairs):
        pairs = [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, limit)]
    return pairs


def load_rgbd_frame(rgb_path: str | pathlib.Path, depth_path: str | pathlib.Path,
                    input_size: Sequence[int]) -> dict[str, np.ndarray]:
    """One engine input batch: ``rgb`` uint8 [1,H,W,3] (RGB order) and ``depth`` float32
    [1,H,W] in metres (0 = invalid), resized to ``input_size`` (H, W)."""
    h, w = int(input_size[0]), int(input_size[1])
    bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
    depth_mm = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise DatasetError(f"{rgb_path}: not a readable image")
    if depth_mm is None or depth_mm.dtype != np.uint16 or depth_mm.ndim != 2:
        raise DatasetError(
            f"{depth_path}: depth must be a single-channel 16-bit PNG in millimetres")
    rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    # Nearest keeps invalid (0) pixels from bleeding into their neighbours.
    depth_mm = cv2.resize(depth_mm, (w, h), interpolation=cv2.INTER_NEAREST)
    depth = depth_mm.astype(np.float32) / 1000.0
    depth[depth_mm == DEPTH_16U_INVALID] = 0.0
    return {"rgb": np.ascontiguousarray(rgb[None]), "depth": np.ascontiguousarray(depth[None])}


MAX_DEPTH_MM = DEPTH_16U_INVALID - 1  # the largest depth a 16-bit PNG holds as a reading


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres (0 = invalid) to uint16 millimetres, rounded to the nearest millimetre."""
    mm = np.rint(np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0)
    return np.clip(mm, 0, MAX_DEPTH_MM).astype(np.uint16)


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise DatasetError(f"{path}: could not write the image")


def write_rgbd_frame(folder: pathlib.Path, stem: str, rgb: np.ndarray,
                     depth_m: np.ndarray) -> tuple[np.ndarray, bool]:
    """``rgb/<stem>.png`` and ``depth/<stem>.png`` (mm) of one frame, the depth resized to the
    colour size (nearest) when it differs. Returns the colour in BGR and whether the depth was
    resized."""
    height, width = rgb.shape[:2]
    resized = depth_m.shape != (height, width)
    if resized:
        depth_m = cv2.resize(depth_m, (width, height), interpolation=cv2.INTER_NEAREST)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    write_png(folder / "rgb" / f"{stem}.png", bgr)
    write_png(folder / "depth" / f"{stem}.png", depth_to_mm(depth_m))
    return bgr, resized


def split_stems(stems: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val): the last ``val_fraction`` of the sequence is validation (at least one
    frame when the fraction is positive and there are two frames or more)."""
    n_val = int(round(len(stems) * val_fraction))
    if val_fraction > 0 and len(stems) >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(stems) - 1) if stems else 0
    return stems[:len(stems) - n_val], stems[len(stems) - n_val:]


def write_frame_lists(folder: pathlib.Path, frames: list[tuple[str, int, int]],
                      val_fraction: float) -> tuple[list[str], list[str]]:
    """``train.txt`` and ``val.txt`` (the last ``val_fraction`` of the frames in time order)
    and ``frames.csv`` (stem and the colour and depth stamps in ns) of ``frames``:
    (stem, rgb stamp, depth stamp) in time order. Returns (train, val)."""
    train, val = split_stems([stem for stem, _, _ in frames], val_fraction)
    (folder / "train.txt").write_text("".join(f"{s}\n" for s in train), encoding="utf-8")
    (folder / "val.txt").write_text("".join(f"{s}\n" for s in val), encoding="utf-8")
    (folder / "frames.csv").write_text(
        "stem,rgb_stamp_ns,depth_stamp_ns\n"
        + "".join(f"{stem},{rgb_ns},{depth_ns}\n" for stem, rgb_ns, depth_ns in frames),
        encoding="utf-8")
    return train, val
