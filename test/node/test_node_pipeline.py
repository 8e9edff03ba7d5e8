"""The node process on real frames: exact labels, consistent pictures, diagnostics, SIGINT.

Toy engine at 640x480: ``labels = clip(floor(depth_m), 0, 2)``,
``confidence = 0.5 + mean(rgb) / 510`` (see make_toy_onnx in test/conftest.py).
"""
import signal

import cv2
import numpy as np
import pytest
import yaml

from cen_perception.engines import open_engine
from cen_perception.image_codec import decode_color, decode_depth, encode
from cen_perception.segmenter import Segmenter
from cen_perception.visualize import palette_lut

ENGINE_H, ENGINE_W = 480, 640
DEPTH_OFFSET_NS = 5_000_000  # depth stamped 5 ms after RGB, inside sync_slop
OVERRIDES = {"qos": "reliable", "publish_confidence": True, "diagnostics_period": 0.25}


@pytest.fixture(scope="module")
def engine_path(toy_onnx_factory):
    return toy_onnx_factory(ENGINE_H, ENGINE_W, num_classes=3)


@pytest.fixture(scope="module")
def engine(engine_path):
    return open_engine(engine_path)


@pytest.fixture(scope="module")
def node(start_node, config_file, engine_path):
    args = ["--params-file", str(config_file), "-p", f"engine_path:={engine_path}"]
    for name, value in OVERRIDES.items():
        args += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    proc, harness = start_node(*args)
    harness.subscribe("labels")
    harness.wait_connected(proc)
    return proc, harness


def load_case(name, samples_dir):
    """(colour pixels in the encoding's layout, encoding, depth array, depth encoding,
    expected RGB uint8, expected depth in metres)."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    if name.startswith("nyu"):
        bgr = cv2.imread(str(samples_dir / "nyuv2_frame0" / "rgb.jpg"), cv2.IMREAD_COLOR)
        mm = cv2.imread(str(samples_dir / "nyuv2_frame0" / "depth.png"), cv2.IMREAD_UNCHANGED)
    elif name.startswith("kinect"):
        bgr = cv2.imread(str(samples_dir / "esanet_kinect" / "rgb.png"), cv2.IMREAD_COLOR)
        mm = cv2.imread(str(samples_dir / "esanet_kinect" / "depth.png"), cv2.IMREAD_UNCHANGED)
    else:  # a small synthetic camera, a fifth of the engine size
        bgr = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        mm = rng.integers(0, 4000, (96, 128)).astype(np.uint16)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    metres = (mm / 1000.0).astype(np.float32)
    metres[mm == 65535] = 0
    color_encoding, depth_encoding = name.split("_")[1:3]
    pixels = {"bgr8": bgr, "rgb8": rgb, "rgba8": cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
              "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[color_encoding]
    if color_encoding == "mono8":
        rgb = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    depth = mm if depth_encoding == "16UC1" else metres
    return pixels, color_encoding, depth, depth_encoding, rgb, metres


def test_only_subscribed_outputs_are_computed(node, samples_dir):
    proc, harness = node
    pixels, enc, depth, denc, _, _ = load_case("nyu_bgr8_16UC1", samples_dir)
    header = harness.header()
    harness.send_pair(encode(pixels, enc, header), encode(depth, denc, header))
    status = harness.latest_status(lambda v: int(v["labels_published"]) >= 1)
    values = {kv.key: kv.value for kv in status.values}
    assert values["color_published"] == "0"
    assert values["overlay_published"] == "0"
    assert values["confidence_published"] == "0"


CASES = ["nyu_bgr8_16UC1", "nyu_rgb8_32FC1", "kinect_rgb8_16UC1", "small_rgba8_16UC1",
         "small_mono8_32FC1"]


@pytest.mark.parametrize("case", CASES)
def test_real_frames_give_the_model_labels_and_consistent_pictures(
        node, case, samples_dir, engine, toy_labels):
    proc, harness = node
    harness.subscribe("labels", "color", "overlay", "confidence")
    harness.wait_connected(proc)
    pixels, enc, depth, denc, rgb, metres = load_case(case, samples_dir)
    rgb_header = harness.header("camera_color_optical_frame")
    depth_header = harness.header("camera_depth_optical_frame", sec=rgb_header.stamp.sec,
                                  nanosec=DEPTH_OFFSET_NS)
    out = harness.send_pair(encode(pixels, enc, rgb_header), encode(depth, denc, depth_header),
                            kinds=("labels", "color", "overlay", "confidence"))
    h, w = rgb.shape[:2]
    for kind, expected_encoding in (("labels", "mono8"), ("color", "rgb8"),
                                    ("overlay", "rgb8"), ("confidence", "32FC1")):
        msg = out[kind]
        assert msg.header.frame_id == "camera_color_optical_frame", kind
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (rgb_header.stamp.sec, 0)
        assert (msg.height, msg.width, msg.encoding) == (h, w, expected_encoding), kind

    labels = np.frombuffer(out["labels"].data, np.uint8).reshape(h, w)
    assert labels.max() < engine.card.num_classes
    if case.startswith("kinect"):
        # 512x424 goes up to the 640x480 engine and back: the plain-Python pipeline's labels.
        expected = Segmenter(engine).run(rgb, metres).labels
        assert (labels == toy_labels(metres)).mean() > 0.85
    else:
        expected = toy_labels(metres)  # same size, or an exact factor of five
    np.testing.assert_array_equal(labels, expected)

    color = decode_color(out["color"])
    np.testing.assert_array_equal(color, palette_lut(engine.card.palette)[labels])
    alpha = OVERRIDES.get("overlay_alpha", 0.5)
    blended = rgb * (1 - alpha) + color.astype(float) * alpha
    assert np.abs(decode_color(out["overlay"]).astype(float) - blended).max() <= 1.0

    confidence = decode_depth(out["confidence"])
    assert confidence.shape == (h, w)
    if case.startswith("nyu"):
        np.testing.assert_allclose(confidence, 0.5 + rgb.mean(axis=2) / 510, atol=1e-5)
    assert confidence.min() >= 0.5 and confidence.max() <= 1.0


def send_small_pairs(harness, count):
    keys = []
    for _ in range(count):
        pixels, enc, depth, denc, _, _ = load_case("small_rgba8_16UC1", None)
        header = harness.header()
        harness.send_pair(encode(pixels, enc, header), encode(depth, denc, header))
        keys.append((header.stamp.sec, header.stamp.nanosec))
    return keys


def test_one_output_per_pair(node):
    proc, harness = node
    keys = send_small_pairs(harness, 3)
    harness.spin_until(lambda: False, timeout=0.3)  # a late duplicate would show up by now
    assert [len(harness.received["labels"][key]) for key in keys] == [1, 1, 1]


def test_diagnostics_report_rates_latency_and_backend(node):
    proc, harness = node
    before = {kv.key: kv.value for kv in harness.latest_status().values}
    send_small_pairs(harness, 2)
    processed = int(before["frames_processed"]) + 2
    status = harness.latest_status(lambda v: int(v["frames_processed"]) >= processed)
    values = {kv.key: kv.value for kv in status.values}
    assert values["backend"] == "onnxruntime" and status.hardware_id == "onnxruntime"
    assert values["input_size"] == f"{ENGINE_W}x{ENGINE_H}"
    for key in ("rgb_rate_hz", "depth_rate_hz", "pair_rate_hz", "output_rate_hz"):
        assert float(values[key]) >= 0
    for stage in ("callback", "decode", "wait", "resize", "infer", "visualize", "publish",
                  "end_to_end"):
        median, p95, worst = (float(values[f"{stage}_ms_{s}"]) for s in ("median", "p95", "max"))
        assert 0 <= median <= p95 <= worst, stage
    assert float(values["end_to_end_ms_median"]) >= float(values["infer_ms_median"])
    # The node's own work: what end to end holds beyond inference and waiting for the worker.
    assert 0 < float(values["overhead_ms_median"]) < float(values["end_to_end_ms_median"])
    assert values["bad_messages"] == "0" and values["pairs_dropped"] == "0"
    assert int(values["sync_matched"]) == int(before["sync_matched"]) + 2
    assert values["rgb_qos"] == values["depth_qos"] == "reliable"


def test_parameters_are_those_of_the_params_file(node, config_file, engine, engine_path):
    proc, harness = node
    expected = yaml.safe_load(config_file.read_text())["/**"]["ros__parameters"]
    expected.update(OVERRIDES, engine_path=str(engine_path))
    values = harness.get_parameters(sorted(expected) + ["class_names"])
    assert values.pop("class_names") == engine.card.class_names
    assert values == expected


def test_overlay_alpha_and_min_confidence_change_live(node, engine, toy_labels):
    proc, harness = node
    rejected = harness.set_parameters({"sync_slop": 0.5})
    assert not rejected[0].successful
    assert not harness.set_parameters({"min_confidence": 1.5})[0].successful
    accepted = harness.set_parameters({"overlay_alpha": 0.25, "min_confidence": 0.75})
    assert all(r.successful for r in accepted), [r.reason for r in accepted]

    # Left half black (confidence 0.5), right half white (confidence 1.0): 96x128, a fifth
    # of the engine size, so nearest resizing maps pixels exactly.
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:, 64:] = 255
    metres = np.random.default_rng(3).random((96, 128), dtype=np.float32) * 3.5
    header = harness.header()
    out = harness.send_pair(encode(rgb, "rgb8", header), encode(metres, "32FC1", header),
                            kinds=("labels", "overlay"))
    labels = np.frombuffer(out["labels"].data, np.uint8).reshape(96, 128)
    assert (labels[:, :64] == 255).all()
    np.testing.assert_array_equal(labels[:, 64:], toy_labels(metres)[:, 64:])
    overlay = decode_color(out["overlay"]).astype(float)
    np.testing.assert_array_equal(overlay[:, :64], rgb[:, :64])  # unlabeled keeps the input
    color = palette_lut(engine.card.palette)[labels[:, 64:]]
    assert np.abs(overlay[:, 64:] - (255 * 0.75 + color * 0.25)).max() <= 1.0
    assert all(r.successful for r in harness.set_parameters({"overlay_alpha": 0.5,
                                                             "min_confidence": 0.0}))


def test_sigint_stops_the_node_cleanly(start_node, engine_path):
    proc, harness = start_node("-p", f"engine_path:={engine_path}")
    harness.subscribe("labels")
    harness.wait_connected(proc)
    send_small_pairs(harness, 1)
    assert proc.stop(signal.SIGINT) == 0, proc.output
    assert "Traceback" not in proc.output
