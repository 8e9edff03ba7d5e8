"""The labelled cloud against points computed by hand from known depth and intrinsics."""

import numpy as np
import pytest

from cen_perception.cloud import CloudBuilder, Intrinsics, point_fields, point_step

K = [500.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]


def frame(h=480, w=640, seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 6.0, (h, w)).astype(np.float32)
    depth[:5] = 0.0           # invalid rows
    depth[10, 10] = np.nan
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, 40, (h, w), dtype=np.uint8)
    labels[7] = 255
    confidence = rng.random((h, w), dtype=np.float32)
    return depth, rgb, labels, confidence


def unpack(data, with_confidence):
    step = point_step(with_confidence)
    flat = data.reshape(data.shape[0], data.shape[1], step)
    words = flat.view(np.float32)
    out = {"x": words[..., 0], "y": words[..., 1], "z": words[..., 2],
           "rgb": flat[..., 12:16].copy().view(np.uint32)[..., 0], "label": flat[..., 16]}
    if with_confidence:
        out["confidence"] = words[..., 5]
    return out


def test_points_are_the_back_projection_to_a_tenth_of_a_millimetre():
    depth, rgb, labels, confidence = frame()
    intr = Intrinsics.from_k(K, 640, 480)
    cloud = unpack(CloudBuilder().build(depth, rgb, labels, intr, confidence), True)
    v, u = 300, 123
    z = depth[v, u]
    assert cloud["x"][v, u] == pytest.approx((u - 319.5) * z / 500.0, abs=1e-4)
    assert cloud["y"][v, u] == pytest.approx((v - 239.5) * z / 520.0, abs=1e-4)
    assert cloud["z"][v, u] == z
    vs, us = np.mgrid[0:480, 0:640]
    valid = depth > 0
    np.testing.assert_allclose(cloud["x"][valid], ((us - 319.5) * depth / 500.0)[valid], atol=1e-4)
    np.testing.assert_allclose(cloud["y"][valid], ((vs - 239.5) * depth / 520.0)[valid], atol=1e-4)
    assert np.isnan(cloud["x"][~valid]).all() and np.isnan(cloud["z"][~valid]).all()
    np.testing.assert_array_equal(cloud["label"], labels)
    np.testing.assert_array_equal(cloud["confidence"], confidence)
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    np.testing.assert_array_equal(cloud["rgb"], (r << 16) | (g << 8) | b)


def test_stride_and_max_range():
    depth, rgb, labels, _ = frame()
    intr = Intrinsics.from_k(K, 640, 480)
    data = CloudBuilder(stride=4, max_range=3.0).build(depth, rgb, labels, intr)
    assert data.shape == (120, 160, point_step(False))
    cloud = unpack(data, False)
    np.testing.assert_array_equal(cloud["label"], labels[::4, ::4])
    far = depth[::4, ::4] > 3.0
    assert far.any() and np.isnan(cloud["z"][far]).all()
    near = (depth[::4, ::4] > 0) & ~far
    np.testing.assert_array_equal(cloud["z"][near], depth[::4, ::4][near])
    v, u = 40, 30  # strided (row, column) -> pixel (160, 120)
    if near[v, u]:
        assert cloud["x"][v, u] == pytest.approx((120 - 319.5) * depth[160, 120] / 500.0, abs=1e-4)


def test_intrinsics_follow_a_resized_image():
    intr = Intrinsics.from_k(K, 640, 480).scaled_to(1280, 960)
    assert (intr.fx, intr.fy) == (1000.0, 1040.0)
    assert (intr.cx, intr.cy) == (639.5, 479.5)   # the centre stays the centre
    with pytest.raises(ValueError, match="no usable intrinsics"):
        Intrinsics.from_k([0.0] * 9, 640, 480)


def test_fields_and_mismatched_sizes():
    assert [name for name, _, _ in point_fields(True)] == ["x", "y", "z", "rgb", "label",
                                                            "confidence"]
    depth, rgb, labels, _ = frame(48, 64)
    with pytest.raises(ValueError, match="intrinsics are for 640x480"):
        CloudBuilder().build(depth, rgb, labels, Intrinsics.from_k(K, 640, 480))
    with pytest.raises(ValueError, match="share one"):
        CloudBuilder().build(depth[:10], rgb, labels, Intrinsics.from_k(K, 64, 48))
