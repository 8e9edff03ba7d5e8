"""The segmenter with the real ONNX Runtime engine on the toy model from conftest.

Toy model: ``labels = clip(floor(depth_m), 0, C-1)``, ``confidence = 0.5 + mean(rgb) / 510``.
"""
import cv2
import numpy as np
import pytest

from cen_perception.engines import open_engine
from cen_perception.image_codec import (
    color_image_from_message,
    decode_color,
    decode_depth,
    depth_image_from_message,
    encode,
)
from cen_perception.segmenter import Segmenter

RNG = np.random.default_rng(2)


def toy_labels(depth, num_classes=3):
    return np.clip(np.floor(depth), 0, num_classes - 1).astype(np.uint8)


def nearest_rows(src: int, dst: int) -> np.ndarray:
    """Source index of each destination index under nearest-neighbour resizing."""
    return np.minimum(np.floor(np.arange(dst) * (src / dst)).astype(int), src - 1)


@pytest.fixture(scope="module")
def engine_48x64(toy_onnx_factory):
    return open_engine(toy_onnx_factory(48, 64, num_classes=3))


def test_same_size_is_exactly_the_model(engine_48x64):
    rgb = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    depth = RNG.random((48, 64), dtype=np.float32) * 4
    result = Segmenter(engine_48x64).run(rgb, depth)
    np.testing.assert_array_equal(result.labels, toy_labels(depth))
    np.testing.assert_allclose(result.confidence, 0.5 + rgb.mean(axis=2) / 510, rtol=1e-5)
    assert not result.depth_resized
    assert set(result.timings) >= {"resize", "infer"}
    assert all(v >= 0 for v in result.timings.values())


def test_camera_twice_the_engine_size_comes_back_at_camera_size(engine_48x64):
    rgb = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    depth = RNG.random((96, 128), dtype=np.float32) * 4
    result = Segmenter(engine_48x64).run(rgb, depth)
    assert result.labels.shape == (96, 128) and result.labels.dtype == np.uint8
    assert result.confidence.shape == (96, 128) and result.confidence.dtype == np.float32
    # Nearest down by 2 picks the even pixels, nearest up by 2 repeats them.
    assert Segmenter(engine_48x64).run(rgb, depth, with_confidence=False).confidence is None
    sampled = depth[::2, ::2]
    expected = np.repeat(np.repeat(toy_labels(sampled), 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(result.labels, expected)


def test_odd_sizes_follow_nearest_neighbour(engine_48x64):
    rgb = np.zeros((61, 83, 3), np.uint8)
    depth = RNG.random((61, 83), dtype=np.float32) * 4
    result = Segmenter(engine_48x64).run(rgb, depth)
    down_r, down_c = nearest_rows(61, 48), nearest_rows(83, 64)
    up_r, up_c = nearest_rows(48, 61), nearest_rows(64, 83)
    engine_labels = toy_labels(depth[down_r][:, down_c])
    reference = cv2.resize(cv2.resize(depth, (64, 48), interpolation=cv2.INTER_NEAREST),
                           (83, 61), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(result.labels, toy_labels(reference))
    np.testing.assert_array_equal(result.labels, engine_labels[up_r][:, up_c])


def test_depth_of_another_size_is_resized_and_flagged(engine_48x64):
    rgb = np.zeros((48, 64, 3), np.uint8)
    depth = np.zeros((24, 32), np.float32)
    depth[:, 16:] = 2.5
    result = Segmenter(engine_48x64).run(rgb, depth)
    assert result.depth_resized
    assert (result.labels[:, :32] == 0).all() and (result.labels[:, 32:] == 2).all()


def test_min_confidence_marks_unlabeled(engine_48x64):
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 32:] = 255  # confidence 0.5 on the left, 1.0 on the right
    depth = np.full((48, 64), 1.5, np.float32)
    result = Segmenter(engine_48x64, min_confidence=0.75).run(rgb, depth)
    assert (result.labels[:, :32] == 255).all() and (result.labels[:, 32:] == 1).all()


def test_min_confidence_needs_a_confidence_output(toy_onnx_factory):
    engine = open_engine(toy_onnx_factory(16, 16, confidence=False))
    assert Segmenter(engine).run(np.zeros((16, 16, 3), np.uint8),
                                 np.zeros((16, 16), np.float32)).confidence is None
    with pytest.raises(ValueError, match="confidence"):
        Segmenter(engine, min_confidence=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Segmenter(engine, min_confidence=2.0)


@pytest.mark.parametrize("rgb,depth,match", [
    (np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.float32), "rgb must be uint8"),
    (np.zeros((48, 64, 3), np.float32), np.zeros((48, 64), np.float32), "rgb must be uint8"),
    (np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.uint16), "depth must be float32"),
])
def test_wrong_arrays_are_refused(engine_48x64, rgb, depth, match):
    with pytest.raises(ValueError, match=match):
        Segmenter(engine_48x64).run(rgb, depth)


def test_real_kinect_frame(samples_dir, toy_onnx_factory):
    """512x424 Kinect v2 frame (0 and 65535 invalid) through a 240x320 toy engine."""
    engine = open_engine(toy_onnx_factory(240, 320, num_classes=4))
    bgr = cv2.imread(str(samples_dir / "esanet_kinect" / "rgb.png"), cv2.IMREAD_COLOR)
    mm = cv2.imread(str(samples_dir / "esanet_kinect" / "depth.png"), cv2.IMREAD_UNCHANGED)
    depth = decode_depth(encode(mm, "16UC1"))
    result = Segmenter(engine).run(np.ascontiguousarray(bgr[:, :, ::-1]), depth)
    assert result.labels.shape == (424, 512)
    assert set(np.unique(result.labels)) <= {0, 1, 2, 3}
    reference = cv2.resize(cv2.resize(depth, (320, 240), interpolation=cv2.INTER_NEAREST),
                           (512, 424), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(result.labels, toy_labels(reference, 4))
    # 65535 means "no reading": those pixels must not come out as far (class 3).
    no_reading = mm == 65535
    assert (result.labels[no_reading] == 3).mean() < 0.2
    assert (result.labels == toy_labels(depth, 4)).mean() > 0.85


@pytest.mark.parametrize("camera", [(424, 512), (720, 1280)])
def test_camera_images_give_the_labels_of_converting_first(samples_dir, toy_onnx_factory,
                                                            camera):
    """The node's path (images converted after their resize) against converting the camera
    images first and resizing with OpenCV, on the real Kinect frame (and scaled up to 720p)."""
    engine = open_engine(toy_onnx_factory(240, 320, num_classes=4))
    bgr = cv2.imread(str(samples_dir / "esanet_kinect" / "rgb.png"), cv2.IMREAD_COLOR)
    mm = cv2.imread(str(samples_dir / "esanet_kinect" / "depth.png"), cv2.IMREAD_UNCHANGED)
    bgr = cv2.resize(bgr, camera[::-1], interpolation=cv2.INTER_LINEAR)
    mm = cv2.resize(mm, camera[::-1], interpolation=cv2.INTER_NEAREST)
    color_msg, depth_msg = encode(bgr, "bgr8"), encode(mm, "16UC1")
    result = Segmenter(engine).run_images(color_image_from_message(color_msg),
                                          depth_image_from_message(depth_msg))
    rgb_in = cv2.resize(decode_color(color_msg, contiguous=True), (320, 240),
                        interpolation=cv2.INTER_LINEAR)
    depth_in = cv2.resize(decode_depth(depth_msg), (320, 240), interpolation=cv2.INTER_NEAREST)
    labels, confidence = engine.infer(rgb_in, depth_in)
    np.testing.assert_array_equal(
        result.labels, cv2.resize(labels, camera[::-1], interpolation=cv2.INTER_NEAREST))
    np.testing.assert_array_equal(
        result.confidence, cv2.resize(confidence, camera[::-1], interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(result.depth, decode_depth(depth_msg))
