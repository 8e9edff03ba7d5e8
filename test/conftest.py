"""Shared test set-up: keep ROS 2 traffic local and give each run its own DDS domain."""
import os
import pathlib
import random
import sys

# Set before rclpy is imported anywhere, and inherited by node subprocesses.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Helpers shared by test modules (hostile_messages) import from here.
sys.path.insert(0, str(REPO / "test"))
# CEN_PERCEPTION_SAMPLES points elsewhere (a path that does not exist = a plain clone).
SAMPLES = pathlib.Path(os.environ.get("CEN_PERCEPTION_SAMPLES",
                                      REPO.parent / "shared" / "samples"))


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> pathlib.Path:
    """Real RGB-D frames in ../shared/samples (NYUv2 frame 0, a Kinect v2 frame); on a plain
    clone, synthetic frames in the same layout and units, so that no check is skipped."""
    if SAMPLES.is_dir():
        return SAMPLES
    return write_synthetic_samples(tmp_path_factory.mktemp("samples"))


def write_synthetic_samples(root: pathlib.Path) -> pathlib.Path:
    """``nyuv2_frame0/`` (640x480, rgb.jpg, in-painted depth.png in mm, label.png with 255 =
    void) and
    ``esanet_kinect/`` (512x424, rgb.png, depth.png in 0.1 mm, 0 and 65535 invalid), rendered
    by the synthetic scene generator like the real samples they stand in for."""
    import cv2
    import numpy as np

    from cen_perception_dev.synthetic_world import SyntheticScene

    rng = np.random.default_rng(0)
    nyu, kinect = root / "nyuv2_frame0", root / "esanet_kinect"
    nyu.mkdir()
    kinect.mkdir()
    rgb, depth_mm, labels = SyntheticScene(seed=1, height=480, width=640).render(0, rng)
    # Like the NYUv2 frame: in-painted depth (no holes) within about 1.8-3.6 m.
    labels[depth_mm == 0] = 255
    depth_mm[depth_mm == 0] = int(np.median(depth_mm[depth_mm > 0]))
    depth_mm = np.clip(depth_mm, 1800, 3600).astype(np.uint16)
    cv2.imwrite(str(nyu / "rgb.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(nyu / "depth.png"), depth_mm)
    cv2.imwrite(str(nyu / "label.png"), labels)
    rgb, depth_mm, _ = SyntheticScene(seed=2, height=424, width=512).render(0, rng)
    tenth_mm = np.minimum(depth_mm.astype(np.uint32) * 10, 65534).astype(np.uint16)
    tenth_mm[300:380, 40:140] = 65535  # a region the sensor could not measure, as on a Kinect
    cv2.imwrite(str(kinect / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(kinect / "depth.png"), tenth_mm)
    return root


def make_toy_onnx(path, height: int, width: int, num_classes: int = 3, confidence: bool = True,
                  card_overrides: dict | None = None) -> pathlib.Path:
    """Write a tiny ONNX model that satisfies the engine contract, without torch.

    ``labels = clip(floor(depth_metres), 0, C-1)``; ``confidence = 0.5 + mean(rgb) / 510``.
    Predictable outputs let node and engine tests check exactly what comes back.
    """
    import onnx
    from onnx import TensorProto, helper

    from cen_perception.model_card import METADATA_KEY, OFFICIAL_NORMALIZATION, ModelCard

    h, w = height, width
    nodes = [
        helper.make_node("Floor", ["depth"], ["d_floor"]),
        helper.make_node("Clip", ["d_floor", "lo", "hi"], ["d_clip"]),
        helper.make_node("Cast", ["d_clip"], ["labels"], to=TensorProto.UINT8),
    ]
    inits = [helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("hi", TensorProto.FLOAT, [], [float(num_classes - 1)])]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, h, w])]
    if confidence:
        nodes += [
            helper.make_node("Cast", ["rgb"], ["rgb_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["rgb_f"], ["rgb_mean"], axes=[3], keepdims=0),
            helper.make_node("Div", ["rgb_mean", "k510"], ["rgb_scaled"]),
            helper.make_node("Add", ["rgb_scaled", "half"], ["confidence"]),
        ]
        inits += [helper.make_tensor("k510", TensorProto.FLOAT, [], [510.0]),
                  helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])]
        outputs.append(helper.make_tensor_value_info("confidence", TensorProto.FLOAT, [1, h, w]))
    graph = helper.make_graph(
        nodes, "toy_segmenter",
        [helper.make_tensor_value_info("rgb", TensorProto.UINT8, [1, h, w, 3]),
         helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, h, w])],
        outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = dict(arch="toy", backbone="none", modalities=["rgb", "depth"],
                num_classes=num_classes, class_names=[f"class{i}" for i in range(num_classes)],
                palette=[[(37 * i) % 256, (91 * i + 60) % 256, (151 * i + 120) % 256]
                         for i in range(num_classes)],
                input_size=[h, w], normalization=OFFICIAL_NORMALIZATION,
                outputs=["labels"] + (["confidence"] if confidence else []))
    card.update(card_overrides or {})
    helper.set_model_props(model, {METADATA_KEY: ModelCard.from_dict(card).to_json()})
    onnx.checker.check_model(model)
    path = pathlib.Path(path)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def toy_onnx_factory(tmp_path_factory):
    """``factory(height, width, num_classes=3, confidence=True) -> path`` of a toy engine."""
    base = tmp_path_factory.mktemp("toy_onnx")

    def factory(height: int = 48, width: int = 64, **kwargs) -> pathlib.Path:
        name = f"toy_{height}x{width}_{abs(hash(repr(sorted(kwargs.items()))))}.onnx"
        return make_toy_onnx(base / name, height, width, **kwargs)

    return factory


def write_rgbd_test_bag(path, storage: str = "sqlite3", frames: int = 4, height: int = 48,
                        width: int = 64) -> dict:
    """A small recorded RGB-D bag with known content, written with rosbags.

    Frame i (10 Hz): rgb8 colour (a gradient shifted by i) on ``/cam/color``, 16UC1 depth
    ``300 + 700 i + 40 column`` mm on ``/cam/depth`` stamped 2 ms later. Then one colour frame
    with no depth partner, one depth frame with no colour partner, one colour message whose
    data is cut short (bad) beside a depth frame that loses its partner, and one message on
    ``/chatter`` (std_msgs/String). Returns what a reader should find.
    """
    import numpy as np

    from cen_perception.bags.recorded import TYPESTORE, BagWriter, make_header
    from cen_perception.image_codec import encode

    t0, period = 1_700_000_000 * 10**9, 100_000_000
    rgbs, depths_mm, stamps = [], [], []
    with BagWriter(path, storage) as writer:
        writer.add_topic("/cam/color")
        writer.add_topic("/cam/depth")
        writer.add_topic("/chatter", "std_msgs/msg/String")
        image = writer.image_class

        def put(topic, stamp, array, encoding, frame_id, delay_ns):
            msg = encode(array, encoding, make_header(stamp, frame_id), image)
            writer.write(topic, stamp + delay_ns, msg)
            return msg

        for i in range(frames):
            stamp = t0 + i * period
            rgb = ((np.arange(height * width * 3).reshape(height, width, 3) + 17 * i) % 256)
            depth_mm = (300 + 700 * i + 40 * np.arange(width)[None, :]).repeat(height, 0)
            put("/cam/color", stamp, rgb.astype(np.uint8), "rgb8", "cam_color", 5_000_000)
            put("/cam/depth", stamp + 2_000_000, depth_mm.astype(np.uint16), "16UC1", "cam_depth",
                7_000_000)
            rgbs.append(rgb.astype(np.uint8))
            depths_mm.append(depth_mm.astype(np.uint16))
            stamps.append(stamp)
        blank = np.zeros((height, width, 3), np.uint8)
        put("/cam/color", t0 + frames * period, blank, "rgb8", "cam_color", 5_000_000)
        put("/cam/depth", t0 + (frames + 1) * period, depths_mm[0], "16UC1", "cam_depth", 7_000_000)
        bad = encode(blank, "rgb8", make_header(t0 + (frames + 2) * period, "cam_color"), image)
        bad.data = bad.data[:-width]  # a message cut short: its size disagrees with height * step
        writer.write("/cam/color", t0 + (frames + 2) * period + 5_000_000, bad)
        put("/cam/depth", t0 + (frames + 2) * period, depths_mm[0], "16UC1", "cam_depth", 7_000_000)
        chatter = TYPESTORE.types["std_msgs/msg/String"](data="hello")
        writer.write("/chatter", t0, chatter)
    return dict(rgb=rgbs, depth_mm=depths_mm, stamps=stamps, pairs=frames,
                rgb_messages=frames + 2, depth_messages=frames + 2, bad_rgb=1,
                unmatched_rgb=1, unmatched_depth=2)


def _write_compressed_bag(raw_bag, path, storage, color_format="jpeg"):
    """``write_rgbd_test_bag``'s images on image_transport's compressed topics (JPEG or PNG
    colour, compressedDepth PNG depth; same stamps and log times); the damaged colour message
    stays damaged (a JPEG cut short)."""
    import numpy as np

    from cen_perception.bags.recorded import (
        COMPRESSED_IMAGE_TYPE,
        BagWriter,
        RecordedBag,
        deserialize_image,
    )
    from cen_perception.image_codec import (
        ImageCodecError,
        decode_color,
        encode_compressed_color,
        encode_compressed_depth,
    )

    with RecordedBag(raw_bag) as bag, BagWriter(path, storage) as writer:
        cls = writer.compressed_image_class
        topics = {"/cam/color": "/cam/color/compressed", "/cam/depth": "/cam/depth/compressedDepth"}
        for topic in topics.values():
            writer.add_topic(topic, COMPRESSED_IMAGE_TYPE)
        for message in bag.messages(list(topics)):
            msg = deserialize_image(message.raw)
            if message.topic == "/cam/color":
                try:
                    out = encode_compressed_color(decode_color(msg), color_format, msg.header, cls)
                except ImageCodecError:
                    out = encode_compressed_color(np.zeros((48, 64, 3), np.uint8), "jpeg",
                                                  msg.header, cls)
                    out.data = out.data[:-20]
            else:
                mm = np.asarray(msg.data).view(np.uint16).reshape(msg.height, msg.width)
                out = encode_compressed_depth(mm, "16UC1", msg.header, cls)
            writer.write(topics[message.topic], message.log_time_ns, out)
    return path


@pytest.fixture(scope="session")
def write_compressed_bag():
    """``write(raw_bag, path, storage, color_format="jpeg") -> path``: a bag from
    ``rgbd_bag_factory`` on image_transport's compressed topics."""
    return _write_compressed_bag


@pytest.fixture()
def rgbd_bag_factory(tmp_path):
    """``factory(name, storage="sqlite3", **kwargs) -> (path, expected)``; see
    ``write_rgbd_test_bag``."""
    def factory(name: str = "bag", storage: str = "sqlite3", **kwargs):
        path = tmp_path / name
        return path, write_rgbd_test_bag(path, storage, **kwargs)

    return factory
