"""The ROS 2 node ``cen_segmentation``: RGB-D images in, segmentation images out.

A thin shell around the plain-Python parts: ``image_codec`` decodes each message in its
callback, ``sync.RgbdSync`` pairs RGB and depth by stamp, the newest pair goes into a one-slot
``sync.Mailbox``, and a worker thread runs ``segmenter.Segmenter`` and ``visualize`` and
publishes. Callbacks never wait for inference; a pair replaced in the mailbox before the
worker took it is counted as dropped. Outputs nobody subscribes to are not computed.

Topics: ``rgb/image``, ``depth/image`` in (or, with ``rgb_transport: compressed`` /
``depth_transport: compressedDepth``, image_transport's ``rgb/image/compressed`` and
``depth/image/compressedDepth``); ``segmentation/labels`` (mono8), ``segmentation/color``
(rgb8), ``segmentation/overlay`` (rgb8), ``segmentation/confidence`` (32FC1, when enabled) out,
all with the RGB image's header; ``/diagnostics``.

With ``qos: auto`` (the default) each camera topic is subscribed once a publisher appears,
reliable when every publisher offers reliable and best effort otherwise, and again whenever
that changes (``input_health.choose_reliability``). When depth stops for ``depth_timeout``
seconds while colour keeps coming, colour-only frames go through with depth marked invalid.
"""
from __future__ import annotations

import collections
import ctypes
import pathlib
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.qos import (QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CompressedImage, Image

from .engines import BACKENDS, TENSORRT_SUFFIXES, EngineError, open_engine
from .image_codec import (ImageCodecError, decode_color, decode_compressed_color,
                          decode_compressed_depth, decode_depth, encode)
from .input_health import BEST_EFFORT, RELIABLE, DepthWatch, StreamWatch, choose_reliability
from .model_card import ModelCardError
from .segmenter import Segmenter
from .sync import Mailbox, Pair, RgbdSync
from .visualize import colorize, overlay, palette_lut

NODE_NAME = "cen_segmentation"
INPUT_TOPICS = {"rgb": "rgb/image", "depth": "depth/image"}
# transport -> (topic suffix as image_transport names it, message type)
TRANSPORTS = {"raw": ("", Image), "compressed": ("/compressed", CompressedImage),
              "compressedDepth": ("/compressedDepth", CompressedImage)}
OUTPUT_TOPICS = {kind: f"segmentation/{kind}"
                 for kind in ("labels", "color", "overlay", "confidence")}
DIAGNOSTICS_TOPIC = "/diagnostics"
QOS_CHOICES = ("auto", "sensor_data", "reliable")
RELIABLE_INPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# How often qos: auto looks at the camera publishers (and silent topics are checked).
INPUT_REFRESH_PERIOD_S = 0.5
# Outputs are reliable: both reliable and best-effort subscribers (RViz either way) accept them.
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
# wait: a completed pair's time in the mailbox while the worker finishes the previous one
# (up to one camera period when the model is slower than the camera). overhead: the node's own
# work, end to end minus inference minus wait.
STAGES = ("codec", "wait", "resize", "infer", "visualize", "publish", "end_to_end", "overhead")
BAD_MESSAGE_LOG_PERIOD_S = 5.0


@dataclass(frozen=True)
class ParameterSpec:
    default: Any
    description: str
    choices: tuple = ()
    minimum: Optional[float] = None   # inclusive
    maximum: Optional[float] = None   # inclusive
    exclusive_minimum: bool = False
    live: bool = False                # may change while the node runs


# Every parameter the node accepts (config/segmentation.yaml holds exactly these), plus the
# read-only ``class_names`` it declares from the model card.
PARAMETERS: dict[str, ParameterSpec] = {
    "engine_path": ParameterSpec("", "segmentation engine: an exported .onnx model or a TensorRT "
                                     ".engine/.plan with its <engine>.json model card (required)"),
    "backend": ParameterSpec("auto", "inference backend; auto picks TensorRT for .engine/.plan "
                                     "files and ONNX Runtime for .onnx", choices=BACKENDS),
    "num_threads": ParameterSpec(0, "ONNX Runtime intra-op threads (0 = one per core)", minimum=0),
    "sync_slop": ParameterSpec(0.02, "largest RGB-depth stamp difference that still pairs (s)",
                               minimum=0.0, exclusive_minimum=True, maximum=10.0),
    "sync_queue_size": ParameterSpec(10, "frames per stream waiting for a partner", minimum=1,
                                     maximum=1000),
    "qos": ParameterSpec("auto", "QoS of the camera subscriptions: auto (follow the camera: "
                                 "reliable when every publisher offers reliable, else best "
                                 "effort), sensor_data (best effort) or reliable",
                         choices=QOS_CHOICES),
    "rgb_transport": ParameterSpec("raw", "colour input: raw (rgb/image, sensor_msgs/Image) or "
                                          "compressed (rgb/image/compressed, JPEG or PNG)",
                                   choices=("raw", "compressed")),
    "depth_transport": ParameterSpec("raw", "depth input: raw (depth/image) or compressedDepth "
                                            "(depth/image/compressedDepth, PNG or RVL)",
                                     choices=("raw", "compressedDepth")),
    "depth_scale": ParameterSpec(0.0, "metres per depth unit; 0 = REP 118 (16UC1 mm, 32FC1 m)",
                                 minimum=0.0),
    "depth_timeout": ParameterSpec(0.5, "seconds without depth after which colour-only frames "
                                        "are published with depth invalid (0 = never)",
                                   minimum=0.0, maximum=3600.0),
    "stall_timeout": ParameterSpec(3.0, "seconds a camera topic with a publisher may stay "
                                        "silent before /diagnostics warns",
                                   minimum=0.0, exclusive_minimum=True, maximum=3600.0),
    "publish_color": ParameterSpec(True, "publish segmentation/color (palette colours)"),
    "publish_overlay": ParameterSpec(True, "publish segmentation/overlay (colours over the input)"),
    "publish_confidence": ParameterSpec(False, "publish segmentation/confidence (32FC1)"),
    "overlay_alpha": ParameterSpec(0.5, "weight of the palette colours in the overlay",
                                   minimum=0.0, maximum=1.0, live=True),
    "min_confidence": ParameterSpec(0.0, "pixels below this confidence are labelled 255 "
                                         "(unlabeled)", minimum=0.0, maximum=1.0, live=True),
    "diagnostics_period": ParameterSpec(1.0, "seconds between /diagnostics messages",
                                        minimum=0.0, exclusive_minimum=True, maximum=3600.0),
}
READ_ONLY_PARAMETERS = ("class_names",)


class StartupError(RuntimeError):
    """The node cannot start; the message is one line for the user."""


def check_parameter(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not valid for parameter ``name``, or None when it is."""
    spec = PARAMETERS[name]
    if spec.choices and value not in spec.choices:
        return f"parameter {name} must be one of {', '.join(spec.choices)}, got '{value}'"
    if spec.minimum is not None:
        too_small = value <= spec.minimum if spec.exclusive_minimum else value < spec.minimum
        if too_small:
            relation = ">" if spec.exclusive_minimum else ">="
            return f"parameter {name} must be {relation} {spec.minimum:g}, got {value}"
    if spec.maximum is not None and value > spec.maximum:
        return f"parameter {name} must be <= {spec.maximum:g}, got {value}"
    return None


def _decode_color_contiguous(msg: Image) -> np.ndarray:
    # One fast OpenCV conversion here spares every later OpenCV call a strided copy.
    return decode_color(msg, contiguous=True)


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class Frame:
    """A decoded image waiting in the synchronizer."""

    header: Any
    image: np.ndarray
    received: float    # time.perf_counter() when its callback started
    codec_ms: float
    stamp_ns: int


@dataclass
class _Input:
    """One camera input: its topic, message type, subscription and what is known of it."""

    topic: str
    resolved: str
    msg_type: type
    watch: StreamWatch
    subscription: Any = None


class LatencyWindow:
    """The last ``size`` samples (ms) of each stage, for median / p95 / max."""

    def __init__(self, stages=STAGES, size: int = 1000) -> None:
        self._samples = {stage: collections.deque(maxlen=size) for stage in stages}
        self._lock = threading.Lock()

    def add(self, timings: dict[str, float]) -> None:
        with self._lock:
            for stage, ms in timings.items():
                if stage in self._samples:
                    self._samples[stage].append(ms)

    def summary(self) -> dict[str, tuple[float, float, float]]:
        """stage -> (median, p95, max) in ms, for stages with samples."""
        with self._lock:
            copies = {stage: list(samples) for stage, samples in self._samples.items() if samples}
        return {stage: (float(np.median(v)), float(np.percentile(v, 95)), float(np.max(v)))
                for stage, v in copies.items()}


class Counters:
    """Event counts, shared between callbacks, the worker and the diagnostics timer."""

    NAMES = ("rgb_received", "depth_received", "bad_messages", "pairs", "pairs_color_only",
             "pairs_dropped", "pairs_idle", "frames_processed", "processing_errors", "labels_published",
             "color_published", "overlay_published", "confidence_published")

    def __init__(self) -> None:
        self._values = dict.fromkeys(self.NAMES, 0)
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class SegmentationNode(Node):
    """See the module docstring. Raises ``StartupError`` for bad parameters or engines."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.params = self._read_parameters()
        self.engine = self._open_engine()
        try:
            self.segmenter = Segmenter(self.engine, min_confidence=self.params["min_confidence"])
        except ValueError as exc:
            raise StartupError(f"{exc} ({self.params['engine_path']})") from None
        if self.params["publish_confidence"] and not self.engine.has_confidence:
            raise StartupError("publish_confidence is true but the engine has no 'confidence' "
                               f"output ({self.params['engine_path']})")
        self._declare_class_names()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.palette_lut = palette_lut(self.engine.card.palette)
        self.sync = RgbdSync(self.params["sync_slop"], self.params["sync_queue_size"])
        self.mailbox: Mailbox[Pair] = Mailbox()
        self.counters = Counters()
        self.last_bad_message = ""
        self.latency = LatencyWindow()
        self._warned_depth_size = False
        self._last_diagnostics = (time.monotonic(), self.counters.snapshot(),
                                  self.sync.stats.as_dict())
        self._active_problems: set[str] = set()
        self._last_stamps = {"rgb": None, "depth": None}
        self._latest_depth: Optional[np.ndarray] = None
        self._color_without_depth_since: Optional[float] = None
        self._no_depth: dict[tuple, np.ndarray] = {}
        self.depth_watch = DepthWatch(self.engine.card.depth_range_m)
        scale = self.params["depth_scale"]
        self._depth_scale = scale if scale > 0 else None

        self.outputs = {kind: self.create_publisher(Image, topic, OUTPUT_QOS)
                        for kind, topic in OUTPUT_TOPICS.items()
                        if kind == "labels" or self.params[f"publish_{kind}"]}
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._inputs = {}
        now = time.monotonic()
        for stream in ("rgb", "depth"):
            suffix, msg_type = TRANSPORTS[self.params[f"{stream}_transport"]]
            topic = INPUT_TOPICS[stream] + suffix
            self._inputs[stream] = _Input(topic, self.resolve_topic_name(topic), msg_type,
                                          StreamWatch(stream, topic, now))
        if self.params["qos"] != "auto":
            forced = BEST_EFFORT if self.params["qos"] == "sensor_data" else RELIABLE
            for stream in self._inputs:
                self._subscribe(stream, forced)
        self.create_timer(INPUT_REFRESH_PERIOD_S, self._refresh_inputs)
        self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="segmentation_worker", daemon=True)
        self._worker.start()
        h, w = self.engine.input_size
        self.get_logger().info(
            f"engine {self.params['engine_path']} ({self.engine.backend}, input {w}x{h}, "
            f"{self.engine.card.num_classes} classes); publishing {', '.join(self.outputs)}")

    # -- start-up --------------------------------------------------------------------------
    def _read_parameters(self) -> dict[str, Any]:
        values = {}
        for name, spec in PARAMETERS.items():
            descriptor = ParameterDescriptor(
                description=spec.description,
                additional_constraints=(f"one of {', '.join(spec.choices)}"
                                        if spec.choices else ""),
                read_only=not spec.live)
            try:
                values[name] = self.declare_parameter(name, spec.default, descriptor).value
            except ParameterException as exc:
                reason = exc.args[0] if exc.args else exc
                raise StartupError(f"invalid parameter {name}: {reason}") from None
        # rclpy ignores overrides nobody declares; a typo in a params file deserves an error.
        # (rclpy offers no public accessor for the overrides.)
        overrides = getattr(self, "_parameter_overrides", {})
        known = set(PARAMETERS) | set(READ_ONLY_PARAMETERS)
        unknown = sorted(name for name in overrides
                         if name not in known and not self.has_parameter(name))
        if unknown:
            raise StartupError(f"unknown parameter(s) {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(known))})")
        for name, value in values.items():
            problem = check_parameter(name, value)
            if problem:
                raise StartupError(problem)
        if not values["engine_path"]:
            raise StartupError("parameter engine_path is required (an exported .onnx model or a "
                               "TensorRT engine)")
        return values

    def _open_engine(self):
        path = pathlib.Path(self.params["engine_path"]).expanduser()
        backend = self.params["backend"]
        resolved = backend if backend != "auto" else (
            "tensorrt" if path.suffix in TENSORRT_SUFFIXES else "onnxruntime")
        # Spinning ORT threads would take the cores the node needs to decode and publish.
        options = ({"threads": self.params["num_threads"], "spin_wait": False}
                   if resolved == "onnxruntime" else {})
        try:
            return open_engine(path, backend, **options)
        except (EngineError, ModelCardError) as exc:
            raise StartupError(str(exc)) from None

    def _declare_class_names(self) -> None:
        names = list(self.engine.card.class_names)
        descriptor = ParameterDescriptor(description="class names from the engine's model card",
                                         read_only=True)
        try:
            declared = self.declare_parameter("class_names", names, descriptor).value
        except ParameterException:
            declared = None  # an override of another type: refused below
        if declared is None or list(declared) != names:
            raise StartupError("parameter class_names is read-only: it comes from the engine's "
                               "model card; remove it from the parameters")

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            name = parameter.name
            spec = PARAMETERS.get(name)
            if spec is None or not spec.live:
                continue  # read-only descriptors already refuse these
            if not isinstance(parameter.value, float):
                return SetParametersResult(successful=False, reason=f"{name} must be a double")
            problem = check_parameter(name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            if name == "min_confidence" and parameter.value > 0 and not self.engine.has_confidence:
                return SetParametersResult(successful=False,
                                           reason="the engine has no 'confidence' output")
        for parameter in parameters:
            if parameter.name == "overlay_alpha":
                self.params["overlay_alpha"] = parameter.value
            elif parameter.name == "min_confidence":
                self.params["min_confidence"] = parameter.value
                self.segmenter.min_confidence = parameter.value
        return SetParametersResult(successful=True)

    # -- camera subscriptions --------------------------------------------------------------
    def _subscribe(self, stream: str, reliability: str) -> None:
        """(Re)subscribe ``stream`` with ``reliability``; a previous subscription goes."""
        entry = self._inputs[stream]
        if entry.subscription is not None:
            self.destroy_subscription(entry.subscription)
        qos = qos_profile_sensor_data if reliability == BEST_EFFORT else RELIABLE_INPUT_QOS
        callback = self._on_rgb if stream == "rgb" else self._on_depth
        events = dict(incompatible_qos=lambda event: self._on_incompatible_qos(stream, event),
                      incompatible_type=lambda event: self._on_incompatible_type(stream))
        try:
            entry.subscription = self.create_subscription(
                entry.msg_type, entry.topic, callback, qos,
                event_callbacks=SubscriptionEventCallbacks(
                    message_lost=lambda event: self._on_message_lost(stream, event), **events))
        except UnsupportedEventTypeError:  # a middleware without lost-message events
            entry.subscription = self.create_subscription(
                entry.msg_type, entry.topic, callback, qos,
                event_callbacks=SubscriptionEventCallbacks(**events))
        entry.watch.reliability = reliability
        self.get_logger().info(f"subscribed to {entry.resolved} ({entry.msg_type.__name__}, "
                               f"{reliability.replace('_', ' ')})")

    def _refresh_inputs(self) -> None:
        """Follow the camera publishers (qos: auto) and report topics that went silent."""
        now = time.monotonic()
        for stream, entry in self._inputs.items():
            offered = [RELIABLE if info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                       else BEST_EFFORT
                       for info in self.get_publishers_info_by_topic(entry.resolved)]
            entry.watch.set_publishers(offered, now)
            if self.params["qos"] == "auto":
                choice = choose_reliability(offered)
                if choice is not None and choice != entry.watch.reliability:
                    self._subscribe(stream, choice)
            self._report_once(f"stall:{stream}",
                              entry.watch.stall(now, self.params["stall_timeout"]))

    def _report_once(self, key: str, problem: Optional[str]) -> None:
        """Log a problem when it starts (not on every check); forget it when it ends."""
        if problem is None:
            self._active_problems.discard(key)
        elif key not in self._active_problems:
            self._active_problems.add(key)
            self.get_logger().warning(problem)

    def _on_incompatible_qos(self, stream: str, event) -> None:
        policy = qos_policy_name_from_kind(event.last_policy_kind)
        self._inputs[stream].watch.incompatible(event.total_count, policy)
        self.get_logger().warning(
            f"{self._inputs[stream].resolved}: a publisher offers QoS incompatible with this "
            f"subscription ({policy}); no messages come from it (qos: {self.params['qos']})")

    def _on_incompatible_type(self, stream: str) -> None:
        entry = self._inputs[stream]
        self.get_logger().warning(
            f"{entry.resolved}: a publisher of another message type; this subscription takes "
            f"{entry.msg_type.__name__} (check {stream}_transport)",
            throttle_duration_sec=BAD_MESSAGE_LOG_PERIOD_S)

    def _on_message_lost(self, stream: str, event) -> None:
        self._inputs[stream].watch.lost = int(event.total_count)

    # -- callbacks (never block) -----------------------------------------------------------
    def _on_rgb(self, msg) -> None:
        decode = (_decode_color_contiguous if self.params["rgb_transport"] == "raw"
                  else decode_compressed_color)
        frame = self._decode(msg, "rgb", decode)
        if frame is None:
            return
        if self._depth_missing():
            self._put(Pair(frame, self._invalid_depth_for(frame), *(2 * [frame.stamp_ns])),
                      color_only=True)
            return
        pair = self.sync.push_rgb(frame.stamp_ns, frame)
        if pair is not None:
            self._color_without_depth_since = None
        self._put(pair)

    def _on_depth(self, msg) -> None:
        decode = (decode_depth if self.params["depth_transport"] == "raw"
                  else decode_compressed_depth)
        frame = self._decode(msg, "depth", lambda m: decode(m, self._depth_scale))
        if frame is None:
            return
        self._latest_depth = frame.image
        self._color_without_depth_since = None
        self._put(self.sync.push_depth(frame.stamp_ns, frame))

    def _depth_missing(self) -> bool:
        """Colour has kept coming for ``depth_timeout`` s without any depth.

        Measured from the first colour image that found no depth partner since the last depth
        image or pair, so a slow camera (colour a little ahead of its depth) never counts as
        depth missing.
        """
        timeout = self.params["depth_timeout"]
        if timeout <= 0:
            return False
        now = time.monotonic()
        if self._color_without_depth_since is None:
            self._color_without_depth_since = now
        return now - self._color_without_depth_since > timeout

    def _invalid_depth_for(self, rgb: "Frame") -> "Frame":
        """A depth frame of zeros (invalid everywhere) at the colour image's size."""
        shape = rgb.image.shape[:2]
        if shape not in self._no_depth:
            self._no_depth = {shape: np.zeros(shape, np.float32)}
        return Frame(rgb.header, self._no_depth[shape], rgb.received, 0.0, rgb.stamp_ns)

    def _put(self, pair: Optional[Pair], color_only: bool = False) -> None:
        if pair is None:
            return
        self.counters.add("pairs_color_only" if color_only else "pairs")
        if self.mailbox.put(pair):
            self.counters.add("pairs_dropped")

    def _decode(self, msg, stream: str, decode) -> Optional["Frame"]:
        received = time.perf_counter()
        self.counters.add(f"{stream}_received")
        self._inputs[stream].watch.received(time.monotonic())
        try:
            image = decode(msg)
        except ImageCodecError as exc:
            self.counters.add("bad_messages")
            # The log is throttled; diagnostics always carry the latest reason.
            self.last_bad_message = f"{stream}: {exc}"
            self.get_logger().warning(
                f"dropped a bad {stream} message ({self.counters.snapshot()['bad_messages']} so "
                f"far): {exc}", throttle_duration_sec=BAD_MESSAGE_LOG_PERIOD_S)
            return None
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self._last_stamps[stream] = stamp_ns
        return Frame(msg.header, image, received, (time.perf_counter() - received) * 1e3,
                     stamp_ns)

    # -- worker ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            pair = self.mailbox.get(timeout=0.5)
            if pair is None:
                if self.mailbox.closed:
                    return
                continue
            try:
                self._process(pair)
            except Exception as exc:  # one bad frame must not stop the node
                if self.mailbox.closed or not self.context.ok():
                    return
                self.counters.add("processing_errors")
                self.get_logger().error(f"frame {pair.rgb_stamp_ns} failed: {exc}",
                                        throttle_duration_sec=BAD_MESSAGE_LOG_PERIOD_S)

    def _wanted(self, kind: str) -> bool:
        publisher = self.outputs.get(kind)
        return publisher is not None and publisher.get_subscription_count() > 0

    def _process(self, pair: Pair) -> None:
        picked = time.perf_counter()
        wanted = {kind for kind in self.outputs if self._wanted(kind)}
        if not wanted:
            self.counters.add("pairs_idle")
            return
        rgb_frame, depth_frame = pair.rgb, pair.depth
        result = self.segmenter.run(rgb_frame.image, depth_frame.image,
                                    with_confidence="confidence" in wanted)
        if result.depth_resized and not self._warned_depth_size:
            self._warned_depth_size = True
            self.get_logger().warning(
                f"depth images are {depth_frame.image.shape[1]}x{depth_frame.image.shape[0]}, "
                f"RGB images {rgb_frame.image.shape[1]}x{rgb_frame.image.shape[0]}: resizing depth "
                "(nearest); register depth to the colour camera for exact results")

        header = rgb_frame.header
        visualize_ms = publish_ms = 0.0
        outputs = [("labels", result.labels, "mono8")]
        if "confidence" in wanted and result.confidence is not None:
            outputs.append(("confidence", result.confidence, "32FC1"))
        color = None
        if "color" in wanted or "overlay" in wanted:
            start = time.perf_counter()
            color = colorize(result.labels, self.palette_lut)
            if "color" in wanted:
                outputs.append(("color", color, "rgb8"))
            if "overlay" in wanted:
                blended = overlay(rgb_frame.image, result.labels, self.palette_lut,
                                  self.params["overlay_alpha"], color=color)
                outputs.append(("overlay", blended, "rgb8"))
            visualize_ms = (time.perf_counter() - start) * 1e3
        for kind, array, encoding in outputs:
            if kind not in wanted:
                continue
            start = time.perf_counter()
            self.outputs[kind].publish(encode(array, encoding, header=header))
            publish_ms += (time.perf_counter() - start) * 1e3
            self.counters.add(f"{kind}_published")
        done = time.perf_counter()

        completed = max(rgb_frame.received, depth_frame.received)
        end_to_end = (done - completed) * 1e3
        wait = (picked - completed) * 1e3
        self.latency.add({"codec": rgb_frame.codec_ms + depth_frame.codec_ms, "wait": wait,
                          **result.timings, "visualize": visualize_ms, "publish": publish_ms,
                          "end_to_end": end_to_end,
                          "overhead": end_to_end - result.timings["infer"] - wait})
        self.counters.add("frames_processed")

    # -- diagnostics -----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        counts = self.counters.snapshot()
        sync_stats = self.sync.stats.as_dict()
        then, old_counts, old_sync = self._last_diagnostics
        self._last_diagnostics = (now, counts, sync_stats)
        elapsed = max(now - then, 1e-9)
        delta = {name: counts[name] - old_counts[name] for name in counts}

        def rate(name: str) -> str:
            return f"{delta[name] / elapsed:.2f}"

        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                  hardware_id=f"{self.engine.backend}")
        if self._latest_depth is not None:
            self.depth_watch.add(self._latest_depth)
            self._latest_depth = None
        problems = self._problems(delta, now)
        if problems:
            status.level, status.message = DiagnosticStatus.WARN, "; ".join(problems)
        else:
            status.level = DiagnosticStatus.OK
            status.message = ("waiting for images" if not delta["rgb_received"] else
                              "idle: no subscribers"
                              if not delta["frames_processed"] and delta["pairs_idle"]
                              else "running")

        h, w = self.engine.input_size
        values = {
            "backend": self.engine.backend,
            "engine": self.params["engine_path"],
            "input_size": f"{w}x{h}",
            "qos": self.params["qos"],
            "rgb_rate_hz": rate("rgb_received"),
            "depth_rate_hz": rate("depth_received"),
            "pair_rate_hz": rate("pairs"),
            "output_rate_hz": rate("frames_processed"),
        }
        for stream, entry in self._inputs.items():
            watch = entry.watch
            values[f"{stream}_topic"] = entry.resolved
            values[f"{stream}_transport"] = self.params[f"{stream}_transport"]
            values[f"{stream}_qos"] = (watch.reliability or "waiting for a publisher")
            values[f"{stream}_publishers"] = ",".join(watch.offered) or "none"
            values[f"{stream}_incompatible_qos"] = (
                f"{watch.incompatible_events} ({watch.incompatible_policy})"
                if watch.incompatible_events else "0")
            values[f"{stream}_lost"] = str(watch.lost)
        values["depth_scale"] = (f"{self._depth_scale:g}" if self._depth_scale
                                 else "REP 118 (16UC1 mm, 32FC1 m)")
        if self.depth_watch.medians:
            values["depth_median_m"] = f"{self.depth_watch.medians[-1]:.3f}"
        if self.engine.card.depth_range_m:
            low, high = self.engine.card.depth_range_m
            values["training_depth_range_m"] = f"{low:.2f}-{high:.2f}"
        values.update({name: str(value) for name, value in counts.items()})
        if self.last_bad_message:
            values["last_bad_message"] = self.last_bad_message
        values.update({f"sync_{name}": str(value) for name, value in sync_stats.items()})
        for stage, (median, p95, worst) in self.latency.summary().items():
            values[f"{stage}_ms_median"] = f"{median:.3f}"
            values[f"{stage}_ms_p95"] = f"{p95:.3f}"
            values[f"{stage}_ms_max"] = f"{worst:.3f}"
        status.values = [KeyValue(key=key, value=value) for key, value in values.items()]

        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def _problems(self, delta: dict[str, int], now: float) -> list[str]:
        """What is wrong with the input since the last diagnostics, in words, worst first."""
        problems = []
        timeout = self.params["stall_timeout"]
        for stream, entry in self._inputs.items():
            stall = entry.watch.stall(now, timeout)
            if stall:
                problems.append(stall)
            elif entry.watch.incompatible_events:
                problems.append(f"{entry.resolved}: a publisher offers incompatible QoS "
                                f"({entry.watch.incompatible_policy}); no messages from it")
        if delta["bad_messages"] or delta["processing_errors"]:
            problems.append("bad input messages dropped")
        if delta["pairs_color_only"]:
            problems.append("depth missing: colour only")
        elif delta["rgb_received"] and delta["depth_received"] and not delta["pairs"]:
            rgb_ns, depth_ns = self._last_stamps["rgb"], self._last_stamps["depth"]
            gap = (f" (last stamps {abs(rgb_ns - depth_ns) / 1e6:.1f} ms apart)"
                   if rgb_ns is not None and depth_ns is not None else "")
            problems.append(f"rgb and depth do not pair{gap}: check stamps and sync_slop "
                            f"({self.params['sync_slop']:g} s)")
        elif delta["rgb_received"] and not delta["depth_received"]:
            problems.append("no depth images")
        elif delta["depth_received"] and not delta["rgb_received"]:
            problems.append("no rgb images")
        depth_problem = self.depth_watch.problem()
        self._report_once("depth_units", depth_problem)
        if depth_problem:
            problems.append(depth_problem)
        return problems

    # -- shutdown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker and release the engine (before ``destroy_node``)."""
        self.mailbox.close()
        self._worker.join(timeout=10.0)
        self.engine.close()


def keep_freed_memory_for_reuse() -> None:
    """Ask glibc to reuse freed frame buffers instead of returning them to the system.

    Every frame allocates and frees several arrays of about a megabyte. By default glibc maps
    each one afresh and the kernel zero-fills its pages on first touch, which costs more than
    the copies themselves (about 0.5 ms per 640x480 colour image). Resident memory then stays
    at the pipeline's high-water mark instead of rising and falling every frame.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def main(args: Optional[list[str]] = None) -> int:
    keep_freed_memory_for_reuse()
    rclpy.init(args=args)
    try:
        node = SegmentationNode()
    except StartupError as exc:
        print(f"{NODE_NAME}: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT / SIGTERM: a normal way to stop
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
