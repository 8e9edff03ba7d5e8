"""Class changes: class maps applied as labels are read, check-data on them, and fine-tuning
from a checkpoint with a new classifier head (`train --init --classes --class-map`)."""
import hashlib
import json

import numpy as np
import pytest
import torch

from cen_training.checkpoint import load_checkpoint, save_checkpoint
from cen_training.cli import main
from cen_training.data import (
    RGBDSegmentationDataset,
    dataset_class_map,
    load_class_list,
    load_class_map,
    read_sample,
    validate_dataset,
)
from cen_training.errors import DatasetError
from cen_training.models import ModelConfig, build_model

# The synthetic dataset's five classes (wall, floor, poster, relief, box) into three.
TARGET_YAML = """name: robot3
classes:
  - {name: surface, color: [90, 90, 90]}
  - {name: flat, color: [230, 25, 200]}
  - {name: object, color: [255, 200, 0]}
"""
MAP_YAML = """map:
  wall: surface
  floor: surface
  poster: flat
  box: object
ignore: [relief]
"""
# Source id -> target id (255 = ignored).
EXPECTED_LUT = {0: 0, 1: 0, 2: 1, 3: 255, 4: 2, 255: 255}

NYU_TO_ROBOT = """map:
  floor: floor
  floor mat: floor
  wall: wall
  door: door
  chair: furniture
  table: furniture
  desk: furniture
  sofa: furniture
  bed: furniture
  person: person
ignore: [ceiling, window, blinds, curtain]
other: clutter
"""
ROBOT_CLASSES = """classes:
  - {name: floor, color: [0, 128, 0]}
  - {name: wall, color: [128, 0, 0]}
  - {name: door, color: [64, 0, 0]}
  - {name: furniture, color: [128, 128, 0]}
  - {name: person, color: [192, 192, 128]}
  - {name: clutter, color: [64, 0, 64]}
  - {name: glass, color: [0, 64, 128]}
  - {name: stairs, color: [192, 0, 0]}
"""


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture
def map_files(tmp_path):
    target, mapping = tmp_path / "robot3.yaml", tmp_path / "map.yaml"
    target.write_text(TARGET_YAML)
    mapping.write_text(MAP_YAML)
    return target, mapping


def files_hash(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_nyudv2_40_into_a_robots_8(tmp_path):
    (tmp_path / "map.yaml").write_text(NYU_TO_ROBOT)
    (tmp_path / "robot.yaml").write_text(ROBOT_CLASSES)
    nyu, robot = load_class_list("nyudv2"), load_class_list(tmp_path / "robot.yaml")
    class_map = load_class_map(tmp_path / "map.yaml", nyu, robot)
    ids = {name: i for i, name in enumerate(nyu.names)}
    labels = np.array([[ids["floor mat"], ids["sofa"], ids["ceiling"], ids["lamp"], 255]],
                      np.uint8)
    np.testing.assert_array_equal(class_map.apply(labels), [[0, 3, 255, 5, 255]])
    class_map.check_complete()  # 'other' catches the rest
    assert "40 source classes -> 8 target classes" in class_map.describe()
    # Without 'other', the unnamed classes are ignored, which check-data reports.
    (tmp_path / "map.yaml").write_text(NYU_TO_ROBOT.replace("other: clutter\n", ""))
    partial = load_class_map(tmp_path / "map.yaml", nyu, robot)
    assert partial.apply(labels)[0, 3] == 255
    with pytest.raises(DatasetError, match=r"26 source class\(es\) neither mapped nor ignored"):
        partial.check_complete()
    for bad, message in (("map:\n  flor: floor\n", "'flor' is not a source class"),
                         ("map:\n  floor: ground\n", "'ground' is not a target class"),
                         ("map:\n  floor: floor\nignore: [floor]\n", "both mapped and ignored"),
                         ("maps: {}\n", "unknown entries")):
        (tmp_path / "bad.yaml").write_text(bad)
        with pytest.raises(DatasetError, match=message):
            load_class_map(tmp_path / "bad.yaml", nyu, robot)


def test_the_map_applies_as_labels_are_read_and_the_files_stay(tiny_dataset, map_files):
    target, mapping = map_files
    before = files_hash(tiny_dataset)
    class_map = dataset_class_map(tiny_dataset, "auto", mapping, target)
    dataset = RGBDSegmentationDataset(tiny_dataset, "train", class_map=class_map)
    assert dataset.classes.names == ["surface", "flat", "object"] and dataset.num_classes == 3
    assert dataset.source_classes.names == ["wall", "floor", "poster", "relief", "box"]
    for index in range(len(dataset)):
        raw = read_sample(dataset.samples[index])["labels"]
        expected = np.vectorize(EXPECTED_LUT.get)(raw)
        np.testing.assert_array_equal(dataset[index]["labels"].numpy(), expected)
    assert dataset.describe()["class_map"].endswith("map.yaml")
    summary = validate_dataset(tiny_dataset, "train", progress=False, class_map=class_map)
    pixels = summary["splits"]["train"].class_pixels
    raw = validate_dataset(tiny_dataset, "train", progress=False)["splits"]["train"].class_pixels
    assert pixels[0] == raw[0] + raw[1] and pixels[255] == raw[3] and pixels[2] == raw[4]
    assert files_hash(tiny_dataset) == before


def test_check_data_checks_the_map(tiny_dataset, map_files, tmp_path, capsys):
    target, mapping = map_files
    assert main(["check-data", str(tiny_dataset), "--class-map", str(mapping), "--classes",
                 str(target), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 classes: OK" in out and "5 source classes -> 3 target classes (1 merged)" in out
    assert "surface" in out and "poster" not in out.split("OK", 2)[-1]
    # A source class neither mapped nor ignored, a target name classes.yaml lacks.
    mapping.write_text(MAP_YAML.replace("ignore: [relief]\n", ""))
    assert main(["check-data", str(tiny_dataset), "--class-map", str(mapping), "--classes",
                 str(target), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neither mapped nor ignored: relief" in err
    mapping.write_text(MAP_YAML.replace("box: object", "box: thing"))
    assert main(["check-data", str(tiny_dataset), "--class-map", str(mapping), "--classes",
                 str(target), "--no-progress"]) == 2
    assert "'thing' is not a target class" in capsys.readouterr().err
    assert main(["check-data", str(tiny_dataset), "--class-map", str(mapping),
                 "--no-progress"]) == 2
    assert "--class-map needs --classes" in capsys.readouterr().err


def tiny_train_args(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--arch", "cen", "--backbone",
            "resnet18", "--decoder", "light", "--stages", "1", "--epochs", "1",
            "--batch-size", "4", "--crop", "64", "--scale", "0.75", "1.25", "--optimizer",
            "adam", "--workers", "0", "--max-steps", "1", "--no-progress", *extra]


def five_class_checkpoint(path, backbone="resnet18"):
    """An (untrained) CEN checkpoint on the synthetic dataset's five classes."""
    torch.manual_seed(3)
    config = ModelConfig(arch="cen", backbone=backbone, decoder="light", num_classes=5)
    model = build_model(config)
    card = {"class_names": ["wall", "floor", "poster", "relief", "box"],
            "palette": [[1, 1, 1]] * 5}
    save_checkpoint(path, model, config, card)
    return model.state_dict()


def test_fine_tune_with_a_new_head_on_mapped_classes(tiny_dataset, map_files, tmp_path, capsys):
    target, mapping = map_files
    start = five_class_checkpoint(tmp_path / "five.pt")
    out = tmp_path / "robot3"
    # Zero learning rates (and BN statistics frozen, as with any --init): the run ends with
    # the weights it started from, except the new classifier.
    assert main(tiny_train_args(tiny_dataset, out, "--init", str(tmp_path / "five.pt"),
                                "--classes", str(target), "--class-map", str(mapping),
                                "--lr-enc", "0", "--lr-dec", "0")) == 0
    log = capsys.readouterr().out
    assert "new classifier head: 5 -> 3 classes; decoder.clf_conv.module.bias, " \
           "decoder.clf_conv.module.weight start fresh" in log
    assert "5 source classes -> 3 target classes" in log
    tuned = load_checkpoint(out / "last.pt")
    assert tuned["card"]["class_names"] == ["surface", "flat", "object"]
    assert tuned["card"]["palette"][0] == [90, 90, 90]
    assert tuned["card"]["dataset"]["class_map"].endswith("map.yaml")
    assert tuned["config"]["num_classes"] == 3
    assert tuned["model"]["decoder.clf_conv.module.weight"].shape[0] == 3
    for key, value in start.items():
        if not key.startswith("decoder.clf_conv."):
            assert torch.equal(value, tuned["model"][key]), key

    # A checkpoint of another backbone does not fit: the keys are named, nothing is trained.
    five_class_checkpoint(tmp_path / "r34.pt", backbone="resnet34")
    assert main(tiny_train_args(tiny_dataset, tmp_path / "bad", "--init",
                                str(tmp_path / "r34.pt"))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--init" in err and "unexpected key(s)" in err
    assert not (tmp_path / "bad" / "last.pt").exists()
    # A class list other than the data's needs a map.
    assert main(tiny_train_args(tiny_dataset, tmp_path / "nomap", "--classes",
                                str(target))) == 2
    assert "with --class-map" in capsys.readouterr().err


def test_eval_scores_a_model_of_mapped_classes(tiny_dataset, map_files, tmp_path, capsys):
    """A model trained through a class map is scored on the same data through the same map."""
    target, mapping = map_files
    config = ModelConfig(arch="cen", backbone="resnet18", decoder="light", num_classes=3)
    save_checkpoint(tmp_path / "robot3.pt", build_model(config), config,
                    {"class_names": ["surface", "flat", "object"], "palette": [[1, 1, 1]] * 3})
    report = tmp_path / "report.json"
    base = ["eval", str(tmp_path / "robot3.pt"), "--data", str(tiny_dataset), "--out",
            str(report), "--workers", "0", "--no-progress"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predicts 3 classes" in err[0] and "--class-map" in err[0]
    assert main(base + ["--classes", str(target), "--class-map", str(mapping)]) == 0
    scores = json.loads(report.read_text())["ensemble"]
    assert set(scores["per_class_iou"]) == {"surface", "flat", "object"}
