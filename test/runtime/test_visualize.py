import numpy as np
import pytest

from cen_perception.visualize import colorize, colorize_depth, contact_sheet, overlay, palette_lut

PALETTE = [[255, 0, 0], [0, 128, 0], [10, 20, 30]]
RNG = np.random.default_rng(1)
LABELS_2X2 = np.zeros((2, 2), np.uint8)


def test_colorize_maps_every_id_and_unlabeled_is_black():
    labels = np.array([[0, 1, 2], [255, 7, 1]], np.uint8)
    color = colorize(labels, PALETTE)
    assert color.shape == (2, 3, 3) and color.dtype == np.uint8
    np.testing.assert_array_equal(color[0], PALETTE)
    np.testing.assert_array_equal(color[1], [[0, 0, 0], [0, 0, 0], PALETTE[1]])


def test_colorize_large_image_matches_a_plain_lookup():
    palette = RNG.integers(0, 256, (40, 3))
    labels = RNG.integers(0, 40, (97, 131), dtype=np.uint8)
    labels[::7, ::5] = 255
    np.testing.assert_array_equal(colorize(labels, palette), palette_lut(palette)[labels])


def test_overlay_blends_and_keeps_unlabeled_pixels():
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    labels = RNG.integers(0, 3, (20, 30), dtype=np.uint8)
    labels[:5] = 255
    out = overlay(rgb, labels, PALETTE, alpha=0.25)
    expected = rgb * 0.75 + np.asarray(PALETTE)[np.minimum(labels, 2)] * 0.25
    assert np.abs(out[5:].astype(float) - expected[5:]).max() <= 1.0
    np.testing.assert_array_equal(out[:5], rgb[:5])
    np.testing.assert_array_equal(overlay(rgb, labels, PALETTE, alpha=0.0), rgb)
    full = overlay(rgb, labels, PALETTE, alpha=1.0)
    np.testing.assert_array_equal(full[5:], colorize(labels, PALETTE)[5:])


def test_overlay_accepts_views_of_decoded_images():
    bgr = RNG.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    rgb_view = bgr[:, :, ::-1]
    labels = np.zeros((8, 9), np.uint8)
    out = overlay(rgb_view, labels, PALETTE, 0.5)
    expected = overlay(np.ascontiguousarray(rgb_view), labels, PALETTE, 0.5)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("call,match", [
    (lambda: colorize(np.zeros((2, 2), np.int32), PALETTE), "labels must be uint8"),
    (lambda: overlay(np.zeros((3, 2, 3), np.uint8), LABELS_2X2, PALETTE), "to match"),
    (lambda: overlay(np.zeros((2, 2, 3), np.uint8), LABELS_2X2, PALETTE, 1.5), "alpha"),
    (lambda: palette_lut([[0, 0]]), "palette must be"),
    (lambda: palette_lut([[0, 0, 300]]), "0..255"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_colorize_depth_marks_invalid_black():
    depth = np.float32([[0, 1, 2], [3, 4, 0]])
    color = colorize_depth(depth, max_depth=4)
    assert color.shape == (2, 3, 3)
    assert (color[0, 0] == 0).all() and (color[1, 2] == 0).all()
    assert color[0, 1:].any() and not np.array_equal(color[0, 1], color[1, 1])


def test_contact_sheet_places_cells_in_a_grid():
    a = np.full((10, 20, 3), 200, np.uint8)
    b = np.full((10, 20), 50, np.uint8)  # grey becomes RGB
    c = np.full((20, 40, 3), 100, np.uint8)  # scaled down to fit its cell
    sheet = contact_sheet([a, b, c], columns=2, padding=2, background=(0, 0, 0))
    assert sheet.shape == (2 * 10 + 3 * 2, 2 * 20 + 3 * 2, 3)
    assert (sheet[2:12, 2:22] == 200).all()
    assert (sheet[2:12, 24:44] == 50).all()
    assert (sheet[14:24, 2:22] == 100).all()
    assert (sheet[14:24, 24:44] == 0).all()  # empty cell
    titled = contact_sheet([a, b], columns=2, titles=["rgb", "labels"], padding=2)
    assert not np.array_equal(titled[2:12, 2:22], a)  # text was drawn
    with pytest.raises(ValueError, match="titles"):
        contact_sheet([a], columns=1, titles=["x", "y"])
