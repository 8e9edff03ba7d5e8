"""Real ROS 2 node tests: the node runs as its own process, the test talks to it over DDS.

Each node process gets a namespace of its own, so tests running at the same time on this
machine (same DDS domain or not) never see each other's topics.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "segmentation.yaml"
OUTPUT_KINDS = ("labels", "color", "overlay", "confidence", "points", "camera_info")


def node_command(managed: bool = False) -> list[str]:
    script = pathlib.Path(sys.executable).parent / (
        "cen_segmentation_managed_node" if managed else "cen_segmentation_node")
    if script.is_file():
        return [str(script)]
    entry = "main_managed" if managed else "main"
    return [sys.executable, "-c", f"import sys; from cen_perception.node import {entry}; "
                                  f"sys.exit({entry}())"]


def stamp_key(stamp) -> tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


class NodeProcess:
    """``cen_segmentation_node`` as a subprocess in namespace ``namespace``."""

    def __init__(self, log_path: pathlib.Path, ros_args: list[str], namespace: str,
                 managed: bool = False) -> None:
        self.namespace = namespace
        self.log_path = log_path
        self._log = open(log_path, "w")
        command = node_command(managed) + ["--ros-args", "-r", f"__ns:={namespace}", *ros_args]
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=REPO)

    @property
    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGINT, timeout: float = 15.0) -> int:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Harness:
    """The test side: publishes camera images to a node and collects what it publishes."""

    def __init__(self, context, namespace: str, camera_reliable: bool = True,
                 rgb_transport: str = "raw", depth_transport: str = "raw") -> None:
        """A camera publishing like a driver: reliable (the ROS default) or best effort, raw
        images or image_transport's compressed / compressedDepth topics."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self._Image = Image
        self.namespace = namespace
        self.node = rclpy.create_node(f"harness_{uuid.uuid4().hex[:8]}", namespace=namespace,
                                      context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        camera_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE
                                if camera_reliable else ReliabilityPolicy.BEST_EFFORT)
        self.rgb_pub = (self.node.create_publisher(Image, "rgb/image", camera_qos)
                        if rgb_transport == "raw" else self.node.create_publisher(
                            CompressedImage, "rgb/image/compressed", camera_qos))
        self.depth_pub = (self.node.create_publisher(Image, "depth/image", camera_qos)
                          if depth_transport == "raw" else self.node.create_publisher(
                              CompressedImage, "depth/image/compressedDepth", camera_qos))
        self.received: dict[str, dict[tuple[int, int], list]] = {k: {} for k in OUTPUT_KINDS}
        self._subscriptions = {}
        self.diagnostics = []  # DiagnosticStatus of our node, oldest first
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self._next_sec = 1000

    # -- plumbing --------------------------------------------------------------------------
    def spin_until(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def subscribe(self, *kinds: str) -> None:
        from sensor_msgs.msg import CameraInfo, PointCloud2

        types = {"points": PointCloud2, "camera_info": CameraInfo}
        for kind in kinds:
            if kind not in self._subscriptions:
                self._subscriptions[kind] = self.node.create_subscription(
                    types.get(kind, self._Image), f"segmentation/{kind}",
                    lambda msg, kind=kind: self._on_output(kind, msg), self.qos)

    def unsubscribe(self, *kinds: str) -> None:
        for kind in kinds:
            subscription = self._subscriptions.pop(kind, None)
            if subscription is not None:
                self.node.destroy_subscription(subscription)

    def wait_connected(self, node: NodeProcess, timeout: float = 30.0) -> None:
        """Until the node's subscriptions and our subscriptions have matched, both ways.

        Discovery is not symmetric: our subscription may see the node's publisher before the
        node's publisher sees it, and the node skips a frame nobody listens to. So also wait
        until the node's /diagnostics count our subscriptions among its listeners."""
        def connected():
            assert node.alive(), f"node exited:\n{node.output}"
            return (self.rgb_pub.get_subscription_count() > 0
                    and self.depth_pub.get_subscription_count() > 0
                    and all(s.get_publisher_count() > 0 for s in self._subscriptions.values()))
        assert self.spin_until(connected, timeout), f"node did not connect:\n{node.output}"
        kinds = list(self._subscriptions)

        def listened():
            if not self.diagnostics:
                return False
            values = values_of(self.diagnostics[-1])
            return all(int(values.get(f"{kind}_subscribers", "0")) > 0 for kind in kinds)
        assert self.spin_until(listened, timeout), (
            f"the node does not see our subscriptions to {kinds}:\n{node.output}")

    def _on_output(self, kind, msg) -> None:
        self.received[kind].setdefault(stamp_key(msg.header.stamp), []).append(msg)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{self.namespace}/cen_segmentation:"):
                self.diagnostics.append(status)

    # -- sending ---------------------------------------------------------------------------
    def header(self, frame_id: str = "camera_color_optical_frame", sec: int | None = None,
               nanosec: int = 0):
        from std_msgs.msg import Header

        if sec is None:
            sec, self._next_sec = self._next_sec, self._next_sec + 1
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        return header

    def publish_camera_info(self, k, width: int, height: int, header=None) -> None:
        """The colour camera's intrinsics on ``rgb/camera_info``."""
        from sensor_msgs.msg import CameraInfo

        if not hasattr(self, "camera_info_pub"):
            self.camera_info_pub = self.node.create_publisher(CameraInfo, "rgb/camera_info",
                                                              self.qos)
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob",
                          d=[0.0] * 5, k=[float(v) for v in k],
                          p=[k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0])
        info.header = header if header is not None else self.header()
        self.camera_info_pub.publish(info)

    def publish(self, rgb_msg=None, depth_msg=None) -> None:
        if rgb_msg is not None:
            self.rgb_pub.publish(rgb_msg)
        if depth_msg is not None:
            self.depth_pub.publish(depth_msg)

    def send_pair(self, rgb_msg, depth_msg, kinds=("labels",), timeout: float = 30.0) -> dict:
        """Publish one pair and wait for its outputs of ``kinds``; returns {kind: msg}.

        The wait is long because a node's first frame (engine warm-up) on a busy 2-core
        machine can take seconds; a pair that is answered returns as soon as it is."""
        key = stamp_key(rgb_msg.header.stamp)
        self.publish(rgb_msg, depth_msg)
        arrived = self.spin_until(lambda: all(key in self.received[k] for k in kinds), timeout)
        assert arrived, (f"no {[k for k in kinds if key not in self.received[k]]} output for "
                         f"stamp {key}")
        return {kind: self.received[kind][key][0] for kind in kinds}

    def latest_status(self, predicate=lambda values: True, timeout: float = 10.0):
        """The first diagnostics status from now on whose values satisfy ``predicate``."""
        start = len(self.diagnostics)

        def found():
            return any(predicate(values_of(s)) for s in self.diagnostics[start:])
        last = values_of(self.diagnostics[-1]) if self.diagnostics else None
        assert self.spin_until(found, timeout), f"no matching diagnostics; last: {last}"
        return next(s for s in reversed(self.diagnostics[start:]) if predicate(values_of(s)))

    def get_parameters(self, names: list[str], timeout: float = 10.0) -> dict:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        client = self.node.create_client(GetParameters,
                                         f"{self.namespace}/cen_segmentation/get_parameters")
        try:
            assert self.spin_until(lambda: client.service_is_ready(), timeout)
            future = client.call_async(GetParameters.Request(names=names))
            assert self.spin_until(future.done, timeout)
            return {name: parameter_value_to_python(value)
                    for name, value in zip(names, future.result().values)}
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, values: dict, timeout: float = 10.0) -> list:
        """Set parameters of the node; returns the SetParametersResult of each."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters,
                                         f"{self.namespace}/cen_segmentation/set_parameters")
        try:
            assert self.spin_until(lambda: client.service_is_ready(), timeout)
            request = SetParameters.Request(
                parameters=[Parameter(name, value=value).to_parameter_msg()
                            for name, value in values.items()])
            future = client.call_async(request)
            assert self.spin_until(future.done, timeout)
            return list(future.result().results)
        finally:
            self.node.destroy_client(client)

    def call(self, srv_type, name: str, request, timeout: float = 20.0):
        """Call the node's service ``name`` (relative to the node) and return the response.

        One client per service, kept: a request sent the moment a new client sees the service
        can lose its response (the reply path matches a little later), so a new client waits a
        moment after the service is ready.
        """
        if not hasattr(self, "_service_clients"):
            self._service_clients = {}
        client = self._service_clients.get(name)
        if client is None:
            client = self.node.create_client(srv_type,
                                             f"{self.namespace}/cen_segmentation/{name}")
            assert self.spin_until(lambda: client.service_is_ready(), timeout), name
            self.spin_until(lambda: False, timeout=1.0)
            self._service_clients[name] = client
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout), f"{name}: no response"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def values_of(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture(scope="session")
def ros_context():
    """rclpy in the test process, its own context (no signal handlers of its own)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def start_node(ros_context, tmp_path_factory):
    """``start_node(*ros_args, **camera) -> (NodeProcess, Harness)``; both stopped after the
    module. ``camera`` goes to ``Harness`` (reliability and transports of the camera)."""
    started = []

    def start(*ros_args: str, managed: bool = False, **camera) -> tuple[NodeProcess, Harness]:
        namespace = f"/t{uuid.uuid4().hex[:10]}"
        log = tmp_path_factory.mktemp("node") / "node.log"
        node = NodeProcess(log, list(ros_args), namespace, managed=managed)
        harness = Harness(ros_context, namespace, **camera)
        started.append((node, harness))
        return node, harness

    yield start
    for node, harness in started:
        node.stop(signal.SIGINT)
        harness.close()


@pytest.fixture(scope="session")
def config_file() -> pathlib.Path:
    return CONFIG


@pytest.fixture(scope="session")
def toy_labels():
    """Labels the toy model gives for depth in metres (see make_toy_onnx)."""
    def labels(depth: np.ndarray, num_classes: int = 3) -> np.ndarray:
        return np.clip(np.floor(depth), 0, num_classes - 1).astype(np.uint8)
    return labels


@pytest.fixture(scope="session")
def run_node_once():
    """Run the node to its exit: ``run(*ros_args, timeout) -> CompletedProcess`` (text)."""
    def run(*ros_args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        namespace = f"/t{uuid.uuid4().hex[:10]}"
        return subprocess.run(node_command() + ["--ros-args", "-r", f"__ns:={namespace}",
                                                *ros_args],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=dict(os.environ))
    return run
