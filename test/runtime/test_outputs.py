"""The pictures for people at their display size; labels stay at the camera's size."""
import cv2
import numpy as np

from cen_perception.camera_images import ColorImage, DepthImage
from cen_perception.outputs import display_size, draw, least_color_size
from cen_perception.visualize import colorize, overlay, palette_lut

LUT = palette_lut([[255, 0, 0], [0, 255, 0], [0, 0, 255]])


def test_display_size_keeps_the_aspect_and_never_enlarges():
    assert display_size((720, 1280), 640) == (360, 640)
    assert display_size((1080, 1920), 640) == (360, 640)
    assert display_size((480, 640), 640) == (480, 640)
    assert display_size((240, 320), 640) == (240, 320)
    assert display_size((720, 1280), 0) == (720, 1280)


def test_pictures_at_display_size_are_the_shrunk_labels_in_their_colours():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.repeat(rng.integers(0, 3, (18, 32), dtype=np.uint8), 40, 0), 40, 1)
    labels[:40, :40] = 255
    rgb = rng.integers(0, 256, labels.shape + (3,), dtype=np.uint8)
    pictures = draw(ColorImage(rgb), labels, LUT, {"color", "overlay"}, 0.5, 640)
    color, overlaid = pictures["color"][0], pictures["overlay"][0]
    assert color.shape == overlaid.shape == (360, 640, 3)
    small = cv2.resize(labels, (640, 360), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(color, colorize(small, LUT))
    np.testing.assert_array_equal(
        overlaid, overlay(cv2.resize(rgb, (640, 360), interpolation=cv2.INTER_LINEAR), small, LUT,
                          0.5))


def test_camera_size_pictures_when_the_display_is_as_wide():
    labels = np.zeros((48, 64), np.uint8)
    rgb = np.zeros((48, 64, 3), np.uint8)
    pictures = draw(ColorImage(rgb), labels, LUT, {"color"}, 0.5, 0)
    assert set(pictures) == {"color"} and pictures["color"][0].shape == (48, 64, 3)


def test_only_the_wanted_outputs_are_rendered(toy_onnx_factory):
    from cen_perception.cloud import CloudBuilder
    from cen_perception.engine_slot import load_engine
    from cen_perception.outputs import render_frame
    from cen_perception.pipeline import DecodedPair

    loaded = load_engine(str(toy_onnx_factory(24, 32)), "auto", 1, 0.0, False)
    decoded = DecodedPair(None, ColorImage(np.zeros((48, 64, 3), np.uint8)),
                          DepthImage(np.full((48, 64), 1.5, np.float32)), 0.0, 0.0, 0)
    frame = render_frame(decoded, loaded, {"overlay"}, 0.5, None, CloudBuilder())
    assert set(frame.images) == {"overlay"} and frame.cloud is None
    frame = render_frame(decoded, loaded, {"labels", "points"}, 0.5, None, CloudBuilder())
    assert set(frame.images) == {"labels"} and frame.cloud is None   # no camera info: no cloud
    assert np.all(frame.images["labels"][0] == 1) and frame.shape == (48, 64)


def test_the_least_colour_size_follows_the_wanted_outputs():
    camera, engine = (720, 1280), (256, 320)
    assert least_color_size(camera, engine, {"labels"}, 640) == engine
    assert least_color_size(camera, engine, {"labels", "color"}, 640) == engine
    assert least_color_size(camera, engine, {"overlay"}, 640) == (360, 640)
    assert least_color_size(camera, engine, {"overlay"}, 0) == camera
    assert least_color_size(camera, (400, 320), {"overlay"}, 640) == (400, 640)
    assert least_color_size(camera, engine, {"labels", "points"}, 640) == camera
