"""`cen-train extract-frames` and `cen-train import-labels`: from a recorded bag to a dataset."""
import hashlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cen_training.cli import main
from cen_training.data import RGBDSegmentationDataset, detect_layout

CLASSES_YAML = """name: robot
classes:
  - {name: floor, color: [0, 128, 0]}
  - {name: wall, color: [128, 0, 0]}
  - {name: thing, color: [0, 0, 255]}
"""


def tree_hash(path):
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_extract_frames_writes_every_pair_exactly(rgbd_bag_factory, tmp_path, capsys, storage):
    bag, expected = rgbd_bag_factory("run1", storage=storage)
    before = tree_hash(bag)
    out = tmp_path / "dataset"
    assert main(["extract-frames", str(bag), str(out), "--rgb-topic", "/cam/color",
                 "--depth-topic", "/cam/depth", "--val-fraction", "0.25"]) == 0
    assert tree_hash(bag) == before
    report = capsys.readouterr().out
    # Every message is accounted for: pairs + unmatched + bad = messages read.
    assert ("4 pairs from 6 colour (/cam/color) and 6 depth (/cam/depth) messages; "
            "unmatched: 1 colour, 2 depth; bad messages: 1 colour, 0 depth") in report

    stems = [f"run1_{i:06d}" for i in range(4)]
    assert (out / "train.txt").read_text().split() == stems[:3]
    assert (out / "val.txt").read_text().split() == stems[3:]
    assert sorted(p.stem for p in (out / "rgb").glob("*.png")) == stems
    assert list((out / "labels").iterdir()) == []
    assert not (out / "classes.yaml").exists()
    rows = (out / "frames.csv").read_text().splitlines()
    assert rows[1] == f"run1_000000,{expected['stamps'][0]},{expected['stamps'][0] + 2_000_000}"
    for stem, rgb, depth_mm in zip(stems, expected["rgb"], expected["depth_mm"]):
        written_rgb = cv2.cvtColor(cv2.imread(str(out / "rgb" / f"{stem}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(written_rgb, rgb)
        written_depth = cv2.imread(str(out / "depth" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert written_depth.dtype == np.uint16
        np.testing.assert_array_equal(written_depth, depth_mm)

    # The folder is not overwritten by a second extraction.
    assert main(["extract-frames", str(bag), str(out), "--rgb-topic", "/cam/color",
                 "--depth-topic", "/cam/depth"]) == 2
    assert "already holds" in capsys.readouterr().err


def test_every_nth_frame_auto_topics_and_classes(tmp_path, capsys):
    from cen_perception_dev.synthetic_sequence import write_synthetic_sequence

    bag = write_synthetic_sequence(tmp_path / "seq", frames=7, height=32, width=40)
    classes = tmp_path / "classes.yaml"
    classes.write_text(CLASSES_YAML)
    out = tmp_path / "ds"
    assert main(["extract-frames", str(bag), str(out), "--every", "3", "--val-fraction", "0",
                 "--classes", str(classes)]) == 0
    assert "7 pairs from 7 colour" in capsys.readouterr().out
    assert (out / "train.txt").read_text().split() == ["seq_000000", "seq_000003", "seq_000006"]
    assert (out / "val.txt").read_text() == ""
    assert (out / "classes.yaml").read_text() == CLASSES_YAML


def test_errors_are_one_line(rgbd_bag_factory, tmp_path, capsys):
    bag, _ = rgbd_bag_factory()
    assert main(["extract-frames", str(bag), str(tmp_path / "a"), "--rgb-topic", "/nope",
                 "--depth-topic", "/cam/depth"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no colour topic '/nope'" in err and "/chatter (std_msgs/msg/String, 1)" in err
    junk = tmp_path / "junk.db3"
    junk.write_bytes(b"\0" * 4096)
    assert main(["extract-frames", str(junk), str(tmp_path / "b")]) == 2
    assert "not a readable ROS 2 bag" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("storage,color_format", [("sqlite3", "png"), ("mcap", "jpeg")])
def test_extract_frames_from_compressed_topics(rgbd_bag_factory, write_compressed_bag, tmp_path,
                                               capsys, storage, color_format):
    raw, expected = rgbd_bag_factory("run2", storage=storage)
    bag = write_compressed_bag(raw, tmp_path / "run2c", storage, color_format)
    before = tree_hash(bag)
    out = tmp_path / "dataset"
    assert main(["extract-frames", str(bag), str(out), "--rgb-topic", "/cam/color/compressed",
                 "--depth-topic", "/cam/depth/compressedDepth"]) == 0
    assert tree_hash(bag) == before
    report = capsys.readouterr().out
    assert ("4 pairs from 6 colour (/cam/color/compressed) and 6 depth "
            "(/cam/depth/compressedDepth) messages; unmatched: 1 colour, 2 depth; "
            "bad messages: 1 colour, 0 depth") in report
    assert "first bad message: /cam/color/compressed" in report
    assert "JPEG without its end-of-image marker" in report
    for i, (rgb, depth_mm) in enumerate(zip(expected["rgb"], expected["depth_mm"])):
        written_rgb = cv2.cvtColor(cv2.imread(str(out / "rgb" / f"run2c_{i:06d}.png")),
                                   cv2.COLOR_BGR2RGB)
        if color_format == "png":
            np.testing.assert_array_equal(written_rgb, rgb)
        else:
            assert written_rgb.shape == rgb.shape
        written_depth = cv2.imread(str(out / "depth" / f"run2c_{i:06d}.png"),
                                   cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(written_depth, depth_mm)  # compressedDepth: lossless
    # Guessed topics, and a depth scale: the same units read as tenths of a millimetre.
    scaled = tmp_path / "scaled"
    assert main(["extract-frames", str(bag), str(scaled), "--depth-scale", "0.0001"]) == 0
    np.testing.assert_array_equal(
        cv2.imread(str(scaled / "depth" / "run2c_000000.png"), cv2.IMREAD_UNCHANGED),
        np.rint(expected["depth_mm"][0] / 10.0).astype(np.uint16))
    capsys.readouterr()
    assert main(["extract-frames", str(bag), str(tmp_path / "bad"), "--depth-scale", "-1"]) == 2
    assert "depth scale must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def extracted(tmp_path, rgbd_bag_factory):
    bag, expected = rgbd_bag_factory("run")
    out = tmp_path / "ds"
    assert main(["extract-frames", str(bag), str(out), "--rgb-topic", "/cam/color",
                 "--depth-topic", "/cam/depth"]) == 0
    return out, expected


def test_import_id_and_colour_labels(tmp_path, rgbd_bag_factory, capsys):
    out, expected = extracted(tmp_path, rgbd_bag_factory)
    classes = tmp_path / "classes.yaml"
    classes.write_text(CLASSES_YAML)
    palette = np.array([[0, 128, 0], [128, 0, 0], [0, 0, 255]], np.uint8)
    ids = [np.arange(48 * 64).reshape(48, 64) % 3 for _ in range(4)]
    ids[0][0, :5] = 255
    ids = [a.astype(np.uint8) for a in ids]

    # Class-id PNGs for three frames; the fourth has no label file.
    id_dir = tmp_path / "ids"
    id_dir.mkdir()
    for i in range(3):
        cv2.imwrite(str(id_dir / f"run_{i:06d}.png"), ids[i])
    cv2.imwrite(str(id_dir / "unrelated.png"), ids[0])
    capsys.readouterr()
    assert main(["import-labels", str(out), str(id_dir), "--classes", str(classes)]) == 0
    report = capsys.readouterr().out
    assert "imported 3 labels" in report
    assert "1 frames have no label file: run_000003" in report
    assert "1 label files match no frame and were left out: unrelated" in report
    for i in range(3):
        np.testing.assert_array_equal(
            cv2.imread(str(out / "labels" / f"run_{i:06d}.png"), cv2.IMREAD_UNCHANGED), ids[i])
    assert (out / "classes.yaml").read_text() == CLASSES_YAML

    # Colour-coded PNGs (black = unlabelled) replace them with --overwrite.
    colour_dir = tmp_path / "colours"
    colour_dir.mkdir()
    for i in range(4):
        rgb = np.where(ids[i][..., None] == 255, 0, palette[np.minimum(ids[i], 2)]).astype(np.uint8)
        cv2.imwrite(str(colour_dir / f"run_{i:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert main(["import-labels", str(out), str(colour_dir), "--color-map"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["import-labels", str(out), str(colour_dir), "--color-map", "--overwrite"]) == 0
    for i in range(4):
        np.testing.assert_array_equal(
            cv2.imread(str(out / "labels" / f"run_{i:06d}.png"), cv2.IMREAD_UNCHANGED), ids[i])

    # Now a complete generic dataset the training code reads.
    assert detect_layout(out) == "generic"
    sample = RGBDSegmentationDataset(out, "train").load(0)
    np.testing.assert_array_equal(np.asarray(sample["rgb"]), expected["rgb"][0])
    np.testing.assert_allclose(np.asarray(sample["depth"]), expected["depth_mm"][0] / 1000.0,
                               rtol=1e-6)


def test_import_refuses_bad_labels_and_keeps_the_dataset(tmp_path, rgbd_bag_factory, capsys):
    out, _ = extracted(tmp_path, rgbd_bag_factory)
    (out / "classes.yaml").write_text(CLASSES_YAML)
    bad = tmp_path / "bad"
    bad.mkdir()
    good = np.zeros((48, 64, 3), np.uint8)
    good[:, :] = (0, 128, 0)
    cv2.imwrite(str(bad / "run_000000.png"), cv2.cvtColor(good, cv2.COLOR_RGB2BGR))
    odd = good.copy()
    odd[5, 7] = (12, 34, 56)
    cv2.imwrite(str(bad / "run_000001.png"), cv2.cvtColor(odd, cv2.COLOR_RGB2BGR))
    capsys.readouterr()
    assert main(["import-labels", str(out), str(bad), "--color-map"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("cen-train import-labels: error: ")
    assert "run_000001.png: colour [12, 34, 56] (first at row 5, column 7)" in err
    assert list((out / "labels").iterdir()) == []  # nothing half-imported

    # Colour images without --color-map, ids beyond the class list, and a wrong size.
    assert main(["import-labels", str(out), str(bad)]) == 2
    assert "pass --color-map" in capsys.readouterr().err
    ids = tmp_path / "ids"
    ids.mkdir()
    cv2.imwrite(str(ids / "run_000000.png"), np.full((48, 64), 7, np.uint8))
    assert main(["import-labels", str(out), str(ids)]) == 2
    assert "class ids [7] outside the class list" in capsys.readouterr().err
    cv2.imwrite(str(ids / "run_000000.png"), np.zeros((24, 64), np.uint8))
    assert main(["import-labels", str(out), str(ids)]) == 2
    assert "64x24 labels for a 64x48 frame" in capsys.readouterr().err
    assert list((out / "labels").iterdir()) == []


def test_bag_commands_build_their_parsers_without_rosbags():
    """Reading bags is an extra: without rosbags every command's --help still works."""
    code = ("import sys; sys.modules['rosbags'] = None; "
            "from cen_training.cli import build_parser; build_parser().parse_args("
            "['extract-frames', 'a.bag', 'out', '--slop', '0.01'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_bad_slop_is_refused_before_anything_is_written(tmp_path, rgbd_bag_factory, capsys):
    bag, _ = rgbd_bag_factory("run")
    assert main(["extract-frames", str(bag), str(tmp_path / "bad"), "--slop", "0"]) == 2
    assert "slop must be a positive number of seconds, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_every_bag_command_offers_the_same_pairing_options():
    """cen-perception-bag, extract-frames and select-frames share one set of options."""
    from cen_perception.bags.segment import build_parser
    from cen_training.cli import build_parser as training_parser

    def pairing_options(parser):
        return {action.dest: (action.default, action.help) for action in parser._actions
                if action.dest in ("rgb_topic", "depth_topic", "depth_scale", "slop")}
    expected = pairing_options(build_parser())
    assert set(expected) == {"rgb_topic", "depth_topic", "depth_scale", "slop"}
    commands = training_parser()._subparsers._group_actions[0].choices
    for name in ("extract-frames", "select-frames"):
        assert pairing_options(commands[name]) == expected, name
