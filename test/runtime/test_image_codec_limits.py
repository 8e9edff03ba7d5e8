"""Decoded-size limits and hostile bytes: every decoder reads the size before it allocates."""
import resource
import struct
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from cen_perception.image_codec import (
    MAX_IMAGE_PIXELS,
    ImageCodecError,
    decode_color,
    decode_color_message,
    decode_compressed_color,
    decode_compressed_depth,
    decode_depth,
    decode_depth_message,
    encode,
    encode_compressed_color,
    encode_compressed_depth,
)

from hostile_messages import (
    compressed_msg,
    good_messages,
    hostile_compressed,
    hostile_raw,
    jpeg_frame_offset,
    jpeg_with_size,
    png_with_size,
    raw_msg,
    rvl_words,
    smooth_rgb,
)

RVL_46000 = "16UC1; compressedDepth rvl"


def traced_peak(call):
    """(result or exception, peak bytes traced by tracemalloc, maxrss growth in bytes)."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        outcome = call()
    except Exception as exc:
        outcome = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return outcome, peak, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024


@pytest.mark.parametrize("stream", [
    rvl_words([46000 * 46000, 0]),  # the whole image as one run of zeros: 28 bytes in all
    struct.pack("<I", 0x00000000),  # one word, a run cut short: 24 bytes in all
])
def test_small_rvl_message_claiming_46000_squared_is_refused_without_allocating(stream):
    msg = compressed_msg(RVL_46000, bytes(12) + struct.pack("<II", 46000, 46000) + stream)
    outcome, peak, rss_growth = traced_peak(lambda: decode_compressed_depth(msg))
    assert isinstance(outcome, ImageCodecError)
    assert str(outcome) == (f"compressed depth '{RVL_46000}': RVL header claims 46000x46000 "
                            f"(2116000000 pixels), over the limit of {MAX_IMAGE_PIXELS} pixels")
    assert peak < 1_000_000 and rss_growth < 5_000_000
    # The same message decodes under a limit that allows it: the stream itself is sound.
    small = compressed_msg(RVL_46000, bytes(12) + struct.pack("<II", 460, 46)
                           + rvl_words([460 * 46, 0]))
    assert not decode_compressed_depth(small).any()


def test_default_limit_covers_4096x3072_and_not_one_pixel_more():
    assert MAX_IMAGE_PIXELS == 4096 * 3072
    limit = 64 * 48
    msg = encode(np.zeros((48, 64), np.uint16), "16UC1")
    assert decode_depth(msg, max_pixels=limit).shape == (48, 64)
    with pytest.raises(ImageCodecError, match=r"16UC1 image is 64x48 \(3072 pixels\), over the "
                                              r"limit of 3071 pixels"):
        decode_depth(msg, max_pixels=limit - 1)
    rgb = smooth_rgb(48, 64)
    for msg in (encode(rgb, "rgb8"), encode_compressed_color(rgb, "png"),
                encode_compressed_color(rgb, "jpeg")):
        assert decode_color_message(msg, max_pixels=limit).shape == (48, 64, 3)
        with pytest.raises(ImageCodecError, match="over the limit of 3071 pixels"):
            decode_color_message(msg, max_pixels=limit - 1)


def test_png_header_lies_are_refused_before_decoding(capfd):
    png = bytes(encode_compressed_color(smooth_rgb(), "png").data)
    lie = png_with_size(png, 30000, 30000)
    outcome, peak, rss_growth = traced_peak(
        lambda: decode_compressed_color(compressed_msg("rgb8; png compressed bgr8", lie)))
    assert isinstance(outcome, ImageCodecError), outcome
    assert "header claims 30000x30000 (900000000 pixels), over the limit" in str(outcome)
    assert peak < 1_000_000 and rss_growth < 5_000_000
    depth = bytes(encode_compressed_depth(np.arange(768, dtype=np.uint16).reshape(24, 32)).data)
    lie = depth[:12] + png_with_size(depth[12:], 70000, 2)
    with pytest.raises(ImageCodecError, match=r"PNG header claims 70000x2 \(140000 pixels\), "
                                              "over the limit of 100000"):
        decode_compressed_depth(compressed_msg("16UC1; compressedDepth png", lie),
                                max_pixels=100_000)
    # A lie the header's CRC does not cover, and a cut file: refused before libpng sees them.
    with pytest.raises(ImageCodecError, match="PNG chunk b'IHDR' at byte 8 is damaged"):
        decode_compressed_color(compressed_msg("png", png[:16] + b"\x7f" + png[17:]))
    with pytest.raises(ImageCodecError, match="does not decode .PNG cut off after 100 bytes"):
        decode_compressed_depth(compressed_msg("16UC1; compressedDepth png", depth[:112]))
    assert "libpng" not in capfd.readouterr().err


@pytest.mark.parametrize("progressive", [0, 1])
def test_jpeg_frame_header_lies_are_refused_before_decoding(progressive):
    bgr = cv2.cvtColor(smooth_rgb(), cv2.COLOR_RGB2BGR)
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])[1].tobytes()
    assert jpeg[jpeg_frame_offset(jpeg) + 1] == (0xC2 if progressive else 0xC0)
    lie = jpeg_with_size(jpeg, 65000, 60000)
    outcome, peak, rss_growth = traced_peak(
        lambda: decode_compressed_color(compressed_msg("rgb8; jpeg compressed bgr8", lie)))
    assert isinstance(outcome, ImageCodecError), outcome
    assert "header claims 65000x60000 (3900000000 pixels), over the limit" in str(outcome)
    assert peak < 1_000_000 and rss_growth < 5_000_000
    with pytest.raises(ImageCodecError, match="JPEG frame of height 0"):
        decode_compressed_color(compressed_msg("jpeg", jpeg_with_size(jpeg, 32, 0)))
    no_frame = jpeg[:jpeg_frame_offset(jpeg)] + b"\xff\xd9"
    with pytest.raises(ImageCodecError, match="JPEG without a frame header"):
        decode_compressed_color(compressed_msg("jpeg", no_frame))
    # Other formats OpenCV reads (here a PPM claiming 30000x30000) are not decoded at all.
    with pytest.raises(ImageCodecError, match="neither a JPEG nor a PNG"):
        decode_compressed_color(compressed_msg("jpeg", b"P6\n30000 30000\n255\n" + bytes(8)))


def test_raw_images_whose_size_fields_lie():
    rgb = smooth_rgb(4, 5)
    data = rgb.tobytes()
    cases = [
        (raw_msg("rgb8", 4, 6, 18, data), r"data holds 60 bytes, expected height \* step"),
        (raw_msg("rgb8", 4, 5, 14, data), r"step 14 is smaller than width \* 3 bytes = 15"),
        (raw_msg("rgb8", 4, 5, 16, data), r"data holds 60 bytes, expected .* 4 \* 16 = 64"),
        (raw_msg("rgb8", 46000, 46000, 138000, data),
         r"rgb8 image is 46000x46000 \(2116000000 pixels\), over the limit"),
        (raw_msg("rgb8", 1, 2**32 - 1, 2**32 - 1, data), "over the limit"),
    ]
    for msg, match in cases:
        with pytest.raises(ImageCodecError, match=match):
            decode_color(msg)
    with pytest.raises(ImageCodecError, match="32FC1 image is 46000x46000"):
        decode_depth(raw_msg("32FC1", 46000, 46000, 184000, bytes(16)))
    with pytest.raises(ImageCodecError, match="not a sequence of bytes"):
        decode_color(raw_msg("mono8", 1, 2, 2, [1, 300]))


def test_max_size_refuses_depth_larger_than_the_colour_image():
    mm = np.full((24, 32), 1500, np.uint16)
    messages = [encode(mm, "16UC1"), encode_compressed_depth(mm, codec="png"),
                encode_compressed_depth(mm, codec="rvl"),
                encode_compressed_depth(mm.astype(np.float32) / 1000, "32FC1", codec="rvl")]
    for msg in messages:
        assert decode_depth_message(msg, max_size=(32, 24)).shape == (24, 32)
        for smaller in ((31, 24), (32, 23)):
            with pytest.raises(ImageCodecError, match=r"32x24, larger than the largest allowed "
                                                      f"{smaller[0]}x{smaller[1]}"):
                decode_depth_message(msg, max_size=smaller)


def test_rvl_streams_that_cannot_fill_their_image():
    header = bytes(12) + struct.pack("<II", 4, 2)
    cases = [
        (rvl_words([0, 0, 8, 0]), "an empty run"),
        (rvl_words([3, 1, 2, 1, 1, 2, 1, 1]), "RVL stream ends after 7 of 8 pixels"),
        (rvl_words([9, 0]), "runs overflow 8 pixels"),
        (rvl_words([8, 0]) + bytes(40), "RVL stream of 44 bytes, more than a 4x2 image can take"),
    ]
    for stream, match in cases:
        with pytest.raises(ImageCodecError, match=match):
            decode_compressed_depth(compressed_msg(RVL_46000, header + stream))
    # Zeros 3, one nonzero (+1), zeros 1, two nonzeros (+1, -2), one trailing zero.
    depth = decode_compressed_depth(compressed_msg(RVL_46000, header + rvl_words(
        [3, 1, 2, 1, 2, 2, 3, 1, 0])), scale=1.0)
    np.testing.assert_array_equal(depth, [[0, 0, 0, 1], [0, 2, 0, 0]])


# -- fuzz: hostile bytes for every encoding and codec ---------------------------------------
def test_hostile_messages_decode_within_the_limit_or_raise_codec_errors():
    rng = np.random.default_rng(18)
    sources = good_messages()
    decoders = {"raw": (decode_color, decode_depth),
                "compressed": (decode_compressed_color, decode_compressed_depth)}
    unexpected, outcomes, count = [], {"decoded": 0, "refused": 0}, 0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    tracemalloc.start()
    for _ in range(200):
        for kind, msg in sources:
            hostile = hostile_raw(msg, rng) if kind == "raw" else hostile_compressed(msg, rng)
            count += 1
            for decode in decoders[kind]:
                try:
                    image = decode(hostile)
                except ImageCodecError:
                    outcomes["refused"] += 1
                    continue
                except Exception as exc:
                    unexpected.append(f"{decode.__name__}: {type(exc).__name__}: {exc}")
                    continue
                outcomes["decoded"] += 1
                if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
                    unexpected.append(f"{decode.__name__}: decoded {image.shape}")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    seconds = time.perf_counter() - started
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"\n{count} hostile messages, {sum(outcomes.values())} decodes ({outcomes}): "
          f"traced peak {peak / 2**20:.1f} MiB, maxrss growth {rss_growth:.1f} MiB, "
          f"{seconds:.1f} s")
    assert count >= 1000 and outcomes["decoded"] > 0 and outcomes["refused"] > 0
    assert not unexpected, unexpected[:10]
    assert peak < 50 * 2**20 and rss_growth < 50


def test_good_frames_decode_as_before_under_the_limits():
    for kind, msg in good_messages():
        color = kind == "raw" and msg.encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8") \
            or kind == "compressed" and "compressedDepth" not in msg.format
        image = decode_color_message(msg) if color else decode_depth_message(msg)
        assert image.shape[:2] == (24, 32) and image.any()


@pytest.mark.parametrize("chunk_bytes", [4, 8, 12, 1 << 16])
def test_rvl_values_cut_at_any_chunk_end_decode_the_same(chunk_bytes, monkeypatch):
    from cen_perception import image_codec

    rng = np.random.default_rng(chunk_bytes)
    mm = rng.integers(1, 65535, (40, 50), dtype=np.uint16)  # deltas of up to 6 nibbles
    mm[rng.random(mm.shape) < 0.3] = 0
    mm[5:9] = 0  # a zero run of several nibbles
    mm[20] = 700  # a run of small deltas
    msg = encode_compressed_depth(mm, codec="rvl", depth_max=70.0)
    monkeypatch.setattr(image_codec, "RVL_CHUNK_BYTES", chunk_bytes)
    np.testing.assert_array_equal(decode_compressed_depth(msg, scale=1.0), mm)


def test_long_rvl_stream_that_cannot_fill_its_image_fails_at_once():
    # 6 MB of zero words: empty run pairs from the first one. Decoding all their values first
    # took hundreds of MB (and walking them, minutes).
    msg = compressed_msg(RVL_46000, bytes(12) + struct.pack("<II", 2048, 1024) + bytes(6 << 20))
    outcome, peak, _ = traced_peak(lambda: decode_compressed_depth(msg))
    assert "damaged RVL stream (an empty run)" in str(outcome)
    assert peak < 8 << 20
