"""Bad input never stops the node: it is dropped, counted, logged, and good pairs still flow."""
import signal

import numpy as np
import pytest
from sensor_msgs.msg import Image

from cen_perception.image_codec import encode

H, W = 48, 64
RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def node(start_node, config_file, toy_onnx_factory):
    proc, harness = start_node("--params-file", str(config_file),
                               "-p", f"engine_path:={toy_onnx_factory(H, W, num_classes=3)}",
                               "-p", "qos:=reliable", "-p", "diagnostics_period:=0.2",
                               # colour waits for depth here (no colour-only frames)
                               "-p", "depth_timeout:=0.0")
    harness.subscribe("labels")
    harness.wait_connected(proc)
    return proc, harness


def good_pair(harness, depth_m=None):
    header = harness.header()
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = RNG.random((H, W), dtype=np.float32) * 3.5 if depth_m is None else depth_m
    return encode(rgb, "rgb8", header), encode(depth, "32FC1", header), depth


def assert_still_publishing(proc, harness, toy_labels):
    rgb_msg, depth_msg, depth = good_pair(harness)
    out = harness.send_pair(rgb_msg, depth_msg)
    labels = np.frombuffer(out["labels"].data, np.uint8).reshape(H, W)
    np.testing.assert_array_equal(labels, toy_labels(depth))
    assert proc.alive()


def raw_image(harness, encoding, height, width, step, size):
    msg = Image(header=harness.header(), height=height, width=width, encoding=encoding, step=step)
    msg.data = bytes(size)
    return msg


def test_bad_messages_are_dropped_counted_and_logged(node, toy_labels):
    proc, harness = node
    bad_rgb = [
        raw_image(harness, "yuv422", H, W, W * 2, H * W * 2),     # unsupported encoding
        raw_image(harness, "rgb8", H, W, W * 3, H * W * 3 - 10),  # short buffer
        raw_image(harness, "rgb8", 0, 0, 0, 0),                   # zero size
        raw_image(harness, "bgr8", H, W, W, H * W),               # step too small
    ]
    bad_depth = [
        raw_image(harness, "rgb8", H, W, W * 3, H * W * 3),       # colour on the depth topic
        raw_image(harness, "16UC1", H, W, W * 2, 100),            # short buffer
        raw_image(harness, "32FC1", 0, W, W * 4, 0),              # zero size
    ]
    for msg in bad_rgb:
        harness.publish(rgb_msg=msg)
    for msg in bad_depth:
        harness.publish(depth_msg=msg)
    total = len(bad_rgb) + len(bad_depth)
    status = harness.latest_status(lambda v: int(v["bad_messages"]) == total)
    assert status.level == status.WARN and "bad input" in status.message
    assert_still_publishing(proc, harness, toy_labels)
    logged = proc.output.count("dropped a bad")
    assert 1 <= logged < total, proc.output  # logged, but throttled
    # The two topics arrive in any order, so any of the reasons may be the one logged.
    reasons = ("unsupported colour encoding 'yuv422'", "unsupported depth encoding 'rgb8'",
               "data holds", "zero size", "is smaller than")
    assert any(reason in proc.output for reason in reasons), proc.output
    values = {kv.key: kv.value for kv in status.values}
    assert values["last_bad_message"].startswith(("rgb: ", "depth: ")), values


def test_nan_inf_and_negative_depth_are_invalid(node, toy_labels):
    proc, harness = node
    depth = np.full((H, W), 2.5, np.float32)
    depth[:10] = np.nan
    depth[10:20] = np.inf
    depth[20:30] = -np.inf
    depth[30:35] = -1.0
    rgb_msg, depth_msg, _ = good_pair(harness, depth)
    labels = np.frombuffer(harness.send_pair(rgb_msg, depth_msg)["labels"].data, np.uint8)
    labels = labels.reshape(H, W)
    assert (labels[:35] == 0).all() and (labels[35:] == 2).all()


def test_depth_of_another_size_is_resized_with_one_warning(node, toy_labels):
    proc, harness = node
    for _ in range(2):
        header = harness.header()
        half = RNG.random((H // 2, W // 2), dtype=np.float32) * 3.5
        rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
        out = harness.send_pair(encode(rgb, "rgb8", header), encode(half, "32FC1", header))
        labels = np.frombuffer(out["labels"].data, np.uint8).reshape(H, W)
        expected = np.repeat(np.repeat(toy_labels(half), 2, axis=0), 2, axis=1)
        np.testing.assert_array_equal(labels, expected)
    assert proc.output.count("resizing depth") == 1, proc.output


def test_one_stream_silent_then_recovering(node, toy_labels):
    proc, harness = node
    start = len(harness.statuses)
    before = int({kv.key: kv.value for kv in harness.latest_status().values}["sync_rgb_unmatched"])
    sent = []
    for _ in range(15):
        header = harness.header()
        sent.append((header.stamp.sec, 0))
        harness.publish(rgb_msg=encode(np.zeros((H, W, 3), np.uint8), "rgb8", header))
        harness.spin_until(lambda: False, timeout=0.02)  # a camera's pace, not a burst
    # sync_queue_size (10) frames wait for a partner, the rest are dropped as unmatched.
    harness.latest_status(lambda v: int(v["sync_rgb_unmatched"]) >= before + 5)
    assert harness.spin_until(
        lambda: any(s.message == "no depth images" for s in harness.statuses[start:]))
    assert not any(key in harness.received["labels"] for key in sent)
    assert_still_publishing(proc, harness, toy_labels)


def test_sigterm_stops_the_node_cleanly(node):
    proc, harness = node
    assert proc.stop(signal.SIGTERM) == 0, proc.output
    assert "Traceback" not in proc.output
