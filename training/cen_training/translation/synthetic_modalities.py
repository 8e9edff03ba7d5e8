"""Translation modalities for a synthetic dataset: shading, surface normals and texture edges.

``write_translation_modalities(root)`` reads the ``rgb/`` and ``depth/`` (16-bit mm) images
that ``cen-train synth`` wrote and adds, for every stem of ``train.txt`` and ``val.txt``, three
8-bit PNG folders in the generic translation layout (``cen_training.data.taskonomy``):

* ``normal/`` -- surface normals of the depth map (camera frame, pinhole with the synthetic
  camera's focal length 0.9 x width), encoded as Taskonomy does: ``(n + 1) * 127.5`` per axis;
  invalid depth gives the zero vector (128, 128, 128);
* ``shading/`` -- Lambertian shading of those normals under a fixed light from the upper left
  (grey); 0 where depth is invalid;
* ``edge_texture/`` -- texture edges of the colour image: the Sobel gradient magnitude of its
  lightly blurred grey version (grey).

Shading comes from geometry only and edges from the colour image only, so the official task
shading + texture edges -> RGB needs both, as on Taskonomy.
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np

from ..errors import DatasetError

TRANSLATION_MODALITIES = ("shading", "normal", "edge_texture")
# Towards the light: up and to the left of the camera, and towards it (camera frame: x right,
# y down, z forward; a surface facing the camera has normal (0, 0, -1)).
LIGHT = np.array([-0.4, -0.5, -0.77])
LIGHT = LIGHT / np.linalg.norm(LIGHT)


def surface_normals(depth_m: np.ndarray, focal_px: float) -> np.ndarray:
    """Unit normals ``[H, W, 3]`` (camera frame, facing the camera) of a metric depth map;
    zero where the depth or a neighbour is invalid (0)."""
    valid = depth_m > 0
    z = cv2.GaussianBlur(depth_m.astype(np.float32), (5, 5), 1.0)
    weight = cv2.GaussianBlur(valid.astype(np.float32), (5, 5), 1.0)
    z = np.where(weight > 1e-3, z / np.maximum(weight, 1e-3), 0)
    h, w = z.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    points = np.stack([(u - (w - 1) / 2) * z / focal_px, (v - (h - 1) / 2) * z / focal_px, z],
                      axis=-1)
    # Tangents along the image axes; their cross product is the normal, turned to face the
    # camera (n . P < 0).
    du = np.stack([cv2.Sobel(points[..., i], cv2.CV_32F, 1, 0, ksize=3) for i in range(3)], -1)
    dv = np.stack([cv2.Sobel(points[..., i], cv2.CV_32F, 0, 1, ksize=3) for i in range(3)], -1)
    n = np.cross(du, dv)
    n *= np.where((n * points).sum(-1, keepdims=True) > 0, -1.0, 1.0)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    whole = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return np.where(whole[..., None], n, 0.0).astype(np.float32)


def modalities_from(rgb: np.ndarray, depth_mm: np.ndarray) -> dict[str, np.ndarray]:
    """``{"normal": uint8 [H,W,3], "shading": uint8 [H,W], "edge_texture": uint8 [H,W]}``
    of one scene (``rgb`` uint8 [H,W,3] RGB order, ``depth_mm`` uint16 [H,W], 0 = invalid)."""
    h, w = depth_mm.shape
    normals = surface_normals(depth_mm.astype(np.float32) / 1000.0, focal_px=0.9 * w)
    normal = np.clip(np.rint((normals + 1.0) * 127.5), 0, 255).astype(np.uint8)
    shading = np.clip(normals @ LIGHT, 0.0, 1.0)
    shading = np.rint(shading * 255).astype(np.uint8)
    grey = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), (3, 3), 0.8)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    edges = np.clip(np.sqrt(gx * gx + gy * gy) * 0.5, 0, 255).astype(np.uint8)
    return {"normal": normal, "shading": shading, "edge_texture": edges}


def write_translation_modalities(root: str | pathlib.Path, progress: bool = True) -> list[str]:
    """Add ``shading/``, ``normal/`` and ``edge_texture/`` to a synthetic dataset folder from
    its ``rgb/`` and ``depth/`` images; returns the stems written."""
    from tqdm import tqdm

    root = pathlib.Path(root)
    stems = []
    for split in ("train", "val"):
        path = root / f"{split}.txt"
        if not path.is_file():
            raise DatasetError(f"{root}: split list {split}.txt not found")
        stems += [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    for name in TRANSLATION_MODALITIES:
        (root / name).mkdir(exist_ok=True)
    for stem in tqdm(stems, desc="translation modalities", unit="scene", disable=not progress):
        bgr = cv2.imread(str(root / "rgb" / f"{stem}.png"), cv2.IMREAD_COLOR)
        depth = cv2.imread(str(root / "depth" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        if bgr is None or depth is None or depth.dtype != np.uint16:
            raise DatasetError(f"{root}: {stem}: needs rgb/{stem}.png and a 16-bit "
                               f"depth/{stem}.png")
        images = modalities_from(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth)
        cv2.imwrite(str(root / "normal" / f"{stem}.png"),
                    cv2.cvtColor(images["normal"], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "shading" / f"{stem}.png"), images["shading"])
        cv2.imwrite(str(root / "edge_texture" / f"{stem}.png"), images["edge_texture"])
    return stems
