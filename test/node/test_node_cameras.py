"""Real cameras: real sizes, QoS and transports, depth that drops out or comes in other units.

Every test starts its own node (defaults unless it says otherwise) and a camera in this process
that publishes like a driver, over the middleware as installed (no Fast DDS profile).
"""
import numpy as np
import pytest

from cen_perception.image_codec import encode, encode_compressed_color, encode_compressed_depth
from cen_perception_dev.rig import values_of

ENGINE_H, ENGINE_W = 48, 64
RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def engine(toy_onnx_factory):
    return str(toy_onnx_factory(ENGINE_H, ENGINE_W))


def start(start_node, engine, *params, **camera):
    args = ["-p", f"engine_path:={engine}", "-p", "diagnostics_period:=0.25"]
    for param in params:
        args += ["-p", param]
    proc, harness = start_node(*args, **camera)
    harness.subscribe("labels")
    harness.wait_connected(proc)
    return proc, harness


def labels_of(msg) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)


def raw_pair(harness, height, width, depth_m):
    header = harness.header()
    rgb = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = np.full((height, width), int(depth_m * 1000), np.uint16)
    return encode(rgb, "rgb8", header), encode(depth, "16UC1", header)


@pytest.mark.parametrize("height,width", [(720, 1280), (1080, 1440), (1080, 1920)])
def test_reliable_camera_at_real_sizes_gets_every_pair_at_defaults(start_node, engine, height,
                                                                   width):
    proc, harness = start(start_node, engine)
    harness.subscribe("overlay")
    harness.wait_connected(proc)
    for depth_m in (0.5, 1.5, 2.5, 1.2):
        out = harness.send_pair(*raw_pair(harness, height, width, depth_m),
                                kinds=("labels", "overlay"), timeout=20.0)
        labels = labels_of(out["labels"])
        assert labels.shape == (height, width)
        assert np.all(labels == int(depth_m))
        # The picture for people is display_width (640) wide, the camera's aspect kept.
        assert (out["overlay"].width, out["overlay"].height) == (640, round(640 * height / width))
    status = harness.latest_status()
    assert values_of(status)["rgb_qos"] == "reliable", values_of(status)
    assert proc.alive()


@pytest.mark.parametrize("reliable", [True, False])
def test_auto_qos_follows_the_camera(start_node, engine, reliable):
    proc, harness = start(start_node, engine, reliable=reliable)
    out = harness.send_pair(*raw_pair(harness, 60, 80, 2.2))
    assert np.all(labels_of(out["labels"]) == 2)
    values = values_of(harness.latest_status())
    want = "reliable" if reliable else "best_effort"
    assert values["rgb_qos"] == values["depth_qos"] == want, values
    assert values["rgb_publishers"] == want


def test_compressed_colour_and_compressed_depth(start_node, engine):
    proc, harness = start(start_node, engine, "rgb_transport:=compressed",
                          "depth_transport:=compressedDepth", rgb_transport="compressed",
                          depth_transport="compressedDepth")
    height, width = 120, 160
    for depth_m in (0.4, 1.7, 2.9):
        header = harness.header()
        rgb = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
        depth = np.full((height, width), int(depth_m * 1000), np.uint16)
        depth[:10] = 0  # invalid rows travel as 0
        out = harness.send_pair(encode_compressed_color(rgb, "jpeg", header=header),
                                encode_compressed_depth(depth, "16UC1", header=header))
        labels = labels_of(out["labels"])
        assert labels.shape == (height, width)
        assert np.all(labels[20:] == int(depth_m))
    values = values_of(harness.latest_status())
    assert values["rgb_transport"] == "compressed"
    assert values["depth_transport"] == "compressedDepth"
    assert values["rgb_topic"].endswith("/rgb/image/compressed"), values
    # Labels alone need no more than the engine's input: the JPEGs were decoded at half size.
    assert int(values["pairs_decoded_reduced"]) == int(values["pairs_decoded"]) >= 3, values


@pytest.mark.parametrize("reduced,subscribed", [("false", ()), ("true", ("points",))])
def test_jpegs_are_decoded_whole_when_asked_or_for_the_cloud(start_node, engine, reduced,
                                                             subscribed):
    proc, harness = start(start_node, engine, "rgb_transport:=compressed",
                          f"reduced_jpeg_decoding:={reduced}", rgb_transport="compressed")
    for kind in subscribed:
        harness.subscribe(kind)
    harness.wait_connected(proc)
    header = harness.header()
    rgb = RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    depth = np.full((120, 160), 1500, np.uint16)
    out = harness.send_pair(encode_compressed_color(rgb, "jpeg", header=header),
                            encode(depth, "16UC1", header))
    assert np.all(labels_of(out["labels"]) == 1)
    values = values_of(harness.latest_status())
    assert values["pairs_decoded_reduced"] == "0" and int(values["pairs_decoded"]) >= 1, values


def test_corrupt_compressed_messages_are_survived(start_node, engine):
    from sensor_msgs.msg import CompressedImage

    proc, harness = start(start_node, engine, "rgb_transport:=compressed",
                          "depth_transport:=compressedDepth", rgb_transport="compressed",
                          depth_transport="compressedDepth")
    height, width = 60, 80
    good_rgb = encode_compressed_color(RNG.integers(0, 256, (height, width, 3), np.uint8), "jpeg",
                                       header=harness.header())
    truncated = CompressedImage(header=harness.header(), format=good_rgb.format,
                                data=bytes(good_rgb.data)[: len(good_rgb.data) // 2])
    unknown = CompressedImage(header=harness.header(), format="rgb8; webp compressed bgr8",
                              data=bytes(good_rgb.data))
    garbage_depth = CompressedImage(header=harness.header(), format="16UC1; compressedDepth png",
                                    data=b"\x01\x02\x03")
    harness.publish(rgb_msg=truncated, depth_msg=garbage_depth)
    harness.publish(rgb_msg=unknown)
    status = harness.latest_status(lambda v: int(v["bad_messages"]) >= 3)
    assert "bad input" in status.message
    assert proc.alive()
    header = harness.header()
    depth = np.full((height, width), 1500, np.uint16)
    out = harness.send_pair(
        encode_compressed_color(RNG.integers(0, 256, (height, width, 3), np.uint8), "png",
                                header=header),
        encode_compressed_depth(depth, "16UC1", header=header))
    assert np.all(labels_of(out["labels"]) == 1)


def test_depth_stops_then_resumes(start_node, engine):
    proc, harness = start(start_node, engine, "depth_timeout:=0.3")
    height, width = 60, 80
    out = harness.send_pair(*raw_pair(harness, height, width, 2.5))
    assert np.all(labels_of(out["labels"]) == 2)
    # Depth stops; colour goes on at a camera's pace.
    color_only = []
    for _ in range(20):
        header = harness.header()
        color_only.append((header.stamp.sec, 0))
        harness.publish(rgb_msg=encode(RNG.integers(0, 256, (height, width, 3), np.uint8),
                                       "rgb8", header))
        harness.spin_until(lambda: False, timeout=0.05)
    answered = [key for key in color_only if key in harness.received["labels"]]
    assert answered, "no colour-only output while depth was missing"
    # Depth marked invalid everywhere: the toy model labels 0 m as class 0.
    assert all(np.all(labels_of(harness.received["labels"][key][0]) == 0) for key in answered)
    harness.latest_status(lambda v: int(v["pairs_color_only"]) > 0)
    assert any("depth missing: colour only" in s.message for s in harness.statuses)
    # Depth returns: pairs again, with depth.
    for _ in range(3):
        out = harness.send_pair(*raw_pair(harness, height, width, 1.5))
    assert np.all(labels_of(out["labels"]) == 1)
    status = harness.latest_status(lambda v: True)
    harness.spin_until(lambda: False, timeout=0.6)
    assert "depth missing" not in harness.statuses[-1].message, status.message


def kinect_pair(harness, height=60, width=80):
    """A Kinect-style 16UC1 frame in 0.1 mm: 24,500 = 2.45 m."""
    header = harness.header()
    rgb = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
    depth = np.full((height, width), 24_500, np.uint16)
    return encode(rgb, "rgb8", header), encode(depth, "16UC1", header)


def test_depth_in_wrong_units_is_flagged(start_node, engine):
    proc, harness = start(start_node, engine)
    harness.send_pair(*kinect_pair(harness))
    status = harness.latest_status(lambda v: "depth_median_m" in v)
    assert status.level == status.WARN
    assert "wrong units? set depth_scale" in status.message
    assert float(values_of(status)["depth_median_m"]) == pytest.approx(24.5)


def test_depth_scale_reads_other_units(start_node, engine):
    proc, harness = start(start_node, engine, "depth_scale:=0.0001")
    out = harness.send_pair(*kinect_pair(harness))
    assert np.all(labels_of(out["labels"]) == 2)   # 2.45 m
    status = harness.latest_status(lambda v: "depth_median_m" in v)
    assert float(values_of(status)["depth_median_m"]) == pytest.approx(2.45)
    assert "wrong units" not in status.message


def test_incompatible_qos_is_reported(start_node, engine):
    proc, harness = start_node("-p", f"engine_path:={engine}", "-p", "qos:=reliable",
                               "-p", "stall_timeout:=1.0", "-p", "diagnostics_period:=0.25",
                               reliable=False)
    status = harness.latest_status(lambda v: v["rgb_incompatible_qos"] != "0", timeout=20.0)
    assert "RELIABILITY" in values_of(status)["rgb_incompatible_qos"]
    status = harness.latest_status(lambda v: "QoS mismatch" in harness.statuses[-1].message,
                                   timeout=20.0)
    assert status.level == status.WARN
    assert "set qos: auto or sensor_data" in status.message
    assert proc.alive()


def test_silent_camera_is_reported_once(start_node, engine):
    proc, harness = start(start_node, engine, "stall_timeout:=1.0")
    status = harness.latest_status(
        lambda v: "no rgb images" in harness.statuses[-1].message, timeout=20.0)
    assert status.level == status.WARN
    assert "camera is streaming" in status.message
    harness.spin_until(lambda: False, timeout=1.0)
    assert proc.output.count("no rgb images for") == 1, proc.output
