"""`cen-train select-frames`: the frames a model is least sure of, spread over time, pre-labelled.

The toy engine's confidence is ``0.5 + mean(rgb) / 510`` per pixel, so a dark frame is an
uncertain one; the logits engine below gives near-uniform softmax probabilities on dark pixels.
"""
import csv
import hashlib

import cv2
import numpy as np
import pytest

from cen_training.cli import main

H, W = 48, 64
T0, PERIOD = 1_700_000_000 * 10**9, 100_000_000  # 10 Hz
# Frame brightness: dark = uncertain. Frame 9 is dark only where its depth is invalid (left
# half) and bright elsewhere: scored over valid depth it is a sure frame, over all pixels not.
BRIGHTNESS = [200, 10, 20, 220, 230, 5, 240, 30, 245, 250]
# Scores, best first: 5, 1, 2, 7, 0, 3, 4, 6, 8, 9; with --min-gap 0.25 s (three frames) the
# greedy picks are 5, 1, then 8 (2, 7, 0, 3, 4 and 6 lie too close to a pick).
PICKS_GAP = [5, 1, 8]
PICKS_NO_GAP = [5, 1, 2, 7]


def frame(i):
    """Colour and depth (mm) of frame i."""
    rgb = np.full((H, W, 3), BRIGHTNESS[i], np.uint8)
    depth_mm = np.full((H, W), 1500, np.uint16)
    depth_mm[:, W // 2:] = 2500
    if i == 9:
        rgb[:, :W // 2] = 0
        depth_mm[:, :W // 2] = 0
    return rgb, depth_mm


def write_bag(path, compressed=False, storage="sqlite3"):
    from cen_perception.bags.recorded import COMPRESSED_IMAGE_TYPE, BagWriter, make_header
    from cen_perception.image_codec import encode, encode_compressed_color, encode_compressed_depth

    with BagWriter(path, storage) as writer:
        topics = (("/cam/color/compressed", "/cam/depth/compressedDepth") if compressed
                  else ("/cam/color", "/cam/depth"))
        for topic in topics:
            writer.add_topic(topic, COMPRESSED_IMAGE_TYPE if compressed else
                             "sensor_msgs/msg/Image")
        for i in range(len(BRIGHTNESS)):
            stamp = T0 + i * PERIOD
            rgb, depth_mm = frame(i)
            color_header, depth_header = make_header(stamp, "cam"), make_header(stamp + 1000, "cam")
            if compressed:
                color = encode_compressed_color(rgb, "png", color_header,
                                                writer.compressed_image_class)
                depth = encode_compressed_depth(depth_mm, "16UC1", depth_header,
                                                writer.compressed_image_class)
            else:
                color = encode(rgb, "rgb8", color_header, writer.image_class)
                depth = encode(depth_mm, "16UC1", depth_header, writer.image_class)
            writer.write(topics[0], stamp + 5_000_000, color)
            writer.write(topics[1], stamp + 6_000_000, depth)
    return path, topics


def make_logits_onnx(path, num_classes=3, sharpness=12.0):
    """An engine with ``labels`` (class 1 everywhere) and ``logits_ensemble``
    [1, C, H/4, W/4]: class 0's logit is ``sharpness * brightness`` (0..1), the others 0."""
    import onnx
    from onnx import TensorProto, helper

    from cen_perception.model_card import METADATA_KEY, OFFICIAL_NORMALIZATION, ModelCard

    weight = np.zeros((1, num_classes, 1, 1), np.float32)
    weight[0, 0] = sharpness / 255.0
    nodes = [
        helper.make_node("Cast", ["rgb"], ["rgb_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["rgb_f"], ["grey"], axes=[3], keepdims=1),
        helper.make_node("Transpose", ["grey"], ["grey_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["grey_nchw"], ["grey_4"], kernel_shape=[4, 4],
                         strides=[4, 4]),
        helper.make_node("Mul", ["grey_4", "weight"], ["logits_ensemble"]),
        helper.make_node("Mul", ["depth", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one"], ["ones"]),
        helper.make_node("Cast", ["ones"], ["labels"], to=TensorProto.UINT8),
    ]
    inits = [helper.make_tensor("weight", TensorProto.FLOAT, weight.shape, weight.ravel()),
             helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])]
    graph = helper.make_graph(
        nodes, "logits_toy",
        [helper.make_tensor_value_info("rgb", TensorProto.UINT8, [1, H, W, 3]),
         helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, H, W])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, H, W]),
         helper.make_tensor_value_info("logits_ensemble", TensorProto.FLOAT,
                                       [1, num_classes, H // 4, W // 4])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = ModelCard(arch="toy", backbone="none", modalities=["rgb", "depth"],
                     num_classes=num_classes, class_names=[f"c{i}" for i in range(num_classes)],
                     palette=[[200, 0, 0], [0, 200, 0], [0, 0, 200]][:num_classes],
                     input_size=[H, W], normalization=OFFICIAL_NORMALIZATION,
                     outputs=["labels", "logits"])
    helper.set_model_props(model, {METADATA_KEY: card.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tree_hash(path):
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def ranked(out):
    with open(out / "selection.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("compressed,storage", [(False, "sqlite3"), (True, "mcap")])
def test_confidence_picks_the_hard_frames_spread_over_time(tmp_path, toy_onnx_factory, capsys,
                                                           compressed, storage):
    bag, (rgb_topic, depth_topic) = write_bag(tmp_path / "walk", compressed, storage)
    before = tree_hash(bag)
    engine = toy_onnx_factory(H, W)  # labels = clip(floor(depth m), 0, 2), with confidence
    out = tmp_path / "picked"
    assert main(["select-frames", str(bag), str(out), "--engine", str(engine), "--budget", "3",
                 "--min-gap", "0.25", "--rgb-topic", rgb_topic, "--depth-topic", depth_topic,
                 "--val-fraction", "0", "--no-progress"]) == 0
    assert tree_hash(bag) == before  # the input bag is only read
    report = capsys.readouterr().out
    assert "scored 10 pairs" in report and "by confidence" in report

    rows = ranked(out)
    assert [r["stem"] for r in rows] == [f"walk_{i:06d}" for i in PICKS_GAP]
    assert [int(r["stamp_ns"]) for r in rows] == [T0 + i * PERIOD for i in PICKS_GAP]
    assert {r["score_kind"] for r in rows} == {"confidence"}
    for row, i in zip(rows, PICKS_GAP):
        assert float(row["score"]) == pytest.approx(0.5 - BRIGHTNESS[i] / 510, abs=1e-5)
        assert "1 - mean confidence" in row["reason"] and "100% of pixels" in row["reason"]
    # The picks in time order make the split lists; every file of the generic layout is there.
    stems = [f"walk_{i:06d}" for i in sorted(PICKS_GAP)]
    assert (out / "train.txt").read_text().split() == stems
    from cen_training.data import RGBDSegmentationDataset, detect_layout
    assert detect_layout(out) == "generic"
    dataset = RGBDSegmentationDataset(out, "train")
    assert dataset.classes.names == ["class0", "class1", "class2"]
    for index, i in enumerate(sorted(PICKS_GAP)):
        sample = dataset.load(index)
        rgb, depth_mm = frame(i)
        np.testing.assert_array_equal(sample["rgb"], rgb)
        np.testing.assert_array_equal(
            cv2.imread(str(out / "depth" / f"{stems[index]}.png"), cv2.IMREAD_UNCHANGED),
            depth_mm)
        # Pre-labels: the toy model's labels (floor of the depth in metres).
        np.testing.assert_array_equal(sample["labels"], np.minimum(depth_mm // 1000, 2))
        preview = cv2.imread(str(out / "preview" / f"{stems[index]}.png"))
        assert preview.shape == (H, 2 * W, 3)
    assert (out / "cvat.zip").is_file()
    assert (out / "cvat" / "labelmap.txt").read_text().splitlines()[1] == "background:0,0,0::"


def test_no_gap_and_the_gap_limiting_the_budget(tmp_path, toy_onnx_factory, capsys):
    bag, topics = write_bag(tmp_path / "walk")
    engine = toy_onnx_factory(H, W)
    assert main(["select-frames", str(bag), str(tmp_path / "a"), "--engine", str(engine),
                 "--budget", "4", "--min-gap", "0", "--no-progress"]) == 0
    assert [r["stem"] for r in ranked(tmp_path / "a")] == [f"walk_{i:06d}" for i in PICKS_NO_GAP]
    capsys.readouterr()
    # With picks 5, 1 and 8 no other frame lies 0.25 s from all three: fewer than asked.
    assert main(["select-frames", str(bag), str(tmp_path / "b"), "--engine", str(engine),
                 "--budget", "5", "--min-gap", "0.25", "--no-progress"]) == 0
    assert [r["stem"] for r in ranked(tmp_path / "b")] == [f"walk_{i:06d}" for i in PICKS_GAP]
    assert "--min-gap 0.25 s left room for 3 of the 5 frames" in capsys.readouterr().out


def test_entropy_from_logits_and_engines_that_cannot_be_scored(tmp_path, toy_onnx_factory,
                                                               capsys):
    bag, topics = write_bag(tmp_path / "walk")
    engine = make_logits_onnx(tmp_path / "logits.onnx")
    out = tmp_path / "entropy"
    assert main(["select-frames", str(bag), str(out), "--engine", str(engine), "--budget", "3",
                 "--min-gap", "0.25", "--no-progress"]) == 0
    rows = ranked(out)
    assert [r["stem"] for r in rows] == [f"walk_{i:06d}" for i in PICKS_GAP]
    assert {r["score_kind"] for r in rows} == {"entropy"}
    assert "softmax entropy / ln C" in rows[0]["reason"]
    scores = [float(r["score"]) for r in rows]
    # Frame 5 (brightness 5): three classes nearly equally likely, entropy near ln 3.
    assert scores == sorted(scores, reverse=True) and 0.95 < scores[0] <= 1.0
    np.testing.assert_array_equal(cv2.imread(str(out / "labels" / "walk_000005.png"),
                                             cv2.IMREAD_UNCHANGED), np.ones((H, W), np.uint8))
    capsys.readouterr()

    # Asking for what the engine lacks, or an engine with neither output: one line, nothing
    # written.
    assert main(["select-frames", str(bag), str(tmp_path / "c"), "--engine", str(engine),
                 "--budget", "3", "--score", "confidence"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no confidence output" in err
    plain = toy_onnx_factory(H, W, confidence=False)
    assert main(["select-frames", str(bag), str(tmp_path / "d"), "--engine", str(plain),
                 "--budget", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "neither a confidence nor a logits output" in err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    assert main(["select-frames", str(bag), str(tmp_path / "e"), "--engine",
                 str(toy_onnx_factory(H, W)), "--budget", "3", "--score", "entropy"]) == 2
    assert "entropy needs the ensemble logits" in capsys.readouterr().err


def test_spread_picks_greedy_by_score():
    from cen_training.retraining.selection import spread_picks

    seconds = 10**9
    stamps = [0, 1 * seconds, 2 * seconds, 3 * seconds, 10 * seconds]
    scores = [0.1, 0.9, 0.8, 0.85, 0.2]
    assert spread_picks(stamps, scores, 3, 1.5) == [1, 3, 4]
    assert spread_picks(stamps, scores, 10, 0.0) == [1, 3, 2, 4, 0]
    assert spread_picks(stamps, scores, 2, 100.0) == [1]
