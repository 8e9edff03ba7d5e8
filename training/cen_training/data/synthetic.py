"""A synthetic RGB-D segmentation dataset on which neither modality alone suffices.

Scenes of the project's one synthetic world
(``cen_perception_dev.synthetic_world.SyntheticScene``, where the scene is described): a wall
above a floor with ``poster`` (colour only), ``relief`` (depth only) and ``box`` (both) objects,
a structured-light depth sensor's noise and holes.

Written in the generic dataset layout (``rgb/``, ``depth/`` 16-bit mm, ``labels/``,
``train.txt``, ``val.txt``, ``classes.yaml``); the same seed always gives the same files.
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np

from cen_perception_dev.synthetic_world import (
    BOX,
    CLASS_NAMES,
    FLOOR,
    POSTER,
    RELIEF,
    WALL,
    render_scene,
)

from .classes import ClassList

CLASSES = ClassList(
    names=list(CLASS_NAMES),
    palette=[[128, 128, 128], [139, 90, 43], [230, 25, 200], [0, 190, 255], [255, 200, 0]],
    dataset_name="synthetic-rgbd")
__all__ = ["CLASSES", "BOX", "FLOOR", "POSTER", "RELIEF", "WALL", "render_scene",
           "write_dataset"]


def write_dataset(out_dir: str | pathlib.Path, num_train: int = 300, num_val: int = 60,
                  height: int = 120, width: int = 160, seed: int = 0,
                  progress: bool = True) -> pathlib.Path:
    """Write ``num_train + num_val`` scenes in the generic layout; returns ``out_dir``."""
    from tqdm import tqdm

    out = pathlib.Path(out_dir)
    for sub in ("rgb", "depth", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    splits = {"train": [f"train_{i:05d}" for i in range(num_train)],
              "val": [f"val_{i:05d}" for i in range(num_val)]}
    stems = splits["train"] + splits["val"]
    # One independent stream per scene: scene i is the same whatever the other counts are.
    streams = np.random.SeedSequence([seed, height, width]).spawn(2)
    seeds = {"train": streams[0].spawn(num_train), "val": streams[1].spawn(num_val)}
    scene_seeds = seeds["train"] + seeds["val"]
    for stem, scene_seed in tqdm(list(zip(stems, scene_seeds)), desc="synth", unit="scene",
                                 disable=not progress):
        rgb, depth_mm, labels = render_scene(np.random.default_rng(scene_seed), height, width)
        cv2.imwrite(str(out / "rgb" / f"{stem}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / "depth" / f"{stem}.png"), depth_mm)
        cv2.imwrite(str(out / "labels" / f"{stem}.png"), labels)
    for split, names in splits.items():
        (out / f"{split}.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    CLASSES.save(out / "classes.yaml")
    return out
