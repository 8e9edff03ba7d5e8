"""Reading RGB-D frames from files in the generic dataset layout, for export checks,
calibration and benchmarks: ``folder/rgb/<name>.png|jpg`` with ``folder/depth/<name>.png``
(16-bit millimetres; 0 and 65535 invalid), matched by file stem."""
from __future__ import annotations

import pathlib
from typing import Optional, Sequence

import cv2
import numpy as np

from cen_perception.image_codec import DEPTH_16U_INVALID

from .data.datasets import RGB_SUFFIXES
from .errors import DatasetError


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
        raise DatasetError(f"{depth_path}: depth must be a single-channel 16-bit PNG in millimetres")
    rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    # Nearest keeps invalid (0) pixels from bleeding into their neighbours.
    depth_mm = cv2.resize(depth_mm, (w, h), interpolation=cv2.INTER_NEAREST)
    depth = depth_mm.astype(np.float32) / 1000.0
    depth[depth_mm == DEPTH_16U_INVALID] = 0.0
    return {"rgb": np.ascontiguousarray(rgb[None]), "depth": np.ascontiguousarray(depth[None])}
