"""Recorded bags: reading, the synthetic sequence, and `cen-perception-bag` end to end."""
import hashlib
import pathlib
import re
import subprocess

import numpy as np
import pytest

from cen_perception.bags.recorded import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    BagError,
    BagWriter,
    PairCounts,
    RecordedBag,
    deserialize_image,
    make_header,
    rgbd_pairs,
    stamp_ns,
)
from cen_perception.bags.segment import main, segment_bag
from cen_perception.engines import open_engine
from cen_perception.image_codec import (
    ImageCodecError,
    decode_color,
    decode_depth,
    encode,
    encode_compressed_color,
    encode_compressed_depth,
)
from cen_perception_dev.synthetic_sequence import (
    CAMERA_INFO_TOPIC,
    COLOR_TOPIC,
    DEPTH_TOPIC,
    LABELS_TOPIC,
    write_synthetic_sequence,
)
from cen_perception_dev.synthetic_world import SyntheticScene

BAG_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cen-perception-bag"
STORAGES = ["sqlite3", "mcap"]
NUM_CLASSES = 4


def tree_hash(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def read_images(path, topic):
    with RecordedBag(path) as bag:
        return [deserialize_image(m.raw) for m in bag.messages([topic])]


def expected_labels(depth_mm: np.ndarray) -> np.ndarray:
    """What the toy engine computes: clip(floor(depth in metres), 0, C - 1)."""
    return np.clip(np.floor(depth_mm / 1000.0), 0, NUM_CLASSES - 1).astype(np.uint8)


@pytest.mark.parametrize("storage", STORAGES)
def test_synthetic_sequence_is_a_moving_rgbd_recording(tmp_path, storage):
    path = write_synthetic_sequence(tmp_path / "seq", frames=5, height=48, width=64,
                                    storage=storage, seed=2, ground_truth=True)
    with RecordedBag(path) as bag:
        assert bag.storage == storage
        assert {t: (s.msgtype, s.count) for t, s in bag.topics.items()} == {
            COLOR_TOPIC: (IMAGE_TYPE, 5), DEPTH_TOPIC: (IMAGE_TYPE, 5),
            LABELS_TOPIC: (IMAGE_TYPE, 5), CAMERA_INFO_TOPIC: (CAMERA_INFO_TYPE, 5)}
        assert bag.resolve_rgbd_topics() == (COLOR_TOPIC, DEPTH_TOPIC)
        log_times = [m.log_time_ns for m in bag.messages()]
        assert log_times == sorted(log_times)
    colors, depths, truths = (read_images(path, t) for t in (COLOR_TOPIC, DEPTH_TOPIC,
                                                              LABELS_TOPIC))
    assert [m.encoding for m in (colors[0], depths[0], truths[0])] == ["rgb8", "16UC1", "mono8"]
    assert colors[0].header.frame_id == "camera_color_optical_frame"
    assert depths[0].header.frame_id == "camera_depth_optical_frame"
    for color, depth in zip(colors, depths):
        assert abs(stamp_ns(color.header) - stamp_ns(depth.header)) <= 3_000_000
    assert stamp_ns(colors[1].header) - stamp_ns(colors[0].header) == 100_000_000
    depth_m = decode_depth(depths[0])
    assert 0.5 < np.median(depth_m[depth_m > 0]) < 6.0 and (depth_m == 0).mean() < 0.2
    # Things move: later frames differ, and each class of the training data shows up.
    assert not np.array_equal(decode_color(colors[0]), decode_color(colors[4]))
    labels = np.stack([np.asarray(t.data).reshape(48, 64) for t in truths])
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    assert not np.array_equal(labels[0], labels[4])


def test_synthetic_scene_is_reproducible():
    first = SyntheticScene(seed=7, height=32, width=40).render(3, np.random.default_rng(1))
    again = SyntheticScene(seed=7, height=32, width=40).render(3, np.random.default_rng(1))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("storage", STORAGES)
def test_pairs_account_for_every_message(rgbd_bag_factory, storage):
    path, expected = rgbd_bag_factory(storage=storage)
    with RecordedBag(path) as bag:
        counts = PairCounts()
        pairs = list(rgbd_pairs(bag, "/cam/color", "/cam/depth", slop=0.02, counts=counts))
    assert counts.pairs == len(pairs) == expected["pairs"]
    assert (counts.rgb, counts.depth) == (expected["rgb_messages"], expected["depth_messages"])
    assert (counts.bad_rgb, counts.bad_depth) == (expected["bad_rgb"], 0)
    assert (counts.unmatched_rgb, counts.unmatched_depth) == (expected["unmatched_rgb"],
                                                              expected["unmatched_depth"])
    assert counts.pairs + counts.unmatched_rgb + counts.bad_rgb == counts.rgb
    assert "data holds" in counts.problems[0]
    for pair, rgb, depth_mm, stamp in zip(pairs, expected["rgb"], expected["depth_mm"],
                                          expected["stamps"]):
        np.testing.assert_array_equal(pair.rgb, rgb)
        np.testing.assert_array_equal(pair.depth, depth_mm / np.float32(1000))
        assert (pair.rgb_stamp_ns, pair.depth_stamp_ns) == (stamp, stamp + 2_000_000)
        assert pair.header.frame_id == "cam_color"


@pytest.mark.parametrize("storage", STORAGES)
def test_segment_bag_writes_exact_masks_and_leaves_input_alone(
        rgbd_bag_factory, toy_onnx_factory, tmp_path, capsys, storage):
    in_bag, expected = rgbd_bag_factory(storage=storage)
    engine = toy_onnx_factory(48, 64, num_classes=NUM_CLASSES)
    before = tree_hash(in_bag)
    out_bag = tmp_path / "out"
    status = main([str(in_bag), str(out_bag), "--engine", str(engine), "--no-progress",
                   "--rgb-topic", "/cam/color", "--depth-topic", "/cam/depth"])
    assert status == 0
    assert tree_hash(in_bag) == before
    summary = capsys.readouterr().out
    assert "4 pairs segmented from 6 colour and 6 depth messages" in summary
    assert "unmatched: 1 colour, 2 depth; bad messages: 1 colour, 0 depth" in summary
    assert "p95" in summary

    with RecordedBag(out_bag) as out:
        assert out.storage == storage  # the input's format by default
        assert {t: s.count for t, s in out.topics.items()} == {
            "/segmentation/labels": 4, "/segmentation/color": 4, "/segmentation/overlay": 4}
    labels = read_images(out_bag, "/segmentation/labels")
    colors = read_images(out_bag, "/segmentation/color")
    overlays = read_images(out_bag, "/segmentation/overlay")
    palette = np.asarray(open_engine(engine).card.palette, np.uint8)
    for i, (lab, col, ovl) in enumerate(zip(labels, colors, overlays)):
        assert (lab.encoding, col.encoding, ovl.encoding) == ("mono8", "rgb8", "rgb8")
        for msg in (lab, col, ovl):  # every output carries the RGB image's header
            assert stamp_ns(msg.header) == expected["stamps"][i]
            assert msg.header.frame_id == "cam_color"
        want = expected_labels(expected["depth_mm"][i])
        got = np.asarray(lab.data).reshape(48, 64)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(decode_color(col), palette[want])
        assert decode_color(ovl).shape == (48, 64, 3)
    assert len(np.unique(np.stack([np.asarray(m.data) for m in labels]))) == NUM_CLASSES


def test_auto_topics_copy_input_and_storage_choice(toy_onnx_factory, tmp_path, capsys):
    in_bag = write_synthetic_sequence(tmp_path / "seq", frames=4, height=48, width=64,
                                      storage="sqlite3")
    engine = toy_onnx_factory(24, 32, num_classes=NUM_CLASSES)  # resized to and from the camera
    out_bag = tmp_path / "out"
    assert main([str(in_bag), str(out_bag), "--engine", str(engine), "--no-progress",
                 "--copy-input", "--storage", "mcap", "--output-namespace", "/seg",
                 "--overlay-alpha", "1.0"]) == 0
    assert "4 pairs segmented" in capsys.readouterr().out
    with RecordedBag(in_bag) as bag:
        recorded = {t: [m.raw for m in bag.messages([t])] for t in bag.topics}
    with RecordedBag(out_bag) as out:
        assert out.storage == "mcap"
        assert set(out.topics) == {COLOR_TOPIC, DEPTH_TOPIC, CAMERA_INFO_TOPIC, "/seg/labels",
                                   "/seg/color", "/seg/overlay"}
        for topic, raws in recorded.items():  # copies are byte for byte
            assert [m.raw for m in out.messages([topic])] == raws
    colors = read_images(out_bag, "/seg/color")
    overlays = read_images(out_bag, "/seg/overlay")
    # With alpha 1 the overlay is the colour image (no unlabeled pixels from this engine).
    np.testing.assert_array_equal(decode_color(overlays[0]), decode_color(colors[0]))


def run_script(*args):
    return subprocess.run([str(BAG_SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_console_script_runs_and_errors_are_one_line(rgbd_bag_factory, toy_onnx_factory,
                                                     tmp_path):
    in_bag, _ = rgbd_bag_factory()
    engine = toy_onnx_factory(48, 64, num_classes=NUM_CLASSES)
    done = run_script(in_bag, tmp_path / "out", "--engine", engine, "--rgb-topic", "/cam/color",
                      "--depth-topic", "/cam/depth")
    assert done.returncode == 0, done.stderr
    assert "4 pairs segmented" in done.stdout

    missing = run_script(in_bag, tmp_path / "out2", "--engine", engine, "--rgb-topic",
                         "/camera/rgb", "--depth-topic", "/cam/depth")
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1, missing.stderr
    assert "no colour topic '/camera/rgb'" in lines[0]
    for listed in ("/cam/color (sensor_msgs/msg/Image, 6)", "/cam/depth (sensor_msgs/msg/Image, 6)",
                   "/chatter (std_msgs/msg/String, 1)"):
        assert listed in lines[0]
    assert not (tmp_path / "out2").exists()  # nothing is created for a run that cannot start

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metadata.yaml").write_text((in_bag / "metadata.yaml").read_text())
    (corrupt / "bag.db3").write_bytes(b"this is not an sqlite database" * 100)
    broken = run_script(corrupt, tmp_path / "out3", "--engine", engine)
    assert broken.returncode == 2
    assert len(broken.stderr.strip().splitlines()) == 1, broken.stderr
    assert "not a readable ROS 2 bag" in broken.stderr


def write_bag(path, storage, images):
    """``images``: (topic, encoding, array) written once each at the same stamp."""
    with BagWriter(path, storage) as writer:
        for topic, _, _ in images:
            writer.add_topic(topic)
        for topic, encoding, array in images:
            known = "rgb8" if encoding == "yuv422" else encoding
            msg = encode(array, known, make_header(10**18, "f"), writer.image_class)
            msg.encoding = encoding
            writer.write(topic, 10**18, msg)
    return path


@pytest.mark.parametrize("storage", STORAGES)
def test_input_errors_name_what_the_bag_holds(tmp_path, toy_onnx_factory, storage):
    engine = str(toy_onnx_factory(8, 8))
    rgb, depth = np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint16)
    out = str(tmp_path / "out")

    yuv = write_bag(tmp_path / "yuv", storage, [("/c", "yuv422", rgb), ("/d", "16UC1", depth)])
    with pytest.raises(BagError, match=r"colour topic '/c': unsupported colour encoding 'yuv422'"
                                       r".*the bag holds: /c \(sensor_msgs/msg/Image, 1\)"):
        segment_bag(yuv, out, engine, rgb_topic="/c", depth_topic="/d", progress=False)

    two = write_bag(tmp_path / "two", storage,
                    [("/a", "rgb8", rgb), ("/b", "bgr8", rgb), ("/d", "16UC1", depth)])
    with RecordedBag(two) as bag:
        with pytest.raises(BagError, match="2 plausible colour image topics; name one with "
                                           "--rgb-topic"):
            bag.resolve_rgbd_topics()
        assert bag.resolve_rgbd_topics("/b") == ("/b", "/d")
        with pytest.raises(BagError, match="depth topic '/a': unsupported depth encoding 'rgb8'"):
            bag.resolve_rgbd_topics("/b", "/a")  # wrong kind: caught by its encoding

    if storage == "mcap":  # a file cut short: found while reading it, not before
        whole = write_synthetic_sequence(tmp_path / "whole.mcap.d", frames=6, height=16,
                                         width=16, storage="mcap")
        data = next(whole.glob("*.mcap")).read_bytes()
        cut = tmp_path / "cut.mcap"
        cut.write_bytes(data[:len(data) // 2])
        with pytest.raises(BagError, match="cut.mcap"):
            with RecordedBag(cut) as bag:
                list(bag.messages())
    assert main([str(tmp_path / "absent"), out, "--engine", engine]) == 2
    assert main([str(two), str(two), "--engine", engine, "--rgb-topic", "/a"]) == 2


def test_min_confidence_marks_unlabeled_and_confidence_is_written(rgbd_bag_factory,
                                                                  toy_onnx_factory, tmp_path):
    in_bag, expected = rgbd_bag_factory()
    engine = toy_onnx_factory(48, 64, num_classes=NUM_CLASSES)
    out_bag = tmp_path / "out"
    assert main([str(in_bag), str(out_bag), "--engine", str(engine), "--no-progress",
                 "--rgb-topic", "/cam/color", "--depth-topic", "/cam/depth",
                 "--min-confidence", "0.75", "--confidence"]) == 0
    labels = read_images(out_bag, "/segmentation/labels")
    confidences = read_images(out_bag, "/segmentation/confidence")
    for lab, conf, rgb, depth_mm in zip(labels, confidences, expected["rgb"],
                                        expected["depth_mm"]):
        want_conf = 0.5 + rgb.astype(np.float32).mean(axis=2) / 510
        np.testing.assert_allclose(decode_depth(conf), want_conf, atol=1e-5)  # 32FC1
        unsure = want_conf < 0.75
        assert 0 < unsure.sum() < unsure.size
        want = np.where(unsure, 255, expected_labels(depth_mm))
        np.testing.assert_array_equal(np.asarray(lab.data).reshape(48, 64), want)


def test_a_damaged_first_message_is_counted_not_fatal(tmp_path, toy_onnx_factory, capsys):
    rgb, depth = np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 1500, np.uint16)
    path = tmp_path / "bag"
    with BagWriter(path, "sqlite3") as writer:
        writer.add_topic("/c")
        writer.add_topic("/d")
        for i in range(3):
            stamp = 10**18 + i * 10**8
            color = encode(rgb, "rgb8", make_header(stamp, "c"), writer.image_class)
            if i == 0:
                color.data = color.data[:5]
            writer.write("/c", stamp, color)
            writer.write("/d", stamp, encode(depth, "16UC1", make_header(stamp, "d"),
                                             writer.image_class))
    assert main([str(path), str(tmp_path / "out"), "--engine", str(toy_onnx_factory(8, 8)),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 pairs segmented from 3 colour and 3 depth messages" in out
    assert "unmatched: 0 colour, 1 depth; bad messages: 1 colour, 0 depth" in out


# -- compressed topics --------------------------------------------------------------------------
RGB_COMPRESSED = "/cam/color/compressed"
DEPTH_COMPRESSED = "/cam/depth/compressedDepth"


def compressed_copy(raw_bag, path, storage="sqlite3", color_format="png", depth_codec="png",
                    depth_encoding="16UC1"):
    """The test bag's images as image_transport's compressed and compressedDepth topics, same
    stamps and log times. The colour message cut short in the raw bag becomes a JPEG cut short,
    and a depth message with a garbage compressedDepth header is added at the end."""
    with RecordedBag(raw_bag) as bag, BagWriter(path, storage) as writer:
        cls = writer.compressed_image_class
        writer.add_topic(RGB_COMPRESSED, COMPRESSED_IMAGE_TYPE)
        writer.add_topic(DEPTH_COMPRESSED, COMPRESSED_IMAGE_TYPE)
        last = None
        for message in bag.messages(["/cam/color", "/cam/depth"]):
            msg = deserialize_image(message.raw)
            if message.topic == "/cam/color":
                try:
                    out = encode_compressed_color(decode_color(msg), color_format, msg.header, cls)
                except ImageCodecError:  # the damaged one
                    out = encode_compressed_color(np.zeros((48, 64, 3), np.uint8), "jpeg",
                                                  msg.header, cls)
                    out.data = out.data[:len(out.data) // 2]
                writer.write(RGB_COMPRESSED, message.log_time_ns, out)
            else:
                mm = np.asarray(msg.data).view(np.uint16).reshape(msg.height, msg.width)
                depth = mm if depth_encoding == "16UC1" else (mm / np.float32(1000))
                out = encode_compressed_depth(depth, depth_encoding, msg.header, cls,
                                              codec=depth_codec)
                writer.write(DEPTH_COMPRESSED, message.log_time_ns, out)
                last = message.log_time_ns
        garbage = encode_compressed_depth(np.ones((48, 64), np.uint16), "16UC1",
                                          make_header(last, "cam_depth"), cls)
        garbage.data[:4] = 0xEE
        writer.write(DEPTH_COMPRESSED, last + 1, garbage)
    return path


@pytest.mark.parametrize("storage,depth_codec,depth_encoding", [
    ("sqlite3", "png", "16UC1"), ("mcap", "png", "16UC1"), ("mcap", "rvl", "16UC1"),
    ("sqlite3", "png", "32FC1")])
def test_pairs_from_compressed_topics(rgbd_bag_factory, tmp_path, storage, depth_codec,
                                      depth_encoding):
    raw, expected = rgbd_bag_factory(storage=storage)
    path = compressed_copy(raw, tmp_path / "compressed", storage, "png", depth_codec,
                           depth_encoding)
    with RecordedBag(path) as bag:
        assert {t: s.msgtype for t, s in bag.topics.items()} == {
            RGB_COMPRESSED: COMPRESSED_IMAGE_TYPE, DEPTH_COMPRESSED: COMPRESSED_IMAGE_TYPE}
        assert bag.resolve_rgbd_topics() == (RGB_COMPRESSED, DEPTH_COMPRESSED)
        counts = PairCounts()
        pairs = list(rgbd_pairs(bag, RGB_COMPRESSED, DEPTH_COMPRESSED, counts=counts))
    assert counts.pairs == len(pairs) == expected["pairs"]
    assert (counts.rgb, counts.depth) == (expected["rgb_messages"], expected["depth_messages"] + 1)
    assert (counts.bad_rgb, counts.bad_depth) == (1, 1)
    assert (counts.unmatched_rgb, counts.unmatched_depth) == (1, 2)
    assert "end-of-image marker" in counts.problems[0]
    assert counts.problems[0].startswith(f"{RGB_COMPRESSED} at log time ")
    assert "bad compressedDepth header" in counts.problems[1]
    for pair, rgb, depth_mm, stamp in zip(pairs, expected["rgb"], expected["depth_mm"],
                                          expected["stamps"]):
        np.testing.assert_array_equal(pair.rgb, rgb)  # PNG: lossless
        want = depth_mm / np.float32(1000)
        if depth_encoding == "16UC1":
            np.testing.assert_array_equal(pair.depth, want)
        else:  # inverse-depth quantization: within a few millimetres at these ranges
            assert np.abs(pair.depth - want).max() < 0.003
        assert (pair.rgb_stamp_ns, pair.depth_stamp_ns) == (stamp, stamp + 2_000_000)
        assert pair.header.frame_id == "cam_color"


@pytest.mark.parametrize("storage", STORAGES)
def test_segment_bag_reads_compressed_topics(rgbd_bag_factory, toy_onnx_factory, tmp_path,
                                             capsys, storage):
    raw, expected = rgbd_bag_factory(storage=storage)
    in_bag = compressed_copy(raw, tmp_path / "compressed", storage, color_format="jpeg")
    before = tree_hash(in_bag)
    engine = toy_onnx_factory(48, 64, num_classes=NUM_CLASSES)
    out_bag = tmp_path / "out"
    assert main([str(in_bag), str(out_bag), "--engine", str(engine), "--no-progress",
                 "--rgb-topic", RGB_COMPRESSED, "--depth-topic", DEPTH_COMPRESSED,
                 "--confidence"]) == 0
    assert tree_hash(in_bag) == before
    summary = capsys.readouterr().out
    assert "4 pairs segmented from 6 colour and 7 depth messages" in summary
    assert "bad messages: 1 colour, 1 depth" in summary
    assert "first bad message: /cam/color/compressed at log time" in summary
    assert "JPEG without its end-of-image marker" in summary
    labels = read_images(out_bag, "/segmentation/labels")
    confidences = read_images(out_bag, "/segmentation/confidence")
    assert [stamp_ns(m.header) for m in labels] == expected["stamps"]
    for lab, conf, rgb, depth_mm in zip(labels, confidences, expected["rgb"],
                                        expected["depth_mm"]):
        np.testing.assert_array_equal(np.asarray(lab.data).reshape(48, 64),
                                      expected_labels(depth_mm))
        # The engine's confidence follows the mean colour: JPEG moves it only slightly.
        want = 0.5 + rgb.astype(np.float32).mean(axis=2) / 510
        assert np.abs(decode_depth(conf) - want).mean() < 0.01


def test_compressed_and_raw_topics_side_by_side(rgbd_bag_factory, tmp_path):
    raw, _ = rgbd_bag_factory()
    compressed = compressed_copy(raw, tmp_path / "compressed")
    both = tmp_path / "both"
    with RecordedBag(raw) as a, RecordedBag(compressed) as b, BagWriter(both) as writer:
        for bag in (a, b):
            for topic in bag.image_topics():
                writer.add_topic(topic, bag.topics[topic].msgtype)
        for bag in (a, b):
            for message in bag.messages(bag.image_topics()):
                writer.write_raw(message.topic, message.log_time_ns, message.raw)
    with RecordedBag(both) as bag:
        assert set(bag.image_topics()) == {"/cam/color", "/cam/depth", RGB_COMPRESSED,
                                           DEPTH_COMPRESSED}
        with pytest.raises(BagError, match=r"2 plausible colour image topics.*"
                                           r"/cam/color/compressed \(rgb8; png compressed bgr8\)"):
            bag.resolve_rgbd_topics()
        assert bag.resolve_rgbd_topics("/cam/color", DEPTH_COMPRESSED) == (
            "/cam/color", DEPTH_COMPRESSED)
        assert bag.resolve_rgbd_topics(RGB_COMPRESSED, "/cam/depth") == (
            RGB_COMPRESSED, "/cam/depth")
        # The wrong kind of image, and a format the codec does not read, stop the run.
        with pytest.raises(BagError, match=r"depth topic '/cam/color/compressed': .*"
                                           r"unsupported depth encoding 'rgb8'"):
            bag.resolve_rgbd_topics("/cam/color", RGB_COMPRESSED)
        with pytest.raises(BagError, match=r"colour topic '/cam/depth/compressedDepth': .*"
                                           r"is a depth image, not colour"):
            bag.resolve_rgbd_topics(DEPTH_COMPRESSED, "/cam/depth")


@pytest.mark.parametrize("storage", STORAGES)
def test_unsupported_compressed_format_and_other_types_are_refused(tmp_path, toy_onnx_factory,
                                                                    storage):
    path = tmp_path / "bag"
    with BagWriter(path, storage) as writer:
        cls = writer.compressed_image_class
        writer.add_topic("/c", COMPRESSED_IMAGE_TYPE)
        writer.add_topic("/d", COMPRESSED_IMAGE_TYPE)
        writer.add_topic("/s", "std_msgs/msg/String")
        colour = encode_compressed_color(np.zeros((8, 8, 3), np.uint8), "png",
                                         make_header(10**18, "c"), cls)
        colour.format = "rgb8; theora"
        writer.write("/c", 10**18, colour)
        writer.write("/d", 10**18, encode_compressed_depth(np.ones((8, 8), np.uint16), "16UC1",
                                                           make_header(10**18, "d"), cls))
    engine = str(toy_onnx_factory(8, 8))
    with pytest.raises(BagError, match=r"colour topic '/c': unsupported compressed image format "
                                       r"'rgb8; theora'.*sensor_msgs/msg/CompressedImage, 1"):
        segment_bag(path, tmp_path / "out", engine, rgb_topic="/c", depth_topic="/d",
                    progress=False)
    with RecordedBag(path) as bag:
        with pytest.raises(BagError, match="no plausible colour image topics"):
            bag.resolve_rgbd_topics()  # an unknown format is no candidate
        with pytest.raises(BagError, match="'/s' is std_msgs/msg/String, not sensor_msgs/msg/"
                                           "Image or sensor_msgs/msg/CompressedImage"):
            bag.resolve_rgbd_topics("/s", "/d")
    assert not (tmp_path / "out").exists()


def test_depth_scale_reads_other_depth_units(tmp_path, toy_onnx_factory, capsys):
    # A camera writing tenths of a millimetre: 25000 units = 2.5 m.
    path = tmp_path / "bag"
    units = np.tile(np.array([5000, 15000, 25000, 35000], np.uint16).repeat(4), (16, 1))
    with BagWriter(path, "mcap") as writer:
        writer.add_topic("/c")
        writer.add_topic("/d", COMPRESSED_IMAGE_TYPE)
        for i in range(2):
            stamp = 10**18 + i * 10**8
            writer.write("/c", stamp, encode(np.zeros((16, 16, 3), np.uint8), "rgb8",
                                             make_header(stamp, "c"), writer.image_class))
            writer.write("/d", stamp, encode_compressed_depth(
                units, "16UC1", make_header(stamp, "d"), writer.compressed_image_class,
                depth_max=65.0))
    with RecordedBag(path) as bag:
        pairs = list(rgbd_pairs(bag, "/c", "/d", depth_scale=0.0001))
    assert len(pairs) == 2
    np.testing.assert_array_equal(pairs[0].depth[0, ::4], np.float32([0.5, 1.5, 2.5, 3.5]))
    engine = toy_onnx_factory(16, 16, num_classes=NUM_CLASSES)
    out = tmp_path / "out"
    assert main([str(path), str(out), "--engine", str(engine), "--no-progress",
                 "--depth-scale", "0.0001"]) == 0
    labels = read_images(out, "/segmentation/labels")
    np.testing.assert_array_equal(np.asarray(labels[0].data).reshape(16, 16)[0, ::4],
                                  [0, 1, 2, 3])
    capsys.readouterr()
    assert main([str(path), str(tmp_path / "out2"), "--engine", str(engine),
                 "--depth-scale", "0"]) == 2
    assert "depth scale must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("settings, message", [
    (dict(slop=0.0), "slop must be a positive number of seconds, got 0.0"),
    (dict(slop=float("nan")), "slop must be a positive number of seconds, got nan"),
    (dict(queue_size=0), "queue size must be at least 1, got 0"),
    (dict(depth_scale=float("inf")), "depth scale must be a positive number"),
])
def test_pairing_settings_are_checked_before_anything_is_read(settings, message):
    from cen_perception.bags.pairing import check_pairing

    check_pairing()  # the defaults are usable
    check_pairing(slop=0.005, depth_scale=0.0001, queue_size=1)
    with pytest.raises(BagError, match=re.escape(message)):
        check_pairing(**settings)

