"""`cen-perception-play` on real ROS 2: what it publishes, and the node segmenting a played bag."""
import pathlib
import re
import signal
import subprocess

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from cen_perception.bags.recorded import RecordedBag, stamp_ns
from cen_perception_dev.rig import NodeProcess, Rig

BIN = pathlib.Path(__file__).resolve().parents[2] / ".venv" / "bin"
PLAY = BIN / "cen-perception-play"
NUM_CLASSES = 4
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def image_fields(msg):
    if isinstance(msg, CompressedImage):
        return (stamp_ns(msg.header), msg.header.frame_id, msg.format, bytes(msg.data))
    return (stamp_ns(msg.header), msg.header.frame_id, msg.height, msg.width, msg.encoding,
            msg.is_bigendian, msg.step, bytes(msg.data))


@pytest.fixture()
def probe_factory():
    """``probe(topics, compressed=())``: a rig in its own rclpy context keeping every Image
    (or, for topics named in ``compressed``, CompressedImage) of ``topics`` in
    ``messages[topic]``."""
    probes = []

    def factory(topics, compressed=()):
        probe = Rig(name="player_test_probe")
        probes.append(probe)
        for topic in topics:
            probe.listen(topic, CompressedImage if topic in compressed else Image, RELIABLE)
        return probe

    yield factory
    for probe in probes:
        probe.close()


def play_fast(probe, bag, *args) -> None:
    """Play the test bag's 12 images as fast as the player can, once ``probe`` listens, and
    wait until the probe has them all (or 10 s)."""
    player = subprocess.Popen(
        [str(PLAY), str(bag), "--fast", "--reliable", "--wait-subscribers", "1",
         "--wait-timeout", "30", "--no-progress", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probe.spin_until(lambda: player.poll() is not None, timeout=60)
        out, err = player.communicate(timeout=10)
        assert player.returncode == 0, err
        assert "published 12 messages" in out
        probe.spin_until(lambda: sum(map(len, probe.messages.values())) >= 12, timeout=10)
    finally:
        if player.poll() is None:
            player.kill()


def test_player_publishes_the_recorded_bytes(rgbd_bag_factory, probe_factory):
    bag, expected = rgbd_bag_factory(storage="mcap")
    probe = probe_factory(["/played/color", "/played/depth"])
    play_fast(probe, bag, "--remap", "/cam/color:=/played/color",
              "--remap", "/cam/depth:=played/depth")
    with RecordedBag(bag) as recorded:
        for topic, played in (("/cam/color", "/played/color"), ("/cam/depth", "/played/depth")):
            # Field by field: CDR alignment padding bytes are arbitrary.
            recorded_msgs = [image_fields(deserialize_message(m.raw, Image))
                             for m in recorded.messages([topic])]
            assert [image_fields(m) for m in probe.messages[played]] == recorded_msgs
    assert [stamp_ns(m.header) for m in probe.messages["/played/color"][:4]] == expected["stamps"]


def test_player_publishes_compressed_topics_with_their_type(rgbd_bag_factory, probe_factory,
                                                           write_compressed_bag, tmp_path):
    raw, expected = rgbd_bag_factory(storage="sqlite3")
    bag = write_compressed_bag(raw, tmp_path / "compressed", "mcap")
    played = {"/cam/color/compressed": "/played/color/compressed",
              "/cam/depth/compressedDepth": "/played/depth/compressedDepth"}
    probe = probe_factory(list(played.values()), compressed=list(played.values()))
    # No --topics: every Image and CompressedImage topic.
    play_fast(probe, bag, *(f"--remap={source}:={target}" for source, target in played.items()))
    with RecordedBag(bag) as recorded:
        for topic, target in played.items():
            recorded_msgs = [image_fields(deserialize_message(m.raw, CompressedImage))
                             for m in recorded.messages([topic])]
            assert [image_fields(m) for m in probe.messages[target]] == recorded_msgs
    received = probe.messages["/played/depth/compressedDepth"]
    assert received[0].format == "16UC1; compressedDepth png"
    assert [stamp_ns(m.header) for m in received[:4]] == [s + 2_000_000 for s in expected["stamps"]]


def test_player_errors_are_one_line(rgbd_bag_factory):
    bag, _ = rgbd_bag_factory()
    done = subprocess.run([str(PLAY), str(bag), "--topics", "/nope"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no topic /nope" in done.stderr
    assert "/cam/color (sensor_msgs/msg/Image, 6)" in done.stderr


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_node_segments_a_played_bag(rgbd_bag_factory, toy_onnx_factory, probe_factory, tmp_path,
                                    write_compressed_bag, transport):
    bag, expected = rgbd_bag_factory(storage="sqlite3")
    remaps = ["--remap", "/cam/color:=rgb/image", "--remap", "/cam/depth:=depth/image"]
    node_transport = []
    if transport == "compressed":  # the node's image_transport-named compressed inputs
        bag = write_compressed_bag(bag, tmp_path / "compressed", "sqlite3")
        remaps = ["--remap", "/cam/color/compressed:=rgb/image/compressed",
                  "--remap", "/cam/depth/compressedDepth:=depth/image/compressedDepth"]
        node_transport = ["-p", "rgb_transport:=compressed",
                          "-p", "depth_transport:=compressedDepth"]
    engine = toy_onnx_factory(48, 64, num_classes=NUM_CLASSES)
    probe = probe_factory(["/segmentation/labels"])
    node = NodeProcess(["-p", f"engine_path:={engine}", "-p", "qos:=reliable",
                        "-p", "sync_slop:=0.02", *node_transport],
                       log_path=tmp_path / "node.log")
    player = None
    try:
        assert probe.spin_until(
            lambda: probe.node.count_publishers("/segmentation/labels") > 0, timeout=60), \
            "the node did not come up"
        # The recorded pace at half speed: 200 ms between frames, far more than the toy needs.
        player = subprocess.Popen(
            [str(PLAY), str(bag), "--rate", "0.5", "--reliable", "--wait-subscribers", "1",
             "--wait-timeout", "30", "--no-progress", *remaps],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        labels = probe.messages["/segmentation/labels"]
        probe.spin_until(lambda: player.poll() is not None and len(labels) >= 4, timeout=60)
        played, err = player.communicate(timeout=10)
        assert player.returncode == 0, err
    finally:
        if player is not None and player.poll() is None:
            player.send_signal(signal.SIGINT)
            player.wait(timeout=10)
        node.stop(timeout=20)
        node_output = node.output
    # The 12 image messages were recorded over 0.602 s: at half speed, 1.2 s.
    seconds = float(re.search(r"published 12 messages in ([0-9.]+) s", played).group(1))
    assert seconds >= 1.15
    assert [stamp_ns(m.header) for m in labels] == expected["stamps"], node_output
    for msg, depth_mm in zip(labels, expected["depth_mm"]):
        assert msg.encoding == "mono8" and msg.header.frame_id == "cam_color"
        got = np.frombuffer(bytes(msg.data), np.uint8).reshape(48, 64)
        want = np.clip(np.floor(depth_mm / 1000.0), 0, NUM_CLASSES - 1).astype(np.uint8)
        np.testing.assert_array_equal(got, want)
