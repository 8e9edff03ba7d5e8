"""Hostile camera messages between good frames, into a real node process: it stays alive,
labels keep coming, every bad message is counted, and its memory does not grow.

The messages come from ``test/hostile_messages.py`` (every encoding and codec, raw and
compressed: random bytes, truncations, corrupted bytes, sizes that lie in their headers)."""
import array
import time

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from cen_perception.image_codec import encode, encode_compressed_color, encode_compressed_depth
from cen_perception_dev.node_bench import rss_mb
from cen_perception_dev.rig import values_of

from hostile_messages import good_messages, hostile_compressed, hostile_raw, rvl_words

H, W = 24, 32          # the size of hostile_messages' sources
HOSTILE = 1000
GOOD_EVERY = 25        # a good pair after this many hostile messages
UINT32 = (0, 2**32 - 1)


def is_depth(kind, msg) -> bool:
    return msg.encoding in ("16UC1", "32FC1") if kind == "raw" else "compressedDepth" in msg.format


def as_ros(kind, msg, header):
    """The hostile message as the rclpy message a camera would send (None if its fields do not
    even fit the message type)."""
    if kind == "compressed":
        return CompressedImage(header=header, format=msg.format,
                               data=array.array("B", bytes(msg.data)))
    fields = (msg.height, msg.width, msg.step)
    if not all(UINT32[0] <= value <= UINT32[1] for value in fields):
        return None
    image = Image(header=header, height=msg.height, width=msg.width, encoding=msg.encoding,
                  is_bigendian=msg.is_bigendian, step=msg.step)
    image.data = array.array("B", bytes(msg.data))
    return image


def good_pair(harness, transport, toy_labels):
    header = harness.header()
    rgb = np.full((H, W, 3), 120, np.uint8)
    depth = np.full((H, W), 1.5, np.float32)
    if transport == "raw":
        return encode(rgb, "rgb8", header), encode(depth, "32FC1", header)
    return (encode_compressed_color(rgb, "jpeg", header=header),
            encode_compressed_depth(depth, "32FC1", header=header, codec="rvl"))


def start(start_node, engine, transport):
    args = ["-p", f"engine_path:={engine}", "-p", "qos:=reliable", "-p", "depth_timeout:=0.0",
            "-p", "diagnostics_period:=0.25"]
    camera = {}
    if transport == "compressed":
        args += ["-p", "rgb_transport:=compressed", "-p", "depth_transport:=compressedDepth"]
        camera = dict(rgb_transport="compressed", depth_transport="compressedDepth")
    proc, harness = start_node(*args, **camera)
    harness.subscribe("labels")
    harness.wait_connected(proc)
    return proc, harness


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_a_thousand_hostile_messages_between_good_frames(start_node, toy_onnx_factory,
                                                           transport):
    proc, harness = start(start_node, str(toy_onnx_factory(H, W, num_classes=3)), transport)
    for _ in range(5):                         # warm up before the memory is read
        harness.send_pair(*good_pair(harness, transport, None))
    rss_before = rss_mb(proc.pid)
    rng = np.random.default_rng(2026)
    sources = [(kind, msg) for kind, msg in good_messages() if kind == transport]
    sent, answered, started = 0, 0, time.perf_counter()
    while sent < HOSTILE:
        kind, msg = sources[rng.integers(len(sources))]
        hostile = as_ros(kind, hostile_raw(msg, rng) if kind == "raw"
                         else hostile_compressed(msg, rng), harness.header())
        if hostile is None:
            continue
        harness.publish(**{("depth_msg" if is_depth(kind, msg) else "rgb_msg"): hostile})
        harness.pause(0.002)                   # a fast camera, within the history it keeps
        sent += 1
        if sent % GOOD_EVERY == 0:             # labels must keep coming in between
            out = harness.send_pair(*good_pair(harness, transport, None), timeout=10)
            assert np.all(np.frombuffer(out["labels"].data, np.uint8) == 1)
            answered += 1
    seconds = time.perf_counter() - started
    harness.pause(0.5)
    status = harness.latest_status()
    values = values_of(status)
    growth = rss_mb(proc.pid) - rss_before
    received = int(values["rgb_received"]) + int(values["depth_received"])
    print(f"\n{transport}: {sent} hostile messages and {answered} good pairs in {seconds:.1f} s; "
          f"{received} messages received, {values['bad_messages']} counted bad, "
          f"{values['frames_processed']} frames; "
          f"resident memory {rss_before:.0f} -> {rss_before + growth:.0f} MB")
    assert proc.alive() and answered == HOSTILE // GOOD_EVERY
    assert int(values["bad_messages"]) >= HOSTILE // 2
    assert values["stage_restarts"] == "0"
    assert growth < 50, growth


def test_small_rvl_messages_claiming_46000_squared_cost_no_memory_and_no_frames(
        start_node, toy_onnx_factory):
    proc, harness = start(start_node, str(toy_onnx_factory(H, W, num_classes=3)), "compressed")
    for _ in range(5):
        harness.send_pair(*good_pair(harness, "compressed", None))
    rss_before = rss_mb(proc.pid)
    bomb = bytes(12) + struct_rvl_header(46000, 46000) + rvl_words([46000 * 46000, 0])
    for _ in range(20):     # at 15 Hz: each bomb, then a good pair one frame period later
        header = harness.header()
        rgb, _ = good_pair(harness, "compressed", None)
        rgb.header = header
        harness.publish(rgb, CompressedImage(header=header, format="16UC1; compressedDepth rvl",
                                             data=array.array("B", bomb)))
        harness.pause(1 / 15)
        out = harness.send_pair(*good_pair(harness, "compressed", None), timeout=10)
        assert np.all(np.frombuffer(out["labels"].data, np.uint8) == 1)
    status = harness.latest_status(lambda v: int(v["bad_messages"]) >= 20)
    assert "header claims 46000x46000" in values_of(status)["last_bad_message"]
    assert rss_mb(proc.pid) - rss_before < 50 and proc.alive()


def struct_rvl_header(width, height):
    return width.to_bytes(4, "little") + height.to_bytes(4, "little")
