"""Into the robot's stack: the labelled cloud and camera info, the managed node, live engine
swaps. Real node processes over DDS; the toy engine labels ``floor(depth_m)`` (see
test/conftest.py make_toy_onnx)."""
import time

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from cen_perception.image_codec import encode
from cen_perception_dev.rig import values_of
from cen_perception_dev.synthetic_world import pinhole_camera_info

H, W = 60, 80
K = [70.0, 0.0, 39.5, 0.0, 72.0, 29.5, 0.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def engine(toy_onnx_factory):
    return str(toy_onnx_factory(H, W, num_classes=3))


def start(start_node, engine, *params, subscribe=("labels",), **kwargs):
    args = ["-p", f"engine_path:={engine}", "-p", "diagnostics_period:=0.25"]
    for param in params:
        args += ["-p", param]
    proc, harness = start_node(*args, **kwargs)
    harness.subscribe(*subscribe)
    return proc, harness


def known_frame(harness):
    """A wall at 2.5 m with a box at 1.2 m and a hole: depth, colours and labels known."""
    header = harness.header()
    depth = np.full((H, W), 2.5, np.float32)
    depth[20:40, 30:50] = 1.2
    depth[0:4, 0:6] = 0.0
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = np.arange(W, dtype=np.uint8)[None, :]
    rgb[..., 1] = np.arange(H, dtype=np.uint8)[:, None]
    rgb[..., 2] = 200
    return header, rgb, depth


def give_camera_info(harness):
    """Publish the intrinsics until the node reports it has them (as a camera driver would)."""
    def received():
        harness.publish_camera_info(pinhole_camera_info(W, H, K[0], K[4], K[2], K[5]))
        return any(values_of(st).get("camera_info") == "received"
                   for st in harness.statuses[-3:])
    assert harness.spin_until(received, timeout=20), "camera info never arrived"


def cloud_arrays(msg):
    assert [f.name for f in msg.fields][:5] == ["x", "y", "z", "rgb", "label"]
    data = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, msg.point_step)
    words = data.view(np.float32)
    return (words[..., 0], words[..., 1], words[..., 2], data[..., 16],
            data[..., 12:16].copy().view(np.uint32)[..., 0])


def test_cloud_reproduces_the_known_points_and_labels(start_node, engine):
    proc, harness = start(start_node, engine, subscribe=("labels", "points", "camera_info"))
    harness.wait_connected(proc)
    give_camera_info(harness)  # first: the node needs it for the cloud
    header, rgb, depth = known_frame(harness)
    out = harness.send_pair(encode(rgb, "rgb8", header), encode(depth, "32FC1", header),
                            kinds=("labels", "points", "camera_info"))
    cloud = out["points"]
    assert (cloud.height, cloud.width) == (H, W) and not cloud.is_dense
    assert cloud.header.frame_id == header.frame_id
    assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec) == (header.stamp.sec, 0)
    x, y, z, label, packed = cloud_arrays(cloud)
    vs, us = np.mgrid[0:H, 0:W]
    valid = depth > 0
    np.testing.assert_allclose(z[valid], depth[valid], atol=1e-3)
    np.testing.assert_allclose(x[valid], ((us - K[2]) * depth / K[0])[valid], atol=1e-3)
    np.testing.assert_allclose(y[valid], ((vs - K[5]) * depth / K[4])[valid], atol=1e-3)
    assert np.isnan(z[~valid]).all() and np.isnan(x[~valid]).all()
    labels = np.frombuffer(out["labels"].data, np.uint8).reshape(H, W)
    np.testing.assert_array_equal(label, labels)
    assert (label[25, 35], label[50, 5]) == (1, 2)  # the box at 1.2 m, the wall at 2.5 m
    assert packed[10, 20] == (20 << 16) | (10 << 8) | 200
    info = out["camera_info"]
    assert list(info.k) == K and (info.width, info.height) == (W, H)
    assert info.header.stamp.sec == header.stamp.sec


def test_cloud_stride_and_range(start_node, engine):
    proc, harness = start(start_node, engine, "cloud_stride:=4", "cloud_max_range:=2.0",
                          subscribe=("labels", "points"))
    harness.wait_connected(proc)
    give_camera_info(harness)
    header, rgb, depth = known_frame(harness)
    out = harness.send_pair(encode(rgb, "rgb8", header), encode(depth, "32FC1", header),
                            kinds=("points",))
    x, y, z, label, _ = cloud_arrays(out["points"])
    assert z.shape == (H // 4, W // 4)
    kept = depth[::4, ::4]
    near = (kept > 0) & (kept <= 2.0)
    np.testing.assert_allclose(z[near], kept[near], atol=1e-3)
    assert np.isnan(z[~near]).all()            # the 2.5 m wall is beyond the range
    assert near.sum() == 5 * 5                  # the box: rows 20..39, columns 30..49, stride 4
    np.testing.assert_allclose(x[5, 8], (32 - K[2]) * 1.2 / K[0], atol=1e-3)


def test_no_camera_info_no_cloud_and_diagnostics_say_so(start_node, engine):
    proc, harness = start(start_node, engine, "stall_timeout:=0.5",
                          subscribe=("labels", "points"))
    harness.wait_connected(proc)
    header, rgb, depth = known_frame(harness)
    harness.send_pair(encode(rgb, "rgb8", header), encode(depth, "32FC1", header))
    topic = f"{harness.namespace}/rgb/camera_info"
    status = harness.latest_status(lambda v: v.get("camera_info") == "none")
    assert values_of(status)["camera_info_topic"] == topic
    # Said once the cloud has waited stall_timeout for camera info, naming the topic.
    said = f"no camera_info on {topic}: no cloud"
    assert harness.spin_until(lambda: any(said in s.message for s in harness.statuses),
                              timeout=10)
    status = next(s for s in reversed(harness.statuses) if said in s.message)
    assert status.level == status.WARN
    assert not harness.received["points"]


# -- managed node ----------------------------------------------------------------------------
def lifecycle_state(harness) -> str:
    return harness.call(GetState, "get_state", GetState.Request()).current_state.label


def transition(harness, transition_id) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition_id
    return harness.call(ChangeState, "change_state", request).success


@pytest.fixture
def node_log_on_failure():
    """Shows the node's own log when a lifecycle call fails."""
    procs = []
    yield procs.append
    for proc in procs:
        print(f"--- node log ---\n{proc.output}")


def test_managed_node_lifecycle(start_node, engine, node_log_on_failure):
    proc, harness = start(start_node, engine, managed=True)
    node_log_on_failure(proc)
    assert lifecycle_state(harness) == "unconfigured"
    assert transition(harness, Transition.TRANSITION_CONFIGURE)
    assert lifecycle_state(harness) == "inactive"
    # Inactive: nobody subscribed to the camera, no output.
    assert harness.rgb_pub.get_subscription_count() == 0
    assert transition(harness, Transition.TRANSITION_ACTIVATE)
    harness.wait_connected(proc)
    header, rgb, depth = known_frame(harness)
    out = harness.send_pair(encode(rgb, "rgb8", header), encode(depth, "32FC1", header))
    assert np.frombuffer(out["labels"].data, np.uint8).reshape(H, W)[50, 5] == 2
    assert transition(harness, Transition.TRANSITION_DEACTIVATE)
    assert harness.spin_until(lambda: harness.rgb_pub.get_subscription_count() == 0)
    header, rgb, depth = known_frame(harness)
    harness.publish(encode(rgb, "rgb8", header), encode(depth, "32FC1", header))
    harness.spin_until(lambda: False, timeout=0.5)
    assert (header.stamp.sec, 0) not in harness.received["labels"]
    assert transition(harness, Transition.TRANSITION_CLEANUP)
    assert lifecycle_state(harness) == "unconfigured"
    assert transition(harness, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert lifecycle_state(harness) == "finalized"
    assert proc.alive()


def test_managed_node_with_a_bad_engine_stays_unconfigured(start_node, tmp_path):
    proc, harness = start_node("-p", f"engine_path:={tmp_path / 'missing.onnx'}",
                               "-p", "diagnostics_period:=0.25", managed=True)
    assert not transition(harness, Transition.TRANSITION_CONFIGURE)
    assert lifecycle_state(harness) == "unconfigured"
    status = harness.latest_status(lambda v: True)
    assert status.level == status.ERROR
    assert status.message.startswith("unconfigured: engine file not found")
    assert "configure failed: engine file not found" in proc.output
    assert proc.alive()


# -- live engine swap ------------------------------------------------------------------------
def test_engine_swapped_live_under_a_30_hz_stream(start_node, engine, toy_onnx_factory):
    five = str(toy_onnx_factory(H, W, num_classes=5))
    proc, harness = start(start_node, engine)
    harness.wait_connected(proc)
    sent = []
    depth = np.full((H, W), 3.5, np.float32)   # 3 classes: label 2; 5 classes: label 3
    rgb = np.zeros((H, W, 3), np.uint8)

    def stream(frames):
        for _ in range(frames):
            header = harness.header()
            sent.append((header.stamp.sec, 0))
            harness.publish(encode(rgb, "rgb8", header), encode(depth, "32FC1", header))
            harness.spin_until(lambda: False, timeout=1 / 30)

    stream(15)
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request(parameters=[Parameter("engine_path", value=five)
                                                .to_parameter_msg()])
    client = harness.node.create_client(SetParameters,
                                        f"{harness.namespace}/cen_segmentation/set_parameters")
    assert harness.spin_until(client.service_is_ready)
    future = client.call_async(request)
    stream(30)                                  # the stream goes on while the engine loads
    assert harness.spin_until(future.done, timeout=30)
    assert future.result().results[0].successful, future.result().results[0].reason
    stream(15)
    # A bad engine is opened in the background too, refused, and engine_path reads back the
    # engine in service.
    assert harness.set_parameters({"engine_path": "/nonexistent/model.onnx"})[0].successful
    status = harness.latest_status(lambda v: "not found" in v.get("engine_refused", ""))
    assert status.level == status.WARN and "engine change refused" in status.message
    assert harness.get_parameters(["engine_path"])["engine_path"] == five
    stream(15)
    # The worker always takes the newest pair: on a busy machine it may skip one, and counts
    # it. Every frame must be answered or counted, never lost for the swap.
    harness.spin_until(lambda: all(k in harness.received["labels"] for k in sent), timeout=10)
    lost = [key for key in sent if key not in harness.received["labels"]]
    dropped = int(values_of(harness.latest_status(
        lambda v: int(v["pairs"]) >= len(sent)))["pairs_dropped"])
    assert len(lost) == dropped and dropped <= len(sent) // 10, (lost, dropped)
    sent = [key for key in sent if key not in lost]
    per_frame = []
    for key in sent:
        labels = np.frombuffer(harness.received["labels"][key][0].data, np.uint8)
        assert len(set(labels.tolist())) == 1, "a frame mixes two engines"
        per_frame.append(int(labels[0]))
    assert set(per_frame) == {2, 3}
    switch = per_frame.index(3)
    assert per_frame[switch:] == [3] * (len(per_frame) - switch), "went back to the old engine"
    values = harness.get_parameters(["class_names", "engine_path"])
    assert values["class_names"] == [f"class{i}" for i in range(5)]
    assert values["engine_path"] == five
    status = harness.latest_status(lambda v: v["engine"] == five)
    assert time.strftime("%Y-") in values_of(status)["engine_loaded"]
    assert proc.alive()
