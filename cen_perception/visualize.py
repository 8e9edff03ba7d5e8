"""Pictures of segmentations: palette colours, overlays, depth colour maps, contact sheets.

Everything works on whole arrays through lookup tables and OpenCV; no per-pixel Python.
Label 255 (unlabeled) and any id without a palette entry are drawn black.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

UNLABELED = 255


def palette_lut(palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """A ``[256, 3]`` uint8 table: row i is the RGB colour of class i, black past the palette.

    A ``[256, 3]`` uint8 array is returned as it is, so callers can build the table once.
    """
    palette = np.asarray(palette)
    if palette.shape == (256, 3) and palette.dtype == np.uint8:
        return palette
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) > UNLABELED:
        raise ValueError(f"palette must be [N, 3] with N <= {UNLABELED}, got {list(palette.shape)}")
    if palette.size and (palette.min() < 0 or palette.max() > 255):
        raise ValueError("palette values must lie in 0..255")
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = palette
    return lut


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 [H, W], got {labels.dtype}{list(labels.shape)}")
    return labels


def colorize(labels: np.ndarray, palette) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB: each label id drawn in its palette colour (255 -> black)."""
    labels = _check_labels(labels)
    # One pass: applyColorMap looks each id up in a user table (its channel order is ours).
    return cv2.applyColorMap(np.ascontiguousarray(labels), palette_lut(palette).reshape(256, 1, 3))


def overlay(rgb: np.ndarray, labels: np.ndarray, palette, alpha: float = 0.5,
            color: Optional[np.ndarray] = None) -> np.ndarray:
    """``rgb * (1 - alpha) + colour * alpha``; unlabeled pixels keep the input colour.

    ``color`` may pass an already computed ``colorize(labels, palette)``.
    """
    labels = _check_labels(labels)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape != labels.shape + (3,):
        raise ValueError(f"rgb must be uint8 {list(labels.shape) + [3]} to match the labels, "
                         f"got {rgb.dtype}{list(rgb.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if color is None:
        color = colorize(labels, palette)
    blended = cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)
    unlabeled = labels == UNLABELED
    if unlabeled.any():
        np.copyto(blended, rgb, where=unlabeled[:, :, None])
    return blended


def colorize_depth(depth: np.ndarray, max_depth: Optional[float] = None) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB turbo colour map of depth in metres; 0 (invalid) is black.

    ``max_depth`` (m) fixes the scale; by default the largest valid depth in the image.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got {list(depth.shape)}")
    valid = depth > 0
    if max_depth is None:
        max_depth = float(depth[valid].max()) if valid.any() else 1.0
    scaled = np.clip(depth * (255.0 / max(max_depth, 1e-6)), 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    return rgb


def render_cloud(points: np.ndarray, colours: np.ndarray, size: tuple[int, int] = (480, 640),
                 elevation_deg: float = 35.0, background: int = 32) -> np.ndarray:
    """An orthographic picture of a point cloud, seen from above the camera looking down
    ``elevation_deg`` onto its optical axis: uint8 RGB ``[H, W, 3]``.

    ``points`` float ``[N, 3]`` in the camera optical frame (x right, y down, z forward; NaN
    rows are left out), ``colours`` uint8 ``[N, 3]``. Nearer points are drawn over farther
    ones; the cloud is scaled to fit the picture.
    """
    h, w = size
    picture = np.full((h, w, 3), background, np.uint8)
    keep = np.isfinite(points).all(axis=1)
    pts, cols = points[keep].astype(np.float64), colours[keep]
    if not len(pts):
        return picture
    e = np.radians(elevation_deg)
    # Rotate about the x axis: the viewer rises above the camera and looks down.
    up = pts[:, 1] * np.cos(e) - pts[:, 2] * np.sin(e)
    toward = pts[:, 1] * np.sin(e) + pts[:, 2] * np.cos(e)
    u, v = pts[:, 0], up
    lo_u, hi_u = np.percentile(u, [0.5, 99.5])
    lo_v, hi_v = np.percentile(v, [0.5, 99.5])
    scale = 0.9 * min(w / max(hi_u - lo_u, 1e-6), h / max(hi_v - lo_v, 1e-6))
    cu = ((u - (lo_u + hi_u) / 2) * scale + w / 2).astype(np.int64)
    cv = ((v - (lo_v + hi_v) / 2) * scale + h / 2).astype(np.int64)
    order = np.argsort(-toward)  # far first, near last
    cu, cv, cols = cu[order], cv[order], cols[order]
    for du in (0, 1):
        for dv in (0, 1):
            uu, vv = cu + du, cv + dv
            inside = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
            picture[vv[inside], uu[inside]] = cols[inside]
    return picture


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"contact_sheet images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"contact_sheet images must be [H, W] or [H, W, 3], got {list(image.shape)}")


def contact_sheet(images: Sequence[np.ndarray], columns: int,
                  titles: Optional[Sequence[str]] = None,
                  cell_size: Optional[tuple[int, int]] = None,
                  padding: int = 4, background: tuple[int, int, int] = (32, 32, 32)) -> np.ndarray:
    """One uint8 RGB picture with ``images`` in a grid of ``columns`` columns.

    Each image (uint8 grey or RGB) is scaled to fit its cell, keeping its aspect ratio;
    ``cell_size`` is ``(height, width)``, by default that of the first image. ``titles``, when
    given, are written in the top-left corner of each cell.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    images = [_as_rgb(image) for image in images]
    cell_h, cell_w = cell_size or images[0].shape[:2]
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    sheet = np.empty((rows * cell_h + (rows + 1) * padding,
                      columns * cell_w + (columns + 1) * padding, 3), np.uint8)
    sheet[:] = background
    for index, image in enumerate(images):
        h, w = image.shape[:2]
        scale = min(cell_h / h, cell_w / w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if size != (w, h):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        top = padding + (index // columns) * (cell_h + padding)
        left = padding + (index % columns) * (cell_w + padding)
        sheet[top:top + size[1], left:left + size[0]] = image
        if titles is not None and titles[index]:
            origin = (left + 4, top + 16)
            cv2.putText(sheet, str(titles[index]), origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(sheet, str(titles[index]), origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return sheet


__all__ = ["UNLABELED", "palette_lut", "colorize", "overlay", "colorize_depth", "render_cloud",
           "contact_sheet"]
