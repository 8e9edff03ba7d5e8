"""The synthetic RGB-D dataset: deterministic, valid, and built so one modality is not enough."""
import filecmp

import cv2
import numpy as np
import pytest

from cen_training.cli import main as cli_main
from cen_training.data import validate_dataset
from cen_training.data.synthetic import BOX, POSTER, RELIEF, WALL, render_scene


def test_same_seed_same_files_other_seed_other_files(tmp_path, make_tiny_dataset):
    a = make_tiny_dataset(tmp_path / "a", num_train=3, num_val=2, seed=5)
    b = make_tiny_dataset(tmp_path / "b", num_train=3, num_val=2, seed=5)
    c = make_tiny_dataset(tmp_path / "c", num_train=3, num_val=2, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 * 5 + 3  # rgb, depth, labels per scene; train.txt, val.txt, classes
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    _, mismatch, _ = filecmp.cmpfiles(a, c, [str(f) for f in files if "rgb/" in str(f)],
                                      shallow=False)
    assert len(mismatch) == 5


def test_synth_cli_writes_a_valid_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert cli_main(["synth", str(out), "--num-train", "4", "--num-val", "2", "--height", "48",
                     "--width", "64", "--no-progress"]) == 0
    summary = validate_dataset(out, ["train", "val"], progress=False)
    assert summary["splits"]["train"].num_samples == 4
    assert summary["splits"]["val"].sizes == {(48, 64): 2}
    depth = cv2.imread(str(out / "depth" / "train_00000.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and (depth == 0).any() and depth.max() > 1000
    assert cli_main(["synth", str(out), "--no-progress"]) == 2  # never overwrites


def saturation(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(float)


def test_posters_show_in_colour_only_reliefs_in_depth_only_boxes_in_both():
    """Colour tells posters and boxes from wall and reliefs, not from each other; depth tells
    reliefs and boxes from wall and posters, not from each other."""
    stats = {k: {"sat": [], "step": []} for k in (POSTER, RELIEF, BOX)}
    for seed in range(40):
        rgb, depth_mm, labels = render_scene(np.random.default_rng(seed), 96, 128)
        depth = depth_mm.astype(float) / 1000
        wall = (labels == WALL) & (depth > 0)
        if wall.sum() < 100:
            continue
        wall_sat = np.median(saturation(rgb)[wall])
        for kind in stats:
            mask = (labels == kind) & (depth > 0)
            if mask.sum() < 30:
                continue
            # Depth step to the wall just around the object (the wall may be turned: local).
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
            ring &= wall & ~mask
            if ring.sum() < 10:
                continue
            stats[kind]["sat"].append(np.median(saturation(rgb)[mask]) - wall_sat)
            stats[kind]["step"].append(np.median(depth[ring]) - np.median(depth[mask]))
    median = {k: {m: np.median(v) for m, v in s.items()} for k, s in stats.items()}
    assert all(len(s["sat"]) >= 8 for s in stats.values())
    assert median[POSTER]["sat"] > 60 and median[BOX]["sat"] > 60
    assert abs(median[RELIEF]["sat"]) < 15
    assert median[RELIEF]["step"] > 0.15 and median[BOX]["step"] > 0.15
    assert abs(median[POSTER]["step"]) < 0.05
    assert median[POSTER]["sat"] == pytest.approx(median[BOX]["sat"], abs=30)
    assert median[RELIEF]["step"] == pytest.approx(median[BOX]["step"], abs=0.1)
