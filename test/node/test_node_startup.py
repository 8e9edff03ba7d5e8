"""Start-up: the shipped params file works as it is; bad parameters or engines stop the node
with one clear line and a non-zero exit status."""
import re
import signal

import numpy as np
import pytest
import yaml

from cen_perception.image_codec import encode

H, W = 24, 32


def one_line(result) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("ros_args,message", [
    ([], "parameter engine_path is required"),
    (["-p", "sync_slop:=-0.5"], "parameter sync_slop must be > 0, got -0.5"),
    (["-p", "sync_slop:=1"],
     "invalid parameter sync_slop: .* of type 'INTEGER', expecting type 'DOUBLE'"),
    (["-p", "sync_queue_size:=0"], "parameter sync_queue_size must be >= 1, got 0"),
    (["-p", "qos:=fast"], "parameter qos must be one of auto, sensor_data, reliable, got 'fast'"),
    (["-p", "rgb_transport:=theora"],
     "parameter rgb_transport must be one of raw, compressed, got 'theora'"),
    (["-p", "depth_scale:=-0.001"], "parameter depth_scale must be >= 0, got -0.001"),
    (["-p", "backend:=cuda"], "parameter backend must be one of auto, tensorrt, onnxruntime"),
    (["-p", "overlay_alpha:=1.5"], "parameter overlay_alpha must be <= 1, got 1.5"),
    (["-p", "min_confidnce:=0.5"], r"unknown parameter\(s\) min_confidnce"),
    (["-p", "class_names:=[a,b,c]"], "class_names is read-only"),
])
def test_invalid_parameters_stop_with_one_line(run_node_once, toy_onnx_factory, ros_args, message):
    engine = [] if not ros_args else ["-p", f"engine_path:={toy_onnx_factory(H, W)}"]
    result = run_node_once(*engine, *ros_args)
    assert result.returncode != 0
    line = one_line(result)
    assert line.startswith("cen_segmentation: ")
    assert re.search(message, line), line


def test_missing_engine_stops_with_one_line(run_node_once, tmp_path):
    result = run_node_once("-p", f"engine_path:={tmp_path / 'missing.onnx'}")
    assert result.returncode != 0
    assert "engine file not found" in one_line(result)


def test_engine_disagreeing_with_its_card_stops_with_one_line(run_node_once, toy_onnx_factory):
    engine = toy_onnx_factory(H, W, card_overrides={"input_size": [16, 16]})
    result = run_node_once("-p", f"engine_path:={engine}")
    assert result.returncode != 0
    assert "engine and model card disagree" in one_line(result)


def test_confidence_asked_of_an_engine_without_it(run_node_once, toy_onnx_factory):
    engine = toy_onnx_factory(H, W, confidence=False)
    result = run_node_once("-p", f"engine_path:={engine}", "-p", "min_confidence:=0.5")
    assert result.returncode != 0
    assert "confidence" in one_line(result)


def test_shipped_params_file_is_accepted_as_it_is(start_node, config_file, toy_onnx_factory,
                                                  toy_labels):
    """Only engine_path added: default QoS (best effort), so pairs are resent until one lands."""
    engine = toy_onnx_factory(H, W)
    proc, harness = start_node("--params-file", str(config_file), "-p", f"engine_path:={engine}")
    harness.subscribe("labels")
    harness.wait_connected(proc)
    expected = yaml.safe_load(config_file.read_text())["/**"]["ros__parameters"]
    expected["engine_path"] = str(engine)
    assert harness.get_parameters(sorted(expected)) == expected

    depth = np.random.default_rng(0).random((H, W), dtype=np.float32) * 3
    header = harness.header()
    rgb_msg = encode(np.zeros((H, W, 3), np.uint8), "rgb8", header)
    depth_msg = encode(depth, "32FC1", header)
    key = (header.stamp.sec, 0)
    for _ in range(20):
        harness.publish(rgb_msg, depth_msg)
        if harness.spin_until(lambda: key in harness.received["labels"], timeout=0.5):
            break
    labels = harness.received["labels"][key]
    assert len(labels) == 1  # a resent pair is a duplicate, never a second output
    np.testing.assert_array_equal(np.frombuffer(labels[0].data, np.uint8).reshape(H, W),
                                  toy_labels(depth))
    assert proc.stop(signal.SIGINT) == 0, proc.output


def test_rig_says_why_a_node_never_connected(start_node, tmp_path):
    """What the benchmark and gpu-check print when the node they started dies: its last line."""
    from cen_perception_dev.rig import RigError

    proc, harness = start_node("-p", f"engine_path:={tmp_path / 'missing.onnx'}")
    harness.subscribe("labels")
    with pytest.raises(RigError, match="the node exited with status [1-9].*engine file not found"):
        harness.wait_connected(proc, timeout=60)
