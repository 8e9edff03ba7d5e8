"""Datasets (generic and official NYUDv2 layouts), their validation, class lists, augmentation."""
import cv2
import numpy as np
import pytest
import torch

from cen_training.cli import main as cli_main
from cen_training.data import (
    RGBDSegmentationDataset,
    TrainTransform,
    detect_layout,
    load_class_list,
    pad_to,
    random_crop,
    random_mirror,
    random_scale,
    validate_dataset,
)
from cen_training.data.transforms import RGB_PAD_VALUE
from cen_training.errors import DatasetError

# -- layouts ---------------------------------------------------------------------------------

def test_generic_layout_hands_out_raw_rgb_depth_in_metres_and_int64_labels(tiny_dataset):
    dataset = RGBDSegmentationDataset(tiny_dataset, "train")
    assert dataset.layout == "generic" and len(dataset) == 8
    assert dataset.classes.names == ["wall", "floor", "poster", "relief", "box"]
    sample = dataset[3]
    name = sample["name"]
    assert sample["rgb"].dtype == torch.uint8 and sample["rgb"].shape == (64, 64, 3)
    assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (64, 64)
    assert sample["labels"].dtype == torch.int64 and sample["labels"].shape == (64, 64)
    depth_mm = cv2.imread(str(tiny_dataset / "depth" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(sample["depth"].numpy(), depth_mm / 1000.0, rtol=1e-6)
    bgr = cv2.imread(str(tiny_dataset / "rgb" / f"{name}.png"))
    np.testing.assert_array_equal(sample["rgb"].numpy(), bgr[:, :, ::-1])
    assert len(RGBDSegmentationDataset(tiny_dataset, "val")) == 4


def make_nyudv2_layout(root, num=3, size=(48, 64), list_name="train.txt", seed=0):
    """The official preprocessed layout: rgb/, depth/ (uint16 mm), masks/, tab-separated list."""
    rng = np.random.default_rng(seed)
    for sub in ("rgb", "depth", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(num):
        stem = f"{i + 3:06d}"
        cv2.imwrite(str(root / "rgb" / f"{stem}.png"), rng.integers(0, 256, (*size, 3), np.uint8))
        cv2.imwrite(str(root / "depth" / f"{stem}.png"),
                    rng.integers(500, 5000, size).astype(np.uint16))
        labels = rng.integers(0, 40, size).astype(np.uint8)
        labels[0, :] = 255
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), labels)
        lines.append(f"rgb/{stem}.png\tmasks/{stem}.png\tdepth/{stem}.png")
    (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def test_official_nyudv2_layout_is_detected_with_its_40_classes(tmp_path):
    root = make_nyudv2_layout(tmp_path / "nyud")
    make_nyudv2_layout(root, num=2, list_name="test.txt", seed=1)
    assert detect_layout(root) == "nyudv2"
    train = RGBDSegmentationDataset(root, "train")
    assert len(train) == 3 and train.num_classes == 40 and train.classes.names[0] == "wall"
    sample = train[0]
    assert sample["name"] == "000003"
    assert int(sample["labels"][0, 0]) == 255 and int(sample["labels"][1:].max()) < 40
    assert float(sample["depth"].min()) >= 0.5 and float(sample["depth"].max()) < 5.0
    assert len(RGBDSegmentationDataset(root, "val")) == 2  # test.txt stands in for val.txt
    summary = validate_dataset(root, ["train", "val"], progress=False)
    assert summary["layout"] == "nyudv2"
    assert summary["splits"]["train"].num_samples == 3
    assert summary["splits"]["train"].sizes == {(48, 64): 3}


def test_sunrgbd_is_told_apart_by_its_folder_name(tmp_path):
    root = make_nyudv2_layout(tmp_path / "SUNRGBD")
    dataset = RGBDSegmentationDataset(root, "train")
    assert dataset.layout == "sunrgbd" and dataset.num_classes == 37


def test_a_folder_that_is_no_dataset_gets_a_clear_error(tmp_path):
    (tmp_path / "rgb").mkdir()
    with pytest.raises(DatasetError, match="not a dataset"):
        detect_layout(tmp_path)


# -- validation -------------------------------------------------------------------------------

def test_validation_names_a_missing_file(tiny_dataset_copy):
    (tiny_dataset_copy / "depth" / "train_00005.png").unlink()
    with pytest.raises(DatasetError, match=r"sample train_00005: depth file .* not found"):
        validate_dataset(tiny_dataset_copy, "train", progress=False)


def test_validation_names_a_size_mismatch(tiny_dataset_copy):
    labels = np.zeros((60, 64), np.uint8)
    cv2.imwrite(str(tiny_dataset_copy / "labels" / "val_00002.png"), labels)
    with pytest.raises(DatasetError, match=r"sample val_00002: sizes differ.*labels 64x60"):
        validate_dataset(tiny_dataset_copy, ["train", "val"], progress=False)


def test_validation_names_an_out_of_range_label(tiny_dataset_copy):
    path = tiny_dataset_copy / "labels" / "train_00001.png"
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    labels[10, 10] = 7  # 5 classes: 0..4 and 255 are fine
    labels[11, 11] = 255
    cv2.imwrite(str(path), labels)
    with pytest.raises(DatasetError, match=r"sample train_00001: label id 7 .* out of range"):
        validate_dataset(tiny_dataset_copy, "train", progress=False)


def test_validation_refuses_8_bit_depth(tiny_dataset_copy):
    cv2.imwrite(str(tiny_dataset_copy / "depth" / "train_00000.png"), np.ones((64, 64), np.uint8))
    with pytest.raises(DatasetError, match="train_00000.png: depth must be a 16-bit PNG"):
        validate_dataset(tiny_dataset_copy, "train", progress=False)


def test_check_data_cli_prints_a_summary_and_fails_in_one_line(tiny_dataset_copy, capsys):
    assert cli_main(["check-data", str(tiny_dataset_copy), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "generic layout, 5 classes: OK" in out
    assert "train: 8 samples; sizes 64x64 (8)" in out and "val: 4 samples" in out
    assert "relief" in out and "%" in out
    (tiny_dataset_copy / "rgb" / "val_00003.png").unlink()
    assert cli_main(["check-data", str(tiny_dataset_copy), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sample val_00003: rgb file" in err[0]


# -- class lists --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, count, first, last", [("nyudv2", 40, "wall", "otherprop"),
                                                     ("sunrgbd", 37, "wall", "bag")])
def test_builtin_class_lists(name, count, first, last):
    classes = load_class_list(name)
    assert classes.num_classes == count == len(classes.palette)
    assert classes.names[0] == first and classes.names[-1] == last
    assert len({tuple(c) for c in classes.palette}) == count  # distinct colours


def test_bad_class_list_is_reported(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text("classes:\n  - {name: floor, color: [0, 300, 0]}\n")
    with pytest.raises(DatasetError, match="color must be"):
        load_class_list(path)


# -- augmentation -----------------------------------------------------------------------------

def coordinate_sample(h=60, w=80):
    """RGB ramps (R = column, G = row), depth = 1 + pixel index, labels = a pattern of both."""
    ys, xs = np.mgrid[0:h, 0:w]
    rgb = np.stack([xs * 255.0 / (w - 1), ys * 255.0 / (h - 1), np.zeros_like(xs)], -1)
    return {"rgb": np.rint(rgb).astype(np.uint8),
            "depth": (1 + ys * w + xs).astype(np.float32),
            "labels": ((ys // 7 * 3 + xs // 9) % 200).astype(np.uint8), "name": "grid"}


def check_aligned(sample, source):
    """Every valid pixel's depth names its source pixel; labels and RGB must come from there."""
    h, w = source["labels"].shape
    depth, labels, rgb = sample["depth"], sample["labels"], sample["rgb"].astype(int)
    valid = depth > 0
    assert np.array_equal(valid, labels != 255)  # padding is padding in every array
    assert (rgb[~valid] == RGB_PAD_VALUE).all()
    index = depth[valid].astype(int) - 1
    ys, xs = index // w, index % w
    np.testing.assert_array_equal(labels[valid], source["labels"][ys, xs])
    # Bicubic RGB vs nearest depth: at most half a source pixel apart (~1.6 levels) + rounding.
    assert np.abs(rgb[valid][:, 0] - xs * 255.0 / (w - 1)).max() <= 4
    assert np.abs(rgb[valid][:, 1] - ys * 255.0 / (h - 1)).max() <= 6


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_keeps_rgb_depth_and_labels_aligned(seed):
    source = coordinate_sample()
    transform = TrainTransform(crop_size=72, scale_range=(0.5, 2.0))
    sample = transform(dict(source), np.random.default_rng(seed))
    assert sample["rgb"].shape == (72, 72, 3) and sample["labels"].shape == (72, 72)
    assert sample["depth"].dtype == np.float32 and sample["labels"].dtype == np.uint8
    check_aligned(sample, source)


def test_each_augmentation_step():
    source = coordinate_sample()
    rng = np.random.default_rng(0)
    scaled = random_scale(dict(source), rng, (0.5, 0.5), min_shorter_side=45)
    assert scaled["labels"].shape == (45, 60)  # 0.5 would make 30 rows; raised to 45
    check_aligned(scaled, source)
    padded = pad_to(source, 70, 84)
    assert padded["labels"].shape == (70, 84) and (padded["labels"][:5] == 255).all()
    check_aligned(padded, source)
    mirrored = [random_mirror(source, np.random.default_rng(s)) for s in range(8)]
    flipped = [m for m in mirrored if m["depth"][0, 0] != source["depth"][0, 0]]
    assert 0 < len(flipped) < 8
    assert flipped[0]["depth"][0, 0] == source["depth"][0, -1]
    check_aligned(flipped[0], source)
    cropped = random_crop(source, rng, 32)
    assert cropped["labels"].shape == (32, 32)
    check_aligned(cropped, source)


def test_augmentation_is_reproducible_per_epoch_and_index(tiny_dataset):
    dataset = RGBDSegmentationDataset(tiny_dataset, "train", transform=TrainTransform(48), seed=3)
    first = dataset[2]["depth"]
    assert torch.equal(dataset[2]["depth"], first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2]["depth"], first)


def test_indexed_colour_label_pngs_give_their_indices(tmp_path):
    from PIL import Image

    from cen_training.data.datasets import read_labels
    ids = (np.arange(48 * 64).reshape(48, 64) % 5).astype(np.uint8)
    ids[0, 0] = 255
    image = Image.fromarray(ids, mode="P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    image.save(tmp_path / "labels.png")
    np.testing.assert_array_equal(read_labels(tmp_path / "labels.png"), ids)


# -- depth dropout ------------------------------------------------------------------------------

def blanked_per_epoch(dataset, epochs=4) -> list[list[bool]]:
    """For each epoch, which samples came out with every depth pixel 0."""
    pattern = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        pattern.append([bool((dataset[i]["depth"] == 0).all()) for i in range(len(dataset))])
    return pattern


def test_depth_dropout_1_blanks_every_sample_and_0_none(tiny_dataset):
    always = RGBDSegmentationDataset(tiny_dataset, "train",
                                     transform=TrainTransform(48, depth_dropout=1.0), seed=3)
    assert all(all(epoch) for epoch in blanked_per_epoch(always))
    # 0 is the official augmentation exactly: the same arrays as without the option.
    never = RGBDSegmentationDataset(tiny_dataset, "train",
                                    transform=TrainTransform(48, depth_dropout=0.0), seed=3)
    official = RGBDSegmentationDataset(tiny_dataset, "train", transform=TrainTransform(48),
                                       seed=3)
    assert not any(any(epoch) for epoch in blanked_per_epoch(never))
    for epoch in range(3):
        never.set_epoch(epoch)
        official.set_epoch(epoch)
        for i in range(len(never)):
            a, b = never[i], official[i]
            for key in ("rgb", "depth", "labels"):
                assert torch.equal(a[key], b[key]), (epoch, i, key)
    # A blanked sample keeps its colour and labels: only depth is lost.
    always.set_epoch(1)
    official.set_epoch(1)
    assert torch.equal(always[5]["rgb"], official[5]["rgb"])
    assert torch.equal(always[5]["labels"], official[5]["labels"])
    assert official[5]["depth"].count_nonzero() > 0


def test_depth_dropout_is_reproducible_from_the_seed(tiny_dataset):
    def pattern(seed):
        dataset = RGBDSegmentationDataset(tiny_dataset, "train",
                                          transform=TrainTransform(48, depth_dropout=0.5),
                                          seed=seed)
        return blanked_per_epoch(dataset)

    first = pattern(seed=7)
    assert pattern(seed=7) == first
    blanked = sum(map(sum, first))
    assert 0 < blanked < 32  # 8 samples x 4 epochs, about half
    assert pattern(seed=8) != first


def test_depth_dropout_must_be_a_probability():
    with pytest.raises(ValueError, match="probability in 0..1"):
        TrainTransform(48, depth_dropout=1.5)


# -- depth statistics ---------------------------------------------------------------------------

def write_known_depth(root, low_mm: int, count: int = 4000, invalid: int = 96, seed=0):
    """Every training frame's depth: ``low_mm .. low_mm + count - 1`` once each (shuffled) and
    ``invalid`` zeros, 64 x 64 pixels."""
    rng = np.random.default_rng(seed)
    for path in sorted((root / "depth").glob("train_*.png")):
        values = np.concatenate([np.arange(low_mm, low_mm + count), np.zeros(invalid)])
        cv2.imwrite(str(path), rng.permutation(values).astype(np.uint16).reshape(64, 64))


def test_training_depth_range_is_the_1st_and_99th_percentile_of_valid_depth(tiny_dataset_copy):
    from cen_training.data.datasets import training_depth_range
    write_known_depth(tiny_dataset_copy, low_mm=1000)
    dataset = RGBDSegmentationDataset(tiny_dataset_copy, "train")
    # 1000..4999 mm equally often: 1% of the valid pixels lie below 1040 mm, 99% below 4960.
    # The zeros (2% of the pixels) are invalid and must not pull the low end to 0.
    assert training_depth_range(dataset) == [1.039, 4.959]
    valid = np.concatenate([cv2.imread(str(f.depth), cv2.IMREAD_UNCHANGED).ravel()
                            for f in dataset.samples])
    valid = valid[valid > 0]
    expected = np.percentile(valid, [1, 99], method="inverted_cdf") / 1000.0
    assert training_depth_range(dataset) == pytest.approx(expected.tolist(), abs=1e-9)
    # A sample of the frames, evenly spaced: 2 of 8 are the first and the last.
    assert training_depth_range(dataset, max_frames=2) == [1.039, 4.959]


def test_training_depth_range_reads_at_most_max_frames_evenly_spaced(tiny_dataset_copy):
    from cen_training.data.datasets import training_depth_range
    write_known_depth(tiny_dataset_copy, low_mm=1000)
    # Frames 1..6 far away: a sample of 2 frames (the first and the last) does not see them.
    for i in range(1, 7):
        path = tiny_dataset_copy / "depth" / f"train_{i:05d}.png"
        cv2.imwrite(str(path), np.full((64, 64), 60000, np.uint16))
    dataset = RGBDSegmentationDataset(tiny_dataset_copy, "train")
    assert training_depth_range(dataset, max_frames=2) == [1.039, 4.959]
    assert training_depth_range(dataset)[1] == 60.0


def test_training_depth_range_is_empty_without_valid_depth(tiny_dataset_copy):
    from cen_training.data.datasets import training_depth_range
    for path in (tiny_dataset_copy / "depth").glob("train_*.png"):
        cv2.imwrite(str(path), np.zeros((64, 64), np.uint16))
    assert training_depth_range(RGBDSegmentationDataset(tiny_dataset_copy, "train")) == []
