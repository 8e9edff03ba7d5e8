import array
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cen_perception.image_codec import ImageCodecError, decode_color, decode_depth, encode

RNG = np.random.default_rng(0)


def raw_msg(encoding, height, width, step, data, is_bigendian=0):
    """An object with the Image fields, as any ROS or rosbags message has them."""
    return SimpleNamespace(header=None, height=height, width=width, encoding=encoding,
                           is_bigendian=is_bigendian, step=step, data=data)


def padded(pixels: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Rows of ``pixels`` (uint8 [H, W*C]) followed by ``pad`` junk bytes each."""
    rows = pixels.reshape(pixels.shape[0], -1)
    junk = np.full((rows.shape[0], pad), 0xAB, np.uint8)
    return np.hstack([rows, junk]).tobytes(), rows.shape[1] + pad


@pytest.mark.parametrize("container", [bytes, bytearray, lambda b: array.array("B", b),
                                       lambda b: list(b), lambda b: np.frombuffer(b, np.uint8)])
def test_rgb8_from_every_data_container(container):
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = decode_color(raw_msg("rgb8", 5, 7, 21, container(rgb.tobytes())))
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_color_decodes_are_views_that_skip_step_padding():
    rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    data, step = padded(rgb, pad=9)
    buffer = bytearray(data)
    out = decode_color(raw_msg("rgb8", 6, 5, step, buffer))
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(buffer, np.uint8))

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    data, step = padded(bgr, pad=3)
    buffer = bytearray(data)
    out = decode_color(raw_msg("bgr8", 6, 5, step, buffer))
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(buffer, np.uint8))


@pytest.mark.parametrize("encoding,convert", [
    ("rgba8", cv2.COLOR_RGB2RGBA), ("bgra8", cv2.COLOR_RGB2BGRA), ("mono8", cv2.COLOR_RGB2GRAY)])
def test_four_channel_and_mono(encoding, convert):
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    pixels = cv2.cvtColor(rgb, convert)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    out = decode_color(raw_msg(encoding, 4, 6, 6 * channels, pixels.tobytes()))
    assert out.shape == (4, 6, 3)
    if encoding == "mono8":
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], pixels)
    else:
        np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding,convert,pad", [
    ("rgb8", None, 0), ("rgb8", None, 5), ("bgr8", cv2.COLOR_RGB2BGR, 2),
    ("rgba8", cv2.COLOR_RGB2RGBA, 0), ("bgra8", cv2.COLOR_RGB2BGRA, 4),
    ("mono8", cv2.COLOR_RGB2GRAY, 3)])
def test_contiguous_decode_equals_the_view(encoding, convert, pad):
    rgb = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    pixels = rgb if convert is None else cv2.cvtColor(rgb, convert)
    data, step = padded(pixels.reshape(7, -1), pad)
    msg = raw_msg(encoding, 7, 9, step, data)
    out = decode_color(msg, contiguous=True)
    assert out.flags.c_contiguous and out.shape == (7, 9, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, decode_color(msg))


def test_depth_16uc1_millimetres_to_metres_with_invalid_values():
    mm = np.array([[0, 1000, 2000], [1799, 65535, 3616]], np.uint16)
    depth = decode_depth(raw_msg("16UC1", 2, 3, 6, mm.tobytes()))
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    # Whole metres come out exact, which label thresholds rely on.
    np.testing.assert_array_equal(depth, np.float32([[0, 1, 2], [1.799, 0, 3.616]]))


def test_depth_big_endian_and_step_padding():
    mm = RNG.integers(1, 60000, (3, 4), dtype=np.uint16)
    big = mm.astype(">u2")
    data, step = padded(big.view(np.uint8).reshape(3, -1), pad=4)
    depth = decode_depth(raw_msg("16UC1", 3, 4, step, data, is_bigendian=1))
    np.testing.assert_array_equal(depth, (mm / 1000.0).astype(np.float32))

    metres = RNG.random((3, 4), dtype=np.float32) * 5
    depth = decode_depth(raw_msg("32FC1", 3, 4, 16, metres.astype(">f4").tobytes(), 1))
    np.testing.assert_array_equal(depth, metres)


def test_depth_32fc1_non_finite_and_negative_become_zero():
    metres = np.float32([[np.nan, np.inf, -np.inf], [-0.5, 0.25, 7.0]])
    data = metres.tobytes()
    depth = decode_depth(raw_msg("32FC1", 2, 3, 12, data))
    np.testing.assert_array_equal(depth, np.float32([[0, 0, 0], [0, 0.25, 7.0]]))
    assert np.isnan(np.frombuffer(data, np.float32)[0]), "the message buffer must stay untouched"


@pytest.mark.parametrize("msg,match", [
    (raw_msg("yuv422", 2, 2, 4, bytes(8)), "unsupported colour encoding 'yuv422'"),
    (raw_msg("rgb8", 0, 4, 12, b""), r"rgb8 image has zero size \(4x0\)"),
    (raw_msg("rgb8", 2, 4, 12, bytes(20)),
     r"data holds 20 bytes, expected height \* step = 2 \* 12 = 24"),
    (raw_msg("bgr8", 2, 4, 10, bytes(20)), "step 10 is smaller than width \\* 3 bytes = 12"),
])
def test_bad_colour_messages_are_named_clearly(msg, match):
    with pytest.raises(ImageCodecError, match=match):
        decode_color(msg)


@pytest.mark.parametrize("msg,match", [
    (raw_msg("rgb8", 2, 2, 6, bytes(12)), "unsupported depth encoding 'rgb8'"),
    (raw_msg("16UC1", 3, 0, 0, b""), "zero size"),
    (raw_msg("32FC1", 2, 2, 8, bytes(15)), "data holds 15 bytes"),
    (raw_msg("16UC1", 2, 2, 3, bytes(6)), "step 3 is smaller than width \\* 2 bytes = 4"),
])
def test_bad_depth_messages_are_named_clearly(msg, match):
    with pytest.raises(ImageCodecError, match=match):
        decode_depth(msg)


def test_codec_error_is_a_value_error():
    assert issubclass(ImageCodecError, ValueError)


def test_encode_rclpy_round_trip_keeps_header():
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    rgb = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    msg = encode(rgb, "rgb8", header=header)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (4, 5, 15, "rgb8")
    assert msg.header.frame_id == "camera_color_optical_frame" and msg.header.stamp.nanosec == 345
    np.testing.assert_array_equal(decode_color(msg), rgb)

    labels = RNG.integers(0, 256, (4, 5), dtype=np.uint8)
    np.testing.assert_array_equal(decode_color(encode(labels, "mono8"))[:, :, 1], labels)
    metres = np.float32([[0.5, 1.25], [3.0, 0.0]])
    msg = encode(metres, "32FC1")
    assert msg.step == 8 and msg.is_bigendian == int(sys.byteorder == "big")
    np.testing.assert_array_equal(decode_depth(msg), metres)
    # A non-contiguous view encodes its pixels, not its memory.
    np.testing.assert_array_equal(decode_color(encode(rgb[:, ::2], "rgb8")), rgb[:, ::2])


def test_encode_rosbags_message_survives_cdr():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    image_cls = store.types["sensor_msgs/msg/Image"]
    mm = RNG.integers(0, 65535, (6, 8), dtype=np.uint16)
    msg = encode(mm, "16UC1", msg_cls=image_cls)
    assert msg.header.frame_id == "" and msg.step == 16
    raw = store.serialize_cdr(msg, image_cls.__msgtype__)
    back = store.deserialize_cdr(raw, image_cls.__msgtype__)
    assert isinstance(back.data, np.ndarray)
    expected = (mm / 1000.0).astype(np.float32)
    expected[mm == 65535] = 0
    np.testing.assert_array_equal(decode_depth(back), expected)

    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="cam")
    bgr = RNG.integers(0, 256, (3, 2, 3), dtype=np.uint8)
    msg = encode(bgr, "bgr8", header=header, msg_cls=image_cls)
    back = store.deserialize_cdr(store.serialize_cdr(msg, image_cls.__msgtype__),
                                 image_cls.__msgtype__)
    assert back.header.frame_id == "cam" and back.header.stamp.sec == 3
    np.testing.assert_array_equal(decode_color(back), bgr[:, :, ::-1])


@pytest.mark.parametrize("image,encoding,match", [
    (np.zeros((4, 4), np.float32), "mono8",
     r"mono8 needs a uint8 \[H, W\] array, got float32\[4, 4\]"),
    (np.zeros((4, 4, 4), np.uint8), "rgb8", r"rgb8 needs a uint8 \[H, W, 3\] array"),
    (np.zeros((0, 4), np.uint16), "16UC1", "zero size"),
    (np.zeros((2, 2), np.uint8), "yuv422", "cannot encode 'yuv422'"),
])
def test_encode_rejects_wrong_arrays(image, encoding, match):
    with pytest.raises(ImageCodecError, match=match):
        encode(image, encoding)


def test_real_frames_round_trip(samples_dir):
    for folder, rgb_name in (("nyuv2_frame0", "rgb.jpg"), ("esanet_kinect", "rgb.png")):
        bgr = cv2.imread(str(samples_dir / folder / rgb_name), cv2.IMREAD_COLOR)
        mm = cv2.imread(str(samples_dir / folder / "depth.png"), cv2.IMREAD_UNCHANGED)
        rgb = decode_color(encode(bgr, "bgr8"))
        np.testing.assert_array_equal(rgb, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        depth = decode_depth(encode(mm, "16UC1"))
        valid = (mm > 0) & (mm < 65535)
        np.testing.assert_allclose(depth[valid], mm[valid] / 1000.0, rtol=1e-6)
        assert (depth[~valid] == 0).all()
    assert (~valid).sum() > 1000, "the Kinect frame has 0 and 65535 invalid pixels"
