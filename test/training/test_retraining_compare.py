"""`cen-train compare`: two models side by side, and the gate on NEW's mIoU (exit codes).

The models are CEN networks whose classifier always answers one class, so every score is
known from the labels: a model that says "wall" (the most common class) beats one that says
"box".
"""
import json

import numpy as np
import pytest
import torch

from cen_training.checkpoint import save_checkpoint
from cen_training.cli import main
from cen_training.data import RGBDSegmentationDataset
from cen_training.data.synthetic import CLASSES
from cen_training.models import ModelConfig, build_model

WALL, BOX = 0, 4


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def constant_checkpoint(path, class_id, names=CLASSES.names, palette=CLASSES.palette):
    """A CEN network that labels every pixel ``class_id`` (its BNs perturbed, as trained ones
    are, so that the export folds them like any other)."""
    torch.manual_seed(0)
    config = ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                         num_classes=len(names))
    model = build_model(config)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and ("bn" in name or "running" in name):
                tensor.mul_(1 + 0.1 * torch.rand_like(tensor))
        model.decoder.clf_conv.module.weight.zero_()
        model.decoder.clf_conv.module.bias.zero_()
        model.decoder.clf_conv.module.bias[class_id] = 10.0
    save_checkpoint(path, model, config, {"class_names": list(names), "palette": palette})
    return path


def expected_miou(data, class_id):
    """mIoU (percent) of answering ``class_id`` everywhere on the val split: its IoU is its
    share of the pixels, every other class present scores 0."""
    dataset = RGBDSegmentationDataset(data, "val")
    labels = np.concatenate([dataset.load(i)["labels"].ravel() for i in range(len(dataset))])
    counted = labels[labels != 255]
    present = set(np.unique(counted).tolist()) | {class_id}
    return 100.0 * (counted == class_id).mean() / len(present)


def compare(old, new, data, out, *extra):
    return main(["compare", str(old), str(new), "--data", str(data), "--out", str(out),
                 "--threads", "1", "--no-progress", *extra])


def test_the_gate_passes_a_better_model_and_stops_a_worse_one(tiny_dataset, tmp_path, capsys):
    wall = constant_checkpoint(tmp_path / "wall.pt", WALL)
    box = constant_checkpoint(tmp_path / "box.pt", BOX)
    wall_miou, box_miou = expected_miou(tiny_dataset, WALL), expected_miou(tiny_dataset, BOX)
    assert wall_miou > box_miou + 1

    assert compare(box, wall, tiny_dataset, tmp_path / "better") == 0
    assert "PASS" in capsys.readouterr().out
    report = json.loads((tmp_path / "better" / "report.json").read_text())
    assert report["old"]["scores"]["miou"] == pytest.approx(box_miou)
    assert report["new"]["scores"]["miou"] == pytest.approx(wall_miou)
    assert report["new"]["scores"]["per_class_iou"]["floor"] == 0.0
    assert report["agreement"] == 0.0
    assert report["gate"] == {"miou_change": pytest.approx(wall_miou - box_miou),
                              "max_drop": 1.0, "passed": True}
    assert report["machine"]["threads"] == 1
    for role in ("old", "new"):
        assert report[role]["kind"] == "checkpoint"
        assert report[role]["latency_ms"]["frames"] == 4
        assert report[role]["latency_ms"]["median"] > 0
    assert len(report["differ_most"]) == 4
    markdown = (tmp_path / "better" / "report.md").read_text()
    assert "**PASS**" in markdown and "| wall |" in markdown
    assert (tmp_path / "better" / "differences.png").stat().st_size > 0

    # The other way round NEW is worse by more than the allowed drop: exit status 1.
    assert compare(wall, box, tiny_dataset, tmp_path / "worse") == 1
    assert "FAIL: NEW's mIoU" in capsys.readouterr().out
    assert "**FAIL**" in (tmp_path / "worse" / "report.md").read_text()
    # ...unless the drop is allowed.
    assert compare(wall, box, tiny_dataset, tmp_path / "allowed", "--max-drop", "50") == 0


def test_onnx_files_run_through_the_engine_int8_too(tiny_dataset, tmp_path, capsys):
    wall = constant_checkpoint(tmp_path / "wall.pt", WALL)
    int8 = tmp_path / "wall_int8.onnx"
    assert main(["export", str(wall), "-o", str(int8), "--height", "64", "--width", "64",
                 "--precision", "int8", "--calib-data", str(tiny_dataset)]) == 0
    capsys.readouterr()
    assert compare(wall, int8, tiny_dataset, tmp_path / "int8", "--max-drop", "0") == 0
    report = json.loads((tmp_path / "int8" / "report.json").read_text())
    assert report["new"]["kind"] == "onnxruntime int8"
    assert report["agreement"] == 100.0
    assert report["new"]["scores"] == report["old"]["scores"]
    assert not (tmp_path / "int8" / "differences.png").exists()
    assert "no frames to show" in (tmp_path / "int8" / "report.md").read_text()
    # A negative allowance asks NEW to gain: the same scores do not.
    assert compare(wall, int8, tiny_dataset, tmp_path / "gain", "--max-drop", "-0.5") == 1


def test_a_model_of_other_classes_is_scored_through_a_map(tiny_dataset, tmp_path, capsys):
    old = constant_checkpoint(tmp_path / "three.pt", 0, names=["surface", "flat", "object"],
                              palette=[[1, 1, 1], [2, 2, 2], [3, 3, 3]])
    wall = constant_checkpoint(tmp_path / "wall.pt", WALL)
    assert compare(old, wall, tiny_dataset, tmp_path / "r") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--old-class-map" in err
    mapping = tmp_path / "map.yaml"
    mapping.write_text("map: {surface: wall, flat: poster, object: box}\n")
    assert compare(old, wall, tiny_dataset, tmp_path / "r", "--old-class-map",
                   str(mapping), "--max-drop", "0") == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["old"]["class_map"] == str(mapping)
    assert report["agreement"] == 100.0  # "surface" read as "wall", as NEW says
