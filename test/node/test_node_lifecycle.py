"""Lifecycle transitions at any moment: under a 30 Hz camera, with an engine change pending.

A real managed node process; the camera streams from a thread of the test process while the
transitions are called over DDS. Nothing may escape: the process stays alive, labels stop
while inactive and resume on every activate, and no traceback reaches the node's log.
"""
import threading

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from cen_perception.image_codec import encode
from cen_perception_dev.rig import values_of

H, W = 60, 80


class Camera30Hz:
    """Publishes pairs at 30 Hz from a thread, with stamps of its own (sec = 20000 + i)."""

    def __init__(self, harness):
        self.harness, self.sent = harness, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.rgb = encode(np.zeros((H, W, 3), np.uint8), "rgb8")
        self.depth = encode(np.full((H, W), 1.5, np.float32), "32FC1")

    def _run(self):
        i = 0
        while not self._stop.wait(1 / 30):
            header = Header(frame_id="camera")
            header.stamp.sec, i = 20000 + i, i + 1
            self.rgb.header = self.depth.header = header
            self.harness.publish(self.rgb, self.depth)
            self.sent.append((header.stamp.sec, 0))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def transition(harness, transition_id) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition_id
    return harness.call(ChangeState, "change_state", request).success


def labels_after(harness, camera, since: int, timeout: float = 10.0) -> bool:
    """Labels of a frame sent after ``since`` frames arrive."""
    return harness.spin_until(lambda: any(key in harness.received["labels"]
                                          for key in camera.sent[since:]), timeout)


def test_twenty_deactivate_activate_cycles_and_a_cleanup_under_a_stream(
        start_node, toy_onnx_factory):
    engine = str(toy_onnx_factory(H, W, num_classes=3))
    other = str(toy_onnx_factory(H, W, num_classes=5))
    proc, harness = start_node("-p", f"engine_path:={engine}", "-p", "diagnostics_period:=0.25",
                               managed=True)
    harness.subscribe("labels", "color", "overlay")
    assert transition(harness, Transition.TRANSITION_CONFIGURE)
    assert transition(harness, Transition.TRANSITION_ACTIVATE)
    harness.wait_connected(proc)
    setter = harness.node.create_client(SetParameters,
                                        f"{harness.namespace}/cen_segmentation/set_parameters")
    assert harness.spin_until(setter.service_is_ready)
    with Camera30Hz(harness) as camera:
        assert labels_after(harness, camera, 0)
        for cycle in range(20):
            if cycle % 5 == 4:   # an engine change still opening when the node deactivates
                path = other if cycle % 10 == 4 else engine
                setter.call_async(SetParameters.Request(
                    parameters=[Parameter("engine_path", value=path).to_parameter_msg()]))
            assert transition(harness, Transition.TRANSITION_DEACTIVATE), cycle
            harness.pause(0.1)
            stopped = len(camera.sent)
            harness.pause(0.3)
            late = [k for k in camera.sent[stopped:] if k in harness.received["labels"]]
            assert not late, f"labels while inactive (cycle {cycle})"
            assert transition(harness, Transition.TRANSITION_ACTIVATE), cycle
            assert labels_after(harness, camera, len(camera.sent)), f"no labels (cycle {cycle})"
        assert transition(harness, Transition.TRANSITION_DEACTIVATE)
        assert transition(harness, Transition.TRANSITION_CLEANUP)
        harness.pause(0.3)
        assert transition(harness, Transition.TRANSITION_CONFIGURE), proc.output[-3000:]
        assert transition(harness, Transition.TRANSITION_ACTIVATE)
        assert labels_after(harness, camera, len(camera.sent))
        status = harness.latest_status(lambda v: v.get("frames_processed", "0") != "0")
    values = values_of(status)
    assert values["engine"] == harness.get_parameters(["engine_path"])["engine_path"]
    assert values["stage_restarts"] == "0" and values["processing_errors"] == "0"
    assert transition(harness, Transition.TRANSITION_DEACTIVATE)
    assert transition(harness, Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert proc.alive()
    assert "Traceback" not in proc.output, proc.output


def test_shutdown_while_streaming_ends_the_work_cleanly(start_node, toy_onnx_factory):
    engine = str(toy_onnx_factory(H, W, num_classes=3))
    proc, harness = start_node("-p", f"engine_path:={engine}", managed=True)
    harness.subscribe("labels")
    assert transition(harness, Transition.TRANSITION_CONFIGURE)
    assert transition(harness, Transition.TRANSITION_ACTIVATE)
    harness.wait_connected(proc)
    with Camera30Hz(harness) as camera:
        assert labels_after(harness, camera, 0)
        assert transition(harness, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        harness.pause(0.5)
    assert proc.alive() and "Traceback" not in proc.output, proc.output


def test_a_transition_not_valid_now_leaves_the_node_running(start_node, toy_onnx_factory):
    from lifecycle_msgs.srv import GetState

    from cen_perception_dev.rig import RigError

    proc, harness = start_node("-p", f"engine_path:={toy_onnx_factory(H, W)}", managed=True)
    request = ChangeState.Request()
    request.transition.id = Transition.TRANSITION_ACTIVATE   # unconfigured: not valid
    with pytest.raises(RigError):  # rclpy's service raises instead of answering
        harness.call(ChangeState, "change_state", request, timeout=3.0)
    assert proc.alive()
    assert harness.call(GetState, "get_state", GetState.Request()).current_state.label == \
        "unconfigured"
    assert transition(harness, Transition.TRANSITION_CONFIGURE)
