import array
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cen_perception.image_codec import (
    ImageCodecError,
    UnsupportedImageError,
    compressed_kind,
    decode_color,
    decode_color_message,
    decode_compressed_color,
    decode_compressed_depth,
    decode_depth,
    decode_depth_message,
    encode,
    encode_compressed_color,
    encode_compressed_depth,
    parse_compressed_format,
)

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


def test_depth_scale_is_metres_per_unit():
    units = np.array([[0, 10000, 20000], [12345, 65535, 1]], np.uint16)
    msg = raw_msg("16UC1", 2, 3, 6, units.tobytes())
    # Tenths of a millimetre (Kinect-style recordings): whole metres stay exact.
    np.testing.assert_array_equal(decode_depth(msg, scale=0.0001),
                                  np.float32([[0, 1, 2], [1.2345, 0, 0.0001]]))
    np.testing.assert_array_equal(decode_depth(msg, scale=0.001), decode_depth(msg))
    np.testing.assert_allclose(decode_depth(msg, scale=0.00025)[0, 1], 2.5, rtol=1e-7)
    metres_x10 = np.float32([[5.0, np.nan], [-1.0, 25.0]])
    decimetres = decode_depth(raw_msg("32FC1", 2, 2, 8, metres_x10.tobytes()), scale=0.1)
    np.testing.assert_array_equal(decimetres, np.float32([[0.5, 0], [0, 2.5]]))
    for bad in (0.0, -0.001, float("nan"), float("inf")):
        with pytest.raises(ImageCodecError, match="depth scale must be a positive number"):
            decode_depth(msg, scale=bad)


def test_unsupported_encodings_are_told_apart_from_damage():
    with pytest.raises(UnsupportedImageError):
        decode_color(raw_msg("yuv422", 2, 2, 4, bytes(8)))
    with pytest.raises(UnsupportedImageError):
        decode_depth(raw_msg("rgb8", 2, 2, 6, bytes(12)))
    with pytest.raises(ImageCodecError) as damaged:
        decode_color(raw_msg("rgb8", 2, 4, 12, bytes(20)))
    assert not isinstance(damaged.value, UnsupportedImageError)


# -- compressed transports ----------------------------------------------------------------------
def compressed_msg(fmt, data):
    """An object with the CompressedImage fields."""
    return SimpleNamespace(header=None, format=fmt, data=data)


def smooth_rgb(height=48, width=64):
    """A picture JPEG keeps close: gradients, no noise."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (height + width)],
                    axis=-1).astype(np.uint8)


def rosbags_type(name):
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    return store, store.types[name]


@pytest.mark.parametrize("fmt,text", [
    ("rgb8; jpeg compressed bgr8", ("rgb8", "jpeg", False)),
    ("bgr8; png compressed bgr8", ("bgr8", "png", False)),
    ("mono8; jpeg compressed ", ("mono8", "jpeg", False)),
    ("jpeg", ("", "jpeg", False)), ("png", ("", "png", False)),
    ("16UC1; compressedDepth png", ("16UC1", "png", True)),
    ("32FC1; compressedDepth rvl", ("32FC1", "rvl", True)),
    ("16UC1; compressedDepth", ("16UC1", "png", True)),  # older publishers: PNG
    ("32FC1", ("32FC1", "png", True)),  # older still: the encoding alone
    ("16UC1; png compressed ", ("16UC1", "png", False)),
])
def test_compressed_formats_parse_as_image_transport_writes_them(fmt, text):
    parsed = parse_compressed_format(fmt)
    assert (parsed.encoding, parsed.codec, parsed.depth_header) == text
    assert compressed_kind(fmt) == ("depth" if text[2] or text[0] == "16UC1" else "color")


@pytest.mark.parametrize("fmt", ["", "rgb8; tiff compressed bgr8", "h264", "bgr8; jpeg foo",
                                 "16UC1; compressedDepth zstd", "rgb8"])
def test_unknown_compressed_formats_are_refused(fmt):
    with pytest.raises(UnsupportedImageError, match="unsupported compressed image format"):
        parse_compressed_format(fmt)
    assert compressed_kind(fmt) is None
    with pytest.raises(UnsupportedImageError):
        decode_compressed_color(compressed_msg(fmt, b"\xff\xd8\xff\xd9"))
    with pytest.raises(UnsupportedImageError):
        decode_compressed_depth(compressed_msg(fmt, bytes(40)))


def test_png_colour_round_trip_is_exact_and_jpeg_is_close():
    rgb = RNG.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    msg = encode_compressed_color(rgb, "png")  # rclpy's CompressedImage by default
    from sensor_msgs.msg import CompressedImage
    assert isinstance(msg, CompressedImage) and msg.format == "rgb8; png compressed bgr8"
    out = decode_compressed_color(msg)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)

    smooth = smooth_rgb()
    msg = encode_compressed_color(smooth, "jpeg", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    assert bytes(msg.data[:2]) == b"\xff\xd8"
    out = decode_compressed_color(msg)
    assert out.shape == smooth.shape
    # Close, and colours not swapped (a swap would cost ~60 levels on this picture).
    assert np.abs(out.astype(int) - smooth).mean() < 2.0


def test_compressed_colour_channel_counts_and_rosbags_messages():
    store, cls = rosbags_type("sensor_msgs/msg/CompressedImage")
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=7, nanosec=8), frame_id="cam")
    rgb = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    msg = encode_compressed_color(rgb, "png", header=header, msg_cls=cls)
    back = store.deserialize_cdr(store.serialize_cdr(msg, cls.__msgtype__), cls.__msgtype__)
    assert back.header.frame_id == "cam" and back.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode_compressed_color(back), rgb)

    grey = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    msg = encode_compressed_color(grey, "png", msg_cls=cls)
    assert msg.format == "mono8; png compressed mono8"
    np.testing.assert_array_equal(decode_compressed_color(msg), np.repeat(grey[:, :, None], 3, 2))
    # BGRA PNG (what the plugin writes for images with alpha), older plain format string.
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    data = cv2.imencode(".png", bgra)[1].tobytes()
    np.testing.assert_array_equal(decode_compressed_color(compressed_msg("png", data)), rgb)
    for container in (bytes, bytearray, lambda b: array.array("B", b), list):
        np.testing.assert_array_equal(
            decode_compressed_color(compressed_msg("bgra8; png compressed bgra8",
                                                   container(data))), rgb)


def test_damaged_compressed_colour_raises_codec_errors():
    data = encode_compressed_color(smooth_rgb(), "jpeg").data.tobytes()
    cases = {
        "has no data": b"",
        "without its end-of-image marker": data[:len(data) * 3 // 4],
        "does not decode": b"\x00\x01garbage" * 20,
    }
    for match, payload in cases.items():
        with pytest.raises(ImageCodecError, match=match) as error:
            decode_compressed_color(compressed_msg("rgb8; jpeg compressed bgr8", payload))
        assert not isinstance(error.value, UnsupportedImageError)
    png = encode_compressed_color(smooth_rgb(), "png").data.tobytes()
    with pytest.raises(ImageCodecError, match="does not decode"):
        decode_compressed_color(compressed_msg("rgb8; png compressed bgr8", png[:len(png) // 2]))
    # A 16-bit PNG is depth, not colour; so is a compressedDepth message.
    deep = cv2.imencode(".png", np.ones((4, 4), np.uint16))[1].tobytes()
    with pytest.raises(UnsupportedImageError, match="colour must be 8-bit"):
        decode_compressed_color(compressed_msg("png", deep))
    with pytest.raises(UnsupportedImageError, match="is a depth image"):
        decode_compressed_color(compressed_msg("16UC1; compressedDepth png", deep))


def test_compressed_depth_16uc1_layout_and_exact_round_trip():
    mm = RNG.integers(1, 9000, (24, 32), dtype=np.uint16)
    mm[RNG.random(mm.shape) < 0.2] = 0
    mm[0, :4] = (10000, 10001, 65535, 2000)  # beyond the publisher's depth_max of 10 m
    msg = encode_compressed_depth(mm, "16UC1")
    assert msg.format == "16UC1; compressedDepth png"
    data = bytes(msg.data)
    # ConfigHeader: int32 format (0 = INV_DEPTH), float32 depthParam[2] (unused for 16UC1).
    assert data[:12] == bytes(12)
    assert data[12:20] == b"\x89PNG\r\n\x1a\n"
    stored = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and stored[0, 0] == 10000 and stored[0, 1] == 0
    expected = mm.copy()
    expected[0, 1:3] = 0
    np.testing.assert_array_equal(stored, expected)
    depth = decode_compressed_depth(msg)
    assert depth.dtype == np.float32 and depth.shape == (24, 32)
    np.testing.assert_array_equal(depth, expected / np.float32(1000))
    assert depth[0, 3] == 2.0 and depth[0, 0] == 10.0
    # 65535 that reaches a reader (a publisher with a larger depth_max) is invalid.
    msg = encode_compressed_depth(mm, "16UC1", depth_max=70.0)
    assert decode_compressed_depth(msg)[0, 2] == 0 and decode_compressed_depth(msg)[0, 1] == 10.001
    # Tenths of a millimetre.
    np.testing.assert_array_equal(decode_compressed_depth(msg, scale=0.0001)[0, :4],
                                  np.float32([1.0, 1.0001, 0, 0.2]))


def test_compressed_depth_32fc1_quantization():
    metres = RNG.uniform(0.3, 9.99, (20, 30)).astype(np.float32)
    metres[0, :5] = (np.nan, 0.0, -1.0, 10.0, np.inf)
    msg = encode_compressed_depth(metres, "32FC1")
    assert msg.format == "32FC1; compressedDepth png"
    data = bytes(msg.data)
    fmt, a, b = np.frombuffer(data[:4], "<i4")[0], *np.frombuffer(data[4:12], "<f4")
    # The publisher's defaults: depth_quantization z0 = 100, depth_max = 10 m.
    assert fmt == 0 and a == np.float32(100 * 101) and b == np.float32(1 - 10100 / 10.0)
    stored = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16
    assert stored[1, 1] == np.uint16(np.float32(a) / metres[1, 1] + np.float32(b))
    depth = decode_compressed_depth(msg)
    np.testing.assert_array_equal(depth[0, :5], 0)
    valid = np.ones(metres.shape, bool)
    valid[0, :5] = False
    got, want = depth[valid], metres[valid]
    # Truncated inverse depth: the decoded depth lies at or beyond the true one, by less than
    # one quantization step (d * d' / a).
    assert (got >= want * (1 - 1e-6)).all()
    assert (got - want <= got * want / a * 1.001 + 1e-6).all()
    assert np.abs(got - want).max() < 0.011
    np.testing.assert_allclose(decode_compressed_depth(msg, scale=2.0)[valid], 2 * got, rtol=1e-6)


def test_rvl_matches_the_published_algorithm():
    # Pixels 0 0 5 6: values zeros=2, nonzeros=2, zig-zag deltas 10 (5) and 2 (+1); nibbles
    # 2, 2, 0xA 1 (10 = 2 | 1 << 3, low bits first), 2, packed from a word's top nibble down.
    from cen_perception.image_codec import _rvl_encode

    assert _rvl_encode(np.uint16([0, 0, 5, 6])) == bytes.fromhex("0020a122")
    mm = np.uint16([[0, 0, 5, 6]])
    msg = encode_compressed_depth(mm, "16UC1", codec="rvl")
    assert msg.format == "16UC1; compressedDepth rvl"
    assert bytes(msg.data) == bytes(12) + (4).to_bytes(4, "little") + (1).to_bytes(4, "little") \
        + bytes.fromhex("0020a122")
    np.testing.assert_array_equal(decode_compressed_depth(msg), np.float32([[0, 0, 0.005, 0.006]]))


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (48, 64), (120, 160)])
def test_rvl_round_trips(shape):
    mm = RNG.integers(1, 65535, shape, dtype=np.uint16)
    mm[RNG.random(shape) < 0.3] = 0
    if shape[0] > 3:
        mm[:2] = 0  # long zero runs and a dense block
        mm[-1, :] = 0
        mm[2, :] = np.arange(shape[1]) * 997 % 65535 + 1
        mm[3, :] = 65534  # big jumps
    for depth_max in (70.0,):
        msg = encode_compressed_depth(mm, "16UC1", codec="rvl", depth_max=depth_max)
        want = mm / np.float32(1000)
        np.testing.assert_array_equal(decode_compressed_depth(msg), want)
    metres = np.where(mm > 0, mm / np.float32(7000) + np.float32(0.3), 0).astype(np.float32)
    png = decode_compressed_depth(encode_compressed_depth(metres, "32FC1"))
    rvl = decode_compressed_depth(encode_compressed_depth(metres, "32FC1", codec="rvl"))
    np.testing.assert_array_equal(rvl, png)
    for fill in (0, 1234):  # all zeros, all equal
        flat = np.full(shape, fill, np.uint16)
        msg = encode_compressed_depth(flat, "16UC1", codec="rvl")
        np.testing.assert_array_equal(decode_compressed_depth(msg), flat / np.float32(1000))


def test_damaged_compressed_depth_raises_codec_errors():
    mm = RNG.integers(1, 5000, (16, 16), dtype=np.uint16)
    good = bytes(encode_compressed_depth(mm).data)
    png = good[12:]
    fmt16 = "16UC1; compressedDepth png"
    cases = [
        (fmt16, b"", "has no data"),
        (fmt16, good[:12], "too short for the 12-byte compressedDepth header"),
        (fmt16, b"\x07\x00\x00\x00" + good[4:], r"bad compressedDepth header \(format 7"),
        (fmt16, png, "the data starts with a PNG, but compressedDepth puts a 12-byte header"),
        (fmt16, good[:12] + b"not a png at all", "the image data is not a PNG"),
        (fmt16, good[:len(good) // 2], "does not decode"),
        (fmt16, good[:12] + cv2.imencode(".png", np.ones((4, 4), np.uint8))[1].tobytes(),
         "expected 16-bit grey"),
        ("32FC1; compressedDepth png", bytes(4) + np.float32([np.nan, 1]).tobytes() + png,
         "depth quantization"),
    ]
    rvl = bytes(encode_compressed_depth(mm, codec="rvl").data)
    cases += [
        ("16UC1; compressedDepth rvl", rvl[:16], "too short for its size header"),
        ("16UC1; compressedDepth rvl", rvl[:20] + bytes(0), "RVL"),
        ("16UC1; compressedDepth rvl", rvl[:len(rvl) // 2], "RVL stream ends"),
        ("16UC1; compressedDepth rvl", rvl[:12] + bytes(8) + rvl[20:], "impossible size 0x0"),
        ("16UC1; compressedDepth rvl", rvl[:12] + (16).to_bytes(4, "little")
         + (15).to_bytes(4, "little") + rvl[20:], "overflow"),
    ]
    for fmt, data, match in cases:
        with pytest.raises(ImageCodecError, match=match) as error:
            decode_compressed_depth(compressed_msg(fmt, data))
        assert not isinstance(error.value, UnsupportedImageError), match
    # Colour on a depth topic is the wrong kind of image, not damage.
    jpeg = encode_compressed_color(smooth_rgb(), "jpeg")
    with pytest.raises(UnsupportedImageError, match="unsupported depth encoding 'rgb8'"):
        decode_compressed_depth(jpeg)
    with pytest.raises(UnsupportedImageError, match="must come as compressedDepth"):
        decode_compressed_depth(compressed_msg("16UC1; jpeg compressed ", png))


def test_plain_16bit_png_from_the_compressed_plugin_is_depth():
    mm = RNG.integers(0, 8000, (8, 9), dtype=np.uint16)
    mm[0, 0] = 65535
    data = cv2.imencode(".png", mm)[1].tobytes()
    depth = decode_compressed_depth(compressed_msg("16UC1; png compressed ", data))
    expected = mm / np.float32(1000)
    expected[0, 0] = 0
    np.testing.assert_array_equal(depth, expected)


def test_message_dispatch_by_type():
    rgb = smooth_rgb(6, 8)
    mm = np.full((6, 8), 1500, np.uint16)
    np.testing.assert_array_equal(decode_color_message(encode(rgb, "rgb8")), rgb)
    np.testing.assert_array_equal(decode_color_message(encode_compressed_color(rgb, "png")), rgb)
    np.testing.assert_array_equal(decode_depth_message(encode(mm, "16UC1")), 1.5)
    np.testing.assert_array_equal(decode_depth_message(encode_compressed_depth(mm)), 1.5)
    np.testing.assert_array_equal(decode_depth_message(encode_compressed_depth(mm), 0.0001),
                                  np.float32(0.15))
    store, cls = rosbags_type("sensor_msgs/msg/CompressedImage")
    np.testing.assert_array_equal(
        decode_depth_message(encode_compressed_depth(mm, msg_cls=cls)), 1.5)


@pytest.mark.parametrize("call,match", [
    (lambda: encode_compressed_color(np.zeros((4, 4, 3), np.uint8), "webp"), "cannot compress"),
    (lambda: encode_compressed_color(np.zeros((4, 4, 4), np.uint8)), r"uint8 \[H, W, 3\]"),
    (lambda: encode_compressed_color(np.zeros((0, 4, 3), np.uint8)), "zero size"),
    (lambda: encode_compressed_depth(np.zeros((4, 4), np.float32), "16UC1"), r"uint16 \[H, W\]"),
    (lambda: encode_compressed_depth(np.zeros((4, 4), np.uint16), "mono16"), "cannot compress"),
    (lambda: encode_compressed_depth(np.zeros((4, 4), np.uint16), codec="zstd"),
     "cannot compress depth with 'zstd'"),
])
def test_compressed_encoders_reject_wrong_input(call, match):
    with pytest.raises(ImageCodecError, match=match):
        call()


def test_real_frames_through_compressed_transports(samples_dir):
    bgr = cv2.imread(str(samples_dir / "nyuv2_frame0" / "rgb.jpg"), cv2.IMREAD_COLOR)
    mm = cv2.imread(str(samples_dir / "nyuv2_frame0" / "depth.png"), cv2.IMREAD_UNCHANGED)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decode_compressed_color(encode_compressed_color(rgb, "png")),
                                  rgb)
    jpeg = decode_compressed_color(encode_compressed_color(rgb, "jpeg", quality=95))
    assert np.abs(jpeg.astype(int) - rgb).mean() < 3
    for codec in ("png", "rvl"):
        depth = decode_compressed_depth(encode_compressed_depth(mm, codec=codec))
        np.testing.assert_array_equal(depth, decode_depth(encode(mm, "16UC1")))
