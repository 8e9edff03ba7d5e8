"""The ROS 2 node ``cen_segmentation``: RGB-D images in, segmentation images out.

``cen_segmentation_node`` starts at once; ``cen_segmentation_managed_node`` is the same work as
a ``rclpy.lifecycle`` node. A thin shell around plain Python: ``camera_inputs`` subscribes,
``pipeline`` pairs undecoded messages, then decodes and segments only the newest pair on its
own threads, ``outputs`` draws what is subscribed, ``publishers`` sends it, ``engine_slot``
opens a new ``engine_path`` in the background, ``diagnostics`` words ``/diagnostics``. Every
callback, timer and service runs on one executor thread and never waits for inference.
Topics and parameters: docs/node.md and config/segmentation.yaml.
"""
from __future__ import annotations

import signal
import sys
import time
import traceback
from typing import Any, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo

from . import diagnostics, parameters, pipeline
from .camera_inputs import CameraInputs
from .cloud import CloudBuilder
from .engine_slot import EngineSlot, LoadedEngine, StartupError, load_engine
from .errors import EXIT_ERROR, EXIT_OK
from .input_health import CameraInfoWatch, DepthWatch
from .outputs import least_color_size, render_frame
from .parameters import CLASS_NAMES, PARAMETERS
from .pipeline import BadMessage, DecodedPair, FramePipeline
from .publishers import Publishers
from .sync import RgbdSync

NODE_NAME = "cen_segmentation"
CAMERA_INFO_TOPIC = "rgb/camera_info"
INPUT_REFRESH_PERIOD_S = 0.5   # qos: auto looks at the camera publishers this often
STOP_TIMEOUT_S = 10.0          # deactivate waits this long for the frame in hand


class SegmentationWork(pipeline.PipelineReport):
    """The node's work, mixed into an rclpy ``Node`` or ``LifecycleNode``.

    ``_setup`` at construction (parameters, diagnostics), then ``_configure`` (check
    parameters, open the engine), ``_activate`` (publishers, subscriptions, pipeline),
    ``_deactivate`` and ``_cleanup`` undo them.
    """

    def _setup(self) -> None:
        self.state, self.configure_error, self.engine_refused = "unconfigured", "", ""
        self.params, self._declare_error = parameters.declare_all(self)
        self._own_updates: dict[str, Any] = {}
        self._group = MutuallyExclusiveCallbackGroup()
        wakeup = self.create_guard_condition(self._on_engine_outcomes, self._group)
        self.engines = EngineSlot(self._open_engine, wakeup.trigger)
        self.pipeline: Optional[FramePipeline] = None
        self.inputs: Optional[CameraInputs] = None
        self.outputs: Optional[Publishers] = None
        self.log, self.last_bad_message = diagnostics.ProblemLog(self.get_logger()), ""
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics,
                          callback_group=self._group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- parameters ------------------------------------------------------------------------
    def _set_own(self, name: str, value: Any) -> None:
        """Set a parameter from inside the node (class_names, a refused engine_path)."""
        self._own_updates[name] = value
        try:
            if not self.has_parameter(name):
                self.declare_parameter(name, value, ParameterDescriptor(
                    description=parameters.CLASS_NAMES_DESCRIPTION))
            else:
                self.set_parameters([Parameter(name, value=value)])
        finally:
            self._own_updates.pop(name, None)
        if name in PARAMETERS:
            self.params[name] = value

    def _on_set_parameters(self, changes) -> SetParametersResult:
        for parameter in changes:
            name, value = parameter.name, parameter.value
            if name in self._own_updates and self._own_updates[name] == value:
                continue
            loaded = self.engines.in_service
            has_confidence = loaded is None or loaded.engine.has_confidence
            problem = parameters.live_change_problem(name, value, has_confidence)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        for parameter in changes:
            if parameter.name not in self._own_updates:
                self._apply(parameter.name, parameter.value)
        return SetParametersResult(successful=True)

    def _apply(self, name: str, value: Any) -> None:
        if name not in ("overlay_alpha", "min_confidence", "engine_path"):
            return
        self.params[name] = value
        loaded = self.engines.in_service
        if name == "min_confidence" and loaded is not None:
            loaded.segmenter.min_confidence = value
        if name == "engine_path" and loaded is not None:
            if value != loaded.path:
                self.engines.request(value)  # opens in the background; _on_engine_outcomes
            else:
                self.engines.cancel()  # back to the engine in service: forget a change

    # -- engines ---------------------------------------------------------------------------
    def _open_engine(self, path: str) -> LoadedEngine:
        return load_engine(path, self.params["backend"], self.params["num_threads"],
                           self.params["min_confidence"], self.params["publish_confidence"])

    def _on_engine_outcomes(self) -> None:
        """A live engine change ended: follow its card, or go back to the engine in service."""
        for outcome in self.engines.outcomes():
            in_service = self.engines.in_service
            if outcome.error:
                self.engine_refused = outcome.error
                self.get_logger().warning(f"engine change refused: {outcome.error}")
                if in_service is not None:
                    self._set_own("engine_path", in_service.path)
                continue
            self.engine_refused = ""
            self._set_own(CLASS_NAMES, list(outcome.class_names))
            if self.state != "active":
                self._between_frames()  # no worker to swap it in

    def _between_frames(self) -> None:
        swapped = self.engines.swap()
        if swapped is not None:
            self.depth_watch = DepthWatch(swapped.card.depth_range_m)
            h, w = swapped.engine.input_size
            self.get_logger().info(f"engine {swapped.path} in service ({swapped.engine.backend},"
                                   f" input {w}x{h}, {swapped.card.num_classes} classes)")

    # -- states ----------------------------------------------------------------------------
    def _configure(self) -> None:
        problem = self._declare_error or parameters.startup_problem(self.params)
        if problem:
            raise StartupError(problem)
        loaded = self.engines.open_now(self.params["engine_path"])
        self._set_own(CLASS_NAMES, list(loaded.card.class_names))
        self.depth_watch = DepthWatch(loaded.card.depth_range_m)
        self.cloud_builder = CloudBuilder(self.params["cloud_stride"],
                                          self.params["cloud_max_range"])
        self.configure_error, self.engine_refused = "", ""
        self.state = "inactive"

    def _activate(self) -> None:
        p = self.params
        self.outputs = Publishers(self, lambda kind: p.get(f"publish_{kind}", True),
                                  self._count)
        self.camera_info = CameraInfoWatch()
        self._camera_info_sub = self.create_subscription(
            CameraInfo, CAMERA_INFO_TOPIC, self.camera_info.received, qos_profile_sensor_data,
            callback_group=self._group)
        options = pipeline.DecodeOptions(p["depth_scale"] or None, p["max_image_pixels"])
        self.pipeline = FramePipeline(RgbdSync(p["sync_slop"], p["sync_queue_size"]), options,
                                      p["depth_timeout"], self._process, self, self._between_frames)
        self.inputs = CameraInputs(self, {s: p[f"{s}_transport"] for s in ("rgb", "depth")},
                                   p["qos"], self._on_camera, self._group)
        self._refresh_timer = self.create_timer(INPUT_REFRESH_PERIOD_S, self._refresh_inputs,
                                                callback_group=self._group)
        self.pipeline.start()
        self.state = "active"
        loaded = self.engines.in_service
        h, w = loaded.engine.input_size
        self.get_logger().info(f"engine {loaded.path} ({loaded.engine.backend}, input {w}x{h}, "
                               f"{loaded.card.num_classes} classes); publishing "
                               f"{', '.join(self.outputs.publishers)}")

    def _deactivate(self) -> None:
        """Unsubscribe and stop the pipeline: no work at all until activated again."""
        self.state = "inactive"
        self.destroy_timer(self._refresh_timer)
        self.inputs.close()
        self.destroy_subscription(self._camera_info_sub)
        if not self.pipeline.stop(STOP_TIMEOUT_S):
            self.get_logger().warning(f"a frame still runs after {STOP_TIMEOUT_S:g} s; its "
                                      "engine closes when it ends")
        self._between_frames()   # a change that arrived meanwhile goes in service
        self.outputs.destroy()

    def _cleanup(self) -> None:
        self.engines.close()
        self.state = "unconfigured"

    def close(self) -> None:
        """Stop all work and release the engines, from any state (before ``destroy_node``)."""
        if self.state == "active":
            self._deactivate()
        self._cleanup()

    # -- camera (executor thread; never waits) ---------------------------------------------
    def _on_camera(self, stream: str, msg) -> None:
        received = time.perf_counter()
        if self.state != "active":
            return
        try:
            self.inputs.received(stream)
            self.pipeline.push(stream, msg, received)
        except BadMessage as exc:
            self.pipeline.counters.add("bad_messages")
            self.bad_message(stream, exc.reason)
        except Exception as exc:  # whatever a message does, spin() goes on
            self.pipeline.counters.add("bad_messages")
            self.bad_message(stream, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        self.pipeline.latency.add({"callback": (time.perf_counter() - received) * 1e3})

    def _refresh_inputs(self) -> None:
        self.inputs.refresh(self.params["stall_timeout"], self.log.once)

    def bad_message(self, stream: str, reason: str, trace: str = "") -> None:
        self.last_bad_message = f"{stream}: {reason}"
        self.log.bad_message(stream, reason, trace,
                             self.pipeline.counters.snapshot()["bad_messages"])

    def frame_failed(self, stamp_ns: int, exc: BaseException, trace: str) -> None:
        self.log.frame_failed(stamp_ns, exc)

    # -- decode and worker threads ---------------------------------------------------------
    def least_color_size(self, camera_hw: tuple[int, int]) -> Optional[tuple[int, int]]:
        loaded = self.engines.in_service
        if loaded is None or not self.params["reduced_jpeg_decoding"]:
            return None
        return least_color_size(camera_hw, loaded.engine.input_size, self.outputs.wanted(),
                                self.params["display_width"])

    def _count(self, name: str) -> None:
        self.pipeline.counters.add(name)

    def _process(self, decoded: DecodedPair) -> None:
        picked = time.perf_counter()
        wanted = self.outputs.wanted()
        loaded = self.engines.acquire() if wanted else None
        if loaded is None:
            self._count("pairs_idle")
            return
        intrinsics, problem = self.camera_info.intrinsics()
        if problem and "points" in wanted:
            self._count("bad_messages")
            self.last_bad_message = problem
        try:
            frame = render_frame(decoded, loaded, wanted, self.params["overlay_alpha"],
                                 intrinsics, self.cloud_builder, self.params["display_width"],
                                 self.pipeline.inference_done)
        finally:
            loaded.release()
        if frame.depth_resized:
            self.log.once("depth_size", diagnostics.depth_size_problem(decoded.depth.size_hw,
                                                                       decoded.color.size_hw))
        start = time.perf_counter()
        self.outputs.publish(frame, decoded.header, wanted, self.camera_info.msg)
        self.pipeline.record(decoded, frame.timings, picked, start)

    # -- diagnostics (executor thread) -----------------------------------------------------
    def _publish_diagnostics(self) -> None:
        snapshot = self._snapshot() if self.state == "active" else diagnostics.Snapshot(
            self.state, self.engines.describe(), configure_error=self.configure_error)
        level, message, values = diagnostics.status(snapshot)
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                  level=bytes([level]), message=message,
                                  hardware_id=values.get("backend", ""),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def _snapshot(self) -> diagnostics.Snapshot:
        restarted = self.pipeline.check()
        for name in restarted:
            self.get_logger().error(f"the {name} thread died; restarted it")
        now = time.monotonic()
        self.pipeline.sample_depth(self.depth_watch)
        depth_problem = self.depth_watch.problem()
        self.log.once("depth_units", depth_problem)
        loaded, p = self.engines.in_service, self.params
        subscribers = self.outputs.subscribers()
        return diagnostics.Snapshot(
            self.state, self.engines.describe(), engine_loading=self.engines.loading,
            engine_refused=self.engine_refused, **self.pipeline.snapshot_fields(now),
            inputs=self.inputs.snapshots(p["stall_timeout"]), qos=p["qos"],
            sync_slop=p["sync_slop"],
            camera_info_topic=self.resolve_topic_name(CAMERA_INFO_TOPIC),
            camera_info_received=self.camera_info.msg is not None,
            camera_info_missing=self.camera_info.missing(subscribers.get("points", 0) > 0, now,
                                                         p["stall_timeout"]),
            subscribers=subscribers,
            depth_scale=p["depth_scale"] or None,
            depth_median_m=self.depth_watch.medians[-1] if self.depth_watch.medians else None,
            depth_problem=depth_problem, training_depth_range_m=loaded.card.depth_range_m or (),
            last_bad_message=self.last_bad_message, restarted_stages=restarted)

class SegmentationNode(SegmentationWork, Node):
    """The node, configured and active from construction; ``StartupError`` if it cannot be."""

    def __init__(self, **node_kwargs) -> None:
        Node.__init__(self, NODE_NAME, automatically_declare_parameters_from_overrides=True,
                      **node_kwargs)
        self._setup()
        self._configure()
        self._activate()


class ManagedSegmentationNode(SegmentationWork, LifecycleNode):
    """The same node as a lifecycle node (``cen_segmentation_managed_node``).

    A configure that fails leaves it unconfigured, with the reason logged and on /diagnostics.
    """

    def __init__(self, **node_kwargs) -> None:
        LifecycleNode.__init__(self, NODE_NAME,
                               automatically_declare_parameters_from_overrides=True,
                               **node_kwargs)
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

    on_error = on_shutdown  # from any state: release everything


def _spin(node) -> int:
    """Spin until shutdown; a callback that raises (rclpy's own services do, for a lifecycle
    transition that is not valid from the current state) is logged, never the end."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok(context=node.context):
            try:
                executor.spin_once(timeout_sec=0.5)
            except (KeyboardInterrupt, ExternalShutdownException):
                break  # SIGINT / SIGTERM: a normal way to stop
            except Exception:
                node.get_logger().error(f"a callback failed:\n{traceback.format_exc()}",
                                        throttle_duration_sec=diagnostics.LOG_PERIOD_S)
        # Ctrl-C in a terminal reaches the node twice (from the terminal and from ros2
        # launch): the second must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:  # the second Ctrl-C came before it could be ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    node.close()
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return EXIT_OK


def main(args: Optional[list[str]] = None) -> int:
    pipeline.keep_freed_memory_for_reuse()
    rclpy.init(args=args)
    try:
        node = SegmentationNode()
    except StartupError as exc:
        print(f"{NODE_NAME}: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return EXIT_ERROR
    return _spin(node)


def main_managed(args: Optional[list[str]] = None) -> int:
    """``cen_segmentation_managed_node``: starts unconfigured and waits for transitions."""
    pipeline.keep_freed_memory_for_reuse()
    rclpy.init(args=args)
    return _spin(ManagedSegmentationNode())


if __name__ == "__main__":
    sys.exit(main())
