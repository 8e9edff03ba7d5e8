"""A rig around the segmentation node, for everything that drives it from outside.

The node benchmark, the demo, ``cen-train gpu-check`` and the node tests all do the same
things: start ``cen_segmentation_node`` as its own process (``NodeProcess``), stand in for a
camera or play a recorded bag into it (``Rig``, ``play_bag``), listen to what it publishes and
read its ``/diagnostics`` (``Rig``). Everything goes through real DDS; nothing here knows of
the node's internals beyond its topic names and its diagnostics keys.

A ``Rig`` is spun by its user (``spin_until``, the default: benchmarks and tests, where the
timing of every publish matters) or by a thread of its own (``background=True``: while another
process plays a bag). Either way its callbacks only record, under a lock.
"""
from __future__ import annotations

import os
import pathlib
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from cen_perception.sync import NS_PER_S

from .errors import DevToolError

OUTPUT_KINDS = ("labels", "color", "overlay", "confidence", "points", "camera_info")
NODE_NAME = "cen_segmentation"

# Where the stamp sits in a serialized sensor_msgs/Image or CompressedImage: after the 4-byte
# CDR encapsulation header, std_msgs/Header starts with builtin_interfaces/Time (int32 sec,
# uint32 nanosec), little endian.
STAMP_OFFSET = 4
STAMP_FORMAT = "<iI"


class RigError(DevToolError):
    """The node or the rig did not do what was waited for; the message says what."""


def stamp_key(stamp) -> tuple[int, int]:
    """A ``builtin_interfaces/Time`` as a hashable (sec, nanosec)."""
    return int(stamp.sec), int(stamp.nanosec)


def values_of(status) -> dict[str, str]:
    """A ``diagnostic_msgs/DiagnosticStatus``'s key-value pairs as a dict."""
    return {kv.key: kv.value for kv in status.values}


def executable(name: str) -> Optional[str]:
    """A console script of this environment (beside the interpreter first), or None."""
    import shutil

    beside = pathlib.Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def node_command(managed: bool = False) -> list[str]:
    """The command that starts the node (lifecycle node if ``managed``)."""
    script = executable("cen_segmentation_managed_node" if managed else "cen_segmentation_node")
    if script is not None:
        return [script]
    entry = "main_managed" if managed else "main"
    return [sys.executable, "-c", f"import sys; from cen_perception.node import {entry}; "
                                  f"sys.exit({entry}())"]


class NodeProcess:
    """``cen_segmentation_node`` as a subprocess.

    ``ros_args`` follow ``--ros-args`` (``-p name:=value``, ``-r from:=to``, ``--params-file``);
    ``namespace`` puts the node and its topics under a namespace of its own, so that runs at
    the same time on one machine never see each other. Output goes to ``log_path`` (read back
    with ``output``) or, without one, to this process's console.
    """

    def __init__(self, ros_args: Iterable[str] = (), namespace: str = "",
                 managed: bool = False, log_path: Optional[pathlib.Path] = None,
                 env: Optional[dict] = None, cwd: Optional[pathlib.Path] = None) -> None:
        self.namespace = namespace
        self.log_path = log_path
        self._log = open(log_path, "w") if log_path is not None else None
        command = node_command(managed) + ["--ros-args"]
        if namespace:
            command += ["-r", f"__ns:={namespace}"]
        self.command = command + [str(a) for a in ros_args]
        self.proc = subprocess.Popen(self.command, stdout=self._log,
                                     stderr=subprocess.STDOUT if self._log else None,
                                     env=env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    @property
    def output(self) -> str:
        """What the node printed so far ('' without a log file)."""
        if self._log is None:
            return ""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def last_line(self) -> str:
        lines = self.output.strip().splitlines()
        return lines[-1] if lines else "no output"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """RigError (with the node's last line) if the node has exited."""
        if not self.alive():
            raise RigError(f"the node exited with status {self.returncode}: {self.last_line()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> Optional[int]:
        """Send ``sig`` (Ctrl-C by default), wait ``timeout`` s, then kill; the exit status."""
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class Camera:
    """How the rig's camera publishes: reliable (rclcpp's default, most drivers) or best
    effort; raw images or image_transport's ``compressed`` / ``compressedDepth`` topics; on
    the node's own topic names (the default) or a camera driver's (``rgb_image``,
    ``depth_image``, ``camera_info``: the raw topics and the colour camera's info)."""
    reliable: bool = True
    rgb_transport: str = "raw"
    depth_transport: str = "raw"
    history: int = 50
    rgb_image: str = "rgb/image"
    depth_image: str = "depth/image"
    camera_info: str = "rgb/camera_info"

    @property
    def rgb_topic(self) -> str:
        return (self.rgb_image if self.rgb_transport == "raw"
                else f"{self.rgb_image}/{self.rgb_transport}")

    @property
    def depth_topic(self) -> str:
        return (self.depth_image if self.depth_transport == "raw"
                else f"{self.depth_image}/{self.depth_transport}")


def _qos(reliable: bool, history: int):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=history, reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT)


class Rig:
    """The rclpy side: a camera publishing to the node, subscriptions to its outputs and other
    topics, and the node's ``/diagnostics``.

    ``namespace`` is the node's (topics resolve under it). ``context``: an initialised rclpy
    context to use, else the rig makes (and on ``close`` shuts down) its own. ``camera``: the
    camera publishers, or None when something else (``play_bag``) feeds the node. ``outputs``:
    node outputs to subscribe to at once (``subscribe`` adds more). ``on_message(name, msg)``
    is called for every message received (e.g. to record them).

    What arrives is kept: ``messages[name]`` in arrival order, ``received[name][stamp]`` by
    header stamp, ``arrival[name][stamp]`` the first arrival's ``time.perf_counter()``;
    ``name`` is the output kind for outputs and the topic for ``listen``. ``statuses``: the
    node's ``DiagnosticStatus`` messages, oldest first.
    """

    def __init__(self, namespace: str = "", *, context=None, camera: Optional[Camera] = None,
                 outputs: Iterable[str] = (), history: int = 50, background: bool = False,
                 on_message: Optional[Callable[[str, Any], None]] = None,
                 name: str = "cen_rig") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        self._own_context = context is None
        if context is None:
            context = rclpy.Context()
            rclpy.init(context=context)
        self.context = context
        self.namespace = namespace.rstrip("/")
        self.node = rclpy.create_node(f"{name}_{uuid.uuid4().hex[:8]}",
                                      namespace=self.namespace or "/", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.qos = _qos(True, history)
        self.lock = threading.Lock()
        self.messages: dict[str, list] = {}
        self.received: dict[str, dict[tuple[int, int], list]] = {k: {} for k in OUTPUT_KINDS}
        self.arrival: dict[str, dict[tuple[int, int], float]] = {}
        self.statuses: list = []
        self.sent: dict[tuple[int, int], float] = {}
        self._on_message = on_message
        self._output_types = {"points": PointCloud2, "camera_info": CameraInfo}
        self._image_type = Image
        self._subscriptions: dict[str, Any] = {}
        self._clients: dict[str, Any] = {}
        self._next_sec = 1000
        self.status_prefix = f"{self.namespace}/{NODE_NAME}:"
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                      self.qos)
        self.camera = camera
        self.rgb_pub = self.depth_pub = self.camera_info_pub = None
        if camera is not None:
            camera_qos = _qos(camera.reliable, camera.history)
            self.rgb_pub = self.node.create_publisher(
                Image if camera.rgb_transport == "raw" else CompressedImage, camera.rgb_topic,
                camera_qos)
            self.depth_pub = self.node.create_publisher(
                Image if camera.depth_transport == "raw" else CompressedImage,
                camera.depth_topic, camera_qos)
        self.subscribe(*outputs)
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._spin, name="rig", daemon=True)
            self._thread.start()

    # -- spinning -----------------------------------------------------------------------------
    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Spin (or, with a background thread, wait) until ``predicate()``; its last value."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if predicate():
                return True
            if self._thread is None:
                self.executor.spin_once(timeout_sec=0.01)
            else:
                time.sleep(0.02)
        return predicate()

    def pause(self, seconds: float) -> None:
        """Let ``seconds`` pass while messages keep arriving."""
        self.spin_until(lambda: False, seconds)

    # -- listening ----------------------------------------------------------------------------
    def _keep(self, name: str, msg) -> None:
        with self.lock:
            self.messages.setdefault(name, []).append(msg)
            header = getattr(msg, "header", None)
            if header is not None:
                key = stamp_key(header.stamp)
                self.received.setdefault(name, {}).setdefault(key, []).append(msg)
                self.arrival.setdefault(name, {}).setdefault(key, time.perf_counter())
        if self._on_message is not None:
            self._on_message(name, msg)

    def listen(self, topic: str, msg_type, qos=None) -> None:
        """Keep every message on ``topic`` (any type) under the name ``topic``."""
        if topic not in self._subscriptions:
            self.messages.setdefault(topic, [])
            self._subscriptions[topic] = self.node.create_subscription(
                msg_type, topic, lambda msg, topic=topic: self._keep(topic, msg),
                qos or self.qos)

    def subscribe(self, *kinds: str) -> None:
        """Subscribe to the node's outputs ``kinds`` (``segmentation/<kind>``)."""
        for kind in kinds:
            if kind not in OUTPUT_KINDS:
                raise ValueError(f"unknown output {kind!r}; outputs: {', '.join(OUTPUT_KINDS)}")
            if kind not in self._subscriptions:
                self.messages.setdefault(kind, [])
                self._subscriptions[kind] = self.node.create_subscription(
                    self._output_types.get(kind, self._image_type), f"segmentation/{kind}",
                    lambda msg, kind=kind: self._keep(kind, msg), self.qos)

    def unsubscribe(self, *kinds: str) -> None:
        for kind in kinds:
            subscription = self._subscriptions.pop(kind, None)
            if subscription is not None:
                self.node.destroy_subscription(subscription)

    def count(self, name: str) -> int:
        with self.lock:
            return len(self.messages.get(name, ()))

    def _on_diagnostics(self, msg) -> None:
        ours = [s for s in msg.status if s.name.startswith(self.status_prefix)]
        if ours:
            with self.lock:
                self.statuses.extend(ours)
        if self._on_message is not None:
            self._on_message("/diagnostics", msg)

    # -- the node's state ---------------------------------------------------------------------
    @property
    def values(self) -> dict[str, str]:
        """The node's latest diagnostics values ({} before the first)."""
        with self.lock:
            return values_of(self.statuses[-1]) if self.statuses else {}

    def next_values(self, timeout: float = 5.0) -> dict[str, str]:
        """The values of the next diagnostics the node sends (the latest ones on timeout)."""
        count = len(self.statuses)
        self.spin_until(lambda: len(self.statuses) > count, timeout)
        return self.values

    def latest_status(self, predicate: Callable[[dict], bool] = lambda values: True,
                      timeout: float = 10.0):
        """The newest diagnostics status from now on whose values satisfy ``predicate``."""
        start = len(self.statuses)

        def found():
            return any(predicate(values_of(s)) for s in self.statuses[start:])
        if not self.spin_until(found, timeout):
            raise RigError(f"no matching diagnostics within {timeout:g} s; last: {self.values}")
        return next(s for s in reversed(self.statuses[start:]) if predicate(values_of(s)))

    def wait_connected(self, node: Optional[NodeProcess] = None, timeout: float = 30.0) -> None:
        """Until the node's subscriptions and ours have matched, both ways.

        Discovery is not symmetric: our subscription may see the node's publisher before the
        node's publisher sees it, and the node skips a frame nobody listens to. So also wait
        until the node's /diagnostics count our subscriptions among its listeners."""
        def check_alive():
            if node is not None:
                node.check_alive()

        def connected():
            check_alive()
            camera = self.rgb_pub is None or (self.rgb_pub.get_subscription_count() > 0
                                              and self.depth_pub.get_subscription_count() > 0)
            return camera and all(s.get_publisher_count() > 0
                                  for k, s in self._subscriptions.items() if k in OUTPUT_KINDS)
        if not self.spin_until(connected, timeout):
            raise RigError(f"the node did not connect within {timeout:g} s")
        kinds = [k for k in self._subscriptions if k in OUTPUT_KINDS]

        def listened():
            check_alive()
            values = self.values
            return bool(values) and all(int(values.get(f"{kind}_subscribers", "0")) > 0
                                        for kind in kinds)
        if not self.spin_until(listened, timeout):
            raise RigError(f"the node does not see our subscriptions to {kinds}")

    def all_handled(self, pairs: int) -> bool:
        """Whether the node answered or skipped (model busy) ``pairs`` pairs."""
        values = self.values
        labels = self.count("labels")
        return labels >= pairs or (int(values.get("pairs", 0)) >= pairs
                                   and labels + int(values.get("pairs_dropped", 0)) >= pairs)

    # -- the camera ---------------------------------------------------------------------------
    def header(self, frame_id: str = "camera_color_optical_frame", sec: Optional[int] = None,
               nanosec: int = 0):
        """A header with ``sec`` or the next unused whole second."""
        from std_msgs.msg import Header

        if sec is None:
            sec, self._next_sec = self._next_sec, self._next_sec + 1
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        return header

    def publish(self, rgb_msg=None, depth_msg=None) -> None:
        if rgb_msg is not None:
            self.rgb_pub.publish(rgb_msg)
        if depth_msg is not None:
            self.depth_pub.publish(depth_msg)

    def publish_camera_info(self, fields: dict, header=None) -> None:
        """``sensor_msgs/CameraInfo`` of ``fields`` (``scene.camera_info_fields``) on the
        camera's ``camera_info`` topic (``rgb/camera_info`` without a camera), with ``header``
        or the next one."""
        from sensor_msgs.msg import CameraInfo

        if self.camera_info_pub is None:
            topic = self.camera.camera_info if self.camera is not None else "rgb/camera_info"
            self.camera_info_pub = self.node.create_publisher(CameraInfo, topic, self.qos)
        info = CameraInfo(**{k: (list(map(float, v)) if k in ("d", "k", "r", "p") else v)
                             for k, v in fields.items()})
        info.header = header if header is not None else self.header()
        self.camera_info_pub.publish(info)

    def send_pair(self, rgb_msg, depth_msg, kinds: Iterable[str] = ("labels",),
                  timeout: float = 30.0) -> dict:
        """Publish one pair and wait for its outputs of ``kinds``; returns {kind: msg}.

        The wait is long because a node's first frame (engine warm-up) on a busy machine can
        take seconds; a pair that is answered returns as soon as it is."""
        key = stamp_key(rgb_msg.header.stamp)
        kinds = tuple(kinds)
        self.publish(rgb_msg, depth_msg)
        if not self.spin_until(lambda: all(key in self.received[k] for k in kinds), timeout):
            raise RigError(f"no {[k for k in kinds if key not in self.received[k]]} output "
                           f"for stamp {key} within {timeout:g} s")
        return {kind: self.received[kind][key][0] for kind in kinds}

    def play(self, rgb_data: bytearray, depth_data: bytearray, frames: int, rate: float,
             first_sec: int, progress: bool = False) -> float:
        """Publish ``frames`` pairs of serialized messages (``serialized``) at ``rate`` Hz,
        only the stamp changing, as a C++ driver sends them: the rig's own Python costs stay
        out of what is measured. Records each send time in ``sent``; returns the seconds it
        took."""
        from tqdm import tqdm

        period = 1.0 / rate
        start = next_time = time.perf_counter()
        for index in tqdm(range(frames), disable=not progress, unit="frame", leave=False):
            while (now := time.perf_counter()) < next_time:
                self.executor.spin_once(timeout_sec=next_time - now)
            sec, nanosec = divmod(first_sec * NS_PER_S + int(index * period * 1e9), NS_PER_S)
            for data in (rgb_data, depth_data):
                struct.pack_into(STAMP_FORMAT, data, STAMP_OFFSET, sec, nanosec)
            rgb_bytes, depth_bytes = bytes(rgb_data), bytes(depth_data)
            self.sent[(sec, nanosec)] = time.perf_counter()
            self.rgb_pub.publish(rgb_bytes)
            self.depth_pub.publish(depth_bytes)
            next_time += period
        return time.perf_counter() - start

    # -- the node's services ------------------------------------------------------------------
    def call(self, srv_type, name: str, request, timeout: float = 20.0):
        """Call the node's service ``name`` (relative to the node) and return the response.

        One client per service, kept: a request sent the moment a new client sees the service
        can lose its response (the reply path matches a little later), so a new client waits
        a moment after the service is ready."""
        client = self._clients.get(name)
        if client is None:
            client = self.node.create_client(srv_type,
                                             f"{self.namespace}/{NODE_NAME}/{name}")
            if not self.spin_until(client.service_is_ready, timeout):
                raise RigError(f"service {name} did not appear within {timeout:g} s")
            self.pause(1.0)
            self._clients[name] = client
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout):
            raise RigError(f"{name}: no response within {timeout:g} s")
        return future.result()

    def get_parameters(self, names: list[str], timeout: float = 10.0) -> dict:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.call(GetParameters, "get_parameters", GetParameters.Request(names=names),
                             timeout)
        return {name: parameter_value_to_python(value)
                for name, value in zip(names, response.values)}

    def set_parameters(self, values: dict, timeout: float = 10.0) -> list:
        """Set parameters of the node; the SetParametersResult of each."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
        return list(self.call(SetParameters, "set_parameters", request, timeout).results)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.node.destroy_node()
        if self._own_context:
            rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> "Rig":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serialized(msg) -> bytearray:
    """A message serialized once, for ``Rig.play``, which writes each frame's stamp into it."""
    from rclpy.serialization import serialize_message

    return bytearray(serialize_message(msg))


def play_bag(bag: pathlib.Path, topics: Iterable[str], subscribers: int = 1,
             rate: float = 1.0, timeout: float = 180.0,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Play ``topics`` of ``bag`` with ``cen-perception-play`` in a process of its own,
    reliable, once every topic has ``subscribers`` subscribers. RigError if it fails."""
    player = executable("cen-perception-play")
    command = ([player] if player else [sys.executable, "-m", "cen_perception.bags.player"])
    command += [str(bag), "--topics", *topics, "--reliable", "--wait-subscribers",
                str(subscribers), "--wait-timeout", "60", "--rate", str(rate), "--no-progress"]
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env=env if env is not None else dict(os.environ))
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise RigError(f"the player failed ({result.returncode}): {lines[-1]}")
    return result


def bag_through_node(node: NodeProcess, rig: Rig, bag: pathlib.Path, topics: list[str],
                     pairs: int, subscribers: int = 1, ready_timeout: float = 90.0) -> None:
    """Play ``bag`` into a started ``node`` while ``rig`` (with ``labels`` subscribed)
    records; returns once every one of ``pairs`` pairs is answered or skipped (or 30 s after
    the bag ends) and one more diagnostics period has passed."""
    def ready() -> bool:
        node.check_alive()
        return bool(rig.values) and rig.node.count_publishers(
            f"{rig.namespace}/segmentation/labels") > 0
    # Discovery both ways before the first frame: the node publishes only to subscribers it
    # knows, and a reliable but volatile topic keeps nothing for late joiners.
    rig.spin_until(ready, ready_timeout)
    if not rig.values:
        raise RigError(f"the node sent no diagnostics within {ready_timeout:g} s")
    rig.pause(1.0)
    play_bag(bag, topics, subscribers)
    rig.spin_until(lambda: rig.all_handled(pairs), 30.0)
    rig.pause(1.2)  # one more diagnostics period
