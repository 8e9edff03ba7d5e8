"""Pre-labels to CVAT and back: the "Segmentation mask 1.1" layout that select-frames and
export-labels write, and that import-labels reads (the zip CVAT downloads, or its folder)."""
import shutil
import zipfile

import cv2
import numpy as np

from cen_training.cli import main
from cen_training.data.datasets import read_labels


def label_files(folder):
    return {p.stem: read_labels(p) for p in sorted((folder / "labels").glob("*.png"))}


def test_prelabels_through_the_cvat_layout_come_back_the_same(tmp_path, rgbd_bag_factory,
                                                              toy_onnx_factory, capsys):
    bag, _ = rgbd_bag_factory("run")
    out = tmp_path / "picked"
    # Depth from 0.3 m up across the frames: the toy model's labels hold all three classes.
    assert main(["select-frames", str(bag), str(out), "--engine",
                 str(toy_onnx_factory(48, 64)), "--budget", "3", "--min-gap", "0",
                 "--rgb-topic", "/cam/color", "--depth-topic", "/cam/depth",
                 "--no-progress"]) == 0
    prelabels = label_files(out)
    assert len(prelabels) == 3
    assert set().union(*(np.unique(v).tolist() for v in prelabels.values())) == {0, 1, 2}

    with zipfile.ZipFile(out / "cvat.zip") as archive:
        names = set(archive.namelist())
        assert {"labelmap.txt", "ImageSets/Segmentation/default.txt"} <= names
        assert {f"SegmentationClass/{s}.png" for s in prelabels} <= names
        assert {f"SegmentationObject/{s}.png" for s in prelabels} <= names
        listed = archive.read("ImageSets/Segmentation/default.txt").decode().split()
        assert sorted(listed) == sorted(prelabels)
    stem = sorted(prelabels)[0]
    mask = cv2.cvtColor(cv2.imread(str(out / "cvat" / "SegmentationClass" / f"{stem}.png")),
                        cv2.COLOR_BGR2RGB)
    palette = np.array([[0, 60, 120], [37, 151, 15], [74, 242, 166]], np.uint8)  # the card's
    np.testing.assert_array_equal(mask, palette[prelabels[stem]])

    # An annotator corrects nothing: the zip straight back gives the same class ids.
    for path in (out / "labels").glob("*.png"):
        path.unlink()
    assert main(["import-labels", str(out), str(out / "cvat.zip")]) == 0
    assert "imported 3 labels" in capsys.readouterr().out
    for key, value in label_files(out).items():
        np.testing.assert_array_equal(value, prelabels[key])


def test_a_cvat_export_with_corrections_indexed_masks_and_a_folder(tmp_path, tiny_dataset_copy,
                                                                    capsys):
    data = tiny_dataset_copy
    original = label_files(data)
    export = tmp_path / "export"
    assert main(["export-labels", str(data), str(export)]) == 0
    assert (tmp_path / "export.zip").is_file()
    labelmap = (export / "labelmap.txt").read_text().splitlines()
    assert labelmap[:3] == ["# label:color_rgb:parts:actions", "background:0,0,0::",
                            "wall:128,128,128::"]

    # As CVAT exports it: one folder deeper once unpacked, an annotator's correction (a box
    # painted 'floor', a region erased to background), one mask saved as an indexed PNG.
    from PIL import Image

    cvat = tmp_path / "unpacked" / "task_1"
    shutil.copytree(export, cvat)
    first, second = sorted(original)[:2]
    corrected = original[first].copy()
    corrected[2:10, 3:20] = 1
    corrected[40:50, 40:60] = 255
    lut = np.zeros((256, 3), np.uint8)
    lut[:5] = [[128, 128, 128], [139, 90, 43], [230, 25, 200], [0, 190, 255], [255, 200, 0]]
    cv2.imwrite(str(cvat / "SegmentationClass" / f"{first}.png"),
                cv2.cvtColor(lut[corrected], cv2.COLOR_RGB2BGR))
    indexed = Image.fromarray(np.where(original[second] == 255, 0, original[second] + 1)
                              .astype(np.uint8), mode="P")
    indexed.putpalette([0, 0, 0] + lut[:5].ravel().tolist())
    indexed.save(cvat / "SegmentationClass" / f"{second}.png")

    for path in (data / "labels").glob("*.png"):
        path.unlink()
    assert main(["import-labels", str(data), str(tmp_path / "unpacked")]) == 0
    assert f"imported {len(original)} labels" in capsys.readouterr().out
    imported = label_files(data)
    np.testing.assert_array_equal(imported[first], corrected)
    for key, value in original.items():
        if key != first:
            np.testing.assert_array_equal(imported[key], value)


def test_cvat_problems_are_one_line(tmp_path, tiny_dataset_copy, capsys):
    data = tiny_dataset_copy
    export = tmp_path / "export"
    assert main(["export-labels", str(data), str(export)]) == 0
    capsys.readouterr()
    before = label_files(data)

    # A label CVAT knows that is not a class.
    labelmap = export / "labelmap.txt"
    labelmap.write_text(labelmap.read_text() + "puddle:10,20,30::\n")
    assert main(["import-labels", str(data), str(export), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "label 'puddle' is not a class" in err
    labelmap.write_text(labelmap.read_text().replace("puddle:10,20,30::\n", ""))

    # A mask colour no label has: the file and the first pixel are named, nothing is changed.
    mask_path = sorted((export / "SegmentationClass").glob("*.png"))[-1]
    mask = cv2.imread(str(mask_path))
    mask[7, 9] = (1, 2, 3)
    cv2.imwrite(str(mask_path), mask)
    assert main(["import-labels", str(data), str(export), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("cen-train import-labels: error: ")
    assert f"{mask_path.name}: colour [3, 2, 1] (first at row 7, column 9)" in err
    after = label_files(data)
    assert all(np.array_equal(after[k], v) for k, v in before.items())

    # A class list CVAT masks cannot tell apart: refused before anything is written.
    classes = data / "classes.yaml"
    classes.write_text(classes.read_text().replace("[128, 128, 128]", "[0, 0, 0]"))
    assert main(["export-labels", str(data), str(tmp_path / "black")]) == 2
    assert "'wall' is black" in capsys.readouterr().err
    assert not (tmp_path / "black").exists()
