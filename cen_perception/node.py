"""The ROS 2 node ``cen_segmentation``: RGB-D images in, segmentation images out.

Two console scripts run the same work: ``cen_segmentation_node`` (a plain node that starts at
once) and ``cen_segmentation_managed_node`` (a ``rclpy.lifecycle`` node: configure opens the
engine, activate subscribes and publishes, deactivate stops all work, cleanup closes the
engine).

A thin shell around the plain-Python parts: ``image_codec`` decodes each message in its
callback, ``sync.RgbdSync`` pairs RGB and depth by stamp, the newest pair goes into a one-slot
``sync.Mailbox``, and a worker thread runs ``segmenter.Segmenter`` and ``visualize`` and
publishes. Callbacks never wait for inference; a pair replaced in the mailbox before the
worker took it is counted as dropped. Outputs nobody subscribes to are not computed.

Topics: ``rgb/image``, ``depth/image`` in (or, with ``rgb_transport: compressed`` /
``depth_transport: compressedDepth``, image_transport's ``rgb/image/compressed`` and
``depth/image/compressedDepth``); ``segmentation/labels`` (mono8), ``segmentation/color``
(rgb8), ``segmentation/overlay`` (rgb8), ``segmentation/confidence`` (32FC1, when enabled),
``segmentation/points`` (a labelled ``PointCloud2``, with ``rgb/camera_info``) and
``segmentation/camera_info`` out, all with the RGB image's header; ``/diagnostics``.

``engine_path`` is live: a new engine is opened on another thread, checked, and swapped in
between frames; a bad one is refused and the old one keeps running.

With ``qos: auto`` (the default) each camera topic is subscribed once a publisher appears,
reliable when every publisher offers reliable and best effort otherwise, and again whenever
that changes (``input_health.choose_reliability``). When depth stops for ``depth_timeout``
seconds while colour keeps coming, colour-only frames go through with depth marked invalid.
"""
from __future__ import annotations

import array
import collections
import ctypes
import datetime
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
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.qos import (QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from .cloud import CloudBuilder, Intrinsics, point_fields
from .engines import BACKENDS, TENSORRT_SUFFIXES, Engine, EngineError, open_engine
from .executor import PooledExecutor
from .image_codec import (ImageCodecError, decode_color, decode_compressed_color,
                          decode_compressed_depth, decode_depth, encode)
from .input_health import BEST_EFFORT, RELIABLE, DepthWatch, StreamWatch, choose_reliability
from .model_card import ModelCardError
from .segmenter import Segmenter
from .sync import Mailbox, Pair, RgbdSync, stamp_to_ns
from .visualize import colorize, overlay, palette_lut

NODE_NAME = "cen_segmentation"
INPUT_TOPICS = {"rgb": "rgb/image", "depth": "depth/image"}
# transport -> (topic suffix as image_transport names it, message type)
TRANSPORTS = {"raw": ("", Image), "compressed": ("/compressed", CompressedImage),
              "compressedDepth": ("/compressedDepth", CompressedImage)}
OUTPUT_TOPICS = {kind: f"segmentation/{kind}"
                 for kind in ("labels", "color", "overlay", "confidence")}
CLOUD_TOPIC = "segmentation/points"
CAMERA_INFO_TOPICS = {"in": "rgb/camera_info", "out": "segmentation/camera_info"}
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
STAGES = ("codec", "wait", "resize", "infer", "visualize", "cloud", "publish", "end_to_end",
          "overhead")
BAD_MESSAGE_LOG_PERIOD_S = 5.0
# Longest a live engine change may take to open (a TensorRT engine deserialises in seconds).
ENGINE_LOAD_TIMEOUT_S = 300.0


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
                                     ".engine/.plan with its <engine>.json model card (required; "
                                     "live: a new engine is swapped in between frames)",
                                 live=True),
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
    "cloud_stride": ParameterSpec(1, "segmentation/points keeps every N-th pixel in both "
                                     "directions", minimum=1, maximum=64),
    "cloud_max_range": ParameterSpec(0.0, "segmentation/points leaves out (NaN) points farther "
                                          "than this (m; 0 = no limit)", minimum=0.0),
    "diagnostics_period": ParameterSpec(1.0, "seconds between /diagnostics messages",
                                        minimum=0.0, exclusive_minimum=True, maximum=3600.0),
}
READ_ONLY_PARAMETERS = ("class_names",)


class StartupError(RuntimeError):
    """The node cannot start (or configure, or take a new engine); one line for the user."""


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
             "color_published", "overlay_published", "confidence_published", "points_published",
             "camera_info_published")

    def __init__(self) -> None:
        self._values = dict.fromkeys(self.NAMES, 0)
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


@dataclass
class LoadedEngine:
    """An open engine with what the worker needs of it; swapped whole, never piecemeal."""

    engine: Engine
    segmenter: Segmenter
    palette_lut: np.ndarray
    path: str
    loaded_at: str    # local time, ISO 8601

    @property
    def card(self):
        return self.engine.card


def load_engine(path: str, backend: str, num_threads: int, min_confidence: float,
                publish_confidence: bool) -> LoadedEngine:
    """Open and check an engine for the node; ``StartupError`` says why it cannot serve."""
    if not path:
        raise StartupError("parameter engine_path is required (an exported .onnx model or a "
                           "TensorRT engine)")
    resolved_path = pathlib.Path(path).expanduser()
    resolved = backend if backend != "auto" else (
        "tensorrt" if resolved_path.suffix in TENSORRT_SUFFIXES else "onnxruntime")
    # Spinning ORT threads would take the cores the node needs to decode and publish.
    options = ({"threads": num_threads, "spin_wait": False} if resolved == "onnxruntime" else {})
    try:
        engine = open_engine(resolved_path, backend, **options)
    except (EngineError, ModelCardError) as exc:
        raise StartupError(str(exc)) from None
    try:
        segmenter = Segmenter(engine, min_confidence=min_confidence)
        if publish_confidence and not engine.has_confidence:
            raise ValueError("publish_confidence is true but the engine has no 'confidence' "
                             "output")
    except ValueError as exc:
        engine.close()
        raise StartupError(f"{exc} ({path})") from None
    loaded_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return LoadedEngine(engine, segmenter, palette_lut(engine.card.palette), str(path), loaded_at)


class SegmentationWork:
    """The node's work, shared by ``SegmentationNode`` and ``ManagedSegmentationNode``.

    Mixed into an rclpy ``Node`` or ``LifecycleNode``: ``_setup`` at construction (parameters,
    diagnostics), then ``_configure`` (check parameters, open the engine), ``_activate``
    (publishers, subscriptions, worker), ``_deactivate`` and ``_cleanup`` undo them.
    """

    def _setup(self) -> None:
        self.state = "unconfigured"
        self.configure_error = ""
        self.loaded: Optional[LoadedEngine] = None
        self._pending: Optional[LoadedEngine] = None
        self._swap_lock = threading.Lock()
        self._class_names_update: Optional[list[str]] = None
        self._declare_error = ""
        self.params = self._declare_parameters()
        # Camera callbacks and timers in a group of their own: a parameter call that waits for
        # a new engine never holds up the images.
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics,
                          callback_group=self._camera_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.outputs: dict[str, Any] = {}
        self._inputs: dict[str, _Input] = {}
        self._input_timers: list = []
        self._worker: Optional[threading.Thread] = None
        self.mailbox: Mailbox[Pair] = Mailbox()

    # -- parameters ------------------------------------------------------------------------
    def _declare_parameters(self) -> dict[str, Any]:
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
                self._declare_error = self._declare_error or f"invalid parameter {name}: {reason}"
                values[name] = self.declare_parameter(name, spec.default, descriptor,
                                                      ignore_override=True).value
        return values

    def _check_parameters(self) -> None:
        if self._declare_error:
            raise StartupError(self._declare_error)
        # rclpy ignores overrides nobody declares; a typo in a params file deserves an error.
        # (rclpy offers no public accessor for the overrides.)
        overrides = getattr(self, "_parameter_overrides", {})
        known = set(PARAMETERS) | set(READ_ONLY_PARAMETERS)
        unknown = sorted(name for name in overrides
                         if name not in known and not self.has_parameter(name))
        if unknown:
            raise StartupError(f"unknown parameter(s) {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(known))})")
        for name, value in self.params.items():
            problem = check_parameter(name, value)
            if problem:
                raise StartupError(problem)
        if not self.params["engine_path"]:
            raise StartupError("parameter engine_path is required (an exported .onnx model or a "
                               "TensorRT engine)")

    def _load(self, path: str) -> LoadedEngine:
        return load_engine(path, self.params["backend"], self.params["num_threads"],
                           self.params["min_confidence"], self.params["publish_confidence"])

    def _declare_class_names(self, names: list[str]) -> None:
        """Declare ``class_names`` from the card, or follow a new engine's card.

        Read-only to everybody else: ``_on_set_parameters`` refuses any other value.
        """
        descriptor = ParameterDescriptor(
            description="class names from the engine's model card (read-only; they follow the "
                        "engine)")
        self._class_names_update = names
        try:
            if self.has_parameter("class_names"):
                self.set_parameters([Parameter("class_names", value=names)])
                return
            try:
                declared = self.declare_parameter("class_names", names, descriptor).value
            except ParameterException:
                declared = None  # an override of another type or value: refused below
        finally:
            self._class_names_update = None
        if declared is None or list(declared) != names:
            if self.has_parameter("class_names"):
                self.undeclare_parameter("class_names")
            raise StartupError("parameter class_names is read-only: it comes from the engine's "
                               "model card; remove it from the parameters")

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        engine_change = None
        for parameter in parameters:
            name = parameter.name
            if name == "class_names":
                if self._class_names_update is not None and \
                        list(parameter.value) == self._class_names_update:
                    continue
                return SetParametersResult(
                    successful=False,
                    reason="class_names is read-only: it comes from the engine's model card")
            spec = PARAMETERS.get(name)
            if spec is None or not spec.live:
                continue  # read-only descriptors already refuse these
            if type(parameter.value) is not type(spec.default):
                kind = "a string" if isinstance(spec.default, str) else "a double"
                return SetParametersResult(successful=False, reason=f"{name} must be {kind}")
            problem = check_parameter(name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            if name == "engine_path":
                engine_change = parameter.value
            has_confidence = self.loaded is None or self.loaded.engine.has_confidence
            if name == "min_confidence" and parameter.value > 0 and not has_confidence:
                return SetParametersResult(successful=False,
                                           reason="the engine has no 'confidence' output")
        if engine_change is not None and self.loaded is not None:
            problem = self._prepare_engine(engine_change)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        for parameter in parameters:
            if parameter.name in ("overlay_alpha", "min_confidence", "engine_path"):
                self.params[parameter.name] = parameter.value
            if parameter.name == "min_confidence" and self.loaded is not None:
                self.loaded.segmenter.min_confidence = parameter.value
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, parameters) -> None:
        if any(p.name == "engine_path" for p in parameters) and self._pending is not None:
            names = list(self._pending.card.class_names)
            if self.state != "active":
                self._swap_engine()  # no worker to do it between frames
            self._declare_class_names(names)

    def _prepare_engine(self, path: str) -> Optional[str]:
        """Open ``path`` on a thread of its own; keep it for the worker, or say why not."""
        outcome: dict[str, Any] = {}

        def load() -> None:
            try:
                outcome["loaded"] = self._load(path)
            except StartupError as exc:
                outcome["error"] = str(exc)
            except Exception as exc:  # an engine that fails in an unforeseen way is refused too
                outcome["error"] = f"{path}: {exc}"

        loader = threading.Thread(target=load, name="engine_loader", daemon=True)
        loader.start()
        loader.join(ENGINE_LOAD_TIMEOUT_S)
        if loader.is_alive():
            return f"{path}: still opening after {ENGINE_LOAD_TIMEOUT_S:g} s"
        if "error" in outcome:
            self.get_logger().warning(f"engine change refused: {outcome['error']}")
            return outcome["error"]
        with self._swap_lock:
            if self._pending is not None:
                self._pending.engine.close()
            self._pending = outcome["loaded"]
        return None

    def _swap_engine(self) -> None:
        """Put a prepared engine in service (between frames) and close the old one."""
        with self._swap_lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        old, self.loaded = self.loaded, pending
        self.depth_watch = DepthWatch(pending.card.depth_range_m)
        if old is not None:  # released beside the worker, which goes on to the next frame
            threading.Thread(target=old.engine.close, name="engine_close", daemon=True).start()
        h, w = pending.engine.input_size
        self.get_logger().info(f"engine {pending.path} in service ({pending.engine.backend}, "
                               f"input {w}x{h}, {pending.card.num_classes} classes)")

    # -- states ----------------------------------------------------------------------------
    def _configure(self) -> None:
        self._check_parameters()
        self.loaded = self._load(self.params["engine_path"])
        try:
            self._declare_class_names(list(self.loaded.card.class_names))
        except StartupError:
            self.loaded.engine.close()
            self.loaded = None
            raise
        self.sync = RgbdSync(self.params["sync_slop"], self.params["sync_queue_size"])
        self.counters = Counters()
        self.latency = LatencyWindow()
        self.last_bad_message = ""
        self._warned_depth_size = False
        self._last_diagnostics = (time.monotonic(), self.counters.snapshot(),
                                  self.sync.stats.as_dict())
        self._active_problems: set[str] = set()
        self._last_stamps = {"rgb": None, "depth": None}
        self._latest_depth: Optional[np.ndarray] = None
        self._color_without_depth_since: Optional[float] = None
        self._no_depth: dict[tuple, np.ndarray] = {}
        self.depth_watch = DepthWatch(self.loaded.card.depth_range_m)
        scale = self.params["depth_scale"]
        self._depth_scale = scale if scale > 0 else None
        self.cloud_builder = CloudBuilder(self.params["cloud_stride"],
                                          self.params["cloud_max_range"])
        self._camera_info: Optional[CameraInfo] = None
        self.configure_error = ""
        self.state = "inactive"

    def _activate(self) -> None:
        self.outputs = {kind: self.create_publisher(Image, topic, OUTPUT_QOS)
                        for kind, topic in OUTPUT_TOPICS.items()
                        if kind == "labels" or self.params[f"publish_{kind}"]}
        self.outputs["points"] = self.create_publisher(PointCloud2, CLOUD_TOPIC, OUTPUT_QOS)
        self.outputs["camera_info"] = self.create_publisher(CameraInfo, CAMERA_INFO_TOPICS["out"],
                                                            OUTPUT_QOS)
        self._camera_info_sub = self.create_subscription(
            CameraInfo, CAMERA_INFO_TOPICS["in"], self._on_camera_info, qos_profile_sensor_data,
            callback_group=self._camera_group)
        now = time.monotonic()
        self._inputs = {}
        for stream in ("rgb", "depth"):
            suffix, msg_type = TRANSPORTS[self.params[f"{stream}_transport"]]
            topic = INPUT_TOPICS[stream] + suffix
            self._inputs[stream] = _Input(topic, self.resolve_topic_name(topic), msg_type,
                                          StreamWatch(stream, topic, now))
        if self.params["qos"] != "auto":
            forced = BEST_EFFORT if self.params["qos"] == "sensor_data" else RELIABLE
            for stream in self._inputs:
                self._subscribe(stream, forced)
        self._input_timers = [self.create_timer(INPUT_REFRESH_PERIOD_S, self._refresh_inputs,
                                          callback_group=self._camera_group)]
        self.mailbox = Mailbox()
        self._worker = threading.Thread(target=self._work, name="segmentation_worker", daemon=True)
        self._worker.start()
        self.state = "active"
        h, w = self.loaded.engine.input_size
        self.get_logger().info(
            f"engine {self.loaded.path} ({self.loaded.engine.backend}, input {w}x{h}, "
            f"{self.loaded.card.num_classes} classes); publishing "
            f"{', '.join(kind for kind in self.outputs)}")

    def _deactivate(self) -> None:
        """Unsubscribe and stop the worker: no work at all until activated again."""
        self.state = "inactive"
        for timer in self._input_timers:
            self.destroy_timer(timer)
        self._input_timers = []
        for entry in self._inputs.values():
            if entry.subscription is not None:
                self.destroy_subscription(entry.subscription)
        self._inputs = {}
        self.destroy_subscription(self._camera_info_sub)
        self.mailbox.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        self._swap_engine()
        for publisher in self.outputs.values():
            self.destroy_publisher(publisher)
        self.outputs = {}

    def close(self) -> None:
        """Stop all work and release the engine, from any state (before ``destroy_node``)."""
        if self.state == "active":
            self._deactivate()
        self._cleanup()

    def _cleanup(self) -> None:
        with self._swap_lock:
            pending, self._pending = self._pending, None
        for loaded in (pending, self.loaded):
            if loaded is not None:
                loaded.engine.close()
        self.loaded = None
        self.state = "unconfigured"

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
                entry.msg_type, entry.topic, callback, qos, callback_group=self._camera_group,
                event_callbacks=SubscriptionEventCallbacks(
                    message_lost=lambda event: self._on_message_lost(stream, event), **events))
        except UnsupportedEventTypeError:  # a middleware without lost-message events
            entry.subscription = self.create_subscription(
                entry.msg_type, entry.topic, callback, qos, callback_group=self._camera_group,
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
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

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
            self._swap_engine()  # between frames only: a frame sees one engine from end to end
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
        loaded = self.loaded  # this frame's engine, from start to end
        wanted = {kind for kind in self.outputs if self._wanted(kind)}
        if not wanted:
            self.counters.add("pairs_idle")
            return
        camera_info = self._camera_info
        rgb_frame, depth_frame = pair.rgb, pair.depth
        result = loaded.segmenter.run(rgb_frame.image, depth_frame.image,
                                      with_confidence=bool({"confidence", "points"} & wanted))
        if result.depth_resized and not self._warned_depth_size:
            self._warned_depth_size = True
            self.get_logger().warning(
                f"depth images are {depth_frame.image.shape[1]}x{depth_frame.image.shape[0]}, "
                f"RGB images {rgb_frame.image.shape[1]}x{rgb_frame.image.shape[0]}: resizing depth "
                "(nearest); register depth to the colour camera for exact results")

        header = rgb_frame.header
        visualize_ms = cloud_ms = 0.0
        messages = [("labels", lambda: encode(result.labels, "mono8", header=header))]
        if "confidence" in wanted and result.confidence is not None:
            messages.append(("confidence",
                             lambda: encode(result.confidence, "32FC1", header=header)))
        if "color" in wanted or "overlay" in wanted:
            start = time.perf_counter()
            color = colorize(result.labels, loaded.palette_lut)
            if "color" in wanted:
                messages.append(("color", lambda: encode(color, "rgb8", header=header)))
            if "overlay" in wanted:
                blended = overlay(rgb_frame.image, result.labels, loaded.palette_lut,
                                  self.params["overlay_alpha"], color=color)
                messages.append(("overlay", lambda: encode(blended, "rgb8", header=header)))
            visualize_ms = (time.perf_counter() - start) * 1e3
        if camera_info is not None and "points" in wanted:
            start = time.perf_counter()
            cloud = self._cloud(result, rgb_frame.image, camera_info, header)
            if cloud is not None:
                messages.append(("points", lambda: cloud))
            cloud_ms = (time.perf_counter() - start) * 1e3
        if camera_info is not None and "camera_info" in wanted:
            messages.append(("camera_info",
                             lambda: camera_info_for(camera_info, header, result.labels.shape)))
        start = time.perf_counter()
        for kind, make in messages:
            if kind in wanted:
                self.outputs[kind].publish(make())
                self.counters.add(f"{kind}_published")
        done = time.perf_counter()

        completed = max(rgb_frame.received, depth_frame.received)
        end_to_end = (done - completed) * 1e3
        wait = (picked - completed) * 1e3
        timings = {"codec": rgb_frame.codec_ms + depth_frame.codec_ms, "wait": wait,
                   **result.timings, "visualize": visualize_ms,
                   "publish": (done - start) * 1e3, "end_to_end": end_to_end,
                   "overhead": end_to_end - result.timings["infer"] - wait}
        if "points" in wanted and camera_info is not None:
            timings["cloud"] = cloud_ms
        self.latency.add(timings)
        self.counters.add("frames_processed")

    def _cloud(self, result, rgb: np.ndarray, camera_info: CameraInfo,
               header) -> Optional[PointCloud2]:
        """The labelled cloud of this frame, or None (counted) when the camera info is unusable."""
        h, w = result.labels.shape
        try:
            intrinsics = Intrinsics.from_k(camera_info.k, camera_info.width,
                                           camera_info.height).scaled_to(w, h)
        except ValueError as exc:
            self.last_bad_message = f"camera_info: {exc}"
            self.counters.add("bad_messages")
            return None
        data = self.cloud_builder.build(result.depth, rgb, result.labels, intrinsics,
                                        result.confidence)
        return point_cloud_message(data, header, with_confidence=result.confidence is not None)

    # -- diagnostics -----------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        status = (self._running_status() if self.state == "active" else
                  DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                   level=DiagnosticStatus.ERROR if self.configure_error
                                   else DiagnosticStatus.OK,
                                   message=(f"unconfigured: {self.configure_error}"
                                            if self.configure_error else self.state)))
        if self.state != "active" and self.loaded is not None:
            status.hardware_id = self.loaded.engine.backend
            status.values = [KeyValue(key=key, value=value)
                             for key, value in self._engine_values(self.loaded).items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    @staticmethod
    def _engine_values(loaded: LoadedEngine) -> dict[str, str]:
        h, w = loaded.engine.input_size
        return {"backend": loaded.engine.backend, "engine": loaded.path,
                "engine_loaded": loaded.loaded_at, "input_size": f"{w}x{h}",
                "precision": loaded.card.precision}

    def _running_status(self) -> DiagnosticStatus:
        now = time.monotonic()
        counts = self.counters.snapshot()
        sync_stats = self.sync.stats.as_dict()
        then, old_counts, old_sync = self._last_diagnostics
        self._last_diagnostics = (now, counts, sync_stats)
        elapsed = max(now - then, 1e-9)
        delta = {name: counts[name] - old_counts[name] for name in counts}

        def rate(name: str) -> str:
            return f"{delta[name] / elapsed:.2f}"

        loaded = self.loaded
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                  hardware_id=f"{loaded.engine.backend}")
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

        values = self._engine_values(loaded)
        values.update({
            "qos": self.params["qos"],
            "rgb_rate_hz": rate("rgb_received"),
            "depth_rate_hz": rate("depth_received"),
            "pair_rate_hz": rate("pairs"),
            "output_rate_hz": rate("frames_processed"),
        })
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
        values["camera_info"] = "received" if self._camera_info is not None else "none"
        # Who listens (the node computes only what someone subscribes to).
        for kind, publisher in self.outputs.items():
            values[f"{kind}_subscribers"] = str(publisher.get_subscription_count())
        values["depth_scale"] = (f"{self._depth_scale:g}" if self._depth_scale
                                 else "REP 118 (16UC1 mm, 32FC1 m)")
        if self.depth_watch.medians:
            values["depth_median_m"] = f"{self.depth_watch.medians[-1]:.3f}"
        if loaded.card.depth_range_m:
            low, high = loaded.card.depth_range_m
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
        return status

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
        if self._camera_info is None and self._wanted("points"):
            problems.append(f"no camera info on {self.resolve_topic_name(CAMERA_INFO_TOPICS['in'])}"
                            ": no cloud")
        depth_problem = self.depth_watch.problem()
        self._report_once("depth_units", depth_problem)
        if depth_problem:
            problems.append(depth_problem)
        return problems



def point_cloud_message(data: np.ndarray, header, with_confidence: bool) -> PointCloud2:
    """A ``PointCloud2`` around ``CloudBuilder.build``'s ``[rows, cols, step]`` bytes."""
    rows, cols, step = data.shape
    msg = PointCloud2(header=header, height=rows, width=cols, is_bigendian=False,
                      point_step=step, row_step=cols * step, is_dense=False)
    msg.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in point_fields(with_confidence)]
    payload = array.array("B")
    payload.frombytes(data.reshape(-1))  # one copy; skips rclpy's per-byte field check
    msg.data = payload
    return msg


def camera_info_for(info: CameraInfo, header, size_hw: tuple[int, int]) -> CameraInfo:
    """``info`` with ``header``, its intrinsics scaled if the outputs are of another size."""
    h, w = size_hw
    out = CameraInfo(header=header, height=h, width=w, distortion_model=info.distortion_model,
                     d=list(info.d), k=list(info.k), r=list(info.r), p=list(info.p),
                     binning_x=info.binning_x, binning_y=info.binning_y, roi=info.roi)
    if (info.width, info.height) != (w, h) and info.width and info.height:
        sx, sy = w / info.width, h / info.height
        k, pr = list(info.k), list(info.p)
        for matrix, row_len in ((k, 3), (pr, 4)):
            matrix[0] *= sx
            matrix[row_len + 1] *= sy
            matrix[2] = (matrix[2] + 0.5) * sx - 0.5
            matrix[row_len + 2] = (matrix[row_len + 2] + 0.5) * sy - 0.5
        out.k, out.p = k, pr
    return out


class SegmentationNode(SegmentationWork, Node):
    """The node, configured and active from construction; ``StartupError`` if it cannot be."""

    def __init__(self, **node_kwargs) -> None:
        Node.__init__(self, NODE_NAME, **node_kwargs)
        self._setup()
        self._configure()
        self._activate()



class ManagedSegmentationNode(SegmentationWork, LifecycleNode):
    """The same node as a lifecycle node (``cen_segmentation_managed_node``).

    A configure that fails leaves it unconfigured, with the reason logged and on /diagnostics.
    """

    def __init__(self, **node_kwargs) -> None:
        LifecycleNode.__init__(self, NODE_NAME, **node_kwargs)
        self._setup()

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except StartupError as exc:
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._activate()
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS


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


def _spin(node) -> None:
    # Two threads: the camera callbacks keep running while a parameter call waits for a new
    # engine to open (see SegmentationWork._prepare_engine).
    executor = PooledExecutor(num_threads=2)
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


def main(args: Optional[list[str]] = None) -> int:
    keep_freed_memory_for_reuse()
    rclpy.init(args=args)
    try:
        node = SegmentationNode()
    except StartupError as exc:
        print(f"{NODE_NAME}: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    _spin(node)
    return 0


def main_managed(args: Optional[list[str]] = None) -> int:
    """``cen_segmentation_managed_node``: starts unconfigured and waits for transitions."""
    keep_freed_memory_for_reuse()
    rclpy.init(args=args)
    _spin(ManagedSegmentationNode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
